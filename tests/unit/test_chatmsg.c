/* Unit tests for chatmsg.c: lenient parsing of producer messages (Python
 * compact and json.dumps styles), rejection reasons, and the exact JSON of
 * every frame. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/error.c"
#include "../../src/buf.c"
#include "../../src/chatmsg.c"
#include "../../src/stream.h"

/* "Xin chào, Đã hủy" in raw UTF-8 */
#define VI "Xin ch\xc3\xa0o, \xc4\x90\xc3\xa3 h\xe1\xbb\xa7y"

static char err[256];

static int parse(const char *json, sg_chatmsg_t *m)
{
    err[0] = '\0';
    return sg_chatmsg_parse(json, strlen(json), m, err, sizeof(err));
}

static void expect_reject(const char *json, size_t len, const char *why)
{
    sg_chatmsg_t m;
    memset(&m, 0xab, sizeof(m));
    assert_int_equal(sg_chatmsg_parse(json, len, &m, err, sizeof(err)),
                     SG_EPARSE);
    assert_string_equal(err, why);
    assert_null(m.message_id);
    assert_null(m.content);
    assert_int_equal(m.content_len, 0);
    assert_int_equal(m.timestamp, 0);
}

static void expect_buf(sg_buf_t *b, const char *want)
{
    assert_non_null(b);
    assert_string_equal((const char *)sg_buf_data(b), want);
    assert_int_equal(b->len, strlen(want));
    sg_buf_unref(b);
}

/* ---------------------------------------------------------- parsing */

static void test_python_compact_utf8(void **state)
{
    sg_chatmsg_t m;
    const char *in = "{\"message_id\":\"m1\",\"session_id\":\"s1\","
                     "\"user_id\":\"u1\",\"role\":\"assistant\","
                     "\"content\":\"" VI "\",\"chunk\":\"h\xe1\xbb\xa7y \","
                     "\"timestamp\":1700000000123,\"is_complete\":false}";
    assert_int_equal(parse(in, &m), 0);
    assert_string_equal(m.message_id, "m1");
    assert_string_equal(m.session_id, "s1");
    assert_string_equal(m.user_id, "u1");
    assert_string_equal(m.role, "assistant");
    assert_string_equal(m.content, VI);
    assert_int_equal(m.content_len, strlen(VI));
    assert_string_equal(m.chunk, "h\xe1\xbb\xa7y ");
    assert_int_equal(m.chunk_len, 6);
    assert_int_equal(m.timestamp, 1700000000123LL);
    assert_int_equal(m.is_complete, 0);
    sg_chatmsg_clear(&m);
    assert_null(m.content);
}

static void test_json_dumps_style_escapes(void **state)
{
    sg_chatmsg_t m;
    const char *in = "{\"message_id\": \"m2\", \"session_id\": \"s1\", "
                     "\"user_id\": \"u1\", \"role\": \"assistant\", "
                     "\"content\": \"Xin ch\\u00e0o, \\u0110\\u00e3 "
                     "h\\u1ee7y\", \"chunk\": null, "
                     "\"timestamp\": 1700000000999, \"is_complete\": true}";
    assert_int_equal(parse(in, &m), 0);
    assert_string_equal(m.content, VI);
    assert_null(m.chunk);
    assert_int_equal(m.chunk_len, 0);
    assert_int_equal(m.is_complete, 1);
    assert_int_equal(m.timestamp, 1700000000999LL);
    sg_chatmsg_clear(&m);
}

static void test_extra_keys_and_missing_optional(void **state)
{
    sg_chatmsg_t m;
    const char *in = "{\"extra\":{\"a\":[1,2,{\"b\":null}]},\"role\":\"user\","
                     "\"message_id\":\"m3\",\"content\":\"hi\","
                     "\"model\":\"gpt\",\"tokens\":12.5}";
    assert_int_equal(parse(in, &m), 0);
    assert_string_equal(m.role, "user");
    assert_null(m.session_id);
    assert_null(m.user_id);
    assert_null(m.chunk);
    assert_int_equal(m.is_complete, -1);
    assert_int_equal(m.timestamp, 0);
    sg_chatmsg_clear(&m);
}

