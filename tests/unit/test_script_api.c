/* Tests of sg.redis, sg.cache and sg.metrics through the real script host
 * (script.c) on a real libuv loop, against a real redis-server (Redis
 * mode) or the memory broker (embedded mode). Each test writes an
 * init.lua whose on_http hook runs the calls under test and returns what
 * it saw as the body, so assertions compare exact text. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/auth.c"
#include "../../src/broker.c"
#include "../../src/buf.c"
#include "../../src/chatmsg.c"
#include "../../src/error.c"
#include "../../src/log.c"
#include "../../src/map.c"
#include "../../src/metrics.c"
#include "../../src/redis_uv.c"
#include "../../src/broker_redis.c"
#include "../../src/broker_redis_stream.c"
#include "../../src/broker_memory.c"
#include "../../src/cache.c"
#include "../../src/script.c"
#include "../../src/script_api_broker.c"
#include "../../src/script_api_core.c"
#include "../../src/script_api_json.c"
#include "../../src/script_api_jwt.c"
#include "../../src/script_api_stream.c"
#include "../../src/script_api_data.c"
#include "../../src/script_api_redis.c"
#include "../../src/script_api_cache.c"
#include "../../src/script_api_metrics.c"
#include "../../src/http_client.c"
#include "../../src/script_api_http.c"

#include "redis_helper.h"

/* ------------------------------------------------------------------
 * Fixture: loop, broker (redis or memory), metrics, script host.
 * ---------------------------------------------------------------- */

typedef struct fixture {
    uv_loop_t loop;
    uv_timer_t ticker;
    sg_config_t cfg;
    char dir[64];
    sg_broker_t *broker;
    sg_metrics_t *metrics;
    sg_script_t *s;
    int ready;
    int done_calls;
    int done_status;
    char body[2048];
    char err[512];
} fixture_t;

static test_redis_t srv;

static void on_tick(uv_timer_t *t)
{
}

static void on_state(void *arg, int ready)
{
    ((fixture_t *)arg)->ready = ready;
}

static void run_until(fixture_t *f, const int *counter, int want,
                      uint64_t ms)
{
    uint64_t deadline = uv_now(&f->loop) + ms;
    while (*counter < want && uv_now(&f->loop) < deadline)
        uv_run(&f->loop, UV_RUN_ONCE);
    if (*counter < want)
        fail_msg("timed out waiting (%d < %d)", *counter, want);
}

