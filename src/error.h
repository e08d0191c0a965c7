/* Result codes shared by every module of the core.
 *
 * Convention: int functions return 0 (SG_OK) on success or a negative SG_E*
 * code; constructors return NULL; async results arrive as a callback's
 * `status` argument. All codes and their texts live in SG_ERRNO_MAP. */
#ifndef SG_ERROR_H
#define SG_ERROR_H

#define SG_ERRNO_MAP(XX)                                                       \
    XX(NOMEM, "no memory")                                                     \
    XX(INVAL, "invalid argument")                                              \
    XX(CLOSED, "closed")                                                       \
    XX(TIMEOUT, "timeout")                                                     \
    XX(BUSY, "busy")                                                           \
    XX(NOTFOUND, "not found")                                                  \
    XX(TOOBIG, "too big")                                                      \
    XX(IO, "i/o error")                                                        \
    XX(NOTREADY, "not ready")                                                  \
    XX(CANCELED, "canceled")                                                   \
    XX(PARSE, "parse error")                                                   \
    XX(AUTH, "authentication failed")                                          \
    XX(EXISTS, "exists")                                                       \
    XX(SCRIPT, "script error")                                                 \
    XX(CONFIG, "bad config")                                                   \
    XX(REMOTE, "remote error")                                                 \
    XX(NOTSUP, "not supported")

enum {
    SG_OK = 0,
#define SG_ERR_ENUM(name, text) SG_E##name,
    SG__ERR_FIRST = -100,
    SG_ERRNO_MAP(SG_ERR_ENUM)
#undef SG_ERR_ENUM
    SG__ERR_LAST
};

/* Text for a result code ("timeout"); "unknown error" for anything else. */
const char *sg_strerror(int err);
/* Symbolic name ("SG_ETIMEOUT"). */
const char *sg_err_name(int err);

#endif
