/* Unit tests for auth.c: tokens are minted here, either with
 * sg_auth_jwt_sign or by hand (base64url + HMAC from OpenSSL, looked up at
 * run time because libcrypto is only an indirect dependency of libjwt). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/error.c"
#include "../../src/auth.c"

#define NOW ((time_t)1700000000)
#define SECRET "test-secret-0123456789"

static sg_jwt_opts_t opts;
static char err[128];

static int setup(void **state)
{
    opts = (sg_jwt_opts_t){.secret = SECRET, .algorithm = "HS256"};
    memset(err, 0, sizeof(err));
    return 0;
}

/* ------------------------------------------------------- token helpers */

static char *sign(const char *claims, long ttl)
{
    char *tok = NULL;
    assert_int_equal(sg_auth_jwt_sign(claims, &opts, NOW, ttl, &tok, err,
                                      sizeof(err)), 0);
    assert_non_null(tok);
    return tok;
}

static char *b64url(const void *data, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstu"
                              "vwxyz0123456789-_";
    const unsigned char *in = data;
    char *out = malloc(n * 4 / 3 + 4);
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = tbl[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = tbl[(acc << (6 - bits)) & 63];
    out[o] = '\0';
    return out;
}

typedef unsigned char *(*hmac_fn)(const void *md, const void *key, int klen,
                                  const unsigned char *d, size_t n,
                                  unsigned char *out, unsigned *outlen);
typedef const void *(*md_fn)(void);

/* HMAC-<md>(secret, header.payload) via OpenSSL; NULL when libcrypto
 * cannot be found (the caller then skips). */
static char *hmac_b64(const char *md_name, const char *secret,
                      const char *msg)
{
    void *h = RTLD_DEFAULT;
    hmac_fn hmac = (hmac_fn)dlsym(h, "HMAC");
    if (hmac == NULL) {
        h = dlopen("libcrypto.so.3", RTLD_NOW);
        hmac = h ? (hmac_fn)dlsym(h, "HMAC") : NULL;
    }
    md_fn md = hmac ? (md_fn)dlsym(h, md_name) : NULL;
    if (md == NULL)
        return NULL;
    unsigned char mac[64];
    unsigned len = 0;
    hmac(md(), secret, (int)strlen(secret), (const unsigned char *)msg,
         strlen(msg), mac, &len);
    return b64url(mac, len);
}

/* header.payload.signature from JSON texts; `sig` NULL = HMAC-SHA256 with
 * SECRET, otherwise used verbatim (may be ""). */
static char *hand_token(const char *header, const char *payload,
                        const char *sig)
{
    char *h = b64url(header, strlen(header));
    char *p = b64url(payload, strlen(payload));
    char *msg = malloc(strlen(h) + strlen(p) + 2);
    sprintf(msg, "%s.%s", h, p);
    char *s = sig ? strdup(sig) : hmac_b64("EVP_sha256", SECRET, msg);
    free(h);
    free(p);
    if (s == NULL) {
        free(msg);
        return NULL;
    }
    char *tok = malloc(strlen(msg) + strlen(s) + 2);
    sprintf(tok, "%s.%s", msg, s);
    free(msg);
    free(s);
    return tok;
}

static void expect_reject(const char *tok, time_t now, const char *why)
{
    char *claims = (char *)0x1;
    assert_int_equal(sg_auth_jwt_verify(tok, &opts, now, &claims, err,
                                        sizeof(err)), SG_EAUTH);
    assert_string_equal(err, why);
    assert_null(claims);
}

static char *expect_accept(const char *tok, time_t now)
{
    char *claims = NULL;
    err[0] = '\0';
    int rc = sg_auth_jwt_verify(tok, &opts, now, &claims, err, sizeof(err));
    assert_string_equal(err, "");
    assert_int_equal(rc, 0);
    assert_non_null(claims);
    return claims;
}

/* --------------------------------------------------------------- tests */

static void test_valid_token_and_claims(void **state)
{
    char *tok = sign("{\"sub\":\"alice\",\"role\":\"admin\"}", 3600);
    assert_string_equal(err, "");
    char *claims = expect_accept(tok, NOW + 10);
    json_t *j = json_loads(claims, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "sub")),
                        "alice");
    assert_string_equal(json_string_value(json_object_get(j, "role")),
                        "admin");
    assert_int_equal(json_integer_value(json_object_get(j, "iat")), NOW);
    assert_int_equal(json_integer_value(json_object_get(j, "exp")),
                     NOW + 3600);
    json_decref(j);
    free(claims);
    /* claims_json may be NULL */
    assert_int_equal(sg_auth_jwt_verify(tok, &opts, NOW, NULL, NULL, 0), 0);
    free(tok);
}

