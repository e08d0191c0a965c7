/* Tests of the script cache (cache.c): the L1 table on its own (LRU order,
 * TTL, count and byte bounds, metrics) and, against a real redis-server,
 * L2 fill on get, write-through on set, del, and failure paths. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "../../src/error.c"
#include "../../src/log.c"
#include "../../src/map.c"
#include "../../src/metrics.c"
#include "../../src/broker.c"
#include "../../src/redis_uv.c"
#include "../../src/broker_redis.c"
#include "../../src/broker_redis_stream.c"
#include "../../src/broker_memory.c"
#include "../../src/cache.c"

#include "redis_helper.h"

/* ---- helpers ------------------------------------------------------------ */

static int hit(sg_cache_t *c, const char *key, const char *want)
{
    const char *v;
    size_t n;
    if (sg_cache_lookup(c, key, strlen(key), &v, &n) != 0)
        return 0;
    if (want != NULL && (n != strlen(want) || memcmp(v, want, n) != 0))
        fail_msg("key %s: got '%.*s', expected '%s'", key, (int)n, v, want);
    return 1;
}

static void put(sg_cache_t *c, const char *key, const char *value,
                uint64_t ttl_ms)
{
    assert_int_equal(sg_cache_set(c, key, strlen(key), value, strlen(value),
                                  ttl_ms, NULL, NULL), 0);
}

static double counter(sg_metrics_t *m, const char *name, const char *level)
{
    const char *v[1] = {level};
    return sg_metric_get(sg_metrics_find(m, name), v);
}

/* ---- L1 ----------------------------------------------------------------- */

