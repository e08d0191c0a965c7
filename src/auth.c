/* JWT verification and minting on top of libjwt 1.10 (auth.h).
 *
 * libjwt only checks the signature, and only when it is given a key. The
 * policy lives here: the header's alg is read and pinned *before* libjwt
 * sees the token (so an RS256 or "none" header never reaches a verifier
 * with our HMAC secret), the key is never NULL, and exp/nbf/iss/aud are
 * checked from the claims JSON with a leeway. See notes/deps.md §5 for the
 * behaviour of 1.10 that makes each step necessary. */
#include "auth.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <jwt.h>

#include "error.h"

/* Tokens travel in a query string or an Authorization header; anything this
 * long is not one of ours and is refused before any decoding. */
#define AUTH_MAX_TOKEN 8192
#define AUTH_MAX_HEADER 1024

#define AUTH_MALFORMED "malformed token or bad signature"

/* ------------------------------------------------------------- helpers */

static int auth_fail(int code, char *err, size_t errlen, const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));

static int auth_fail(int code, char *err, size_t errlen, const char *fmt,
                     ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* HMAC algorithms only: the secret is a shared key, and accepting RS or ES
 * here would invite the algorithm-confusion attack of deps.md §5. */
static jwt_alg_t auth_opts_alg(const sg_jwt_opts_t *opts, char *err,
                               size_t errlen)
{
    jwt_alg_t alg = JWT_ALG_INVAL;
    if (opts->algorithm != NULL)
        alg = jwt_str_alg(opts->algorithm);
    if (alg != JWT_ALG_HS256 && alg != JWT_ALG_HS384 && alg != JWT_ALG_HS512) {
        auth_fail(0, err, errlen, "bad jwt algorithm '%s' (expected HS256, "
                  "HS384 or HS512)", opts->algorithm ? opts->algorithm : "");
        return JWT_ALG_INVAL;
    }
    if (opts->secret == NULL || opts->secret[0] == '\0') {
        auth_fail(0, err, errlen, "jwt secret is empty (expected a "
                  "non-empty key)");
        return JWT_ALG_INVAL;
    }
    if (opts->leeway < 0) {
        auth_fail(0, err, errlen, "bad jwt leeway %ld (expected >= 0)",
                  opts->leeway);
        return JWT_ALG_INVAL;
    }
    return alg;
}

static int auth_b64url_value(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes unpadded base64url; returns the byte count or -1. `out` must
 * hold n * 3 / 4 bytes. */
static long auth_b64url_decode(const char *in, size_t n, unsigned char *out)
{
    unsigned acc = 0;
    int bits = 0;
    long len = 0;
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v = auth_b64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (unsigned char)(acc >> bits);
        }
    }
    return len;
}

/* Reads the "alg" of the token's JOSE header into `alg`. 0 or -1 when the
 * header is not base64url JSON with a string alg. */
static int auth_header_alg(const char *token, char *alg, size_t alglen)
{
    const char *dot = strchr(token, '.');
    if (dot == NULL || dot == token || dot - token > AUTH_MAX_HEADER)
        return -1;
    unsigned char raw[AUTH_MAX_HEADER];
    long n = auth_b64url_decode(token, (size_t)(dot - token), raw);
    if (n <= 0)
        return -1;
    json_t *hdr = json_loadb((const char *)raw, (size_t)n, 0, NULL);
    const char *s = json_string_value(json_object_get(hdr, "alg"));
    int rc = s != NULL ? 0 : -1;
    if (s != NULL)
        snprintf(alg, alglen, "%s", s);
    json_decref(hdr);
    return rc;
}

/* The alg as quoted in an error: attacker-controlled, so only a short
 * alphanumeric name is echoed. */
static const char *auth_printable_alg(const char *alg)
{
    size_t n = strlen(alg);
    if (n == 0 || n > 16 || strspn(alg, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "abcdefghijklmnopqrstuvwxyz"
                                        "0123456789") != n)
        return "(invalid)";
    return alg;
}

static const char *auth_strip_bearer(const char *token)
{
    if (strncasecmp(token, "Bearer ", 7) == 0) {
        token += 7;
        while (*token == ' ')
            token++;
    }
    return token;
}

/* ----------------------------------------------------------- claims */

static int auth_check_times(json_t *claims, const sg_jwt_opts_t *opts,
                            time_t now, char *err, size_t errlen)
{
    json_t *exp = json_object_get(claims, "exp");
    json_t *nbf = json_object_get(claims, "nbf");
    double t = (double)now;
    if (exp == NULL)
        return auth_fail(SG_EAUTH, err, errlen, "missing exp claim");
    if (!json_is_number(exp))
        return auth_fail(SG_EAUTH, err, errlen, "invalid exp claim");
    /* Same rule as PyJWT: expired once exp + leeway <= now. */
    if (json_number_value(exp) + (double)opts->leeway <= t)
        return auth_fail(SG_EAUTH, err, errlen, "token expired");
    if (nbf != NULL && !json_is_number(nbf))
        return auth_fail(SG_EAUTH, err, errlen, "invalid nbf claim");
    if (nbf != NULL && json_number_value(nbf) > t + (double)opts->leeway)
        return auth_fail(SG_EAUTH, err, errlen, "token not yet valid (nbf)");
    return 0;
}

