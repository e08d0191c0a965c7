/* Unit tests of the in-memory broker engine (broker_memory.c): async
 * delivery, wanted-set semantics, history lists with TTL and cap, close,
 * and the stream conformance suite (stream_conformance.h) plus the
 * memory-only stream checks (exact trim, sweep expiry). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "../../src/error.c"
#include "../../src/map.c"
#include "../../src/broker.c"
#include "../../src/broker_memory.c"

#define MAX_MSGS 16

typedef struct rec {
    int subscribed;
    char last_sub[64];
    int msgs;
    char msg_sid[MAX_MSGS][64];
    char msg[MAX_MSGS][64];
    size_t msg_len[MAX_MSGS];
    int done;
    int done_status[MAX_MSGS];
    int lists;
    int list_status;
    size_t list_n;
    char list_first[64];
    char list_last[64];
    int closed;
} rec_t;

static uv_loop_t loop;
static uv_timer_t watchdog;
static rec_t rec;
static sg_config_t cfg;

static void on_watchdog(uv_timer_t *t)
{
    fail_msg("watchdog fired: the loop did not finish in time");
}

static void on_message(void *arg, const char *sid, const char *p, size_t n)
{
    rec_t *r = arg;
    assert_true(r->msgs < MAX_MSGS);
    snprintf(r->msg_sid[r->msgs], 64, "%s", sid);
    snprintf(r->msg[r->msgs], 64, "%.*s", (int)n, p);
    r->msg_len[r->msgs] = n;
    r->msgs++;
}

static void on_subscribed(void *arg, const char *sid)
{
    rec_t *r = arg;
    r->subscribed++;
    snprintf(r->last_sub, sizeof(r->last_sub), "%s", sid);
}

static void on_done(void *arg, int status)
{
    rec_t *r = arg;
    assert_true(r->done < MAX_MSGS);
    r->done_status[r->done++] = status;
}

static void on_list(void *arg, int status, const char *const *items,
                    const size_t *lens, size_t n)
{
    rec_t *r = arg;
    r->lists++;
    r->list_status = status;
    r->list_n = n;
    r->list_first[0] = r->list_last[0] = '\0';
    if (n > 0) {
        snprintf(r->list_first, 64, "%.*s", (int)lens[0], items[0]);
        snprintf(r->list_last, 64, "%.*s", (int)lens[n - 1], items[n - 1]);
    }
}

static void on_closed(void *arg)
{
    ((rec_t *)arg)->closed++;
}

static sg_broker_t *setup_broker(int ttl)
{
    memset(&rec, 0, sizeof(rec));
    memset(&cfg, 0, sizeof(cfg));
    cfg.stream.history_ttl = ttl;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &watchdog);
    uv_timer_start(&watchdog, on_watchdog, 10000, 0);
    uv_unref((uv_handle_t *)&watchdog);
    sg_broker_handlers_t h = {on_message, on_subscribed, NULL, &rec, NULL};
    sg_broker_t *b = sg_broker_memory_new(&loop, &cfg, &h);
    assert_non_null(b);
    return b;
}

static void teardown_broker(sg_broker_t *b)
{
    sg_broker_close(b, on_closed, &rec);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.closed, 1);
    uv_close((uv_handle_t *)&watchdog, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_mode_and_status(void **state)
{
    sg_broker_t *b = setup_broker(60);
    assert_string_equal(sg_broker_mode(b), "embedded");
    assert_int_equal(sg_broker_is_ready(b), 1);
    assert_string_equal(sg_broker_status_text(b), "UP");
    teardown_broker(b);
}

static void test_subscribe_confirmed_once(void **state)
{
    sg_broker_t *b = setup_broker(60);
    assert_int_equal(sg_broker_subscribe(b, "s1"), 0);
    assert_int_equal(sg_broker_subscribe(b, "s1"), 0); /* idempotent */
    assert_int_equal(rec.subscribed, 0); /* never synchronous */
    assert_int_equal(sg_broker_subscription_count(b), 1);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.subscribed, 1);
    assert_string_equal(rec.last_sub, "s1");
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.subscribed, 1);
    teardown_broker(b);
}

