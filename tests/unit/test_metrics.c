/* Unit tests for metrics.c: exact exposition text, escaping, number format,
 * gauge clamp, name validation and the JSON rendering. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/error.c"
#include "../../src/log.c"
#include "../../src/metrics.c"

static sg_metrics_t *reg;

static int setup(void **state)
{
    reg = sg_metrics_new();
    return reg == NULL;
}

static int teardown(void **state)
{
    sg_metrics_free(reg);
    reg = NULL;
    return 0;
}

/* Renders and compares the whole text. */
static void expect_text(const char *want)
{
    char *out = NULL;
    size_t len = 99;
    assert_int_equal(sg_metrics_render(reg, &out, &len), 0);
    assert_non_null(out);
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    free(out);
}

static void expect_json(const char *name, const char *want)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(sg_metrics_render_json(reg, name, &out, &len), 0);
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    free(out);
}

static void test_empty_registry(void **state)
{
    expect_text("");
}

static void test_counter_no_labels_starts_at_zero(void **state)
{
    sg_metric_t *m = sg_metrics_register(reg, SG_METRIC_COUNTER,
                                         "stream_started_total",
                                         "Streams started.", NULL, NULL, 0);
    assert_non_null(m);
    expect_text("# HELP stream_started_total Streams started.\n"
                "# TYPE stream_started_total counter\n"
                "stream_started_total 0\n");
    sg_metric_inc(m);
    sg_metric_inc(m);
    sg_metric_add(m, NULL, 3);
    assert_true(sg_metric_get(m, NULL) == 5);
    expect_text("# HELP stream_started_total Streams started.\n"
                "# TYPE stream_started_total counter\n"
                "stream_started_total 5\n");
}

static void test_counter_negative_add_ignored(void **state)
{
    sg_metric_t *m = sg_metrics_register(reg, SG_METRIC_COUNTER, "c_total",
                                         "h", NULL, NULL, 0);
    sg_metric_add(m, NULL, 2);
    sg_metric_add(m, NULL, -1);
    assert_true(sg_metric_get(m, NULL) == 2);
}

static void test_labels_without_children_print_only_header(void **state)
{
    sg_metrics_register(reg, SG_METRIC_COUNTER, "errors_total", "Errors.",
                        "type,component", NULL, 0);
    expect_text("# HELP errors_total Errors.\n"
                "# TYPE errors_total counter\n");
}

static void test_counter_with_labels(void **state)
{
    sg_metric_t *m = sg_metrics_register(reg, SG_METRIC_COUNTER,
                                         "errors_total", "Errors.",
                                         "type, component", NULL, 0);
    /* a space after the comma is not part of a valid label name */
    assert_null(m);
    m = sg_metrics_register(reg, SG_METRIC_COUNTER, "errors_total",
                            "Errors.", "type,component", NULL, 0);
    assert_non_null(m);
    const char *a[] = {"redis", "broker"};
    const char *b[] = {"lua", "script"};
    sg_metric_add(m, a, 1);
    sg_metric_add(m, b, 4);
    sg_metric_add(m, a, 2);
    expect_text("# HELP errors_total Errors.\n"
                "# TYPE errors_total counter\n"
                "errors_total{type=\"redis\",component=\"broker\"} 3\n"
                "errors_total{type=\"lua\",component=\"script\"} 4\n");
    assert_true(sg_metric_get(m, a) == 3);
    assert_true(sg_metric_get(m, b) == 4);
    const char *c[] = {"lua", "broker"};
    assert_true(sg_metric_get(m, c) == 0);
    /* get does not create a child */
    expect_text("# HELP errors_total Errors.\n"
                "# TYPE errors_total counter\n"
                "errors_total{type=\"redis\",component=\"broker\"} 3\n"
                "errors_total{type=\"lua\",component=\"script\"} 4\n");
}

