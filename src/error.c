/* Texts and names for the SG_E* result codes of error.h. */
#include "error.h"

const char *sg_strerror(int err)
{
    switch (err) {
    case SG_OK:
        return "ok";
#define SG_ERR_TEXT(name, text)                                                \
    case SG_E##name:                                                           \
        return text;
        SG_ERRNO_MAP(SG_ERR_TEXT)
#undef SG_ERR_TEXT
    }
    return "unknown error";
}

const char *sg_err_name(int err)
{
    switch (err) {
    case SG_OK:
        return "SG_OK";
#define SG_ERR_NAME(name, text)                                                \
    case SG_E##name:                                                           \
        return "SG_E" #name;
        SG_ERRNO_MAP(SG_ERR_NAME)
#undef SG_ERR_NAME
    }
    return "SG_EUNKNOWN";
}