static void test_resubscribe_before_confirm(void **state)
{
    sg_broker_t *b = setup_broker(60);
    assert_int_equal(sg_broker_subscribe(b, "s1"), 0);
    assert_int_equal(sg_broker_unsubscribe(b, "s1"), 0);
    assert_int_equal(sg_broker_subscription_count(b), 0);
    assert_int_equal(sg_broker_subscribe(b, "s1"), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.subscribed, 1);
    assert_int_equal(sg_broker_subscription_count(b), 1);
    teardown_broker(b);
}

static void test_publish_reaches_only_subscribed_in_order(void **state)
{
    sg_broker_t *b = setup_broker(60);
    assert_int_equal(sg_broker_subscribe(b, "s1"), 0);
    assert_int_equal(sg_broker_subscribe(b, "s3"), 0);
    assert_int_equal(sg_broker_publish(b, "s1", "{\"a\":1}", 7), 0);
    assert_int_equal(sg_broker_publish(b, "s2", "nobody", 6), 0);
    assert_int_equal(sg_broker_publish(b, "s1", "b", 1), 0);
    assert_int_equal(sg_broker_publish(b, "s3", "", 0), 0);
    assert_int_equal(sg_broker_publish(b, "s1", "c", 1), 0);
    assert_int_equal(rec.msgs, 0); /* queued, not delivered inline */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.msgs, 4);
    assert_string_equal(rec.msg_sid[0], "s1");
    assert_string_equal(rec.msg[0], "{\"a\":1}");
    assert_int_equal(rec.msg_len[0], 7);
    assert_string_equal(rec.msg[1], "b");
    assert_string_equal(rec.msg_sid[2], "s3");
    assert_int_equal(rec.msg_len[2], 0);
    assert_string_equal(rec.msg[3], "c");
    teardown_broker(b);
}