static void test_l1_get_set_del(void **state)
{
    sg_cache_t *c = sg_cache_new(NULL, NULL, 0, 0, 0);
    assert_non_null(c);
    assert_int_equal(sg_cache_has_l2(c), 0);
    assert_int_equal(hit(c, "a", NULL), 0);
    put(c, "a", "1", 0);
    assert_true(hit(c, "a", "1"));
    put(c, "a", "two", 0); /* replace */
    assert_true(hit(c, "a", "two"));
    assert_int_equal(sg_cache_count(c), 1);
    /* Binary keys and values: "k\0x" and "k\0y" are different keys. */
    assert_int_equal(sg_cache_set(c, "k\0x", 3, "v\0", 2, 0, NULL, NULL), 0);
    const char *v;
    size_t n;
    assert_int_equal(sg_cache_lookup(c, "k\0y", 3, &v, &n), SG_ENOTFOUND);
    assert_int_equal(sg_cache_lookup(c, "k\0x", 3, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(v, "v\0", 2);
    assert_int_equal(sg_cache_del(c, "a", 1, NULL, NULL), 0);
    assert_int_equal(hit(c, "a", NULL), 0);
    assert_int_equal(sg_cache_del(c, "absent", 6, NULL, NULL), 0);
    assert_int_equal(sg_cache_count(c), 1);
    assert_int_equal(sg_cache_fetch(c, "a", 1, NULL, NULL), SG_ENOTSUP);
    sg_cache_free(c);
}

static void test_l1_lru_order(void **state)
{
    sg_cache_t *c = sg_cache_new(NULL, NULL, 3, 0, 0);
    put(c, "a", "1", 0);
    put(c, "b", "2", 0);
    put(c, "c", "3", 0);
    assert_true(hit(c, "a", "1")); /* a is now the most recent */
    put(c, "d", "4", 0);           /* evicts b, the least recent */
    assert_int_equal(sg_cache_count(c), 3);
    assert_int_equal(hit(c, "b", NULL), 0);
    assert_true(hit(c, "a", "1"));
    assert_true(hit(c, "c", "3"));
    assert_true(hit(c, "d", "4"));
    put(c, "c", "33", 0);          /* a replace refreshes too */
    put(c, "e", "5", 0);           /* order now: e c d a -> a evicted */
    assert_int_equal(hit(c, "a", NULL), 0);
    assert_true(hit(c, "d", "4"));
    assert_true(hit(c, "c", "33"));
    assert_true(hit(c, "e", "5"));
    sg_cache_free(c);
}

static void test_l1_byte_bound(void **state)
{
    sg_cache_t *c = sg_cache_new(NULL, NULL, 100, 10, 0);
    put(c, "a", "1234", 0);  /* 5 bytes */
    put(c, "b", "1234", 0);  /* 10 bytes: full */
    put(c, "c", "12", 0);    /* 3 more: a goes */
    assert_int_equal(hit(c, "a", NULL), 0);
    assert_true(hit(c, "b", "1234"));
    assert_true(hit(c, "c", "12"));
    assert_int_equal(sg_cache_set(c, "big", 3, "12345678", 8, 0, NULL, NULL),
                     SG_ETOOBIG);
    assert_true(hit(c, "b", "1234")); /* a refused value evicts nothing */
    assert_int_equal(sg_cache_count(c), 2);
    sg_cache_free(c);
}

static void test_l1_ttl(void **state)
{
    sg_cache_t *c = sg_cache_new(NULL, NULL, 0, 0, 0);
    put(c, "short", "x", 30);
    put(c, "long", "y", 5000);
    put(c, "none", "z", 0);
    assert_true(hit(c, "short", "x"));
    test_redis_sleep_ms(60);
    assert_int_equal(hit(c, "short", NULL), 0);
    assert_int_equal(sg_cache_count(c), 2); /* dropped when noticed */
    assert_true(hit(c, "long", "y"));
    assert_true(hit(c, "none", "z"));
    put(c, "short", "again", 0); /* no TTL any more */
    test_redis_sleep_ms(40);
    assert_true(hit(c, "short", "again"));
    sg_cache_free(c);
}

static void test_l1_metrics(void **state)
{
    sg_metrics_t *m = sg_metrics_new();
    sg_cache_t *c = sg_cache_new(NULL, m, 0, 0, 0);
    put(c, "a", "1", 0);
    hit(c, "a", "1");
    hit(c, "a", "1");
    hit(c, "b", NULL);
    assert_true(counter(m, "cache_hits_total", "L1") == 2);
    assert_true(counter(m, "cache_misses_total", "L1") == 1);
    /* A second cache (a reloaded script host) reuses the families. */
    sg_cache_t *c2 = sg_cache_new(NULL, m, 0, 0, 0);
    hit(c2, "a", NULL);
    assert_true(counter(m, "cache_misses_total", "L1") == 2);
    char *text;
    size_t len;
    assert_int_equal(sg_metrics_render(m, &text, &len), 0);
    assert_non_null(strstr(text, "cache_hits_total{level=\"L1\"} 2\n"));
    free(text);
    sg_cache_free(c2);
    sg_cache_free(c);
    sg_metrics_free(m);
}

/* ---- L2 (real redis-server) --------------------------------------------- */

static uv_loop_t loop;
static uv_timer_t ticker;
static test_redis_t srv;
static sg_config_t cfg;
static int ready;

typedef struct result {
    int calls;
    int status;
    char value[64];
    size_t len;
} result_t;

static void on_tick(uv_timer_t *t)
{
}

static void on_state(void *arg, int r)
{
    ready = r;
}

static void on_get(void *arg, int status, const char *v, size_t n)
{
    result_t *r = arg;
    r->calls++;
    r->status = status;
    r->len = n;
    if (v != NULL)
        memcpy(r->value, v, n < 63 ? n : 63);
}

static void on_done(void *arg, int status)
{
    result_t *r = arg;
    r->calls++;
    r->status = status;
}

static void run_until(const int *counter, int want)
{
    uint64_t deadline = uv_now(&loop) + 3000;
    while (*counter < want && uv_now(&loop) < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(*counter, want);
}

static sg_broker_t *redis_up(void)
{
    if (!test_redis_available()) {
        print_message("redis-server not installed: skipped\n");
        skip();
    }
    memset(&srv, 0, sizeof(srv));
    srv.port = test_redis_free_port();
    assert_int_equal(test_redis_start(&srv), 0);
    memset(&cfg, 0, sizeof(cfg));
    cfg.redis.host = "127.0.0.1";
    cfg.redis.port = srv.port;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &ticker);
    uv_timer_start(&ticker, on_tick, 10, 10);
    sg_broker_handlers_t h = {NULL, NULL, on_state, NULL, NULL};
    ready = 0;
    sg_broker_t *b = sg_broker_redis_new(&loop, &cfg, &h);
    run_until(&ready, 1);
    return b;
}

static void redis_down(sg_broker_t *b)
{
    sg_broker_close(b, NULL, NULL);
    uv_close((uv_handle_t *)&ticker, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    test_redis_kill(&srv);
}

static int teardown(void **state)
{
    test_redis_kill(&srv);
    return 0;
}

/* GET from an independent client; "" with *n = -1 when absent. */
static void redis_get(const char *key, char *out, long *n)
{
    redisContext *rc = test_redis_client(&srv);
    assert_non_null(rc);
    redisReply *r = redisCommand(rc, "GET %s", key);
    assert_non_null(r);
    *n = r->type == REDIS_REPLY_STRING ? (long)r->len : -1;
    out[0] = '\0';
    if (*n >= 0)
        memcpy(out, r->str, (size_t)*n + 1);
    freeReplyObject(r);
    redisFree(rc);
}

static void test_l2_write_through_and_fill(void **state)
{
    sg_broker_t *b = redis_up();
    sg_metrics_t *m = sg_metrics_new();
    sg_cache_t *c = sg_cache_new(b, m, 0, 0, 0);
    result_t r = {0};
    char buf[64];
    long n;

    assert_int_equal(sg_cache_has_l2(c), 1);
    assert_int_equal(sg_cache_set(c, "k", 1, "v\0w", 3, 10000, on_done, &r),
                     1);
    assert_int_equal(r.calls, 0);
    assert_true(hit(c, "k", NULL)); /* L1 written at once */
    run_until(&r.calls, 1);
    assert_int_equal(r.status, 0);
    redis_get("sg:cache:k", buf, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "v\0w", 3);
    long long pttl = test_redis_int(&srv, "PTTL %s", "sg:cache:k");
    assert_true(pttl > 9000 && pttl <= 10000);

    /* Another node (a second cache with an empty L1) fills from L2. */
    sg_cache_t *c2 = sg_cache_new(b, m, 0, 0, 0);
    assert_int_equal(hit(c2, "k", NULL), 0);
    memset(&r, 0, sizeof(r));
    assert_int_equal(sg_cache_fetch(c2, "k", 1, on_get, &r), 0);
    assert_int_equal(r.calls, 0);
    run_until(&r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.len, 3);
    assert_memory_equal(r.value, "v\0w", 3);
    const char *v;
    size_t vn;
    assert_int_equal(sg_cache_lookup(c2, "k", 1, &v, &vn), 0);
    assert_memory_equal(v, "v\0w", 3);

    /* An L2 miss. */
    memset(&r, 0, sizeof(r));
    assert_int_equal(sg_cache_fetch(c2, "nope", 4, on_get, &r), 0);
    run_until(&r.calls, 1);
    assert_int_equal(r.status, SG_ENOTFOUND);
    assert_int_equal(sg_cache_count(c2), 1);

    /* Counters: c had 1 L1 hit; c2 2 L1 misses, 1 L1 hit, L2 1+1. */
    assert_true(counter(m, "cache_hits_total", "L1") == 2);
    assert_true(counter(m, "cache_misses_total", "L1") == 1);
    assert_true(counter(m, "cache_hits_total", "L2") == 1);
    assert_true(counter(m, "cache_misses_total", "L2") == 1);

    /* del removes both levels. */
    memset(&r, 0, sizeof(r));
    assert_int_equal(sg_cache_del(c, "k", 1, on_done, &r), 1);
    assert_int_equal(hit(c, "k", NULL), 0);
    run_until(&r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(test_redis_int(&srv, "EXISTS %s", "sg:cache:k"), 0);

    sg_cache_free(c2);
    sg_cache_free(c);
    redis_down(b);
    sg_metrics_free(m);
}

/* In Redis mode L1 keeps a value at most l1_max_ttl_ms, then asks L2. */
static void test_l2_l1_ttl_is_capped(void **state)
{
    sg_broker_t *b = redis_up();
    sg_cache_t *c = sg_cache_new(b, NULL, 0, 0, 50);
    result_t r = {0};
    assert_int_equal(sg_cache_set(c, "k", 1, "one", 3, 0, on_done, &r), 1);
    run_until(&r.calls, 1);
    assert_int_equal(test_redis_int(&srv, "PTTL %s", "sg:cache:k"), -1);
    assert_true(hit(c, "k", "one"));
    /* Another node replaces it; this node sees it after the cap. */
    redisContext *rc = test_redis_client(&srv);
    freeReplyObject(redisCommand(rc, "SET sg:cache:k two"));
    redisFree(rc);
    assert_true(hit(c, "k", "one"));
    test_redis_sleep_ms(80);
    assert_int_equal(hit(c, "k", NULL), 0);
    memset(&r, 0, sizeof(r));
    assert_int_equal(sg_cache_fetch(c, "k", 1, on_get, &r), 0);
    run_until(&r.calls, 1);
    assert_string_equal(r.value, "two");
    assert_true(hit(c, "k", "two"));
    sg_cache_free(c);
    redis_down(b);
}

/* A del while a fetch is in flight: the stale reply must not refill L1. */
static void test_l2_del_during_fetch_does_not_refill(void **state)
{
    sg_broker_t *b = redis_up();
    sg_cache_t *c = sg_cache_new(b, NULL, 0, 0, 0);
    result_t r = {0}, d = {0};
    redisContext *rc = test_redis_client(&srv);
    freeReplyObject(redisCommand(rc, "SET sg:cache:k old"));
    redisFree(rc);
    assert_int_equal(sg_cache_fetch(c, "k", 1, on_get, &r), 0);
    assert_int_equal(sg_cache_del(c, "k", 1, on_done, &d), 1);
    run_until(&r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.value, "old"); /* read before the del */
    assert_int_equal(hit(c, "k", NULL), 0); /* but not cached */
    run_until(&d.calls, 1);
    assert_int_equal(d.status, 0);
    assert_int_equal(test_redis_int(&srv, "EXISTS %s", "sg:cache:k"), 0);
    sg_cache_free(c);
    redis_down(b);
}

/* The owner lets go while a fetch is pending; the broker's close cancels
 * it and the cache is freed then (ASan checks both). */
static void test_l2_free_with_pending_and_not_ready(void **state)
{
    sg_broker_t *b = redis_up();
    sg_cache_t *c = sg_cache_new(b, NULL, 0, 0, 0);
    result_t r = {0};
    assert_int_equal(sg_cache_fetch(c, "k", 1, on_get, &r), 0);
    sg_cache_free(c);
    sg_broker_close(b, NULL, NULL);
    uv_close((uv_handle_t *)&ticker, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, SG_ECANCELED);
    assert_int_equal(uv_loop_close(&loop), 0);

    /* Not ready: nothing is started and L1 is unchanged. */
    assert_int_equal(uv_loop_init(&loop), 0);
    cfg.redis.port = test_redis_free_port();
    sg_broker_handlers_t h = {NULL, NULL, on_state, NULL, NULL};
    b = sg_broker_redis_new(&loop, &cfg, &h);
    c = sg_cache_new(b, NULL, 0, 0, 0);
    assert_int_equal(sg_cache_set(c, "k", 1, "v", 1, 0, on_done, &r),
                     SG_ENOTREADY);
    assert_int_equal(hit(c, "k", NULL), 0);
    assert_int_equal(sg_cache_fetch(c, "k", 1, on_get, &r), SG_ENOTREADY);
    assert_int_equal(sg_cache_del(c, "k", 1, on_done, &r), SG_ENOTREADY);
    sg_cache_free(c);
    sg_broker_close(b, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(r.calls, 1);
    test_redis_kill(&srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_l1_get_set_del),
        cmocka_unit_test(test_l1_lru_order),
        cmocka_unit_test(test_l1_byte_bound),
        cmocka_unit_test(test_l1_ttl),
        cmocka_unit_test(test_l1_metrics),
        cmocka_unit_test_teardown(test_l2_write_through_and_fill, teardown),
        cmocka_unit_test_teardown(test_l2_l1_ttl_is_capped, teardown),
        cmocka_unit_test_teardown(test_l2_del_during_fetch_does_not_refill,
                                  teardown),
        cmocka_unit_test_teardown(test_l2_free_with_pending_and_not_ready,
                                  teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
