/* JWT verification and minting (libjwt 1.10).
 *
 * libjwt 1.10 verifies the signature only: it does not pin the algorithm
 * (an HS384 token verifies against an HS256 key), does not check exp or nbf,
 * and skips verification entirely when given a NULL key. This module closes
 * those holes: the key is never NULL, the header alg must equal the
 * configured one, exp is required and checked, nbf/iss/aud when set. */
#ifndef SG_AUTH_H
#define SG_AUTH_H

#include <stddef.h>
#include <time.h>

typedef struct sg_jwt_opts {
    const char *secret;     /* HMAC key; must be non-empty */
    const char *algorithm;  /* "HS256" | "HS384" | "HS512" */
    long leeway;            /* seconds of allowed clock skew */
    const char *issuer;     /* NULL = not checked */
    const char *audience;   /* NULL = not checked */
} sg_jwt_opts_t;

/* Verifies `token` (an optional "Bearer " prefix is stripped) at time `now`.
 * On success returns 0 and, if `claims_json` is not NULL, a malloc'd JSON
 * object of the claims (caller frees). On failure returns SG_EAUTH (or
 * SG_EINVAL for bad options) and a short reason in `err`:
 *   "malformed token or bad signature", "algorithm HS384 not allowed
 *   (expected HS256)", "token expired", "token not yet valid (nbf)",
 *   "missing exp claim", "issuer mismatch", "audience mismatch". */
int sg_auth_jwt_verify(const char *token, const sg_jwt_opts_t *opts,
                       time_t now, char **claims_json, char *err,
                       size_t errlen);

/* Signs the JSON object `claims_json` with opts->secret/algorithm. Adds
 * "iat" = now and "exp" = now + ttl when ttl > 0 and the claims lack them.
 * *token is malloc'd (caller frees). 0, SG_EINVAL (bad claims/options, with
 * `err`) or SG_ENOMEM. */
int sg_auth_jwt_sign(const char *claims_json, const sg_jwt_opts_t *opts,
                     time_t now, long ttl, char **token, char *err,
                     size_t errlen);

#endif