static void test_inc1_and_cache_alternation(void **state)
{
    sg_metric_t *m = sg_metrics_register(reg, SG_METRIC_COUNTER,
                                         "ws_sent_total", "Sent.", "type",
                                         NULL, 0);
    for (int i = 0; i < 10; i++) {
        sg_metric_inc1(m, "message");
        sg_metric_inc1(m, i % 2 ? "history" : "welcome");
    }
    assert_true(sg_metric_get(m, (const char *[]){"message"}) == 10);
    assert_true(sg_metric_get(m, (const char *[]){"history"}) == 5);
    assert_true(sg_metric_get(m, (const char *[]){"welcome"}) == 5);
    assert_int_equal(m->nchildren, 3);
}

static void test_hash_separator_distinguishes_tuples(void **state)
{
    sg_metric_t *m = sg_metrics_register(reg, SG_METRIC_COUNTER, "t_total",
                                         "h", "a,b", NULL, 0);
    sg_metric_add(m, (const char *[]){"ab", ""}, 1);
    sg_metric_add(m, (const char *[]){"a", "b"}, 2);
    expect_text("# HELP t_total h\n# TYPE t_total counter\n"
                "t_total{a=\"ab\",b=\"\"} 1\n"
                "t_total{a=\"a\",b=\"b\"} 2\n");
}

static void test_label_value_and_help_escaping(void **state)
{
    sg_metric_t *m = sg_metrics_register(reg, SG_METRIC_GAUGE, "g",
                                         "Path C:\\tmp\nsecond \"line\"",
                                         "v", NULL, 0);
    sg_metric_set(m, (const char *[]){"a\\b\"c\nd"}, 7);
    expect_text("# HELP g Path C:\\\\tmp\\nsecond \"line\"\n"
                "# TYPE g gauge\n"
                "g{v=\"a\\\\b\\\"c\\nd\"} 7\n");
}

static void test_number_format(void **state)
{
    char b[64];
    metrics_fmt_value(b, sizeof(b), 0);
    assert_string_equal(b, "0");
    metrics_fmt_value(b, sizeof(b), -0.0);
    assert_string_equal(b, "0");
    metrics_fmt_value(b, sizeof(b), 42);
    assert_string_equal(b, "42");
    metrics_fmt_value(b, sizeof(b), -3);
    assert_string_equal(b, "-3");
    metrics_fmt_value(b, sizeof(b), 0.1);
    assert_string_equal(b, "0.1");
    metrics_fmt_value(b, sizeof(b), 2.5);
    assert_string_equal(b, "2.5");
    metrics_fmt_value(b, sizeof(b), 1.0 / 3);
    assert_string_equal(b, "0.3333333333333333");
    assert_true(strtod(b, NULL) == 1.0 / 3);
    metrics_fmt_value(b, sizeof(b), 0.1 + 0.2);
    assert_string_equal(b, "0.30000000000000004");
    metrics_fmt_value(b, sizeof(b), 1e20);
    assert_string_equal(b, "1e+20");
    metrics_fmt_value(b, sizeof(b), 123456789012345.0);
    assert_string_equal(b, "123456789012345");
    metrics_fmt_value(b, sizeof(b), NAN);
    assert_string_equal(b, "NaN");
    metrics_fmt_value(b, sizeof(b), INFINITY);
    assert_string_equal(b, "+Inf");
    metrics_fmt_value(b, sizeof(b), -INFINITY);
    assert_string_equal(b, "-Inf");
}

static void test_gauge_fractional_and_clamp(void **state)
{
    sg_metric_t *m = sg_metrics_register(reg, SG_METRIC_GAUGE,
                                         "websocket_active_connections",
                                         "Open sockets.", NULL, NULL, 0);
    sg_metric_add(m, NULL, 1);
    sg_metric_add(m, NULL, -3);
    assert_true(sg_metric_get(m, NULL) == 0);
    assert_int_equal(m->warned_clamp, 1);
    sg_metric_add(m, NULL, -1); /* warned once; still clamped */
    assert_true(sg_metric_get(m, NULL) == 0);
    sg_metric_set(m, NULL, -5);
    assert_true(sg_metric_get(m, NULL) == 0);
    sg_metric_set(m, NULL, 1.25);
    expect_text("# HELP websocket_active_connections Open sockets.\n"
                "# TYPE websocket_active_connections gauge\n"
                "websocket_active_connections 1.25\n");
}

