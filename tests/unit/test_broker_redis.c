/* Tests of the Redis broker engine (broker_redis.c, broker_redis_stream.c)
 * and our hiredis libuv adapter (redis_uv.c) against a real redis-server
 * that each test starts on a free loopback port: connection, pub/sub,
 * history, the stream conformance suite (stream_conformance.h), and the
 * multi-node stream cases (two brokers as two nodes, a node closed
 * mid-answer, Redis restarted, SCRIPT FLUSH, FLUSHALL). Skipped when
 * redis-server is not installed. */
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
#include "../../src/broker.c"
#include "../../src/redis_uv.c"
#include "../../src/broker_redis.c"
#include "../../src/broker_redis_stream.c"
#include "../../src/broker_memory.c"

#include "redis_helper.h"

#define MAX_MSGS 32

typedef struct rec {
    int subscribed;
    int ready_events;    /* on_state(1) */
    int down_events;     /* on_state(0) */
    int msgs;
    char msg_sid[MAX_MSGS][64];
    char msg[MAX_MSGS][64];
    size_t msg_len[MAX_MSGS];
    int done;
    int done_status[MAX_MSGS];
    int lists;
    int list_status;
    size_t list_n;
    char list_item[4][64];
    int closed;
} rec_t;

static uv_loop_t loop;
static uv_timer_t watchdog;
static uv_timer_t ticker;
static rec_t rec;
static sg_config_t cfg;
static test_redis_t srv;
static double connect_timeout_s = 1;
static double command_timeout_s = 0; /* 0: the default (5 s) */

/* ---- callbacks ---------------------------------------------------------- */

static void on_watchdog(uv_timer_t *t)
{
    fail_msg("watchdog fired: the test did not finish in time");
}

static void on_tick(uv_timer_t *t)
{
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
    ((rec_t *)arg)->subscribed++;
}

static void on_state(void *arg, int ready)
{
    rec_t *r = arg;
    if (ready)
        r->ready_events++;
    else
        r->down_events++;
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
    for (size_t i = 0; i < n && i < 4; i++) {
        size_t len = lens[i] < 63 ? lens[i] : 63;
        memcpy(r->list_item[i], items[i], len);
        r->list_item[i][len] = '\0';
    }
}

static void on_closed(void *arg)
{
    ((rec_t *)arg)->closed++;
}

/* ---- harness ------------------------------------------------------------ */

/* Runs the loop until `*counter >= want` or `ms` elapse; returns 1 if met. */
static int run_until(const int *counter, int want, uint64_t ms)
{
    uint64_t deadline = uv_now(&loop) + ms;
    while (*counter < want && uv_now(&loop) < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    return *counter >= want;
}

static void run_for(uint64_t ms)
{
    int never = 0;
    run_until(&never, 1, ms);
}

static int start_server(const char *password)
{
    memset(&srv, 0, sizeof(srv));
    srv.port = test_redis_free_port();
    srv.password = password;
    return srv.port > 0 && test_redis_start(&srv) == 0 ? 0 : -1;
}

static sg_broker_t *new_broker(int port, const char *password)
{
    memset(&rec, 0, sizeof(rec));
    memset(&cfg, 0, sizeof(cfg));
    cfg.redis.host = "127.0.0.1";
    cfg.redis.port = port;
    cfg.redis.password = (char *)password;
    cfg.redis.connect_timeout = connect_timeout_s;
    cfg.redis.command_timeout = command_timeout_s;
    cfg.redis.reconnect_min_delay = 0.05;
    cfg.redis.reconnect_max_delay = 0.2;
    cfg.stream.history_ttl = 300;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &watchdog);
    uv_timer_start(&watchdog, on_watchdog, 30000, 0);
    uv_unref((uv_handle_t *)&watchdog);
    /* Keeps UV_RUN_ONCE from blocking forever in run_until. */
    uv_timer_init(&loop, &ticker);
    uv_timer_start(&ticker, on_tick, 10, 10);
    sg_broker_handlers_t h = {on_message, on_subscribed, on_state, &rec,
                              NULL};
    sg_broker_t *b = sg_broker_redis_new(&loop, &cfg, &h);
    assert_non_null(b);
    return b;
}

