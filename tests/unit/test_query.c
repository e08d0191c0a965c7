/* Unit tests for query.c: parameter lookup, percent-decoding and session-id
 * validation. Edge cases are the point. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../src/error.c"
#include "../../src/query.c"

/* Looks `name` up and checks the outcome: rc, and the value when rc is 0. */
static void expect_get(const char *query, const char *name, int rc,
                       const char *want)
{
    char *v = (char *)0x1;

    assert_int_equal(sg_query_get(query, name, &v), rc);
    if (rc == 0) {
        assert_non_null(v);
        assert_string_equal(v, want);
        free(v);
    } else {
        assert_null(v);
    }
}

/* ---- sg_query_get ----------------------------------------------------- */

static void test_get_simple(void **state)
{
    expect_get("session_id=abc&user_id=u1", "session_id", 0, "abc");
    expect_get("session_id=abc&user_id=u1", "user_id", 0, "u1");
}

static void test_get_empty_and_null_query(void **state)
{
    expect_get("", "a", SG_ENOTFOUND, NULL);
    expect_get(NULL, "a", SG_ENOTFOUND, NULL);
    expect_get("&&&", "a", SG_ENOTFOUND, NULL);
}

static void test_get_absent(void **state)
{
    expect_get("ab=1&b=2", "a", SG_ENOTFOUND, NULL);
    expect_get("a1=1", "a", SG_ENOTFOUND, NULL);
    /* A value containing the name is not the name. */
    expect_get("x=a", "a", SG_ENOTFOUND, NULL);
    /* Names are case-sensitive. */
    expect_get("A=1", "a", SG_ENOTFOUND, NULL);
}

static void test_get_first_occurrence_wins(void **state)
{
    expect_get("a=1&a=2", "a", 0, "1");
    expect_get("a&a=2", "a", 0, "");
    expect_get("b=0&a=first&b=1&a=second", "a", 0, "first");
}

static void test_get_first_bad_occurrence_is_not_skipped(void **state)
{
    /* The first occurrence decides, even when it is malformed. */
    expect_get("a=%zz&a=ok", "a", SG_EINVAL, NULL);
}

static void test_get_name_without_equals(void **state)
{
    expect_get("a", "a", 0, "");
    expect_get("x=1&a&y=2", "a", 0, "");
    expect_get("a=", "a", 0, "");
}

static void test_get_empty_segments_skipped(void **state)
{
    expect_get("&&a=1&&", "a", 0, "1");
    expect_get("&a=1", "a", 0, "1");
}

static void test_get_value_with_equals(void **state)
{
    expect_get("t=a=b=c", "t", 0, "a=b=c");
}

static void test_get_escaped_ampersand_does_not_split(void **state)
{
    /* Defect 25: decoding before splitting turned "%26b=2" into a new
     * parameter. */
    expect_get("a=x%26b%3D2", "a", 0, "x&b=2");
    expect_get("a=x%26b%3D2", "b", SG_ENOTFOUND, NULL);
}

static void test_get_decodes_name(void **state)
{
    expect_get("session%5Fid=s1", "session_id", 0, "s1");
}

static void test_get_plus_kept(void **state)
{
    expect_get("q=a+b", "q", 0, "a+b");
}

static void test_get_decodes_value(void **state)
{
    expect_get("m=hello%20world%21", "m", 0, "hello world!");
    expect_get("u=%C3%A9", "u", 0, "\xc3\xa9");
}

static void test_get_bad_escapes(void **state)
{
    expect_get("a=%zz", "a", SG_EINVAL, NULL);
    expect_get("a=%2", "a", SG_EINVAL, NULL);
    expect_get("a=%", "a", SG_EINVAL, NULL);
    expect_get("a=x%00y", "a", SG_EINVAL, NULL);
    expect_get("a=%2&b=1", "a", SG_EINVAL, NULL);
    expect_get("a=%g1", "a", SG_EINVAL, NULL);
}

static void test_get_bad_unrelated_param_ignored(void **state)
{
    expect_get("x=%zz&a=1", "a", 0, "1");
    expect_get("%zz=1&a=2", "a", 0, "2");
}

/* ---- sg_query_decode -------------------------------------------------- */

static void expect_decode(const char *in, size_t len, int rc, const char *want)
{
    char *out = (char *)0x1;

    assert_int_equal(sg_query_decode(in, len, &out), rc);
    if (rc == 0) {
        assert_string_equal(out, want);
        free(out);
    } else {
        assert_null(out);
    }
}