static void test_histogram_no_labels_exact(void **state)
{
    const double buckets[] = {0.5, 1, 2.5};
    sg_metric_t *m = sg_metrics_register(reg, SG_METRIC_HISTOGRAM,
                                         "stream_duration_seconds",
                                         "Duration.", NULL, buckets, 3);
    assert_non_null(m);
    expect_text("# HELP stream_duration_seconds Duration.\n"
                "# TYPE stream_duration_seconds histogram\n"
                "stream_duration_seconds_bucket{le=\"0.5\"} 0\n"
                "stream_duration_seconds_bucket{le=\"1\"} 0\n"
                "stream_duration_seconds_bucket{le=\"2.5\"} 0\n"
                "stream_duration_seconds_bucket{le=\"+Inf\"} 0\n"
                "stream_duration_seconds_sum 0\n"
                "stream_duration_seconds_count 0\n");
    sg_metric_observe(m, NULL, 0.25);
    sg_metric_observe(m, NULL, 0.5); /* le is inclusive */
    sg_metric_observe(m, NULL, 2);
    sg_metric_observe(m, NULL, 8);
    assert_true(sg_metric_get(m, NULL) == 4);
    expect_text("# HELP stream_duration_seconds Duration.\n"
                "# TYPE stream_duration_seconds histogram\n"
                "stream_duration_seconds_bucket{le=\"0.5\"} 2\n"
                "stream_duration_seconds_bucket{le=\"1\"} 2\n"
                "stream_duration_seconds_bucket{le=\"2.5\"} 3\n"
                "stream_duration_seconds_bucket{le=\"+Inf\"} 4\n"
                "stream_duration_seconds_sum 10.75\n"
                "stream_duration_seconds_count 4\n");
}

static void test_histogram_with_labels_and_inf_bound(void **state)
{
    const double buckets[] = {1, 10, INFINITY};
    sg_metric_t *m = sg_metrics_register(reg, SG_METRIC_HISTOGRAM,
                                         "stream_chunks", "Chunks.", "mode",
                                         buckets, 3);
    assert_non_null(m);
    assert_int_equal(m->nbounds, 2);
    expect_text("# HELP stream_chunks Chunks.\n"
                "# TYPE stream_chunks histogram\n");
    sg_metric_observe(m, (const char *[]){"full"}, 5);
    sg_metric_observe(m, (const char *[]){"full"}, 50);
    expect_text("# HELP stream_chunks Chunks.\n"
                "# TYPE stream_chunks histogram\n"
                "stream_chunks_bucket{mode=\"full\",le=\"1\"} 0\n"
                "stream_chunks_bucket{mode=\"full\",le=\"10\"} 1\n"
                "stream_chunks_bucket{mode=\"full\",le=\"+Inf\"} 2\n"
                "stream_chunks_sum{mode=\"full\"} 55\n"
                "stream_chunks_count{mode=\"full\"} 2\n");
}

static void test_histogram_default_buckets(void **state)
{
    sg_metric_t *m = sg_metrics_register(reg, SG_METRIC_HISTOGRAM, "h",
                                         "H.", NULL, NULL, 0);
    assert_int_equal(m->nbounds, 11);
    sg_metric_observe(m, NULL, 0.007);
    char *out;
    assert_int_equal(sg_metrics_render(reg, &out, NULL), 0);
    assert_non_null(strstr(out, "h_bucket{le=\"0.005\"} 0\n"
                                "h_bucket{le=\"0.01\"} 1\n"
                                "h_bucket{le=\"0.025\"} 1\n"));
    assert_non_null(strstr(out, "h_bucket{le=\"10\"} 1\n"
                                "h_bucket{le=\"+Inf\"} 1\n"
                                "h_sum 0.007\nh_count 1\n"));
    free(out);
}