static void close_broker(sg_broker_t *b)
{
    sg_broker_close(b, on_closed, &rec);
    assert_int_equal(rec.closed, 0);
    uv_close((uv_handle_t *)&ticker, NULL);
    uv_close((uv_handle_t *)&watchdog, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Also runs when a test failed half-way: never leave a server behind. */
static int teardown(void **state)
{
    test_redis_kill(&srv);
    return 0;
}

#define SKIP_WITHOUT_REDIS()                                                   \
    do {                                                                       \
        if (!test_redis_available()) {                                         \
            print_message("redis-server not installed: skipped\n");           \
            skip();                                                            \
        }                                                                      \
    } while (0)

static sg_broker_t *up_broker(const char *password)
{
    assert_int_equal(start_server(password), 0);
    sg_broker_t *b = new_broker(srv.port, password);
    assert_int_equal(sg_broker_is_ready(b), 0); /* connecting */
    assert_true(run_until(&rec.ready_events, 1, 5000));
    assert_int_equal(sg_broker_is_ready(b), 1);
    assert_string_equal(sg_broker_status_text(b), "UP");
    return b;
}

/* ---- tests -------------------------------------------------------------- */

static void test_connect_ready(void **state)
{
    SKIP_WITHOUT_REDIS();
    sg_broker_t *b = up_broker(NULL);
    assert_string_equal(sg_broker_mode(b), "redis");
    assert_int_equal(rec.ready_events, 1);
    assert_int_equal(rec.down_events, 0);
    close_broker(b);
    test_redis_kill(&srv);
}

static void test_subscribe_publish(void **state)
{
    SKIP_WITHOUT_REDIS();
    sg_broker_t *b = up_broker(NULL);
    assert_int_equal(sg_broker_subscribe(b, "s1"), 0);
    assert_int_equal(sg_broker_subscribe(b, "s1"), 0);
    assert_int_equal(rec.subscribed, 0);
    assert_int_equal(sg_broker_subscription_count(b), 1);
    assert_true(run_until(&rec.subscribed, 1, 3000));
    assert_int_equal(test_redis_numsub(&srv, "chat:stream:s1"), 1);

    const char payload[] = "{\"t\":\"chunk\",\"d\":\"h\\u00e9\"}";
    assert_int_equal(test_redis_publish(&srv, "chat:stream:s1", payload,
                                        strlen(payload)), 1);
    assert_int_equal(test_redis_publish(&srv, "chat:stream:zz", "x", 1), 0);
    assert_true(run_until(&rec.msgs, 1, 3000));
    run_for(50);
    assert_int_equal(rec.msgs, 1);
    assert_string_equal(rec.msg_sid[0], "s1");
    assert_string_equal(rec.msg[0], payload);
    assert_int_equal(rec.msg_len[0], strlen(payload));

    /* Our own PUBLISH (cmd context) reaches our own subscription. */
    assert_int_equal(sg_broker_publish(b, "s1", "self", 4), 0);
    assert_true(run_until(&rec.msgs, 2, 3000));
    assert_string_equal(rec.msg[1], "self");

    assert_int_equal(sg_broker_unsubscribe(b, "s1"), 0);
    assert_int_equal(sg_broker_subscription_count(b), 0);
    broker_redis_t *br = (broker_redis_t *)b;
    for (int i = 0; i < 300 && sg_map_count(br->channels) > 0; i++)
        run_for(10);
    assert_int_equal(sg_map_count(br->channels), 0);
    assert_int_equal(test_redis_numsub(&srv, "chat:stream:s1"), 0);
    assert_int_equal(test_redis_numsub(&srv, "sg:{s1}:live"), 0);
    assert_int_equal(rec.subscribed, 1);
    close_broker(b);
    test_redis_kill(&srv);
}

static void test_rapid_subscribe_cycles(void **state)
{
    SKIP_WITHOUT_REDIS();
    sg_broker_t *b = up_broker(NULL);
    broker_redis_t *br = (broker_redis_t *)b;
    for (int i = 0; i < 200; i++) {
        assert_int_equal(sg_broker_subscribe(b, "s1"), 0);
        assert_int_equal(sg_broker_subscribe(b, "s2"), 0);
        if (i % 3 == 0)
            uv_run(&loop, UV_RUN_NOWAIT);
        assert_int_equal(sg_broker_unsubscribe(b, "s1"), 0);
        assert_int_equal(sg_broker_unsubscribe(b, "s2"), 0);
        if (i % 2 == 0)
            uv_run(&loop, UV_RUN_NOWAIT);
        assert_int_equal(sg_broker_subscribe(b, "s1"), 0);
        if (i % 5 == 0)
            run_for(1);
    }
    /* Final state: s1 wanted, s2 not. Wait until nothing is in flight. */
    for (int i = 0; i < 500; i++) {
        channel_t *c1 = sg_map_get(br->channels, "s1");
        if (c1 != NULL && c1->state == CH_SUBSCRIBED &&
            sg_map_get(br->channels, "s2") == NULL)
            break;
        run_for(10);
    }
    channel_t *c1 = sg_map_get(br->channels, "s1");
    assert_non_null(c1);
    assert_int_equal(c1->state, CH_SUBSCRIBED);
    assert_int_equal(c1->wanted, 1);
    assert_null(sg_map_get(br->channels, "s2"));
    assert_int_equal(sg_broker_subscription_count(b), 1);
    assert_true(rec.subscribed >= 1);
    assert_int_equal(test_redis_numsub(&srv, "chat:stream:s1"), 1);
    assert_int_equal(test_redis_numsub(&srv, "chat:stream:s2"), 0);
    assert_int_equal(test_redis_numsub(&srv, "sg:{s1}:live"), 1);
    assert_int_equal(test_redis_numsub(&srv, "sg:{s2}:live"), 0);

    int before = rec.msgs;
    assert_int_equal(test_redis_publish(&srv, "chat:stream:s1", "after", 5),
                     1);
    assert_int_equal(test_redis_publish(&srv, "chat:stream:s2", "no", 2), 0);
    assert_true(run_until(&rec.msgs, before + 1, 3000));
    run_for(50);
    assert_int_equal(rec.msgs, before + 1);
    assert_string_equal(rec.msg[before], "after");
    assert_int_equal(sg_broker_is_ready(b), 1);
    close_broker(b);
    test_redis_kill(&srv);
}

static void test_history(void **state)
{
    SKIP_WITHOUT_REDIS();
    sg_broker_t *b = up_broker(NULL);
    assert_int_equal(sg_broker_history_append(b, "s1", "{\"n\":1}", 7,
                                              on_done, &rec), 0);
    assert_int_equal(sg_broker_history_append(b, "s1", "a\0b", 3, on_done,
                                              &rec), 0);
    assert_int_equal(rec.done, 0);
    assert_true(run_until(&rec.done, 2, 3000));
    assert_int_equal(rec.done_status[0], 0);
    assert_int_equal(rec.done_status[1], 0);
    long long ttl = test_redis_int(&srv, "TTL %s", "chat:history:s1");
    assert_true(ttl > 0 && ttl <= 300);

    assert_int_equal(sg_broker_history_get(b, "s1", on_list, &rec), 0);
    assert_true(run_until(&rec.lists, 1, 3000));
    assert_int_equal(rec.list_status, 0);
    assert_int_equal(rec.list_n, 2);
    assert_string_equal(rec.list_item[0], "{\"n\":1}");
    assert_memory_equal(rec.list_item[1], "a\0b", 3); /* binary-safe */

    assert_int_equal(sg_broker_history_clear(b, "s1", on_done, &rec), 0);
    assert_int_equal(sg_broker_history_get(b, "s1", on_list, &rec), 0);
    assert_true(run_until(&rec.lists, 2, 3000));
    assert_int_equal(rec.done, 3);
    assert_int_equal(rec.done_status[2], 0);
    assert_int_equal(rec.list_n, 0);
    assert_int_equal(test_redis_int(&srv, "EXISTS %s", "chat:history:s1"),
                     0);
    close_broker(b);
    test_redis_kill(&srv);
}

static void test_close_cancels_pending(void **state)
{
    SKIP_WITHOUT_REDIS();
    sg_broker_t *b = up_broker(NULL);
    assert_int_equal(sg_broker_history_get(b, "s1", on_list, &rec), 0);
    assert_int_equal(sg_broker_history_append(b, "s1", "x", 1, on_done,
                                              &rec), 0);
    sg_broker_close(b, on_closed, &rec);
    assert_int_equal(rec.lists, 0); /* not inside close */
    assert_int_equal(sg_broker_publish(b, "s1", "x", 1), SG_ECLOSED);
    uv_close((uv_handle_t *)&ticker, NULL);
    uv_close((uv_handle_t *)&watchdog, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(rec.lists, 1);
    assert_int_equal(rec.list_status, SG_ECANCELED);
    assert_int_equal(rec.done, 1);
    assert_int_equal(rec.done_status[0], SG_ECANCELED);
    assert_int_equal(rec.closed, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
    test_redis_kill(&srv);
}

static void test_requirepass(void **state)
{
    SKIP_WITHOUT_REDIS();
    sg_broker_t *b = up_broker("s3cret");
    assert_int_equal(sg_broker_subscribe(b, "s1"), 0);
    assert_true(run_until(&rec.subscribed, 1, 3000));
    assert_int_equal(test_redis_numsub(&srv, "chat:stream:s1"), 1);
    close_broker(b);

    sg_broker_t *bad = new_broker(srv.port, "wrong");
    run_for(600);
    assert_int_equal(sg_broker_is_ready(bad), 0);
    assert_int_equal(rec.ready_events, 0);
    const char *st = sg_broker_status_text(bad);
    assert_true(strncmp(st, "DOWN: auth failed: WRONGPASS", 28) == 0);
    assert_int_equal(sg_broker_history_get(bad, "s1", on_list, &rec),
                     SG_ENOTREADY);
    assert_int_equal(sg_broker_publish(bad, "s1", "x", 1), SG_ENOTREADY);
    assert_int_equal(sg_broker_subscribe(bad, "s1"), 0); /* wanted */
    close_broker(bad);
    assert_int_equal(rec.lists, 0);

    /* No password configured for a server that wants one: the PING of
     * the handshake gets NOAUTH, so the broker must not look ready. */
    sg_broker_t *none = new_broker(srv.port, NULL);
    run_for(600);
    assert_int_equal(sg_broker_is_ready(none), 0);
    assert_int_equal(rec.ready_events, 0);
    st = sg_broker_status_text(none);
    assert_non_null(strstr(st, "NOAUTH"));
    close_broker(none);
    test_redis_kill(&srv);
}

static void test_closed_port_then_server_appears(void **state)
{
    SKIP_WITHOUT_REDIS();
    int port = test_redis_free_port();
    assert_true(port > 0);
    sg_broker_t *b = new_broker(port, NULL);
    assert_int_equal(sg_broker_subscribe(b, "s1"), 0);
    run_for(700);
    assert_int_equal(sg_broker_is_ready(b), 0);
    assert_int_equal(rec.ready_events, 0);
    assert_string_equal(sg_broker_status_text(b),
                        "DOWN: connection refused");
    assert_int_equal(sg_broker_history_clear(b, "s1", on_done, &rec),
                     SG_ENOTREADY);

    /* Reconnect attempts continue: a server on that port is found. */
    memset(&srv, 0, sizeof(srv));
    srv.port = port;
    assert_int_equal(test_redis_start(&srv), 0);
    assert_true(run_until(&rec.ready_events, 1, 5000));
    assert_true(run_until(&rec.subscribed, 1, 3000));
    assert_int_equal(test_redis_numsub(&srv, "chat:stream:s1"), 1);
    close_broker(b);
    assert_int_equal(rec.done, 0);
    test_redis_kill(&srv);
}

static void test_close_while_connecting(void **state)
{
    SKIP_WITHOUT_REDIS();
    int port = test_redis_free_port();
    sg_broker_t *b = new_broker(port, NULL);
    close_broker(b); /* before the first connect attempt completes */
    b = new_broker(port, NULL);
    run_for(30);
    close_broker(b); /* during the backoff */
    assert_int_equal(rec.ready_events, 0);
}

static void test_kill_and_restart(void **state)
{
    SKIP_WITHOUT_REDIS();
    sg_broker_t *b = up_broker(NULL);
    assert_int_equal(sg_broker_subscribe(b, "s1"), 0);
    assert_true(run_until(&rec.subscribed, 1, 3000));
    assert_int_equal(sg_broker_history_get(b, "s1", on_list, &rec), 0);

    test_redis_kill(&srv);
    assert_true(run_until(&rec.down_events, 1, 3000));
    assert_int_equal(sg_broker_is_ready(b), 0);
    assert_true(run_until(&rec.lists, 1, 3000));
    assert_int_equal(rec.list_status, SG_EIO); /* pending op, lost link */
    assert_true(strncmp(sg_broker_status_text(b), "DOWN: ", 6) == 0);
    assert_int_equal(sg_broker_publish(b, "s1", "x", 1), SG_ENOTREADY);
    run_for(300); /* several failed reconnects */
    assert_int_equal(rec.down_events, 1);
    assert_int_equal(sg_broker_subscription_count(b), 1);

    assert_int_equal(test_redis_start(&srv), 0);
    assert_true(run_until(&rec.ready_events, 2, 5000));
    assert_string_equal(sg_broker_status_text(b), "UP");
    assert_true(run_until(&rec.subscribed, 2, 3000));
    assert_int_equal(test_redis_numsub(&srv, "chat:stream:s1"), 1);
    assert_int_equal(test_redis_publish(&srv, "chat:stream:s1", "back", 4),
                     1);
    assert_true(run_until(&rec.msgs, 1, 3000));
    assert_string_equal(rec.msg[0], "back");
    assert_int_equal(rec.lists, 1);
    close_broker(b);
    test_redis_kill(&srv);
}

/* The adapter alone: a connect to a closed port calls back (the shipped
 * adapter never did), and the connect timeout fires on a blackhole. */
static int adapter_connects;
static int adapter_status;
static char adapter_err[128];

static void adapter_on_connect(const redisAsyncContext *ac, int status)
{
    adapter_connects++;
    adapter_status = status;
    snprintf(adapter_err, sizeof(adapter_err), "%s",
             ac->errstr != NULL ? ac->errstr : "");
}

static int blackhole_listen(int *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 0), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static int filler_connect(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    connect(fd, (struct sockaddr *)&sa, sizeof(sa)); /* EINPROGRESS ok */
    return fd;
}

static void test_adapter_refused_and_timeout(void **state)
{
    int port = test_redis_free_port();
    assert_int_equal(uv_loop_init(&loop), 0);
    redisAsyncContext *ac = redisAsyncConnect("127.0.0.1", port);
    assert_non_null(ac);
    assert_int_equal(sg_redis_uv_attach(ac, &loop, 2000), 0);
    assert_int_equal(sg_redis_uv_attach(ac, &loop, 2000), SG_EINVAL);
    redisAsyncSetConnectCallback(ac, adapter_on_connect);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns: nothing left open */
    assert_int_equal(adapter_connects, 1);
    assert_int_equal(adapter_status, REDIS_ERR);
    assert_string_equal(adapter_err, "Connection refused");

    /* A loopback blackhole: a listener whose accept queue is full drops
     * further SYNs, so connect(2) stays in progress until the timeout. */
    adapter_connects = 0;
    int lport = 0;
    int lfd = blackhole_listen(&lport);
    int fillers[4];
    for (int i = 0; i < 4; i++)
        fillers[i] = filler_connect(lport);
    test_redis_sleep_ms(50);
    ac = redisAsyncConnect("127.0.0.1", lport);
    assert_non_null(ac);
    assert_int_equal(ac->err, 0);
    assert_int_equal(sg_redis_uv_attach(ac, &loop, 200), 0);
    redisAsyncSetConnectCallback(ac, adapter_on_connect);
    uint64_t t0 = uv_now(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(adapter_connects, 1);
    assert_int_equal(adapter_status, REDIS_ERR);
    assert_string_equal(adapter_err, SG_REDIS_UV_TIMEOUT_TEXT);
    assert_true(uv_now(&loop) - t0 >= 200);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* The broker's connect timeout: status names it, retries go on. */
static void test_broker_connect_timeout(void **state)
{
    int lport = 0;
    int lfd = blackhole_listen(&lport);
    int fillers[4];
    for (int i = 0; i < 4; i++)
        fillers[i] = filler_connect(lport);
    test_redis_sleep_ms(50);
    connect_timeout_s = 0.1;
    sg_broker_t *b = new_broker(lport, NULL);
    connect_timeout_s = 1;
    run_for(600); /* several 100 ms timeouts plus backoff */
    assert_int_equal(sg_broker_is_ready(b), 0);
    assert_int_equal(rec.ready_events, 0);
    assert_string_equal(sg_broker_status_text(b), "DOWN: connect timeout");
    close_broker(b);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
}

/* ---- raw commands (sg_broker_command) ---------------------------------- */

/* The last reply, flattened to text: "S:OK", "$:a\\0b" (binary kept),
 * ":42", "nil", "!ERR ...", arrays as "[x,y,[z]]". */
typedef struct cmd_rec {
    int calls;
    int status;
    char text[256];
    size_t len;
} cmd_rec_t;

static cmd_rec_t crec[8];

static void cmd_put(char *out, size_t *len, size_t cap, const char *s,
                    size_t n)
{
    if (*len + n >= cap)
        n = cap - *len - 1;
    memcpy(out + *len, s, n);
    *len += n;
    out[*len] = '\0';
}

static void cmd_flatten(const sg_reply_t *r, char *out, size_t *len,
                        size_t cap)
{
    char num[32];
    switch (r->type) {
    case SG_REPLY_STRING:
        cmd_put(out, len, cap, "$:", 2);
        cmd_put(out, len, cap, r->str, r->len);
        break;
    case SG_REPLY_STATUS:
        cmd_put(out, len, cap, "S:", 2);
        cmd_put(out, len, cap, r->str, r->len);
        break;
    case SG_REPLY_ERROR:
        cmd_put(out, len, cap, "!", 1);
        cmd_put(out, len, cap, r->str, r->len);
        break;
    case SG_REPLY_INTEGER:
        snprintf(num, sizeof(num), ":%lld", r->integer);
        cmd_put(out, len, cap, num, strlen(num));
        break;
    case SG_REPLY_NIL:
        cmd_put(out, len, cap, "nil", 3);
        break;
    case SG_REPLY_ARRAY:
        cmd_put(out, len, cap, "[", 1);
        for (size_t i = 0; i < r->n; i++) {
            if (i > 0)
                cmd_put(out, len, cap, ",", 1);
            cmd_flatten(&r->elements[i], out, len, cap);
        }
        cmd_put(out, len, cap, "]", 1);
        break;
    default:
        fail_msg("unknown reply type %d", r->type);
    }
}

static void on_cmd(void *arg, int status, const sg_reply_t *reply)
{
    cmd_rec_t *c = arg;
    c->calls++;
    c->status = status;
    c->len = 0;
    c->text[0] = '\0';
    if (status == 0) {
        assert_non_null(reply);
        cmd_flatten(reply, c->text, &c->len, sizeof(c->text));
    } else {
        assert_null(reply);
    }
}

/* Sends argv (NULL-terminated, all strings) and waits for the reply. */
static void cmd_run(sg_broker_t *b, cmd_rec_t *c, const char *const *argv)
{
    size_t lens[16];
    int argc = 0;
    while (argv[argc] != NULL) {
        lens[argc] = strlen(argv[argc]);
        argc++;
    }
    memset(c, 0, sizeof(*c));
    assert_int_equal(sg_broker_command(b, argc, argv, lens, on_cmd, c), 0);
    assert_int_equal(c->calls, 0); /* never synchronous */
    assert_true(run_until(&c->calls, 1, 3000));
}

static int cmd_refused(sg_broker_t *b, const char *const *argv)
{
    size_t lens[16];
    int argc = 0;
    while (argv[argc] != NULL) {
        lens[argc] = strlen(argv[argc]);
        argc++;
    }
    return sg_broker_command(b, argc, argv, lens, on_cmd, &crec[7]);
}

#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_command_replies(void **state)
{
    SKIP_WITHOUT_REDIS();
    sg_broker_t *b = up_broker(NULL);
    const char *set[] = {"SET", "k", "a\0b"};
    size_t set_lens[] = {3, 1, 3};
    memset(&crec[0], 0, sizeof(crec[0]));
    assert_int_equal(sg_broker_command(b, 3, set, set_lens, on_cmd,
                                       &crec[0]), 0);
    assert_true(run_until(&crec[0].calls, 1, 3000));
    assert_int_equal(crec[0].status, 0);
    assert_string_equal(crec[0].text, "S:OK");

    cmd_run(b, &crec[0], ARGV("get", "k"));
    assert_int_equal(crec[0].len, 5);
    assert_memory_equal(crec[0].text, "$:a\0b", 5); /* binary-safe */
    cmd_run(b, &crec[0], ARGV("INCRBY", "n", "41"));
    cmd_run(b, &crec[0], ARGV("INCR", "n"));
    assert_string_equal(crec[0].text, ":42");
    cmd_run(b, &crec[0], ARGV("GET", "missing"));
    assert_string_equal(crec[0].text, "nil");
    cmd_run(b, &crec[0], ARGV("LRANGE", "missing", "0", "-1"));
    assert_string_equal(crec[0].text, "[]");
    cmd_run(b, &crec[0], ARGV("RPUSH", "l", "x", "y"));
    cmd_run(b, &crec[0], ARGV("LRANGE", "l", "0", "-1"));
    assert_string_equal(crec[0].text, "[$:x,$:y]");
    cmd_run(b, &crec[0], ARGV("XADD", "st", "1-1", "f", "v"));
    cmd_run(b, &crec[0], ARGV("XRANGE", "st", "-", "+"));
    assert_string_equal(crec[0].text, "[[$:1-1,[$:f,$:v]]]");
    cmd_run(b, &crec[0], ARGV("EVAL", "return {1, false, 'z'}", "0"));
    assert_string_equal(crec[0].text, "[:1,nil,$:z]");
    cmd_run(b, &crec[0], ARGV("NOSUCHCMD", "x"));
    assert_int_equal(crec[0].status, 0);
    assert_true(strncmp(crec[0].text, "!ERR unknown command", 20) == 0);
    cmd_run(b, &crec[0], ARGV("PING"));
    assert_string_equal(crec[0].text, "S:PONG"); /* connection intact */
    /* XREAD without BLOCK is fine, even on a key named BLOCK. */
    cmd_run(b, &crec[0], ARGV("XREAD", "COUNT", "1", "STREAMS", "BLOCK",
                              "0"));
    assert_string_equal(crec[0].text, "nil");
    assert_int_equal(rec.down_events, 0);
    close_broker(b);
    test_redis_kill(&srv);
}

static void test_command_refused(void **state)
{
    SKIP_WITHOUT_REDIS();
    sg_broker_t *b = up_broker(NULL);
    const char *const *bad[] = {
        ARGV("SUBSCRIBE", "c"), ARGV("psubscribe", "c*"),
        ARGV("UNSUBSCRIBE"), ARGV("MONITOR"), ARGV("select", "1"),
        ARGV("AUTH", "x"), ARGV("QUIT"), ARGV("HELLO", "3"),
        ARGV("MULTI"), ARGV("EXEC"), ARGV("WATCH", "k"),
        ARGV("client", "reply", "off"), ARGV("BLPOP", "l", "0"),
        ARGV("XREAD", "BLOCK", "0", "STREAMS", "s", "$"),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (cmd_refused(b, bad[i]) != SG_EINVAL)
            fail_msg("%s was not refused", bad[i][0]);
    assert_int_equal(sg_broker_command(b, 0, NULL, NULL, on_cmd, &crec[7]),
                     SG_EINVAL);
    cmd_run(b, &crec[0], ARGV("CLIENT", "GETNAME")); /* CLIENT is fine */
    assert_string_equal(crec[0].text, "nil");
    run_for(50);
    assert_int_equal(crec[7].calls, 0);
    close_broker(b);
    test_redis_kill(&srv);
}

static void test_command_not_ready_closed_and_memory(void **state)
{
    SKIP_WITHOUT_REDIS();
    int port = test_redis_free_port();
    sg_broker_t *b = new_broker(port, NULL);
    run_for(100);
    memset(&crec[0], 0, sizeof(crec[0]));
    assert_int_equal(cmd_refused(b, ARGV("PING")), SG_ENOTREADY);
    close_broker(b);
    assert_int_equal(crec[7].calls, 0);

    /* Pending commands are cancelled by close. */
    b = up_broker(NULL);
    size_t lens[] = {4};
    const char *ping[] = {"PING"};
    memset(crec, 0, sizeof(crec));
    assert_int_equal(sg_broker_command(b, 1, ping, lens, on_cmd, &crec[0]),
                     0);
    sg_broker_close(b, on_closed, &rec);
    assert_int_equal(sg_broker_command(b, 1, ping, lens, on_cmd, &crec[1]),
                     SG_ECLOSED);
    uv_close((uv_handle_t *)&ticker, NULL);
    uv_close((uv_handle_t *)&watchdog, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(crec[0].calls, 1);
    assert_int_equal(crec[0].status, SG_ECANCELED);
    assert_int_equal(crec[1].calls, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    test_redis_kill(&srv);

    /* The memory engine does not do raw commands. */
    sg_config_t mcfg;
    memset(&mcfg, 0, sizeof(mcfg));
    assert_int_equal(uv_loop_init(&loop), 0);
    sg_broker_handlers_t h = {NULL, NULL, NULL, NULL, NULL};
    sg_broker_t *m = sg_broker_memory_new(&loop, &mcfg, &h);
    assert_int_equal(sg_broker_command(m, 1, ping, lens, on_cmd, &crec[0]),
                     SG_ENOTSUP);
    assert_string_equal(sg_strerror(SG_ENOTSUP), "not supported");
    sg_broker_close(m, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A hung server (SIGSTOP): the command times out, the pair is torn down
 * (other pending ops fail with SG_EIO), and after SIGCONT the broker is
 * back and the late reply went nowhere. */
static void test_command_timeout(void **state)
{
    SKIP_WITHOUT_REDIS();
    command_timeout_s = 0.3;
    sg_broker_t *b = up_broker(NULL);
    command_timeout_s = 0;
    memset(crec, 0, sizeof(crec));
    const char *incr[] = {"INCR", "late"};
    size_t lens[] = {4, 4};
    kill(srv.pid, SIGSTOP);
    uint64_t t0 = uv_now(&loop);
    assert_int_equal(sg_broker_command(b, 2, incr, lens, on_cmd, &crec[0]),
                     0);
    assert_int_equal(sg_broker_history_get(b, "s1", on_list, &rec), 0);
    assert_true(run_until(&crec[0].calls, 1, 3000));
    uint64_t took = uv_now(&loop) - t0;
    assert_int_equal(crec[0].status, SG_ETIMEOUT);
    assert_true(took >= 290 && took < 1000);
    assert_true(run_until(&rec.lists, 1, 1000));
    assert_int_equal(rec.list_status, SG_EIO);
    assert_int_equal(sg_broker_is_ready(b), 0);
    assert_string_equal(sg_broker_status_text(b), "DOWN: command timeout");
    kill(srv.pid, SIGCONT);
    assert_true(run_until(&rec.ready_events, 2, 5000));
    cmd_run(b, &crec[1], ARGV("GET", "late"));
    /* The server ran the INCR; our callback saw it exactly once. */
    assert_string_equal(crec[1].text, "$:1");
    assert_int_equal(crec[0].calls, 1);
    close_broker(b);
    test_redis_kill(&srv);
}

/* ---- stream conformance fixture --------------------------------------- */

#include "stream_conformance.h"

static sg_broker_t *fx_new(sg_config_t *c, const sg_broker_handlers_t *h)
{
    c->redis.host = "127.0.0.1";
    c->redis.port = srv.port;
    c->redis.connect_timeout = 1;
    c->redis.reconnect_min_delay = 0.05;
    c->redis.reconnect_max_delay = 0.2;
    sg_broker_t *b = sg_broker_redis_new(&loop, c, h);
    assert_non_null(b);
    for (int i = 0; i < 500 && !sg_broker_is_ready(b); i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(sg_broker_is_ready(b), 1);
    return b;
}

static sg_broker_t *fx_open(sg_config_t *c, const sg_broker_handlers_t *h)
{
    memset(&rec, 0, sizeof(rec));
    if (srv.pid == 0)
        assert_int_equal(start_server(NULL), 0);
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &watchdog);
    uv_timer_start(&watchdog, on_watchdog, 30000, 0);
    uv_unref((uv_handle_t *)&watchdog);
    /* Keeps UV_RUN_ONCE from blocking while connecting. */
    uv_timer_init(&loop, &ticker);
    uv_timer_start(&ticker, on_tick, 10, 10);
    cfg = *c;
    return fx_new(&cfg, h);
}

static void fx_close(sg_broker_t *b)
{
    close_broker(b);
}

/* Every key of the session: count and TTL in (0, ttl]. */
static void fx_check_ttls(sg_broker_t *b, const char *sid, int ttl,
                          int nkeys)
{
    char pattern[BR_KEY_MAX];
    snprintf(pattern, sizeof(pattern), "sg:{%s}:*", sid);
    redisContext *c = test_redis_client(&srv);
    assert_non_null(c);
    redisReply *keys = redisCommand(c, "KEYS %s", pattern);
    assert_non_null(keys);
    assert_int_equal(keys->type, REDIS_REPLY_ARRAY);
    assert_int_equal(keys->elements, nkeys);
    for (size_t i = 0; i < keys->elements; i++) {
        redisReply *t = redisCommand(c, "TTL %s", keys->element[i]->str);
        assert_non_null(t);
        if (t->integer <= 0 || t->integer > ttl)
            fail_msg("key %s has TTL %lld, expected 1..%d",
                     keys->element[i]->str, t->integer, ttl);
        freeReplyObject(t);
    }
    freeReplyObject(keys);
    redisFree(c);
}

static void fx_go_down(sg_broker_t *b)
{
    test_redis_kill(&srv);
    for (int i = 0; i < 500 && sg_broker_is_ready(b); i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(sg_broker_is_ready(b), 0);
}

static const sc_fixture_t redis_fixture = {
    .engine = "redis",
    .loop = &loop,
    .open = fx_open,
    .close = fx_close,
    .check_ttls = fx_check_ttls,
    .go_down = fx_go_down,
    .exact_trim = 0,
};

static int sc_setup(void **state)
{
    if (!test_redis_available()) {
        print_message("redis-server not installed: skipped\n");
        return -1;
    }
    sc_fx = &redis_fixture;
    memset(&srv, 0, sizeof(srv));
    return 0;
}

/* A blocking command from an independent client; asserts it succeeded. */
static void redis_do(const char *cmd)
{
    redisContext *c = test_redis_client(&srv);
    assert_non_null(c);
    redisReply *r = redisCommand(c, cmd);
    assert_non_null(r);
    assert_int_not_equal(r->type, REDIS_REPLY_ERROR);
    freeReplyObject(r);
    redisFree(c);
}

/* ---- multi-node stream tests ------------------------------------------- */

static sc_rec_t node_rec[2];

/* One append of one node: its own result slot (replies of two
 * connections arrive in any order relative to each other). */
typedef struct node_slot {
    int status;
    uint64_t offset;
} node_slot_t;

static node_slot_t node_slots[16][2];

static void node_on_done(void *arg, int status, uint64_t offset)
{
    node_slot_t *slot = arg;
    slot->status = status;
    slot->offset = offset;
    node_rec[0].appends++;
}

/* Two brokers on one loop are two nodes. Node 0 is opened through the
 * conformance harness (it owns the loop and sc_rec); node 1 is added. */
static sg_broker_t *node_open(sg_broker_t **second)
{
    memset(node_rec, 0, sizeof(node_rec));
    memset(node_slots, 0, sizeof(node_slots));
    sg_broker_t *a = sc_open();
    sg_broker_handlers_t h = sc_handlers(&node_rec[1]);
    sg_config_t c = cfg;
    *second = fx_new(&c, &h);
    return a;
}

/* Message `i` appended by both nodes (node 1 first when b_first). */
static void node_append_both(sg_broker_t *a, sg_broker_t *b, int i,
                             const char *text, int fin, int b_first)
{
    sg_chatmsg_t m = sc_msg("m1", text, fin);
    node_slots[i][0].status = node_slots[i][1].status = 1;
    if (b_first)
        assert_int_equal(sg_broker_stream_append(b, "s1", &m, node_on_done,
                                                 &node_slots[i][1]), 0);
    assert_int_equal(sg_broker_stream_append(a, "s1", &m, node_on_done,
                                             &node_slots[i][0]), 0);
    if (!b_first)
        assert_int_equal(sg_broker_stream_append(b, "s1", &m, node_on_done,
                                                 &node_slots[i][1]), 0);
}

static void node_on_closed(void *arg)
{
    (*(int *)arg)++;
}

static void node_close(sg_broker_t *b)
{
    int closed = 0;
    sg_broker_close(b, node_on_closed, &closed);
    assert_int_equal(closed, 0);
    assert_true(run_until(&closed, 1, 3000));
}

static void test_stream_two_nodes_log_and_deliver_once(void **state)
{
    static const char *const text[] = {"One ", "One two ", "One two three ",
                                       "One two three four ",
                                       "One two three four five",
                                       "One two three four five"};
    static const char *const delta[] = {"One ", "two ", "three ", "four ",
                                        "five", ""};
    sg_broker_t *b1, *b0 = node_open(&b1);
    sc_subscribe(b0, "s1");
    assert_int_equal(sg_broker_subscribe(b1, "s1"), 0);
    assert_true(sc_run_until(&node_rec[1].subscribed, 1, 5000));
    for (int i = 0; i < 6; i++)
        node_append_both(b0, b1, i, text[i], i == 5, i % 2);
    assert_true(sc_run_until(&node_rec[0].appends, 12, 5000));
    for (int i = 0; i < 6; i++) {
        uint64_t x = node_slots[i][0].offset, y = node_slots[i][1].offset;
        assert_int_equal(node_slots[i][0].status, 0);
        assert_int_equal(node_slots[i][1].status, 0);
        /* Either node may reach Redis first; exactly one logs it. */
        assert_int_equal(x + y, (uint64_t)i + 1);
        assert_true(x == 0 || y == 0);
    }
    assert_true(sc_run_until(&sc_rec.chunks, 6, 5000));
    assert_true(sc_run_until(&node_rec[1].chunks, 6, 5000));
    sc_run_for(100);
    assert_int_equal(sc_rec.chunks, 6);
    assert_int_equal(node_rec[1].chunks, 6);
    for (int i = 0; i < 6; i++) {
        for (int n = 0; n < 2; n++) {
            sc_chunk_t *c = n == 0 ? &sc_rec.chunk[i]
                                   : &node_rec[1].chunk[i];
            assert_int_equal(c->offset, i + 1);
            assert_int_equal(c->index, i);
            assert_string_equal(c->delta, delta[i]);
            assert_string_equal(c->content, text[i]);
            assert_int_equal(c->complete, i == 5);
        }
    }
    assert_string_equal(sc_rec.chunk[0].epoch, node_rec[1].chunk[5].epoch);
    sc_read(b1, "s1", 0, 0);
    assert_int_equal(sc_rec.nlog, 6);
    node_close(b1);
    sc_close(b0);
}

static void test_stream_node_closed_midway_other_continues(void **state)
{
    char text[64] = "";
    sg_broker_t *b1, *b0 = node_open(&b1);
    sc_subscribe(b0, "s1");
    assert_int_equal(sg_broker_subscribe(b1, "s1"), 0);
    assert_true(sc_run_until(&node_rec[1].subscribed, 1, 5000));
    for (int i = 0; i < 3; i++) {
        strcat(text, "w ");
        node_append_both(b0, b1, i, text, 0, 0);
    }
    assert_true(sc_run_until(&node_rec[0].appends, 6, 5000));
    /* Node 1 dies with an append in flight: cancelled, not lost. */
    strcat(text, "w ");
    node_append_both(b0, b1, 3, text, 0, 1);
    node_close(b1);
    assert_int_equal(node_slots[3][1].status, SG_ECANCELED);
    assert_int_equal(node_rec[0].appends, 7);
    for (int i = 4; i < 6; i++) {
        strcat(text, "w ");
        sg_chatmsg_t m = sc_msg("m1", text, i == 5);
        assert_int_equal(sg_broker_stream_append(b0, "s1", &m, node_on_done,
                                                 &node_slots[i][0]), 0);
    }
    assert_true(sc_run_until(&node_rec[0].appends, 10, 5000));
    for (int i = 0; i < 6; i++)
        assert_int_equal(node_slots[i][0].status, 0);
    assert_true(sc_run_until(&sc_rec.chunks, 6, 5000));
    sc_run_for(100);
    assert_int_equal(sc_rec.chunks, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(sc_rec.chunk[i].offset, i + 1);
        assert_string_equal(sc_rec.chunk[i].delta, "w ");
    }
    sc_read(b0, "s1", 0, 0);
    assert_int_equal(sc_rec.last, 6);
    assert_int_equal(sc_rec.nlog, 6);
    assert_int_equal(sc_rec.snap[0].complete, 1);
    assert_int_equal(sc_rec.snap[0].content_len, 12);
    sc_close(b0);
}

static void test_stream_survives_redis_restart(void **state)
{
    sg_broker_t *b = sc_open();
    sc_subscribe(b, "s1");
    assert_int_equal(sc_append(b, "s1", "m1", "a ", 0), 1);
    sc_read(b, "s1", SG_STREAM_NO_SINCE, 0);
    char epoch[32];
    snprintf(epoch, sizeof(epoch), "%s", sc_rec.epoch);
    assert_true(sc_run_until(&sc_rec.chunks, 1, 5000));

    test_redis_kill(&srv);
    for (int i = 0; i < 500 && sg_broker_is_ready(b); i++)
        sc_run_for(10);
    assert_int_equal(sg_broker_is_ready(b), 0);
    sg_chatmsg_t m = sc_msg("m1", "a b ", 0);
    assert_int_equal(sg_broker_stream_append(b, "s1", &m, NULL, NULL),
                     SG_ENOTREADY);
    assert_int_equal(test_redis_start(&srv), 0);
    assert_true(sc_run_until(&sc_rec.subscribed, 2, 5000)); /* resubscribed */
    assert_int_equal(sg_broker_is_ready(b), 1);
    assert_int_equal(test_redis_numsub(&srv, "sg:{s1}:live"), 1);
    /* No persistence: the stream starts over under a new epoch. */
    assert_int_equal(sc_append(b, "s1", "m1", "a b ", 0), 1);
    assert_true(sc_run_until(&sc_rec.chunks, 2, 5000));
    assert_int_equal(sc_rec.chunk[1].offset, 1);
    assert_string_not_equal(sc_rec.chunk[1].epoch, epoch);
    sc_read(b, "s1", 0, 0);
    assert_int_equal(sc_rec.range_ok, 1);
    assert_int_equal(sc_rec.nlog, 1);
    assert_string_equal(sc_rec.epoch, sc_rec.chunk[1].epoch);
    sc_close(b);
}

static void test_stream_noscript_falls_back_to_eval(void **state)
{
    sg_broker_t *b = sc_open();
    assert_int_equal(sc_append(b, "s1", "m1", "a ", 0), 1);
    redis_do("SCRIPT FLUSH");
    assert_int_equal(sc_append(b, "s1", "m1", "a b ", 0), 2);
    redis_do("SCRIPT FLUSH");
    sc_read(b, "s1", 0, 0);
    assert_int_equal(sc_rec.nlog, 2);
    assert_string_equal(sc_rec.log[1].delta, "b ");
    assert_int_equal(sc_append(b, "s1", "m1", "a b ", 0), 0);
    sc_close(b);
}

static void test_stream_flushall_gives_a_new_epoch(void **state)
{
    sg_broker_t *b = sc_open();
    assert_int_equal(sc_append(b, "s1", "m1", "a ", 0), 1);
    sc_read(b, "s1", SG_STREAM_NO_SINCE, 0);
    char epoch[32];
    snprintf(epoch, sizeof(epoch), "%s", sc_rec.epoch);
    redis_do("FLUSHALL");
    sc_read(b, "s1", 1, 0);
    sc_assert_epoch(sc_rec.epoch);
    assert_string_not_equal(sc_rec.epoch, epoch);
    assert_int_equal(sc_rec.last, 0);
    assert_int_equal(sc_rec.range_ok, 0);
    assert_int_equal(sc_append(b, "s1", "m1", "a b ", 0), 1);
    sc_close(b);
}

/* A user id with JSON specials and a NUL in the content survive the
 * script, cjson and jansson. */
static void test_stream_binary_and_escapes(void **state)
{
    sg_broker_t *b = sc_open();
    sc_subscribe(b, "s1");
    sg_chatmsg_t m = sc_msg("m\"1", "x", 0);
    m.content = (char *)"h\xc3\xa9\0/\"\\";
    m.content_len = 7;
    m.user_id = NULL;
    assert_int_equal(sg_broker_stream_append(b, "s1", &m, sc_on_append,
                                             &sc_rec), 0);
    assert_true(sc_run_until(&sc_rec.chunks, 1, 5000));
    sc_chunk_t *c = &sc_rec.chunk[0];
    assert_string_equal(c->mid, "m\"1");
    assert_int_equal(c->has_uid, 0);
    assert_int_equal(c->content_len, 7);
    assert_memory_equal(c->content, "h\xc3\xa9\0/\"\\", 7);
    assert_memory_equal(c->delta, "h\xc3\xa9\0/\"\\", 7);
    sc_read(b, "s1", 0, 0);
    assert_int_equal(sc_rec.log[0].has_uid, 0);
    assert_int_equal(sc_rec.log[0].delta_len, 7);
    assert_int_equal(sc_rec.snap[0].content_len, 7);
    assert_memory_equal(sc_rec.snap[0].content, "h\xc3\xa9\0/\"\\", 7);
    sc_close(b);
}

/* A long session must not make appends scan every snapshot: completed
 * snapshots are indexed by done_at and capped at 64 per session. */
static void test_completed_snapshots_are_bounded(void **state)
{
    sg_broker_t *b = sc_open();
    char mid[16];
    for (int i = 0; i < 100; i++) {
        snprintf(mid, sizeof(mid), "m%d", i);
        assert_int_equal(sc_append(b, "s1", mid, "done", 1), i + 1);
    }
    assert_int_equal(sc_append(b, "s1", "live", "a ", 0), 101);
    redisContext *c = test_redis_client(&srv);
    assert_non_null(c);
    redisReply *n = redisCommand(c, "HLEN sg:{s1}:msgs");
    assert_int_equal(n->integer, 64 + 1); /* 64 finals + the live one */
    freeReplyObject(n);
    n = redisCommand(c, "ZCARD sg:{s1}:done");
    assert_int_equal(n->integer, 64);
    freeReplyObject(n);
    n = redisCommand(c, "EXISTS sg:{s1}:text:m0 sg:{s1}:text:m99");
    assert_int_equal(n->integer, 1); /* the oldest is gone */
    freeReplyObject(n);
    redisFree(c);
    sc_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_adapter_refused_and_timeout, teardown),
        cmocka_unit_test_teardown(test_connect_ready, teardown),
        cmocka_unit_test_teardown(test_subscribe_publish, teardown),
        cmocka_unit_test_teardown(test_rapid_subscribe_cycles, teardown),
        cmocka_unit_test_teardown(test_history, teardown),
        cmocka_unit_test_teardown(test_close_cancels_pending, teardown),
        cmocka_unit_test_teardown(test_requirepass, teardown),
        cmocka_unit_test_teardown(test_closed_port_then_server_appears,
                                  teardown),
        cmocka_unit_test_teardown(test_close_while_connecting, teardown),
        cmocka_unit_test_teardown(test_kill_and_restart, teardown),
        cmocka_unit_test_teardown(test_broker_connect_timeout, teardown),
        cmocka_unit_test_teardown(test_command_replies, teardown),
        cmocka_unit_test_teardown(test_command_refused, teardown),
        cmocka_unit_test_teardown(test_command_not_ready_closed_and_memory,
                                  teardown),
        cmocka_unit_test_teardown(test_command_timeout, teardown),
        SC_CONFORMANCE_TESTS(sc_setup, teardown),
        SC_T(test_stream_two_nodes_log_and_deliver_once, sc_setup, teardown),
        SC_T(test_stream_node_closed_midway_other_continues, sc_setup,
             teardown),
        SC_T(test_stream_survives_redis_restart, sc_setup, teardown),
        SC_T(test_stream_noscript_falls_back_to_eval, sc_setup, teardown),
        SC_T(test_stream_flushall_gives_a_new_epoch, sc_setup, teardown),
        SC_T(test_stream_binary_and_escapes, sc_setup, teardown),
        SC_T(test_completed_snapshots_are_bounded, sc_setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