static void test_header_is_hs256_jwt(void **state)
{
    char *tok = sign("{\"sub\":\"a\"}", 60);
    char alg[64];
    assert_int_equal(auth_header_alg(tok, alg, sizeof(alg)), 0);
    assert_string_equal(alg, "HS256");
    assert_int_equal(strchr(strchr(tok, '.') + 1, '.') != NULL, 1);
    free(tok);
}

static void test_expired(void **state)
{
    char *tok = sign("{\"sub\":\"a\"}", 3600);
    free(expect_accept(tok, NOW + 3599));
    expect_reject(tok, NOW + 3600, "token expired");
    expect_reject(tok, NOW + 99999, "token expired");
    free(tok);
}

static void test_expired_within_leeway(void **state)
{
    char *tok = sign("{\"sub\":\"a\"}", 3600);
    opts.leeway = 30;
    free(expect_accept(tok, NOW + 3600 + 10));
    free(expect_accept(tok, NOW + 3600 + 29));
    expect_reject(tok, NOW + 3600 + 30, "token expired");
    opts.leeway = 5;
    expect_reject(tok, NOW + 3600 + 10, "token expired");
    free(tok);
}

static void test_nbf(void **state)
{
    char claims[128];
    snprintf(claims, sizeof(claims), "{\"sub\":\"a\",\"nbf\":%ld}",
             (long)NOW + 100);
    char *tok = sign(claims, 3600);
    expect_reject(tok, NOW, "token not yet valid (nbf)");
    free(expect_accept(tok, NOW + 100));
    opts.leeway = 200;
    free(expect_accept(tok, NOW));
    free(tok);
    tok = sign("{\"sub\":\"a\",\"nbf\":\"soon\"}", 3600);
    expect_reject(tok, NOW, "invalid nbf claim");
    free(tok);
}

static void test_missing_or_bad_exp(void **state)
{
    char *tok = sign("{\"sub\":\"a\"}", 0); /* ttl 0: no exp, no iat */
    expect_reject(tok, NOW, "missing exp claim");
    free(tok);
    tok = sign("{\"sub\":\"a\",\"exp\":\"tomorrow\"}", 0);
    expect_reject(tok, NOW, "invalid exp claim");
    free(tok);
    tok = sign("{\"sub\":\"a\",\"exp\":null}", 3600); /* present: kept */
    expect_reject(tok, NOW, "invalid exp claim");
    free(tok);
}

static void test_sign_keeps_given_exp(void **state)
{
    char *tok = sign("{\"sub\":\"a\",\"exp\":1700000005}", 3600);
    free(expect_accept(tok, NOW + 4));
    expect_reject(tok, NOW + 5, "token expired");
    free(tok);
}