static void test_lenient_field_types(void **state)
{
    sg_chatmsg_t m;
    /* non-string optionals are treated as absent; null is_complete is -1 */
    const char *in = "{\"message_id\":\"m\",\"role\":\"system\","
                     "\"content\":\"\",\"session_id\":5,\"user_id\":null,"
                     "\"chunk\":7,\"is_complete\":null,\"timestamp\":\"x\"}";
    assert_int_equal(parse(in, &m), 0);
    assert_string_equal(m.role, "system");
    assert_string_equal(m.content, "");
    assert_null(m.session_id);
    assert_null(m.user_id);
    assert_null(m.chunk);
    assert_int_equal(m.is_complete, -1);
    assert_int_equal(m.timestamp, 0);
    sg_chatmsg_clear(&m);
}

static void test_timestamp_forms(void **state)
{
    static const struct {
        const char *ts;
        int64_t want;
    } cases[] = {
        {"1700000000123", 1700000000123LL},
        {"1.700000000123e12", 1700000000123LL},
        {"1700000000123.0", 1700000000123LL},
        {"1.5", 0},
        {"-5", 0},                      /* negative: stamped by the stream */
        {"9007199254740992", 9007199254740992LL},      /* 2^53 */
        {"9007199254740993", 0},        /* past 2^53: not exact in Lua */
        {"9223372036854775807", 0},
        {"1e300", 0},
        {"true", 0},
        {"null", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char in[160];
        sg_chatmsg_t m;
        snprintf(in, sizeof(in), "{\"message_id\":\"m\",\"role\":\"user\","
                 "\"content\":\"c\",\"timestamp\":%s}", cases[i].ts);
        assert_int_equal(parse(in, &m), 0);
        assert_int_equal(m.timestamp, cases[i].want);
        sg_chatmsg_clear(&m);
    }
}

static void test_not_an_object(void **state)
{
    expect_reject("[1,2]", 5, "not a JSON object");
    const char *arr = "[{\"message_id\":\"m\",\"role\":\"user\","
                      "\"content\":\"c\"}]";
    expect_reject(arr, strlen(arr), "not a JSON object");
    expect_reject("\"str\"", 5, "not a JSON object");
    expect_reject("42", 2, "not a JSON object");
    expect_reject("null", 4, "not a JSON object");
}

static void test_required_fields(void **state)
{
    const char *cases[][2] = {
        {"{\"role\":\"user\",\"content\":\"c\"}",
         "missing string field message_id"},
        {"{\"message_id\":7,\"role\":\"user\",\"content\":\"c\"}",
         "missing string field message_id"},
        {"{\"message_id\":\"m\",\"content\":\"c\"}",
         "missing string field role"},
        {"{\"message_id\":\"m\",\"role\":[\"user\"],\"content\":\"c\"}",
         "missing string field role"},
        {"{\"message_id\":\"m\",\"role\":\"user\"}",
         "missing string field content"},
        {"{\"message_id\":\"m\",\"role\":\"user\",\"content\":null}",
         "missing string field content"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_reject(cases[i][0], strlen(cases[i][0]), cases[i][1]);
}

static void test_invalid_json(void **state)
{
    sg_chatmsg_t m;
    expect_reject("", 0, "invalid JSON: unexpected token near end of file");
    assert_int_equal(parse("{\"message_id\":", &m), SG_EPARSE);
    assert_memory_equal(err, "invalid JSON: ", 14);
    /* trailing garbage after the object */
    assert_int_equal(parse("{\"message_id\":\"m\",\"role\":\"u\","
                           "\"content\":\"c\"} x", &m), SG_EPARSE);
    assert_memory_equal(err, "invalid JSON: ", 14);
}

static void test_invalid_utf8(void **state)
{
    static const char *bad[] = {
        "{\"message_id\":\"m\",\"role\":\"user\",\"content\":\"a\xff\"}",
        "{\"message_id\":\"m\",\"role\":\"user\",\"content\":\"\xc0\xaf\"}",
        "{\"message_id\":\"m\",\"role\":\"user\",\"content\":\"\xed\xa0\x80\"}",
        "{\"message_id\":\"m\",\"role\":\"user\",\"content\":\"\xe1\x80\"}",
    };
    for (size_t i = 0; i < 4; i++) {
        sg_chatmsg_t m;
        assert_int_equal(parse(bad[i], &m), SG_EPARSE);
        assert_memory_equal(err, "invalid JSON: ", 14);
        for (const char *p = err; *p; p++)
            assert_true(*p >= 0x20 && *p < 0x7f);
        assert_null(m.content);
    }
}

static char *nested(int depth, const char *prefix, const char *suffix)
{
    size_t n = strlen(prefix) + strlen(suffix) + 2 * (size_t)depth + 1;
    char *s = malloc(n);
    assert_non_null(s);
    strcpy(s, prefix);
    size_t o = strlen(prefix);
    memset(s + o, '[', (size_t)depth);
    o += (size_t)depth;
    memset(s + o, ']', (size_t)depth);
    o += (size_t)depth;
    strcpy(s + o, suffix);
    return s;
}

static void test_deeply_nested_junk(void **state)
{
    sg_chatmsg_t m;
    const char *pre = "{\"message_id\":\"m\",\"role\":\"user\","
                      "\"content\":\"c\",\"junk\":";
    char *ok = nested(500, pre, "}");
    assert_int_equal(parse(ok, &m), 0);
    assert_string_equal(m.content, "c");
    sg_chatmsg_clear(&m);
    free(ok);
    char *deep = nested(100000, pre, "}");
    assert_int_equal(parse(deep, &m), SG_EPARSE);
    assert_string_equal(err, "invalid JSON: maximum parsing depth reached "
                             "near '['");
    free(deep);
}

static void test_content_with_nul(void **state)
{
    sg_chatmsg_t m;
    const char *in = "{\"message_id\":\"m\",\"role\":\"assistant\","
                     "\"content\":\"a\\u0000b\",\"chunk\":\"\\u0000\"}";
    assert_int_equal(parse(in, &m), 0);
    assert_int_equal(m.content_len, 3);
    assert_memory_equal(m.content, "a\0b", 4);
    assert_int_equal(m.chunk_len, 1);
    size_t len = 0;
    char *out = sg_chatmsg_to_json(&m, &len);
    assert_string_equal(out,
                        "{\"message_id\":\"m\",\"session_id\":null,"
                        "\"user_id\":null,\"role\":\"assistant\","
                        "\"content\":\"a\\u0000b\",\"chunk\":\"\\u0000\","
                        "\"timestamp\":0,\"is_complete\":null}");
    assert_int_equal(len, strlen(out));
    free(out);
    sg_chatmsg_clear(&m);
}

/* ----------------------------------------------------------- output */

static void test_to_json_exact(void **state)
{
    sg_chatmsg_t m;
    const char *in = "{\"is_complete\": false, \"timestamp\": 1700000000123, "
                     "\"chunk\": \"h\\u1ee7y \", \"content\": \"" VI "\", "
                     "\"role\": \"assistant\", \"user_id\": \"u1\", "
                     "\"session_id\": \"s1\", \"message_id\": \"m1\", "
                     "\"x\": 1}";
    assert_int_equal(parse(in, &m), 0);
    size_t len = 0;
    char *out = sg_chatmsg_to_json(&m, &len);
    /* key order fixed, raw UTF-8 kept, unknown keys dropped */
    assert_string_equal(out, "{\"message_id\":\"m1\",\"session_id\":\"s1\","
                             "\"user_id\":\"u1\",\"role\":\"assistant\","
                             "\"content\":\"" VI "\",\"chunk\":\"h\xe1\xbb\xa7"
                             "y \",\"timestamp\":1700000000123,"
                             "\"is_complete\":false}");
    assert_int_equal(len, strlen(out));
    free(out);
    sg_chatmsg_clear(&m);
}

static void test_to_json_escapes_and_repairs(void **state)
{
    static char content[] = "line1\nq\"b\\s/t\x01 bad\xff!";
    sg_chatmsg_t m = {
        .message_id = "m\"1",
        .role = "user",
        .content = content,
        .content_len = sizeof(content) - 1,
        .timestamp = -1,
        .is_complete = 1,
    };
    char *out = sg_chatmsg_to_json(&m, NULL);
    assert_string_equal(out, "{\"message_id\":\"m\\\"1\",\"session_id\":null,"
                             "\"user_id\":null,\"role\":\"user\","
                             "\"content\":\"line1\\nq\\\"b\\\\s/t\\u0001 "
                             "bad\xef\xbf\xbd!\",\"chunk\":null,"
                             "\"timestamp\":-1,\"is_complete\":true}");
    free(out);
}

static void test_utf8_repair(void **state)
{
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"ok", "ok"},
        {"\xff", "\xef\xbf\xbd"},
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xed\xa0\x80x", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdx"},
        {"a\xe1\x80", "a\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                             "\xef\xbf\xbd"},
        {"\xf0\x9f\x98\x80\xe1", "\xf0\x9f\x98\x80\xef\xbf\xbd"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *j = chatmsg_cstr(cases[i].in);
        assert_non_null(j);
        assert_string_equal(json_string_value(j), cases[i].want);
        json_decref(j);
    }
    json_t *n = chatmsg_cstr(NULL);
    assert_true(json_is_null(n));
}

static void test_message_frame(void **state)
{
    sg_chatmsg_t m;
    const char *in = "{\"message_id\":\"m1\",\"session_id\":\"s1\","
                     "\"user_id\":\"u1\",\"role\":\"assistant\","
                     "\"content\":\"Hello world\",\"chunk\":\"world\","
                     "\"timestamp\":1700000000123,\"is_complete\":false}";
    assert_int_equal(parse(in, &m), 0);
    expect_buf(sg_chatmsg_message_frame(&m),
               "{\"type\":\"message\",\"data\":{\"message_id\":\"m1\","
               "\"session_id\":\"s1\",\"user_id\":\"u1\","
               "\"role\":\"assistant\",\"content\":\"Hello world\","
               "\"chunk\":\"world\",\"timestamp\":1700000000123,"
               "\"is_complete\":false}}");
    sg_chatmsg_clear(&m);
}

static void test_history_frame(void **state)
{
    const char *items[] = {
        "{\"message_id\":\"q1\",\"session_id\":\"s\",\"user_id\":\"u\","
        "\"role\":\"user\",\"content\":\"Xin ch\\u00e0o\","
        "\"timestamp\":1}",
        "{\"broken\":",
        "{\"message_id\": \"a1\", \"role\": \"assistant\", "
        "\"content\": \"Ch\xc3\xa0o b\xe1\xba\xa1n\", \"chunk\": null, "
        "\"timestamp\": 2, \"is_complete\": true, \"extra\": [1]}",
        "[]",
    };
    size_t lens[4];
    for (size_t i = 0; i < 4; i++)
        lens[i] = strlen(items[i]);
    size_t skipped = 99;
    expect_buf(sg_chatmsg_history_frame(items, lens, 4, &skipped),
               "{\"type\":\"history\",\"messages\":["
               "{\"message_id\":\"q1\",\"session_id\":\"s\","
               "\"user_id\":\"u\",\"role\":\"user\","
               "\"content\":\"Xin ch\xc3\xa0o\",\"chunk\":null,"
               "\"timestamp\":1,\"is_complete\":null},"
               "{\"message_id\":\"a1\",\"session_id\":null,"
               "\"user_id\":null,\"role\":\"assistant\","
               "\"content\":\"Ch\xc3\xa0o b\xe1\xba\xa1n\",\"chunk\":null,"
               "\"timestamp\":2,\"is_complete\":true}]}");
    assert_int_equal(skipped, 2);
    /* only the first lens[0] bytes are read */
    size_t short_len = 5;
    expect_buf(sg_chatmsg_history_frame(items, &short_len, 1, &skipped),
               "{\"type\":\"history\",\"messages\":[]}");
    assert_int_equal(skipped, 1);
}

static void test_history_frame_empty_and_large(void **state)
{
    size_t skipped = 99;
    expect_buf(sg_chatmsg_history_frame(NULL, NULL, 0, &skipped),
               "{\"type\":\"history\",\"messages\":[]}");
    assert_int_equal(skipped, 0);
    expect_buf(sg_chatmsg_history_frame(NULL, NULL, 0, NULL),
               "{\"type\":\"history\",\"messages\":[]}");

    /* beyond the 4 KiB stack buffer: the heap path */
    enum { N = 200 };
    char *items[N];
    size_t lens[N];
    for (int i = 0; i < N; i++) {
        items[i] = malloc(128);
        lens[i] = (size_t)sprintf(items[i], "{\"message_id\":\"m%d\","
                                  "\"role\":\"user\",\"content\":\"%d\"}",
                                  i, i);
    }
    sg_buf_t *b = sg_chatmsg_history_frame((const char *const *)items, lens,
                                           N, &skipped);
    assert_non_null(b);
    assert_true(b->len > 4096);
    assert_int_equal(strlen((char *)sg_buf_data(b)), b->len);
    json_t *doc = json_loadb((char *)sg_buf_data(b), b->len, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(doc, "messages")), N);
    json_t *last = json_array_get(json_object_get(doc, "messages"), N - 1);
    assert_string_equal(json_string_value(json_object_get(last, "content")),
                        "199");
    json_decref(doc);
    sg_buf_unref(b);
    for (int i = 0; i < N; i++)
        free(items[i]);
}

static void test_iso_format(void **state)
{
    char out[32];
    chatmsg_iso_format(0, 5, out, sizeof(out));
    assert_string_equal(out, "1970-01-01T00:00:00.005Z");
    chatmsg_iso_format(1700000000, 123, out, sizeof(out));
    assert_string_equal(out, "2023-11-14T22:13:20.123Z");
    chatmsg_iso_format(1700000000, 999, out, sizeof(out));
    assert_string_equal(out, "2023-11-14T22:13:20.999Z");
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" and close to time(NULL). */
static void assert_iso_now(const char *s, size_t n)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    assert_int_equal(n, 24);
    for (size_t i = 0; i < 24; i++) {
        if (shape[i] == 'd')
            assert_true(s[i] >= '0' && s[i] <= '9');
        else
            assert_int_equal(s[i], shape[i]);
    }
    struct tm tm = {0};
    assert_non_null(strptime(s, "%Y-%m-%dT%H:%M:%S", &tm));
    time_t t = timegm(&tm);
    assert_true(labs((long)(t - time(NULL))) <= 2);
}

static void test_iso_now(void **state)
{
    char out[32];
    sg_chatmsg_iso_now(out, sizeof(out));
    assert_iso_now(out, strlen(out));
}

/* Checks `prefix` + ISO + `suffix` exactly. */
static void expect_frame_with_ts(sg_buf_t *b, const char *prefix,
                                 const char *suffix)
{
    assert_non_null(b);
    const char *s = (const char *)sg_buf_data(b);
    size_t np = strlen(prefix), ns = strlen(suffix);
    assert_int_equal(b->len, np + 24 + ns);
    assert_memory_equal(s, prefix, np);
    assert_iso_now(s + np, 24);
    assert_string_equal(s + np + 24, suffix);
    sg_buf_unref(b);
}

static void test_welcome_frame(void **state)
{
    sg_welcome_info_t node = {"node-1", NULL, 0, -1};
    expect_frame_with_ts(sg_chatmsg_welcome_frame("s1", &node),
                         "{\"type\":\"welcome\",\"sessionId\":\"s1\","
                         "\"timestamp\":\"",
                         "\",\"node\":\"node-1\"}");
    sg_welcome_info_t full = {"n", "0123456789abcdef", 42, 1};
    expect_frame_with_ts(sg_chatmsg_welcome_frame("s1", &full),
                         "{\"type\":\"welcome\",\"sessionId\":\"s1\","
                         "\"timestamp\":\"",
                         "\",\"node\":\"n\",\"epoch\":\"0123456789abcdef\","
                         "\"offset\":42,\"recovered\":true}");
    expect_frame_with_ts(sg_chatmsg_welcome_frame("a.b:c-d_e", NULL),
                         "{\"type\":\"welcome\",\"sessionId\":\"a.b:c-d_e\","
                         "\"timestamp\":\"",
                         "\"}");
}

static void test_chunk_frame_full_and_delta(void **state)
{
    sg_chunk_t c = {0};
    c.offset = 7;
    c.epoch = "e";
    c.session_id = "s1";
    c.message_id = "m1";
    c.user_id = "u1";
    c.role = "assistant";
    c.content = "Hello wo";
    c.content_len = 8;
    c.delta = "wo";
    c.delta_len = 2;
    c.index = 1;
    c.timestamp = 1700000000123;
    expect_buf(sg_chatmsg_chunk_frame(&c, 0),
               "{\"type\":\"message\",\"data\":{\"message_id\":\"m1\","
               "\"session_id\":\"s1\",\"user_id\":\"u1\",\"role\":"
               "\"assistant\",\"content\":\"Hello wo\",\"chunk\":\"wo\","
               "\"timestamp\":1700000000123,\"is_complete\":false},"
               "\"offset\":7,\"index\":1}");
    /* delta mode: no content on partials */
    expect_buf(sg_chatmsg_chunk_frame(&c, 1),
               "{\"type\":\"message\",\"data\":{\"message_id\":\"m1\","
               "\"session_id\":\"s1\",\"user_id\":\"u1\",\"role\":"
               "\"assistant\",\"chunk\":\"wo\",\"timestamp\":1700000000123,"
               "\"is_complete\":false},\"offset\":7,\"index\":1}");
    /* final: chunk null in full mode, content present in delta mode */
    c.is_complete = 1;
    c.delta = "";
    c.delta_len = 0;
    expect_buf(sg_chatmsg_chunk_frame(&c, 0),
               "{\"type\":\"message\",\"data\":{\"message_id\":\"m1\","
               "\"session_id\":\"s1\",\"user_id\":\"u1\",\"role\":"
               "\"assistant\",\"content\":\"Hello wo\",\"chunk\":null,"
               "\"timestamp\":1700000000123,\"is_complete\":true},"
               "\"offset\":7,\"index\":1}");
    expect_buf(sg_chatmsg_chunk_frame(&c, 1),
               "{\"type\":\"message\",\"data\":{\"message_id\":\"m1\","
               "\"session_id\":\"s1\",\"user_id\":\"u1\",\"role\":"
               "\"assistant\",\"content\":\"Hello wo\",\"chunk\":\"\","
               "\"timestamp\":1700000000123,\"is_complete\":true},"
               "\"offset\":7,\"index\":1}");
}

static void test_chunk_frame_snapshot(void **state)
{
    /* a snapshot has no delta: full mode sends null, delta mode the text */
    sg_chunk_t c = {0};
    c.offset = 3;
    c.session_id = "s";
    c.message_id = "m";
    c.content = "abc";
    c.content_len = 3;
    c.index = 2;
    expect_buf(sg_chatmsg_chunk_frame(&c, 0),
               "{\"type\":\"message\",\"data\":{\"message_id\":\"m\","
               "\"session_id\":\"s\",\"user_id\":null,\"role\":"
               "\"assistant\",\"content\":\"abc\",\"chunk\":null,"
               "\"timestamp\":0,\"is_complete\":false},\"offset\":3,"
               "\"index\":2}");
    expect_buf(sg_chatmsg_chunk_frame(&c, 1),
               "{\"type\":\"message\",\"data\":{\"message_id\":\"m\","
               "\"session_id\":\"s\",\"user_id\":null,\"role\":"
               "\"assistant\",\"chunk\":\"abc\",\"timestamp\":0,"
               "\"is_complete\":false},\"offset\":3,\"index\":2}");
}

static void test_error_frame(void **state)
{
    expect_frame_with_ts(sg_chatmsg_error_frame("unknown frame type "
                                                "\"foo\"\n\xff"),
                         "{\"type\":\"error\",\"error\":\"unknown frame type "
                         "\\\"foo\\\"\\n\xef\xbf\xbd\",\"timestamp\":\"",
                         "\"}");
    expect_frame_with_ts(sg_chatmsg_error_frame(NULL),
                         "{\"type\":\"error\",\"error\":\"\","
                         "\"timestamp\":\"", "\"}");
}

static void test_clear_null_and_twice(void **state)
{
    sg_chatmsg_t m;
    sg_chatmsg_clear(NULL);
    assert_int_equal(parse("{\"message_id\":\"m\",\"role\":\"u\","
                           "\"content\":\"c\"}", &m), 0);
    sg_chatmsg_clear(&m);
    sg_chatmsg_clear(&m);
    assert_null(m.role);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_python_compact_utf8),
        cmocka_unit_test(test_json_dumps_style_escapes),
        cmocka_unit_test(test_extra_keys_and_missing_optional),
        cmocka_unit_test(test_lenient_field_types),
        cmocka_unit_test(test_timestamp_forms),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_required_fields),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_deeply_nested_junk),
        cmocka_unit_test(test_content_with_nul),
        cmocka_unit_test(test_to_json_exact),
        cmocka_unit_test(test_to_json_escapes_and_repairs),
        cmocka_unit_test(test_utf8_repair),
        cmocka_unit_test(test_message_frame),
        cmocka_unit_test(test_history_frame),
        cmocka_unit_test(test_history_frame_empty_and_large),
        cmocka_unit_test(test_iso_format),
        cmocka_unit_test(test_iso_now),
        cmocka_unit_test(test_welcome_frame),
        cmocka_unit_test(test_chunk_frame_full_and_delta),
        cmocka_unit_test(test_chunk_frame_snapshot),
        cmocka_unit_test(test_error_frame),
        cmocka_unit_test(test_clear_null_and_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