static void write_init(fixture_t *f, const char *src)
{
    char path[256];
    snprintf(path, sizeof path, "%s/init.lua", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(src, fp);
    fclose(fp);
}

/* mode "redis" (starts redis-server; skips without it), "embedded", or
 * "down" (Redis mode with nothing listening). */
static fixture_t *fx_new(const char *mode, double command_timeout)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    uv_timer_init(&f->loop, &f->ticker);
    uv_timer_start(&f->ticker, on_tick, 10, 10);
    strcpy(f->dir, "/tmp/sg_sapi_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->cfg.lua.path = f->dir;
    f->cfg.env = "development";
    f->cfg.node_id = "node-1";
    f->cfg.auth.dev_mode = 1;
    f->cfg.redis.host = "127.0.0.1";
    f->cfg.redis.command_timeout = command_timeout;
    f->cfg.redis.connect_timeout = 1;
    f->cfg.redis.reconnect_min_delay = 0.05;
    f->cfg.redis.reconnect_max_delay = 0.2;
    f->metrics = sg_metrics_new();
    sg_broker_handlers_t h = {NULL, NULL, on_state, f, NULL};
    if (strcmp(mode, "embedded") == 0) {
        f->broker = sg_broker_memory_new(&f->loop, &f->cfg, &h);
        return f;
    }
    if (strcmp(mode, "redis") == 0) {
        memset(&srv, 0, sizeof srv);
        srv.port = test_redis_free_port();
        assert_int_equal(test_redis_start(&srv), 0);
        f->cfg.redis.port = srv.port;
    } else {
        f->cfg.redis.port = test_redis_free_port();
    }
    f->broker = sg_broker_redis_new(&f->loop, &f->cfg, &h);
    if (strcmp(mode, "redis") == 0)
        run_until(f, &f->ready, 1, 5000);
    return f;
}

static void fx_load(fixture_t *f, const char *src)
{
    write_init(f, src);
    f->s = sg_script_new(&f->loop, &f->cfg, f->broker, f->metrics, NULL,
                         f->err, sizeof f->err);
    if (f->s == NULL)
        fail_msg("load failed: %s", f->err);
}

static void fx_free(fixture_t *f)
{
    char cmd[128];
    sg_script_free(f->s);
    sg_broker_close(f->broker, NULL, NULL);
    uv_close((uv_handle_t *)&f->ticker, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    sg_metrics_free(f->metrics);
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    test_redis_kill(&srv);
}

static void http_done(void *ctx, int status, const char *ctype,
                      const char *body, size_t len,
                      const char *const *headers)
{
    fixture_t *f = ctx;
    f->done_calls++;
    f->done_status = status;
    snprintf(f->body, sizeof f->body, "%.*s", (int)len, body ? body : "");
}

/* Runs on_http(path) to completion; returns the body. */
static const char *call(fixture_t *f, const char *path)
{
    static const char *const hdrs[] = {NULL};
    sg_script_http_req_t req = {"GET", path, NULL, NULL, 0, hdrs,
                                "127.0.0.1"};
    int want = f->done_calls + 1;
    sg_script_http(f->s, &req, http_done, f, NULL);
    run_until(f, &f->done_calls, want, 5000);
    assert_int_equal(f->done_status, 200);
    return f->body;
}

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

/* A Lua helper every script gets: show(v) renders any reply as text. */
#define SHOW_LUA                                                               \
    "local function show(v)\n"                                                 \
    "  if v == nil then return 'nil' end\n"                                    \
    "  if v == sg.null then return 'null' end\n"                               \
    "  if type(v) ~= 'table' then return type(v):sub(1,1) .. ':' ..\n"        \
    "    tostring(v) end\n"                                                    \
    "  local t = {}\n"                                                         \
    "  for i = 1, #v do t[i] = show(v[i]) end\n"                               \
    "  return '[' .. table.concat(t, ',') .. ']'\n"                            \
    "end\n"                                                                    \
    "local function pack(...)\n"                                               \
    "  local n, t = select('#', ...), {}\n"                                    \
    "  for i = 1, n do t[i] = show((select(i, ...))) end\n"                    \
    "  return table.concat(t, ' ')\n"                                          \
    "end\n"

/* ------------------------------------------------------------------
 * sg.redis
 * ---------------------------------------------------------------- */

static void test_redis_replies(void **state)
{
    SKIP_WITHOUT_REDIS();
    fixture_t *f = fx_new("redis", 0);
    fx_load(f, SHOW_LUA
            "return { on_http = function(req)\n"
            "  local r = {}\n"
            "  r[#r+1] = pack(sg.redis('SET', 'k', 'a\\0b'))\n"
            "  local v = sg.redis('GET', 'k')\n"
            "  r[#r+1] = #v .. (v == 'a\\0b' and ':same' or ':diff')\n"
            "  r[#r+1] = pack(sg.redis('set', 'n', 41))\n"
            "  r[#r+1] = pack(sg.redis('INCR', 'n'))\n"
            "  r[#r+1] = pack(sg.redis('SET', 'f', 1.5))\n"
            "  r[#r+1] = pack(sg.redis('GET', 'f'))\n"
            "  r[#r+1] = pack(sg.redis('GET', 'missing'))\n"
            "  r[#r+1] = pack(sg.redis('RPUSH', 'l', 'x', 'y'))\n"
            "  r[#r+1] = pack(sg.redis('LRANGE', 'l', 0, -1))\n"
            "  r[#r+1] = pack(sg.redis('LRANGE', 'none', 0, -1))\n"
            "  sg.redis('XADD', 'st', '1-1', 'f', 'v')\n"
            "  r[#r+1] = pack(sg.redis('XRANGE', 'st', '-', '+'))\n"
            "  r[#r+1] = pack(sg.redis('EVAL',\n"
            "    \"return {1, false, redis.error_reply('E1')}\", 0))\n"
            "  r[#r+1] = pack(sg.redis('NOSUCH', 'x'))\n"
            "  r[#r+1] = pack(sg.redis('PING'))\n"
            "  r[#r+1] = tostring(sg.null == sg.json.null)\n"
            "  return 200, table.concat(r, '\\n')\n"
            "end }\n");
    const char *body = call(f, "/");
    assert_string_equal(body,
        "s:OK\n"
        "3:same\n"
        "s:OK\n"
        "n:42\n"
        "s:OK\n"
        "s:1.5\n"
        "null\n"
        "n:2\n"
        "[s:x,s:y]\n"
        "[]\n"
        "[[s:1-1,[s:f,s:v]]]\n"
        "[n:1,null,[b:false,s:ERR E1]]\n"
        "b:false s:ERR unknown command 'NOSUCH', with args beginning "
        "with: 'x' \n"
        "s:PONG\n"
        "true");
    assert_int_equal(sg_script_errors(f->s), 0);
    fx_free(f);
}

static void test_redis_misuse_raises(void **state)
{
    SKIP_WITHOUT_REDIS();
    fixture_t *f = fx_new("redis", 0);
    fx_load(f, "return {\n"
            "  on_connect = function(req)\n"
            "    sg.redis('PING')\n"
            "    return true\n"
            "  end,\n"
            "  on_http = function(req)\n"
            "    local r = {}\n"
            "    r[#r+1] = select(2, pcall(sg.redis))\n"
            "    r[#r+1] = select(2, pcall(sg.redis, 'GET', {}))\n"
            "    r[#r+1] = select(2, pcall(sg.redis, 'GET', nil))\n"
            "    r[#r+1] = select(2, pcall(sg.redis, 'SUBSCRIBE', 'c'))\n"
            "    r[#r+1] = select(2, pcall(sg.redis, 'multi'))\n"
            "    return 200, table.concat(r, '\\n')\n"
            "  end }\n");
    assert_string_equal(call(f, "/"),
        "bad argument #1 to '?' (command name expected, got no value)\n"
        "bad argument #2 to '?' (string or number expected, got table)\n"
        "bad argument #2 to '?' (string or number expected, got nil)\n"
        "bad argument #1 to '?' (SUBSCRIBE is not allowed: it would change "
        "the state of the shared connection)\n"
        "bad argument #1 to '?' (multi is not allowed: it would change the "
        "state of the shared connection)");
    /* on_connect must not wait: the call raises, the hook denies. */
    char reason[64], uid[64];
    sg_script_connect_req_t req = {"s1", "u1", NULL, "/ws", "127.0.0.1",
                                   NULL};
    assert_int_equal(sg_script_on_connect(f->s, &req, reason, sizeof reason,
                                          uid, sizeof uid), 0);
    assert_string_equal(reason, "internal error");
    assert_int_equal(sg_script_errors(f->s), 1);
    fx_free(f);
}

/* A hung server (SIGSTOP): nil, "timeout" after command_timeout; once it
 * is back (SIGCONT) the broker reconnects and sg.redis works again. */
static void test_redis_timeout_and_recovery(void **state)
{
    SKIP_WITHOUT_REDIS();
    fixture_t *f = fx_new("redis", 0.3);
    fx_load(f, SHOW_LUA
            "return { on_http = function(req)\n"
            "  local t0 = sg.now()\n"
            "  local r = pack(sg.redis('PING'))\n"
            "  if req.path == '/slow' then\n"
            "    local ms = sg.now() - t0\n"
            "    r = r .. (ms >= 290 and ms < 1500 and ' in time' or\n"
            "      (' took ' .. ms))\n"
            "  end\n"
            "  return 200, r\n"
            "end }\n");
    kill(srv.pid, SIGSTOP);
    assert_string_equal(call(f, "/slow"), "nil s:timeout in time");
    assert_string_equal(call(f, "/"), "nil s:not ready");
    kill(srv.pid, SIGCONT);
    run_until(f, &f->ready, 1, 5000);
    assert_string_equal(call(f, "/"), "s:PONG");
    fx_free(f);
}

static void test_redis_not_ready_and_embedded(void **state)
{
    SKIP_WITHOUT_REDIS();
    static const char src[] = SHOW_LUA
        "return { on_http = function(req)\n"
        "  return 200, pack(sg.redis('GET', 'k'))\n"
        "end }\n";
    fixture_t *f = fx_new("down", 0);
    fx_load(f, src);
    assert_string_equal(call(f, "/"), "nil s:not ready");
    fx_free(f);

    f = fx_new("embedded", 0);
    fx_load(f, src);
    assert_string_equal(call(f, "/"), "nil s:not supported");
    fx_free(f);
}

/* The hook is abandoned (script host freed) while its command is in
 * flight: the reply finds no task and frees only the op (ASan). */
static void test_redis_abandoned_while_pending(void **state)
{
    SKIP_WITHOUT_REDIS();
    fixture_t *f = fx_new("redis", 0);
    fx_load(f, "return { on_http = function(req)\n"
            "  sg.redis('SET', 'after', 'yes')\n"
            "  return 200, 'unreachable'\n"
            "end }\n");
    static const char *const hdrs[] = {NULL};
    sg_script_http_req_t req = {"GET", "/", NULL, NULL, 0, hdrs, "x"};
    sg_script_task_t *task = NULL;
    sg_script_http(f->s, &req, http_done, f, &task);
    assert_non_null(task);
    assert_int_equal(sg_script_pending(f->s), 1);
    sg_script_task_detach(task);
    sg_script_free(f->s);
    f->s = NULL;
    redisContext *c;
    for (int i = 0; i < 50; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    c = test_redis_client(&srv);
    redisReply *r = redisCommand(c, "GET after");
    assert_string_equal(r->str, "yes"); /* the command still ran */
    freeReplyObject(r);
    redisFree(c);
    assert_int_equal(f->done_calls, 0);
    fx_free(f);
}

/* ------------------------------------------------------------------
 * sg.cache
 * ---------------------------------------------------------------- */

static void test_cache_redis_mode(void **state)
{
    SKIP_WITHOUT_REDIS();
    fixture_t *f = fx_new("redis", 0);
    fx_load(f, SHOW_LUA
            "return { on_http = function(req)\n"
            "  local r = {}\n"
            "  if req.path == '/set' then\n"
            "    r[#r+1] = pack(sg.cache.set('k', 'v1', 30))\n"
            "    r[#r+1] = pack(sg.cache.get('k'))\n"
            "    r[#r+1] = pack(sg.cache.set('n', 42))\n"
            "    r[#r+1] = pack(sg.cache.set('b', true))\n"
            "    r[#r+1] = pack(sg.cache.get('missing'))\n"
            "  elseif req.path == '/get' then\n"
            "    r[#r+1] = pack(sg.cache.get('other'))\n"
            "    r[#r+1] = pack(sg.cache.get('other'))\n"
            "    r[#r+1] = pack(sg.cache.get('n'))\n"
            "  else\n"
            "    r[#r+1] = pack(sg.cache.del('k'))\n"
            "    r[#r+1] = pack(sg.cache.get('k'))\n"
            "  end\n"
            "  return 200, table.concat(r, ' | ')\n"
            "end }\n");
    assert_string_equal(call(f, "/set"),
                        "b:true | s:v1 | b:true | b:true | nil");
    long long pttl = test_redis_int(&srv, "PTTL %s", "sg:cache:k");
    assert_true(pttl > 29000 && pttl <= 30000);
    assert_int_equal(test_redis_int(&srv, "PTTL %s", "sg:cache:n"), -1);
    redisContext *c = test_redis_client(&srv);
    redisReply *r = redisCommand(c, "GET sg:cache:b");
    assert_string_equal(r->str, "true");
    freeReplyObject(r);
    /* Written by "another node": found in L2, then served from L1. */
    freeReplyObject(redisCommand(c, "SET sg:cache:other from-l2"));
    assert_string_equal(call(f, "/get"), "s:from-l2 | s:from-l2 | s:42");
    assert_string_equal(call(f, "/del"), "b:true | nil");
    r = redisCommand(c, "EXISTS sg:cache:k");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    redisFree(c);

    char *text;
    size_t len;
    assert_int_equal(sg_metrics_render(f->metrics, &text, &len), 0);
    /* L1: hit k; misses missing, other, k (after del) -> hits 3 = k,
     * other (2nd), n. L2: hit other; misses missing, k. */
    assert_non_null(strstr(text, "cache_hits_total{level=\"L1\"} 3\n"));
    assert_non_null(strstr(text, "cache_misses_total{level=\"L1\"} 3\n"));
    assert_non_null(strstr(text, "cache_hits_total{level=\"L2\"} 1\n"));
    assert_non_null(strstr(text, "cache_misses_total{level=\"L2\"} 2\n"));
    free(text);
    fx_free(f);
}

static void test_cache_embedded_and_misuse(void **state)
{
    fixture_t *f = fx_new("embedded", 0);
    fx_load(f, SHOW_LUA
            "return {\n"
            "  on_connect = function(req)\n"
            "    sg.cache.get('k')\n"
            "    return true\n"
            "  end,\n"
            "  on_http = function(req)\n"
            "  local r = {}\n"
            "  r[#r+1] = pack(sg.cache.set('k', 'v', 0.05))\n"
            "  r[#r+1] = pack(sg.cache.get('k'))\n"
            "  sg.sleep(0.08)\n"
            "  r[#r+1] = pack(sg.cache.get('k'))\n"
            "  r[#r+1] = pack(sg.cache.set('k', 1.25))\n"
            "  r[#r+1] = pack(sg.cache.get('k'))\n"
            "  r[#r+1] = pack(sg.cache.del('k'))\n"
            "  r[#r+1] = pack(sg.cache.get('k'))\n"
            "  r[#r+1] = select(2, pcall(sg.cache.set, 'k', {}))\n"
            "  r[#r+1] = select(2, pcall(sg.cache.set, 'k'))\n"
            "  r[#r+1] = select(2, pcall(sg.cache.set, 'k', 'v', 0))\n"
            "  r[#r+1] = select(2, pcall(sg.cache.get))\n"
            "  return 200, table.concat(r, '\\n')\n"
            "end }\n");
    assert_string_equal(call(f, "/"),
        "b:true\ns:v\nnil\nb:true\ns:1.25\nb:true\nnil\n"
        "bad argument #2 to '?' (string, number or boolean expected, got "
        "table)\n"
        "bad argument #2 to '?' (string, number or boolean expected, got "
        "no value)\n"
        "bad argument #3 to '?' (expected a number of seconds > 0)\n"
        "bad argument #1 to '?' (string expected, got no value)");
    char reason[64], uid[64];
    sg_script_connect_req_t req = {"s1", "u1", NULL, "/ws", "127.0.0.1",
                                   NULL};
    assert_int_equal(sg_script_on_connect(f->s, &req, reason, sizeof reason,
                                          uid, sizeof uid), 0);
    assert_int_equal(sg_script_errors(f->s), 1);
    fx_free(f);
}

/* ------------------------------------------------------------------
 * sg.metrics
 * ---------------------------------------------------------------- */

static const char metrics_lua[] =
    "local M = {}\n"
    "local function err(f, ...)\n"
    "  local ok, e = pcall(f, ...)\n"
    "  return ok and 'no error' or e\n"
    "end\n"
    "return { on_http = function(req)\n"
    "  local r = {}\n"
    "  local c = sg.metrics.counter('lua_requests_total', 'Requests',\n"
    "                               'route', 'code')\n"
    "  c:inc('chat', '200')\n"
    "  c:inc(2, 'chat', 200)\n"
    "  local g = sg.metrics.gauge('lua_queue', 'Queue length')\n"
    "  g:set(5) g:inc() g:dec(2)\n"
    "  local h = sg.metrics.histogram('lua_latency_seconds', 'Latency',\n"
    "                                 {0.1, 1}, {'route'})\n"
    "  h:observe(0.05, 'a') h:observe(0.5, 'a') h:observe(7, 'a')\n"
    "  r[#r+1] = tostring(c:get('chat', '200')) .. ' ' ..\n"
    "    tostring(g:get()) .. ' ' .. tostring(h:get('a'))\n"
    "  r[#r+1] = tostring(c)\n"
    "  r[#r+1] = err(sg.metrics.gauge, 'lua_requests_total', 'x')\n"
    "  r[#r+1] = err(sg.metrics.counter, 'lua_requests_total', 'x',\n"
    "                'route')\n"
    "  r[#r+1] = err(sg.metrics.counter, 'cache_hits_total', 'x', 'level')\n"
    "  r[#r+1] = err(sg.metrics.counter, 'bad-name', 'x')\n"
    "  r[#r+1] = err(sg.metrics.counter, 'ok_total', 'x', 'bad-label')\n"
    "  r[#r+1] = err(sg.metrics.histogram, 'h2', 'x', {1, 0.5})\n"
    "  r[#r+1] = err(c.inc, c, 'only-one')\n"
    "  r[#r+1] = err(c.inc, c, -1, 'a', 'b')\n"
    "  r[#r+1] = err(c.observe, c, 1, 'a', 'b')\n"
    "  r[#r+1] = err(g.set, g)\n"
    "  return 200, table.concat(r, '\\n')\n"
    "end }\n";

static void test_metrics(void **state)
{
    fixture_t *f = fx_new("embedded", 0);
    fx_load(f, metrics_lua);
    assert_string_equal(call(f, "/"),
        "3 4 3\n"
        "sg.metric lua_requests_total (counter)\n"
        "sg.metrics: metric 'lua_requests_total' is already registered as "
        "a counter with labels (route,code); cannot register it as a gauge "
        "with labels ()\n"
        "sg.metrics: metric 'lua_requests_total' is already registered as "
        "a counter with labels (route,code); cannot register it as a "
        "counter with labels (route)\n"
        "sg.metrics: metric 'cache_hits_total' is already registered by "
        "the server\n"
        "bad argument #1 to '?' (metric names must match "
        "[a-zA-Z_:][a-zA-Z0-9_:]*)\n"
        "bad argument #3 to '?' (label names must match "
        "[a-zA-Z_][a-zA-Z0-9_]* (not __*, not le))\n"
        "bad argument #3 to '?' (bucket bounds must be finite and strictly "
        "ascending)\n"
        "sg.metrics: lua_requests_total expects 2 label value(s), got 1\n"
        "bad argument #2 to '?' (counter increments must be >= 0)\n"
        "sg.metrics: lua_requests_total is a counter: observe is for "
        "histograms\n"
        "bad argument #2 to '?' (number expected, got no value)");
    char *text;
    size_t len;
    assert_int_equal(sg_metrics_render(f->metrics, &text, &len), 0);
    assert_non_null(strstr(text,
        "# TYPE lua_requests_total counter\n"
        "lua_requests_total{route=\"chat\",code=\"200\"} 3\n"));
    assert_non_null(strstr(text, "lua_queue 4\n"));
    assert_non_null(strstr(text,
        "lua_latency_seconds_bucket{route=\"a\",le=\"0.1\"} 1\n"));
    assert_non_null(strstr(text,
        "lua_latency_seconds_bucket{route=\"a\",le=\"+Inf\"} 3\n"));
    free(text);

    /* A reloaded script (new state, same registry) gets the same
     * families: the counter continues from 3. */
    sg_script_free(f->s);
    fx_load(f, metrics_lua);
    const char *body = call(f, "/");
    assert_true(strncmp(body, "6 4 6\n", 6) == 0);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_redis_replies, teardown),
        cmocka_unit_test_teardown(test_redis_misuse_raises, teardown),
        cmocka_unit_test_teardown(test_redis_timeout_and_recovery, teardown),
        cmocka_unit_test_teardown(test_redis_not_ready_and_embedded,
                                  teardown),
        cmocka_unit_test_teardown(test_redis_abandoned_while_pending,
                                  teardown),
        cmocka_unit_test_teardown(test_cache_redis_mode, teardown),
        cmocka_unit_test(test_cache_embedded_and_misuse),
        cmocka_unit_test(test_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