static void test_bad_names_rejected(void **state)
{
    const sg_metric_type_t C = SG_METRIC_COUNTER;
    assert_null(sg_metrics_register(reg, C, NULL, "h", NULL, NULL, 0));
    assert_null(sg_metrics_register(reg, C, "", "h", NULL, NULL, 0));
    assert_null(sg_metrics_register(reg, C, "1abc", "h", NULL, NULL, 0));
    assert_null(sg_metrics_register(reg, C, "a-b", "h", NULL, NULL, 0));
    assert_null(sg_metrics_register(reg, C, "a b", "h", NULL, NULL, 0));
    assert_non_null(sg_metrics_register(reg, C, "ns:sub_x9", "h", NULL, NULL,
                                        0));
    assert_non_null(sg_metrics_register(reg, C, "_x", "h", NULL, NULL, 0));
    /* labels: no colon, no __ prefix, no repeats, at most 4, none empty */
    assert_null(sg_metrics_register(reg, C, "l1", "h", "a:b", NULL, 0));
    assert_null(sg_metrics_register(reg, C, "l2", "h", "__x", NULL, 0));
    assert_null(sg_metrics_register(reg, C, "l3", "h", "a,a", NULL, 0));
    assert_null(sg_metrics_register(reg, C, "l4", "h", "a,b,c,d,e", NULL, 0));
    assert_null(sg_metrics_register(reg, C, "l5", "h", "a,,b", NULL, 0));
    assert_null(sg_metrics_register(reg, C, "l6", "h", "a,", NULL, 0));
    assert_null(sg_metrics_register(reg, C, "l7", "h", "9a", NULL, 0));
    assert_non_null(sg_metrics_register(reg, C, "l8", "h", "a,b,c,d", NULL,
                                        0));
    /* "le" is reserved on histograms only */
    assert_null(sg_metrics_register(reg, SG_METRIC_HISTOGRAM, "l9", "h",
                                    "le", NULL, 0));
    assert_non_null(sg_metrics_register(reg, C, "l10", "h", "le", NULL, 0));
    /* the failures registered nothing */
    assert_null(sg_metrics_find(reg, "l1"));
    assert_null(sg_metrics_find(reg, "l9"));
    assert_non_null(sg_metrics_find(reg, "l8"));
}

static void test_duplicate_rejected(void **state)
{
    sg_metric_t *m = sg_metrics_register(reg, SG_METRIC_COUNTER, "dup",
                                         "first", NULL, NULL, 0);
    assert_non_null(m);
    assert_null(sg_metrics_register(reg, SG_METRIC_GAUGE, "dup", "second",
                                    NULL, NULL, 0));
    assert_ptr_equal(sg_metrics_find(reg, "dup"), m);
    assert_null(sg_metrics_find(reg, "dup2"));
    expect_text("# HELP dup first\n# TYPE dup counter\ndup 0\n");
}

static void test_bad_buckets_rejected(void **state)
{
    const double desc[] = {1, 0.5};
    const double same[] = {1, 1};
    const double nan[] = {NAN};
    const sg_metric_type_t H = SG_METRIC_HISTOGRAM;
    assert_null(sg_metrics_register(reg, H, "b1", "h", NULL, desc, 2));
    assert_null(sg_metrics_register(reg, H, "b2", "h", NULL, same, 2));
    assert_null(sg_metrics_register(reg, H, "b3", "h", NULL, nan, 1));
    assert_null(sg_metrics_find(reg, "b1"));
}

static void test_registration_order(void **state)
{
    sg_metrics_register(reg, SG_METRIC_GAUGE, "b", "B.", NULL, NULL, 0);
    sg_metrics_register(reg, SG_METRIC_COUNTER, "a", "A.", NULL, NULL, 0);
    expect_text("# HELP b B.\n# TYPE b gauge\nb 0\n"
                "# HELP a A.\n# TYPE a counter\na 0\n");
}

static int collect_calls;

static void collect(sg_metrics_t *r, void *arg)
{
    collect_calls++;
    sg_metric_set(sg_metrics_find(r, (const char *)arg), NULL, 17);
}

static void test_collect_cb(void **state)
{
    collect_calls = 0;
    sg_metrics_register(reg, SG_METRIC_GAUGE, "process_open_fds", "Fds.",
                        NULL, NULL, 0);
    sg_metrics_set_collect_cb(reg, collect, "process_open_fds");
    expect_text("# HELP process_open_fds Fds.\n"
                "# TYPE process_open_fds gauge\nprocess_open_fds 17\n");
    assert_int_equal(collect_calls, 1);
    expect_json(NULL, "{\"names\":[\"process_open_fds\"]}");
    assert_int_equal(collect_calls, 2);
}