static void test_wrong_signature(void **state)
{
    opts.secret = "another-secret";
    char *tok = sign("{\"sub\":\"a\"}", 3600);
    opts.secret = SECRET;
    expect_reject(tok, NOW, "malformed token or bad signature");
    free(tok);
    /* a payload swapped under a valid signature */
    tok = sign("{\"sub\":\"a\"}", 3600);
    char *evil = hand_token("{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                            "{\"sub\":\"root\",\"exp\":9999999999}", "x");
    char *sig = strrchr(tok, '.');
    char *forged = malloc(strlen(evil) + strlen(sig) + 1);
    memcpy(forged, evil, (size_t)(strrchr(evil, '.') - evil));
    strcpy(forged + (strrchr(evil, '.') - evil), sig);
    expect_reject(forged, NOW, "malformed token or bad signature");
    free(forged);
    free(evil);
    free(tok);
}

static void test_alg_none(void **state)
{
    const char *payload = "{\"sub\":\"a\",\"exp\":9999999999}";
    char *tok = hand_token("{\"alg\":\"none\"}", payload, "");
    expect_reject(tok, NOW, "algorithm none not allowed (expected HS256)");
    free(tok);
    tok = hand_token("{\"alg\":\"None\",\"typ\":\"JWT\"}", payload, "");
    expect_reject(tok, NOW, "algorithm None not allowed (expected HS256)");
    free(tok);
    /* none with a (stolen) HS256 signature still fails */
    tok = hand_token("{\"alg\":\"none\"}", payload, "c2lnbmF0dXJl");
    expect_reject(tok, NOW, "algorithm none not allowed (expected HS256)");
    free(tok);
}

static void test_hs384_against_hs256(void **state)
{
    opts.algorithm = "HS384";
    char *tok = sign("{\"sub\":\"a\"}", 3600);
    free(expect_accept(tok, NOW)); /* fine where HS384 is configured */
    opts.algorithm = "HS256";
    expect_reject(tok, NOW, "algorithm HS384 not allowed (expected HS256)");
    free(tok);
}

static void test_rs256_header(void **state)
{
    char *tok = hand_token("{\"alg\":\"RS256\",\"typ\":\"JWT\"}",
                           "{\"sub\":\"a\",\"exp\":9999999999}",
                           "AAAA-garbage-signature_AAAA");
    expect_reject(tok, NOW, "algorithm RS256 not allowed (expected HS256)");
    free(tok);
}

static void test_hostile_alg_not_echoed(void **state)
{
    char *tok = hand_token("{\"alg\":\"HS256\\n<script>\"}",
                           "{\"exp\":9999999999}", "AAAA");
    expect_reject(tok, NOW, "algorithm (invalid) not allowed (expected "
                            "HS256)");
    free(tok);
    tok = hand_token("{\"alg\":256}", "{\"exp\":9999999999}", "AAAA");
    expect_reject(tok, NOW, "malformed token or bad signature");
    free(tok);
}

static void test_garbage(void **state)
{
    expect_reject("abc.def", NOW, "malformed token or bad signature");
    expect_reject("abc", NOW, "malformed token or bad signature");
    expect_reject("...", NOW, "malformed token or bad signature");
    expect_reject("e30.e30.", NOW, "malformed token or bad signature");
    expect_reject("!!!.e30.AAAA", NOW, "malformed token or bad signature");
    expect_reject("", NOW, "empty token");
    expect_reject("Bearer ", NOW, "empty token");
    expect_reject(NULL, NOW, "empty token");
    char *big = malloc(AUTH_MAX_TOKEN + 2);
    memset(big, 'a', AUTH_MAX_TOKEN + 1);
    big[AUTH_MAX_TOKEN + 1] = '\0';
    expect_reject(big, NOW, "token too long");
    free(big);
}

static void test_bearer_prefix(void **state)
{
    char *tok = sign("{\"sub\":\"a\"}", 3600);
    char buf[1024];
    snprintf(buf, sizeof(buf), "Bearer %s", tok);
    free(expect_accept(buf, NOW));
    snprintf(buf, sizeof(buf), "bearer  %s", tok);
    free(expect_accept(buf, NOW));
    snprintf(buf, sizeof(buf), "Token %s", tok);
    expect_reject(buf, NOW, "malformed token or bad signature");
    free(tok);
}

static void test_issuer(void **state)
{
    char *tok = sign("{\"sub\":\"a\",\"iss\":\"streamgate\"}", 3600);
    char *noiss = sign("{\"sub\":\"a\"}", 3600);
    free(expect_accept(tok, NOW)); /* not configured: not checked */
    opts.issuer = "streamgate";
    free(expect_accept(tok, NOW));
    expect_reject(noiss, NOW, "issuer mismatch");
    opts.issuer = "someone-else";
    expect_reject(tok, NOW, "issuer mismatch");
    free(tok);
    free(noiss);
}

static void test_audience(void **state)
{
    char *one = sign("{\"sub\":\"a\",\"aud\":\"chat\"}", 3600);
    char *many = sign("{\"sub\":\"a\",\"aud\":[\"x\",\"chat\"]}", 3600);
    char *none = sign("{\"sub\":\"a\",\"aud\":[\"x\",3]}", 3600);
    opts.audience = "chat";
    free(expect_accept(one, NOW));
    free(expect_accept(many, NOW));
    expect_reject(none, NOW, "audience mismatch");
    opts.audience = "admin";
    expect_reject(one, NOW, "audience mismatch");
    expect_reject(many, NOW, "audience mismatch");
    free(one);
    free(many);
    free(none);
}

/* A token built without libjwt (as PyJWT would build it) verifies. */
static void test_hand_built_hs256_interop(void **state)
{
    char *tok = hand_token("{\"typ\":\"JWT\",\"alg\":\"HS256\"}",
                           "{\"sub\":\"bob\",\"exp\":1700003600.5}", NULL);
    if (tok == NULL)
        skip(); /* no libcrypto HMAC reachable */
    char *claims = expect_accept(tok, NOW);
    assert_non_null(strstr(claims, "\"sub\":\"bob\""));
    free(claims);
    expect_reject(tok, NOW + 3601, "token expired");
    free(tok);
}

static void test_bad_options(void **state)
{
    char *tok = NULL;
    opts.secret = "";
    assert_int_equal(sg_auth_jwt_verify("a.b.c", &opts, NOW, NULL, err,
                                        sizeof(err)), SG_EINVAL);
    assert_string_equal(err, "jwt secret is empty (expected a non-empty "
                             "key)");
    opts.secret = NULL;
    assert_int_equal(sg_auth_jwt_sign("{}", &opts, NOW, 60, &tok, err,
                                      sizeof(err)), SG_EINVAL);
    assert_null(tok);
    opts.secret = SECRET;
    opts.algorithm = "RS256";
    assert_int_equal(sg_auth_jwt_verify("a.b.c", &opts, NOW, NULL, err,
                                        sizeof(err)), SG_EINVAL);
    assert_string_equal(err, "bad jwt algorithm 'RS256' (expected HS256, "
                             "HS384 or HS512)");
    opts.algorithm = "none";
    assert_int_equal(sg_auth_jwt_sign("{}", &opts, NOW, 60, &tok, err,
                                      sizeof(err)), SG_EINVAL);
    opts.algorithm = NULL;
    assert_int_equal(sg_auth_jwt_sign("{}", &opts, NOW, 60, &tok, err,
                                      sizeof(err)), SG_EINVAL);
    assert_string_equal(err, "bad jwt algorithm '' (expected HS256, HS384 "
                             "or HS512)");
    opts.algorithm = "HS512";
    opts.leeway = -1;
    assert_int_equal(sg_auth_jwt_verify("a.b.c", &opts, NOW, NULL, err,
                                        sizeof(err)), SG_EINVAL);
    assert_string_equal(err, "bad jwt leeway -1 (expected >= 0)");
}

static void test_sign_bad_claims(void **state)
{
    char *tok = (char *)0x1;
    assert_int_equal(sg_auth_jwt_sign("[1,2]", &opts, NOW, 60, &tok, err,
                                      sizeof(err)), SG_EINVAL);
    assert_string_equal(err, "claims must be a JSON object");
    assert_null(tok);
    assert_int_equal(sg_auth_jwt_sign("{\"sub\":", &opts, NOW, 60, &tok, err,
                                      sizeof(err)), SG_EINVAL);
    assert_string_equal(err, "claims must be a JSON object");
    /* NULL claims means {} */
    assert_int_equal(sg_auth_jwt_sign(NULL, &opts, NOW, 60, &tok, err,
                                      sizeof(err)), 0);
    char *claims = expect_accept(tok, NOW);
    assert_string_equal(claims, "{\"exp\":1700000060,\"iat\":1700000000}");
    free(claims);
    free(tok);
}

static void test_small_err_buffer(void **state)
{
    char small[6];
    assert_int_equal(sg_auth_jwt_verify("abc.def", &opts, NOW, NULL, small,
                                        sizeof(small)), SG_EAUTH);
    assert_string_equal(small, "malfo");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup(f, setup)
        T(test_valid_token_and_claims),
        T(test_header_is_hs256_jwt),
        T(test_expired),
        T(test_expired_within_leeway),
        T(test_nbf),
        T(test_missing_or_bad_exp),
        T(test_sign_keeps_given_exp),
        T(test_wrong_signature),
        T(test_alg_none),
        T(test_hs384_against_hs256),
        T(test_rs256_header),
        T(test_hostile_alg_not_echoed),
        T(test_garbage),
        T(test_bearer_prefix),
        T(test_issuer),
        T(test_audience),
        T(test_hand_built_hs256_interop),
        T(test_bad_options),
        T(test_sign_bad_claims),
        T(test_small_err_buffer),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