/* RFC 7519 §4.1.3: aud is a string or an array of strings. */
static int auth_has_audience(json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    size_t i;
    json_t *v;
    json_array_foreach(aud, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
            return 1;
    }
    return 0;
}

static int auth_check_claims(const char *claims_json,
                             const sg_jwt_opts_t *opts, time_t now,
                             char *err, size_t errlen)
{
    json_t *claims = json_loads(claims_json, 0, NULL);
    int rc = 0;
    if (!json_is_object(claims))
        rc = auth_fail(SG_EAUTH, err, errlen, AUTH_MALFORMED);
    if (rc == 0)
        rc = auth_check_times(claims, opts, now, err, errlen);
    if (rc == 0 && opts->issuer != NULL) {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (iss == NULL || strcmp(iss, opts->issuer) != 0)
            rc = auth_fail(SG_EAUTH, err, errlen, "issuer mismatch");
    }
    if (rc == 0 && opts->audience != NULL &&
        !auth_has_audience(json_object_get(claims, "aud"), opts->audience))
        rc = auth_fail(SG_EAUTH, err, errlen, "audience mismatch");
    json_decref(claims);
    return rc;
}

/* ------------------------------------------------------------------ API */

/* Steps, in order: options, bearer prefix, size, header alg pinned, libjwt
 * signature check with the (never NULL) secret, alg pinned again on the
 * decoded object, then the claims. */
int sg_auth_jwt_verify(const char *token, const sg_jwt_opts_t *opts,
                       time_t now, char **claims_json, char *err,
                       size_t errlen)
{
    jwt_alg_t want = auth_opts_alg(opts, err, errlen);
    if (want == JWT_ALG_INVAL)
        return SG_EINVAL;
    if (claims_json != NULL)
        *claims_json = NULL;
    token = token != NULL ? auth_strip_bearer(token) : "";
    if (*token == '\0')
        return auth_fail(SG_EAUTH, err, errlen, "empty token");
    if (strlen(token) > AUTH_MAX_TOKEN)
        return auth_fail(SG_EAUTH, err, errlen, "token too long");
    char alg[64];
    if (auth_header_alg(token, alg, sizeof(alg)) != 0)
        return auth_fail(SG_EAUTH, err, errlen, AUTH_MALFORMED);
    if (strcmp(alg, jwt_alg_str(want)) != 0)
        return auth_fail(SG_EAUTH, err, errlen,
                         "algorithm %s not allowed (expected %s)",
                         auth_printable_alg(alg), jwt_alg_str(want));

    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, (const unsigned char *)opts->secret,
                   (int)strlen(opts->secret)) != 0 || jwt == NULL)
        return auth_fail(SG_EAUTH, err, errlen, AUTH_MALFORMED);
    if (jwt_get_alg(jwt) != want) {
        jwt_free(jwt);
        return auth_fail(SG_EAUTH, err, errlen, AUTH_MALFORMED);
    }
    char *claims = jwt_get_grants_json(jwt, NULL);
    jwt_free(jwt);
    if (claims == NULL)
        return auth_fail(SG_EAUTH, err, errlen, AUTH_MALFORMED);
    int rc = auth_check_claims(claims, opts, now, err, errlen);
    if (rc == 0 && claims_json != NULL)
        *claims_json = claims;
    else
        free(claims);
    return rc;
}

/* Parses the claims and adds iat/exp when ttl > 0 and they are absent. */
static json_t *auth_sign_claims(const char *claims_json, time_t now,
                                long ttl, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *claims = json_loads(claims_json ? claims_json : "{}", 0, &jerr);
    if (!json_is_object(claims)) {
        auth_fail(0, err, errlen, "claims must be a JSON object");
        json_decref(claims);
        return NULL;
    }
    if (ttl > 0 && json_object_get(claims, "iat") == NULL)
        json_object_set_new(claims, "iat", json_integer((json_int_t)now));
    if (ttl > 0 && json_object_get(claims, "exp") == NULL)
        json_object_set_new(claims, "exp",
                            json_integer((json_int_t)now + ttl));
    return claims;
}

int sg_auth_jwt_sign(const char *claims_json, const sg_jwt_opts_t *opts,
                     time_t now, long ttl, char **token, char *err,
                     size_t errlen)
{
    *token = NULL;
    jwt_alg_t alg = auth_opts_alg(opts, err, errlen);
    if (alg == JWT_ALG_INVAL)
        return SG_EINVAL;
    json_t *claims = auth_sign_claims(claims_json, now, ttl, err, errlen);
    if (claims == NULL)
        return SG_EINVAL;
    char *grants = json_dumps(claims, JSON_COMPACT);
    json_decref(claims);
    jwt_t *jwt = NULL;
    int rc = SG_ENOMEM;
    if (grants != NULL && jwt_new(&jwt) == 0 &&
        jwt_add_grants_json(jwt, grants) == 0 &&
        jwt_set_alg(jwt, alg, (const unsigned char *)opts->secret,
                    (int)strlen(opts->secret)) == 0) {
        *token = jwt_encode_str(jwt);
        rc = *token != NULL ? 0 : SG_ENOMEM;
    }
    jwt_free(jwt);
    free(grants);
    return rc;
}
