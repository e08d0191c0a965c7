/* WebSocket handshake query parsing and session-id validation.
 *
 * The original server percent-decoded the whole query before splitting on
 * '&' (defect 25). We split first, then decode each name and value, and
 * the first occurrence of a name wins. '+' stays '+' (as the original). */
#ifndef SG_QUERY_H
#define SG_QUERY_H

#include <stddef.h>

#define SG_SESSION_ID_MAX 128

/* Looks up `name` in a raw query string ("a=1&b=%20x"). On success stores a
 * malloc'd, decoded, NUL-terminated value in *value (caller frees) and returns
 * 0. Returns SG_ENOTFOUND when absent, SG_EINVAL on a bad %-escape or an
 * embedded NUL (%00). A name without '=' has the empty value. */
int sg_query_get(const char *query, const char *name, char **value);

/* Percent-decodes `in` (len bytes) into a malloc'd string. SG_EINVAL on a bad
 * escape or %00. */
int sg_query_decode(const char *in, size_t len, char **out);

/* 1 when `sid` is 1..128 chars of [A-Za-z0-9_.:-]; else 0 and a message in
 * `err` ("session_id must be 1-128 characters of A-Z a-z 0-9 _ . : -"). */
int sg_query_session_id_valid(const char *sid, char *err, size_t errlen);

#endif
