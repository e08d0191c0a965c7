/* WebSocket handshake query parsing: lookup of one parameter in a raw query
 * string, percent-decoding, and session-id validation.
 *
 * The query is split on '&' before anything is decoded, so an escaped "%26"
 * inside a value never starts a new parameter (defect 25 of the original). */
#include "query.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

static int query_hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 1 when the raw name `s` (len bytes) decodes to exactly `name`. A name
 * that does not decode cannot match, so a malformed unrelated parameter
 * does not break the lookup of a well-formed one. */
static int query_name_is(const char *s, size_t len, const char *name)
{
    char *decoded;
    int same;

    if (memchr(s, '%', len) == NULL)
        return strlen(name) == len && memcmp(s, name, len) == 0;
    if (sg_query_decode(s, len, &decoded) != 0)
        return 0;
    same = strcmp(decoded, name) == 0;
    free(decoded);
    return same;
}

static int query_is_sid_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' ||
           c == '-';
}

/* ------------------------------------------------------------------------
 * API
 * ---------------------------------------------------------------------- */

int sg_query_decode(const char *in, size_t len, char **out)
{
    char *buf = malloc(len + 1);
    size_t i, n = 0;

    *out = NULL;
    if (buf == NULL)
        return SG_ENOMEM;
    for (i = 0; i < len; i++) {
        int hi, lo;

        if (in[i] == '\0')
            goto bad;
        if (in[i] != '%') {
            buf[n++] = in[i];
            continue;
        }
        if (len - i < 3)
            goto bad;
        hi = query_hex(in[i + 1]);
        lo = query_hex(in[i + 2]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            goto bad;
        buf[n++] = (char)(hi << 4 | lo);
        i += 2;
    }
    buf[n] = '\0';
    *out = buf;
    return 0;

bad:
    free(buf);
    return SG_EINVAL;
}

int sg_query_get(const char *query, const char *name, char **value)
{
    const char *p = query;

    assert(name != NULL && value != NULL);
    *value = NULL;
    while (p != NULL && *p != '\0') {
        size_t seg = strcspn(p, "&");
        const char *eq = memchr(p, '=', seg);
        size_t nlen = eq ? (size_t)(eq - p) : seg;

        if (seg > 0 && query_name_is(p, nlen, name)) {
            if (eq == NULL)
                return sg_query_decode("", 0, value);
            return sg_query_decode(eq + 1, seg - nlen - 1, value);
        }
        p += seg;
        if (*p == '&')
            p++;
    }
    return SG_ENOTFOUND;
}

int sg_query_session_id_valid(const char *sid, char *err, size_t errlen)
{
    size_t i, len = sid ? strlen(sid) : 0;
    int ok = len >= 1 && len <= SG_SESSION_ID_MAX;

    for (i = 0; ok && i < len; i++)
        ok = query_is_sid_char((unsigned char)sid[i]);
    if (!ok && err != NULL && errlen > 0)
        snprintf(err, errlen,
                 "session_id must be 1-%d characters of "
                 "A-Z a-z 0-9 _ . : -",
                 SG_SESSION_ID_MAX);
    return ok;
}