static void test_decode_cases(void **state)
{
    expect_decode("", 0, 0, "");
    expect_decode("abc", 3, 0, "abc");
    expect_decode("%41%62", 6, 0, "Ab");
    expect_decode("%7e%7E", 6, 0, "~~");
    expect_decode("%ff", 3, 0, "\xff");
    expect_decode("%", 1, SG_EINVAL, NULL);
    expect_decode("%4", 2, SG_EINVAL, NULL);
    expect_decode("a%", 2, SG_EINVAL, NULL);
    expect_decode("%00", 3, SG_EINVAL, NULL);
    expect_decode("%x1", 3, SG_EINVAL, NULL);
    expect_decode("%1x", 3, SG_EINVAL, NULL);
}

static void test_decode_respects_len(void **state)
{
    /* Only `len` bytes are read: the escape cut by len is incomplete. */
    expect_decode("ab%41", 2, 0, "ab");
    expect_decode("ab%41", 4, SG_EINVAL, NULL);
}

static void test_decode_raw_nul_rejected(void **state)
{
    expect_decode("a\0b", 3, SG_EINVAL, NULL);
}

/* ---- sg_query_session_id_valid ---------------------------------------- */

#define SID_ERR "session_id must be 1-128 characters of A-Z a-z 0-9 _ . : -"

static void expect_sid(const char *sid, int ok)
{
    char err[128] = "untouched";

    assert_int_equal(sg_query_session_id_valid(sid, err, sizeof(err)), ok);
    assert_string_equal(err, ok ? "untouched" : SID_ERR);
}

static void test_sid_charset_classes(void **state)
{
    expect_sid("ABCXYZ", 1);
    expect_sid("abcxyz", 1);
    expect_sid("0123456789", 1);
    expect_sid("_", 1);
    expect_sid(".", 1);
    expect_sid(":", 1);
    expect_sid("-", 1);
    expect_sid("Sess-1_a.b:c", 1);
}

static void test_sid_length_bounds(void **state)
{
    char sid[131];

    memset(sid, 'a', sizeof(sid));
    sid[1] = '\0';
    expect_sid(sid, 1);
    sid[1] = 'a';
    sid[128] = '\0';
    expect_sid(sid, 1);
    sid[128] = 'a';
    sid[129] = '\0';
    expect_sid(sid, 0);
}

static void test_sid_rejects(void **state)
{
    expect_sid("", 0);
    expect_sid(NULL, 0);
    expect_sid("a b", 0);
    expect_sid("a/b", 0);
    expect_sid("a+b", 0);
    expect_sid("a%20b", 0);
    expect_sid("caf\xc3\xa9", 0);  /* unicode é */
    expect_sid("\xe4\xbc\x9a", 0); /* unicode CJK */
    expect_sid("a\nb", 0);
    expect_sid("a&b", 0);
}

static void test_sid_null_err_buffer(void **state)
{
    assert_int_equal(sg_query_session_id_valid("", NULL, 0), 0);
    assert_int_equal(sg_query_session_id_valid("ok", NULL, 0), 1);
}

static void test_sid_small_err_buffer_truncates(void **state)
{
    char err[8];

    assert_int_equal(sg_query_session_id_valid("", err, sizeof(err)), 0);
    assert_string_equal(err, "session");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_simple),
        cmocka_unit_test(test_get_empty_and_null_query),
        cmocka_unit_test(test_get_absent),
        cmocka_unit_test(test_get_first_occurrence_wins),
        cmocka_unit_test(test_get_first_bad_occurrence_is_not_skipped),
        cmocka_unit_test(test_get_name_without_equals),
        cmocka_unit_test(test_get_empty_segments_skipped),
        cmocka_unit_test(test_get_value_with_equals),
        cmocka_unit_test(test_get_escaped_ampersand_does_not_split),
        cmocka_unit_test(test_get_decodes_name),
        cmocka_unit_test(test_get_plus_kept),
        cmocka_unit_test(test_get_decodes_value),
        cmocka_unit_test(test_get_bad_escapes),
        cmocka_unit_test(test_get_bad_unrelated_param_ignored),
        cmocka_unit_test(test_decode_cases),
        cmocka_unit_test(test_decode_respects_len),
        cmocka_unit_test(test_decode_raw_nul_rejected),
        cmocka_unit_test(test_sid_charset_classes),
        cmocka_unit_test(test_sid_length_bounds),
        cmocka_unit_test(test_sid_rejects),
        cmocka_unit_test(test_sid_null_err_buffer),
        cmocka_unit_test(test_sid_small_err_buffer_truncates),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