static void test_json(void **state)
{
    sg_metric_t *c = sg_metrics_register(reg, SG_METRIC_COUNTER,
                                         "ws_total", "Connections.",
                                         "status", NULL, 0);
    sg_metric_t *g = sg_metrics_register(reg, SG_METRIC_GAUGE, "load",
                                         "Load.", NULL, NULL, 0);
    const double buckets[] = {1};
    sg_metric_t *h = sg_metrics_register(reg, SG_METRIC_HISTOGRAM, "lat",
                                         "Latency.", NULL, buckets, 1);
    expect_json(NULL, "{\"names\":[\"ws_total\",\"load\",\"lat\"]}");
    expect_json("ws_total", "{\"name\":\"ws_total\",\"type\":\"counter\","
                            "\"help\":\"Connections.\",\"measurements\":[]}");
    sg_metric_inc1(c, "success");
    sg_metric_inc1(c, "fail\"ed");
    sg_metric_inc1(c, "success");
    expect_json("ws_total",
                "{\"name\":\"ws_total\",\"type\":\"counter\","
                "\"help\":\"Connections.\",\"measurements\":["
                "{\"labels\":{\"status\":\"success\"},\"value\":2},"
                "{\"labels\":{\"status\":\"fail\\\"ed\"},\"value\":1}]}");
    sg_metric_set(g, NULL, 0.5);
    expect_json("load", "{\"name\":\"load\",\"type\":\"gauge\","
                        "\"help\":\"Load.\",\"measurements\":["
                        "{\"labels\":{},\"value\":0.5}]}");
    sg_metric_observe(h, NULL, 0.25);
    sg_metric_observe(h, NULL, 3);
    expect_json("lat", "{\"name\":\"lat\",\"type\":\"histogram\","
                       "\"help\":\"Latency.\",\"measurements\":["
                       "{\"labels\":{},\"count\":2,\"sum\":3.25}]}");
    char *out = (char *)0x1;
    assert_int_equal(sg_metrics_render_json(reg, "nope", &out, NULL),
                     SG_ENOTFOUND);
    assert_ptr_equal(out, (char *)0x1);
}

/* Optional: promtool's parser and linter agree with our output. Skipped
 * (not failed) when promtool is not installed. */
static void test_promtool(void **state)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        skip();
    sg_metric_t *m = sg_metrics_register(reg, SG_METRIC_COUNTER,
                                         "x_total", "X.", "a", NULL, 0);
    sg_metric_inc1(m, "q\"\n\\");
    sg_metrics_register(reg, SG_METRIC_HISTOGRAM, "y_seconds", "Y.", NULL,
                        NULL, 0);
    char *out;
    assert_int_equal(sg_metrics_render(reg, &out, NULL), 0);
    FILE *p = popen("promtool check metrics", "w");
    assert_non_null(p);
    fputs(out, p);
    free(out);
    assert_int_equal(pclose(p), 0);
}

int main(void)
{
    sg_log_set_level(SG_LOG_ERROR); /* expected warnings stay quiet */
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_empty_registry),
        T(test_counter_no_labels_starts_at_zero),
        T(test_counter_negative_add_ignored),
        T(test_labels_without_children_print_only_header),
        T(test_counter_with_labels),
        T(test_inc1_and_cache_alternation),
        T(test_hash_separator_distinguishes_tuples),
        T(test_label_value_and_help_escaping),
        T(test_number_format),
        T(test_gauge_fractional_and_clamp),
        T(test_histogram_no_labels_exact),
        T(test_histogram_with_labels_and_inf_bound),
        T(test_histogram_default_buckets),
        T(test_bad_names_rejected),
        T(test_duplicate_rejected),
        T(test_bad_buckets_rejected),
        T(test_registration_order),
        T(test_collect_cb),
        T(test_json),
        T(test_promtool),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