static void test_unsubscribe_stops_delivery(void **state)
{
    sg_broker_t *b = setup_broker(60);
    assert_int_equal(sg_broker_subscribe(b, "s1"), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(sg_broker_publish(b, "s1", "m1", 2), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.msgs, 1);
    /* Queued before the unsubscribe, drained after: not delivered. */
    assert_int_equal(sg_broker_publish(b, "s1", "m2", 2), 0);
    assert_int_equal(sg_broker_unsubscribe(b, "s1"), 0);
    assert_int_equal(sg_broker_unsubscribe(b, "s1"), 0);
    assert_int_equal(sg_broker_publish(b, "s1", "m3", 2), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.msgs, 1);
    assert_int_equal(sg_broker_subscription_count(b), 0);
    teardown_broker(b);
}

static void test_history_append_get_clear(void **state)
{
    sg_broker_t *b = setup_broker(60);
    assert_int_equal(sg_broker_history_append(b, "s1", "first", 5, on_done,
                                              &rec), 0);
    assert_int_equal(sg_broker_history_append(b, "s1", "second", 6, on_done,
                                              &rec), 0);
    assert_int_equal(sg_broker_history_get(b, "s1", on_list, &rec), 0);
    assert_int_equal(rec.done, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.done, 2);
    assert_int_equal(rec.done_status[0], 0);
    assert_int_equal(rec.done_status[1], 0);
    assert_int_equal(rec.lists, 1);
    assert_int_equal(rec.list_status, 0);
    assert_int_equal(rec.list_n, 2);
    assert_string_equal(rec.list_first, "first");
    assert_string_equal(rec.list_last, "second");

    assert_int_equal(sg_broker_history_clear(b, "s1", on_done, &rec), 0);
    assert_int_equal(sg_broker_history_get(b, "s1", on_list, &rec), 0);
    assert_int_equal(sg_broker_history_get(b, "other", on_list, &rec), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.done, 3);
    assert_int_equal(rec.done_status[2], 0);
    assert_int_equal(rec.lists, 3);
    assert_int_equal(rec.list_n, 0);
    teardown_broker(b);
}

static void on_done_count(void *arg, int status)
{
    if (status == 0)
        (*(int *)arg)++;
}

static void test_history_cap_drops_oldest(void **state)
{
    char p[16];
    int ok = 0;
    sg_broker_t *b = setup_broker(60);
    for (int i = 0; i < MEM_HISTORY_MAX + 5; i++) {
        int n = snprintf(p, sizeof(p), "%d", i);
        assert_int_equal(sg_broker_history_append(b, "s1", p, (size_t)n,
                                                  on_done_count, &ok), 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(ok, MEM_HISTORY_MAX + 5);
    assert_int_equal(sg_broker_history_get(b, "s1", on_list, &rec), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.list_n, MEM_HISTORY_MAX);
    assert_string_equal(rec.list_first, "5");
    snprintf(p, sizeof(p), "%d", MEM_HISTORY_MAX + 4);
    assert_string_equal(rec.list_last, p);
    teardown_broker(b);
}

static void on_wait(uv_timer_t *t)
{
}

static void wait_ms(uint64_t ms)
{
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, on_wait, ms, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
}

static void test_history_ttl_expiry(void **state)
{
    sg_broker_t *b = setup_broker(1);
    broker_memory_t *m = (broker_memory_t *)b;
    assert_int_equal(sg_broker_history_append(b, "s1", "x", 1, on_done,
                                              &rec), 0);
    assert_int_equal(sg_broker_history_append(b, "s2", "y", 1, on_done,
                                              &rec), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(sg_map_count(m->histories), 2);
    assert_int_equal(sg_broker_history_get(b, "s1", on_list, &rec), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.list_n, 1); /* still alive */

    wait_ms(1100);
    /* Lazy expiry on access. */
    assert_int_equal(sg_broker_history_get(b, "s1", on_list, &rec), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.lists, 2);
    assert_int_equal(rec.list_status, 0);
    assert_int_equal(rec.list_n, 0);
    assert_int_equal(sg_map_count(m->histories), 1);
    /* The periodic sweep removes the untouched one. */
    mem_on_sweep(&m->sweep);
    assert_int_equal(sg_map_count(m->histories), 0);
    teardown_broker(b);
}

static void test_close_cancels_pending(void **state)
{
    sg_broker_t *b = setup_broker(60);
    assert_int_equal(sg_broker_subscribe(b, "s1"), 0);
    assert_int_equal(sg_broker_publish(b, "s1", "m", 1), 0);
    assert_int_equal(sg_broker_history_append(b, "s1", "x", 1, on_done,
                                              &rec), 0);
    assert_int_equal(sg_broker_history_clear(b, "s1", on_done, &rec), 0);
    assert_int_equal(sg_broker_history_get(b, "s1", on_list, &rec), 0);
    sg_broker_close(b, on_closed, &rec);
    assert_int_equal(rec.done, 0); /* not inside close */
    assert_int_equal(sg_broker_publish(b, "s1", "late", 4), SG_ECLOSED);
    assert_int_equal(sg_broker_history_get(b, "s1", on_list, &rec),
                     SG_ECLOSED);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.done, 2);
    assert_int_equal(rec.done_status[0], SG_ECANCELED);
    assert_int_equal(rec.done_status[1], SG_ECANCELED);
    assert_int_equal(rec.lists, 1);
    assert_int_equal(rec.list_status, SG_ECANCELED);
    assert_int_equal(rec.subscribed, 0);
    assert_int_equal(rec.msgs, 0);
    assert_int_equal(rec.closed, 1);
    uv_close((uv_handle_t *)&watchdog, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* close() from inside a callback while a batch is draining. */
static sg_broker_t *closing_broker;

static void on_done_then_close(void *arg, int status)
{
    on_done(arg, status);
    sg_broker_close(closing_broker, on_closed, arg);
}

static void test_close_from_callback(void **state)
{
    sg_broker_t *b = setup_broker(60);
    closing_broker = b;
    assert_int_equal(sg_broker_history_append(b, "s1", "x", 1,
                                              on_done_then_close, &rec), 0);
    assert_int_equal(sg_broker_history_append(b, "s1", "y", 1, on_done,
                                              &rec), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.done, 2);
    assert_int_equal(rec.done_status[0], 0);
    assert_int_equal(rec.done_status[1], SG_ECANCELED);
    assert_int_equal(rec.closed, 1);
    uv_close((uv_handle_t *)&watchdog, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_invalid_session_ids(void **state)
{
    char big[200];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    sg_broker_t *b = setup_broker(60);
    assert_int_equal(sg_broker_subscribe(b, ""), SG_EINVAL);
    assert_int_equal(sg_broker_publish(b, big, "x", 1), SG_EINVAL);
    assert_int_equal(sg_broker_history_get(b, NULL, on_list, &rec),
                     SG_EINVAL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.lists, 0);
    teardown_broker(b);
}

static void test_map_basics(void **state)
{
    sg_map_t *m = sg_map_new();
    char key[16];
    static int vals[100];
    assert_non_null(m);
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(sg_map_put(m, key, &vals[i]), 0);
    }
    assert_int_equal(sg_map_count(m), 100);
    assert_ptr_equal(sg_map_get(m, "k42"), &vals[42]);
    assert_null(sg_map_get(m, "k100"));
    assert_int_equal(sg_map_put(m, "k42", &vals[0]), 0); /* replace */
    assert_int_equal(sg_map_count(m), 100);
    assert_ptr_equal(sg_map_remove(m, "k42"), &vals[0]);
    assert_null(sg_map_remove(m, "k42"));
    assert_int_equal(sg_map_count(m), 99);
    sg_map_free(m, NULL);
}

/* ---- stream conformance fixture --------------------------------------- */

#include "stream_conformance.h"

static sg_broker_t *fx_open(sg_config_t *c, const sg_broker_handlers_t *h)
{
    memset(&rec, 0, sizeof(rec));
    cfg = *c;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &watchdog);
    uv_timer_start(&watchdog, on_watchdog, 20000, 0);
    uv_unref((uv_handle_t *)&watchdog);
    return sg_broker_memory_new(&loop, &cfg, h);
}

static void fx_close(sg_broker_t *b)
{
    teardown_broker(b);
}

static void fx_check_ttls(sg_broker_t *b, const char *sid, int ttl,
                          int nkeys)
{
    broker_memory_t *m = (broker_memory_t *)b;
    mem_stream_t *st = sg_map_get(m->streams, sid);
    assert_non_null(st);
    assert_true(st->expires_at > uv_now(&loop));
    assert_true(st->expires_at <= uv_now(&loop) + (uint64_t)ttl * 1000);
}

static const sc_fixture_t memory_fixture = {
    .engine = "memory",
    .loop = &loop,
    .open = fx_open,
    .close = fx_close,
    .check_ttls = fx_check_ttls,
    .go_down = NULL,
    .exact_trim = 1,
};

static int sc_setup(void **state)
{
    sc_fx = &memory_fixture;
    return 0;
}

static int sc_teardown(void **state)
{
    return 0;
}

/* The sweep (not only access) drops expired streams, and a snapshot of a
 * message completed longer than recovery_ttl ago is pruned by the next
 * final. */
static void test_stream_sweep_and_prune(void **state)
{
    sc_fx = &memory_fixture;
    sg_config_t c;
    sc_default_cfg(&c);
    c.stream.recovery_ttl = 1;
    sg_broker_t *b = sc_open_cfg(&c);
    broker_memory_t *m = (broker_memory_t *)b;
    assert_int_equal(sc_append(b, "s1", "m1", "a", 1), 1);
    assert_int_equal(sc_append(b, "s2", "m1", "a", 1), 1);
    sc_run_for(600);
    assert_int_equal(sc_append(b, "s1", "m2", "x ", 0), 2);
    sc_run_for(600); /* m1 done 1.2 s ago; s1 touched 0.6 s ago */
    assert_int_equal(sc_append(b, "s1", "m2", "x y", 1), 3);
    mem_stream_t *st = sg_map_get(m->streams, "s1");
    assert_int_equal(sg_map_count(st->snaps), 1);
    assert_non_null(sg_map_get(st->snaps, "m2"));
    mem_on_sweep(&m->sweep);
    assert_int_equal(sg_map_count(m->streams), 1); /* s2 expired */
    assert_null(sg_map_get(m->streams, "s2"));
    sc_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_basics),
        cmocka_unit_test(test_mode_and_status),
        cmocka_unit_test(test_subscribe_confirmed_once),
        cmocka_unit_test(test_resubscribe_before_confirm),
        cmocka_unit_test(test_publish_reaches_only_subscribed_in_order),
        cmocka_unit_test(test_unsubscribe_stops_delivery),
        cmocka_unit_test(test_history_append_get_clear),
        cmocka_unit_test(test_history_cap_drops_oldest),
        cmocka_unit_test(test_history_ttl_expiry),
        cmocka_unit_test(test_close_cancels_pending),
        cmocka_unit_test(test_close_from_callback),
        cmocka_unit_test(test_invalid_session_ids),
        cmocka_unit_test(test_stream_sweep_and_prune),
        SC_CONFORMANCE_TESTS(sc_setup, sc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
