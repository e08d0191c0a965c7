/* Unit tests of the LuaJIT host (script.c + script_api_*.c): hooks, the
 * coroutine suspend/resume protocol on a real libuv loop, error reporting,
 * abandonment on free, and the sg.* primitives. A tiny in-test broker
 * engine (the broker.h vtable) answers history operations from the loop. */
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
#include "../../src/script.c"
#include "../../src/script_api_broker.c"
#include "../../src/script_api_core.c"
#include "../../src/script_api_json.c"
#include "../../src/script_api_jwt.c"
#include "../../src/script_api_stream.c"
#include "../../src/script_api_data.c"
#include "../../src/map.c"
#include "../../src/metrics.c"
#include "../../src/cache.c"
#include "../../src/script_api_redis.c"
#include "../../src/script_api_cache.c"
#include "../../src/script_api_metrics.c"
#include "../../src/http_client.c"
#include "../../src/script_api_http.c"

/* ------------------------------------------------------------------
 * Fake broker: one history list, ops completed from a uv timer.
 * ---------------------------------------------------------------- */

enum { OP_APPEND, OP_GET, OP_CLEAR };

typedef struct fake_op {
    int type;
    sg_broker_done_cb done;
    sg_broker_list_cb list;
    void *arg;
    char *payload;
    struct fake_op *next;
} fake_op_t;

typedef struct fake_broker {
    sg_broker_t base;
    uv_timer_t timer;
    fake_op_t *ops, **tail;
    char *items[64];
    size_t lens[64];
    size_t n;
    int published;
    char last_pub[512];
} fake_broker_t;

static void fake_complete(fake_op_t *op, fake_broker_t *fb, int status)
{
    if (op->type == OP_APPEND && status == 0) {
        fb->lens[fb->n] = strlen(op->payload);
        fb->items[fb->n++] = op->payload;
        op->payload = NULL;
    } else if (op->type == OP_CLEAR && status == 0) {
        for (size_t i = 0; i < fb->n; i++)
            free(fb->items[i]);
        fb->n = 0;
    }
    if (op->type == OP_GET)
        op->list(op->arg, status, (const char *const *)fb->items, fb->lens,
                 status == 0 ? fb->n : 0);
    else
        op->done(op->arg, status);
    free(op->payload);
    free(op);
}

static void fake_run(uv_timer_t *t)
{
    fake_broker_t *fb = t->data;
    fake_op_t *op = fb->ops;

    fb->ops = NULL;
    fb->tail = &fb->ops;
    while (op != NULL) {
        fake_op_t *next = op->next;
        fake_complete(op, fb, 0);
        op = next;
    }
}

static int fake_queue(fake_broker_t *fb, int type, const char *p, size_t n,
                      sg_broker_done_cb done, sg_broker_list_cb list,
                      void *arg)
{
    fake_op_t *op = calloc(1, sizeof *op);
    op->type = type;
    op->done = done;
    op->list = list;
    op->arg = arg;
    op->payload = p ? strndup(p, n) : NULL;
    *fb->tail = op;
    fb->tail = &op->next;
    uv_timer_start(&fb->timer, fake_run, 1, 0);
    return 0;
}

static int fake_ready(const sg_broker_t *b) { return 1; }
static const char *fake_status(const sg_broker_t *b) { return "UP"; }
static int fake_sub(sg_broker_t *b, const char *sid) { return 0; }
static size_t fake_count(const sg_broker_t *b) { return 0; }

static int fake_publish(sg_broker_t *b, const char *sid, const char *p,
                        size_t n)
{
    fake_broker_t *fb = (fake_broker_t *)b;
    fb->published++;
    snprintf(fb->last_pub, sizeof fb->last_pub, "%s|%.*s", sid, (int)n, p);
    return 0;
}

static int fake_append(sg_broker_t *b, const char *sid, const char *p,
                       size_t n, sg_broker_done_cb cb, void *arg)
{
    return fake_queue((fake_broker_t *)b, OP_APPEND, p, n, cb, NULL, arg);
}

static int fake_get(sg_broker_t *b, const char *sid, sg_broker_list_cb cb,
                    void *arg)
{
    return fake_queue((fake_broker_t *)b, OP_GET, NULL, 0, NULL, cb, arg);
}

static int fake_clear(sg_broker_t *b, const char *sid, sg_broker_done_cb cb,
                      void *arg)
{
    return fake_queue((fake_broker_t *)b, OP_CLEAR, NULL, 0, cb, NULL, arg);
}

/* sg.append: counted like publish; completes at once with the next
 * offset (enough for the host tests; the engines have their own). */
typedef struct fake_append_op {
    sg_broker_append_cb cb;
    void *arg;
    uint64_t offset;
    uv_timer_t t;
} fake_append_op_t;

static void fake_append_closed(uv_handle_t *h)
{
    free(h->data);
}

static void fake_append_fire(uv_timer_t *t)
{
    fake_append_op_t *op = t->data;
    if (op->cb != NULL)
        op->cb(op->arg, 0, op->offset);
    uv_close((uv_handle_t *)&op->t, fake_append_closed);
}

static int fake_stream_append(sg_broker_t *b, const char *sid,
                              const sg_chatmsg_t *msg, sg_broker_append_cb cb,
                              void *arg)
{
    fake_broker_t *fb = (fake_broker_t *)b;
    fb->published++;
    snprintf(fb->last_pub, sizeof fb->last_pub, "%s|%s|%d", sid,
             msg->message_id, msg->is_complete);
    fake_append_op_t *op = calloc(1, sizeof(*op));
    op->cb = cb;
    op->arg = arg;
    op->offset = (uint64_t)fb->published;
    uv_timer_init(fb->timer.loop, &op->t);
    op->t.data = op;
    uv_timer_start(&op->t, fake_append_fire, 0, 0);
    return 0;
}

static int fake_stream_read(sg_broker_t *b, const char *sid, uint64_t since,
                            int with_history, sg_broker_read_cb cb, void *arg)
{
    return SG_ENOTREADY;
}

static void fake_closed(uv_handle_t *h)
{
    fake_broker_t *fb = h->data;
    for (size_t i = 0; i < fb->n; i++)
        free(fb->items[i]);
    free(fb);
}

/* Completes everything pending with SG_ECANCELED, as broker.h requires. */
static void fake_close(sg_broker_t *b, sg_broker_closed_cb cb, void *arg)
{
    fake_broker_t *fb = (fake_broker_t *)b;
    fake_op_t *op = fb->ops;

    fb->ops = NULL;
    while (op != NULL) {
        fake_op_t *next = op->next;
        fake_complete(op, fb, SG_ECANCELED);
        op = next;
    }
    uv_close((uv_handle_t *)&fb->timer, fake_closed);
}

static const sg_broker_vtable_t fake_vt = {
    "embedded", fake_ready, fake_status, fake_sub, fake_sub, fake_count,
    fake_publish, fake_append, fake_get, fake_clear, fake_close,
    fake_stream_append, fake_stream_read, NULL,
};

static fake_broker_t *fake_new(uv_loop_t *loop)
{
    fake_broker_t *fb = calloc(1, sizeof *fb);
    fb->base.vt = &fake_vt;
    fb->tail = &fb->ops;
    uv_timer_init(loop, &fb->timer);
    fb->timer.data = fb;
    return fb;
}

/* ------------------------------------------------------------------
 * Fixture: a loop, a host that records sends, a temp init.lua.
 * ---------------------------------------------------------------- */

typedef struct fixture {
    uv_loop_t loop;
    sg_config_t cfg;
    char dir[64];
    fake_broker_t *broker;
    sg_script_t *s;
    int sends;
    uint64_t last_conn;
    char last_text[1024];
    int closes;
    int close_code;
    int done_calls;
    int done_status;
    char done_ctype[64];
    char done_body[1024];
    char done_hdr[128];
    char err[512];
} fixture_t;

static int host_send(void *data, uint64_t id, const char *text, size_t len)
{
    fixture_t *f = data;
    if (id == 99)
        return SG_ECLOSED;
    f->sends++;
    f->last_conn = id;
    snprintf(f->last_text, sizeof f->last_text, "%.*s", (int)len, text);
    return 0;
}

static int host_close(void *data, uint64_t id, int code, const char *reason)
{
    fixture_t *f = data;
    f->closes++;
    f->close_code = code;
    return 0;
}

static void write_file(const char *dir, const char *name, const char *src)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(src, fp);
    fclose(fp);
}

static fixture_t *fx_new(void)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    strcpy(f->dir, "/tmp/sg_script_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->cfg.lua.path = f->dir;
    f->cfg.port = 8080;
    f->cfg.env = "development";
    f->cfg.node_id = "node-1";
    f->cfg.upstream = "demo";
    f->cfg.auth.dev_mode = 1;
    f->cfg.auth.jwt_secret = "unit-test-secret";
    f->cfg.auth.jwt_algorithm = "HS256";
    f->cfg.auth.leeway = 30;
    f->cfg.auth.token_ttl = 3600;
    f->cfg.demo.words_per_second = 30;
    f->broker = fake_new(&f->loop);
    return f;
}

static sg_script_t *fx_load(fixture_t *f, const char *src)
{
    sg_script_host_t host = {f, host_send, host_close, NULL, NULL, NULL, NULL};
    write_file(f->dir, "init.lua", src);
    f->s = sg_script_new(&f->loop, &f->cfg, &f->broker->base, NULL, &host,
                         f->err, sizeof f->err);
    return f->s;
}

static void fx_free(fixture_t *f)
{
    char cmd[128];
    sg_script_free(f->s);
    sg_broker_close(&f->broker->base, NULL, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
}

static void http_done(void *ctx, int status, const char *ctype,
                      const char *body, size_t len,
                      const char *const *headers)
{
    fixture_t *f = ctx;
    f->done_calls++;
    f->done_status = status;
    snprintf(f->done_ctype, sizeof f->done_ctype, "%s", ctype ? ctype : "");
    snprintf(f->done_body, sizeof f->done_body, "%.*s", (int)len,
             body ? body : "");
    f->done_hdr[0] = '\0';
    if (headers != NULL && headers[0] != NULL)
        snprintf(f->done_hdr, sizeof f->done_hdr, "%s: %s", headers[0],
                 headers[1]);
}

static const sg_script_conn_t conn7 = {7, "sess-1", "alice", "127.0.0.1"};

static void on_message(fixture_t *f, const char *text)
{
    sg_script_on_message(f->s, &conn7, text, strlen(text));
}

static void http(fixture_t *f, const char *method, const char *path,
                 const char *body, sg_script_task_t **task)
{
    static const char *const hdrs[] = {"Content-Type", "application/json",
                                       "X-Mixed-Case", "v", NULL};
    sg_script_http_req_t req = {method, path, "a=1", body,
                                body ? strlen(body) : 0, hdrs, "127.0.0.1"};
    sg_script_http(f->s, &req, http_done, f, task);
}

/* Runs `fn` with stderr redirected to a buffer. */
static void capture_stderr(char *out, size_t outlen, void (*fn)(fixture_t *),
                           fixture_t *f)
{
    char path[] = "/tmp/sg_script_log_XXXXXX";
    int fd = mkstemp(path);
    int saved = dup(STDERR_FILENO);
    assert_true(fd >= 0 && saved >= 0);
    dup2(fd, STDERR_FILENO);
    fn(f);
    dup2(saved, STDERR_FILENO);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, out, outlen - 1);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
}

/* ------------------------------------------------------------------
 * Loading
 * ---------------------------------------------------------------- */

static void test_load_syntax_error_names_file_and_line(void **state)
{
    fixture_t *f = fx_new();
    assert_null(fx_load(f, "return {\n  on_message = function(\n}\n"));
    assert_non_null(strstr(f->err, "init.lua:3:"));
    fx_free(f);
}

static void test_load_requires_a_table_of_functions(void **state)
{
    fixture_t *f = fx_new();
    assert_null(fx_load(f, "return 42\n"));
    assert_non_null(strstr(f->err, "must return a table of hooks (got "
                                   "number)"));
    assert_null(fx_load(f, "return { on_message = 1 }\n"));
    assert_non_null(strstr(f->err, "hook on_message = number: expected a "
                                   "function"));
    fx_free(f);
}

static void test_sleep_at_load_time_raises(void **state)
{
    fixture_t *f = fx_new();
    assert_null(fx_load(f, "sg.sleep(1)\nreturn {}\n"));
    assert_non_null(strstr(f->err, "init.lua:1: sg.sleep: not in a hook "
                                   "coroutine"));
    fx_free(f);
}

static void test_init_can_require_modules_from_lua_path(void **state)
{
    fixture_t *f = fx_new();
    write_file(f->dir, "mod.lua", "return { answer = 'pong' }\n");
    assert_non_null(fx_load(f,
        "local mod = require 'mod'\n"
        "assert(package.loaded.sg == sg)\n"
        "return { on_message = function(c, t) sg.send(c, mod.answer) end }\n"));
    on_message(f, "ping");
    assert_int_equal(f->sends, 1);
    assert_string_equal(f->last_text, "pong");
    assert_int_equal(f->last_conn, 7);
    fx_free(f);
}

/* ------------------------------------------------------------------
 * on_connect
 * ---------------------------------------------------------------- */

static const char *CONNECT_SRC =
    "return { on_connect = function(req)\n"
    "  if req.token == 'good' then\n"
    "    return true, {user_id = req.user_id .. '!'}\n"
    "  end\n"
    "  if req.token == 'yield' then coroutine.yield() end\n"
    "  if req.token == 'sleep' then sg.sleep(0) end\n"
    "  if req.token == 'boom' then error('kaput') end\n"
    "  return false,\n"
    "    'bad token ' .. tostring(req.token) .. ' ' .. req.session_id\n"
    "end }\n";

static int do_connect(fixture_t *f, const char *token, char *reason, char *uid)
{
    sg_script_connect_req_t req = {"s1", "bob", token, "/ws/chat",
                                   "127.0.0.1", NULL};
    return sg_script_on_connect(f->s, &req, reason, 64, uid, 64);
}

static void test_on_connect_allows_with_identity(void **state)
{
    fixture_t *f = fx_new();
    char reason[64] = "", uid[64] = "x";
    assert_non_null(fx_load(f, CONNECT_SRC));
    assert_int_equal(do_connect(f, "good", reason, uid), 1);
    assert_string_equal(uid, "bob!");
    assert_int_equal(do_connect(f, "nope", reason, uid), 0);
    assert_string_equal(reason, "bad token nope s1");
    assert_int_equal(do_connect(f, NULL, reason, uid), 0);
    assert_string_equal(reason, "bad token nil s1");
    assert_int_equal(sg_script_errors(f->s), 0);
    fx_free(f);
}

static void test_on_connect_yield_or_error_denies(void **state)
{
    fixture_t *f = fx_new();
    char reason[64] = "", uid[64] = "";
    assert_non_null(fx_load(f, CONNECT_SRC));
    assert_int_equal(do_connect(f, "yield", reason, uid), 0);
    assert_string_equal(reason, "internal error");
    assert_int_equal(sg_script_errors(f->s), 1);
    assert_int_equal(sg_script_pending(f->s), 0);
    strcpy(reason, "");
    assert_int_equal(do_connect(f, "sleep", reason, uid), 0);
    assert_string_equal(reason, "internal error");
    strcpy(reason, "");
    assert_int_equal(do_connect(f, "boom", reason, uid), 0);
    assert_string_equal(reason, "internal error");
    assert_int_equal(sg_script_errors(f->s), 3);
    /* The host still works afterwards. */
    assert_int_equal(do_connect(f, "good", reason, uid), 1);
    fx_free(f);
}

static void test_no_on_connect_hook_allows(void **state)
{
    fixture_t *f = fx_new();
    char reason[64] = "", uid[64] = "x";
    assert_non_null(fx_load(f, "return {}\n"));
    assert_int_equal(do_connect(f, "whatever", reason, uid), 1);
    assert_string_equal(uid, "");
    fx_free(f);
}

/* ------------------------------------------------------------------
 * on_message, sleep, errors
 * ---------------------------------------------------------------- */

static const char *SLEEP_SRC =
    "return { on_message = function(conn, text)\n"
    "  local t0 = sg.now()\n"
    "  sg.sleep(0.05)\n"
    "  local waited = sg.now() - t0 >= 45 and 'ok' or 'early'\n"
    "  sg.send(conn, text .. ' after ' .. waited)\n"
    "end }\n";

static void test_sleep_suspends_and_resumes_from_the_loop(void **state)
{
    fixture_t *f = fx_new();
    assert_non_null(fx_load(f, SLEEP_SRC));
    uv_update_time(&f->loop);
    uint64_t t0 = uv_now(&f->loop);
    on_message(f, "hi");
    assert_int_equal(f->sends, 0);
    assert_int_equal(sg_script_pending(f->s), 1);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->sends, 1);
    assert_string_equal(f->last_text, "hi after ok");
    assert_true(uv_now(&f->loop) - t0 >= 50);
    assert_int_equal(sg_script_pending(f->s), 0);
    fx_free(f);
}

static void test_sleep_zero_yields_once(void **state)
{
    fixture_t *f = fx_new();
    assert_non_null(fx_load(f,
        "return { on_message = function(conn, text)\n"
        "  sg.sleep(0); sg.send(conn, 'a'); sg.sleep(0); sg.send(conn, 'b')\n"
        "end }\n"));
    on_message(f, "x");
    assert_int_equal(f->sends, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->sends, 2);
    assert_string_equal(f->last_text, "b");
    fx_free(f);
}

static const char *ERROR_SRC =
    "return { on_message = function(conn, text)\n"
    "  if text == 'ok' then return sg.send(conn, 'fine') end\n"
    "  local t = nil\n"
    "  return t.field\n"
    "end }\n";

static void run_bad_message(fixture_t *f)
{
    on_message(f, "bad");
}

static void test_error_in_hook_is_logged_counted_and_answered(void **state)
{
    fixture_t *f = fx_new();
    char log[4096];
    assert_non_null(fx_load(f, ERROR_SRC));
    capture_stderr(log, sizeof log, run_bad_message, f);
    assert_non_null(strstr(log, "[script] on_message failed:"));
    assert_non_null(strstr(log, "init.lua:4: attempt to index local 't' "
                                "(a nil value)"));
    assert_non_null(strstr(log, "stack traceback:"));
    assert_int_equal(sg_script_errors(f->s), 1);
    assert_int_equal(f->sends, 1);
    assert_non_null(strstr(f->last_text,
        "{\"type\":\"error\",\"error\":\"internal error\",\"timestamp\":\""));
    assert_int_equal(strlen(f->last_text),
                     strlen("{'type':'error','error':'internal error',"
                            "'timestamp':'2026-01-01T00:00:00.000Z'}"));
    on_message(f, "ok");
    assert_int_equal(f->sends, 2);
    assert_string_equal(f->last_text, "fine");
    assert_int_equal(sg_script_errors(f->s), 1);
    fx_free(f);
}

static void test_bare_yield_in_hook_is_an_error(void **state)
{
    fixture_t *f = fx_new();
    char log[2048];
    assert_non_null(fx_load(f,
        "return { on_message = function() coroutine.yield() end }\n"));
    capture_stderr(log, sizeof log, run_bad_message, f);
    assert_non_null(strstr(log, "on_message failed: "));
    assert_non_null(strstr(log, "init.lua:1: yielded outside an sg "
                                "primitive"));
    assert_int_equal(sg_script_errors(f->s), 1);
    assert_int_equal(sg_script_pending(f->s), 0);
    assert_int_equal(f->sends, 1);
    fx_free(f);
}

static void test_free_with_suspended_sleep_closes_cleanly(void **state)
{
    fixture_t *f = fx_new();
    assert_non_null(fx_load(f, SLEEP_SRC));
    on_message(f, "a");
    on_message(f, "b");
    assert_int_equal(sg_script_pending(f->s), 2);
    fx_free(f); /* uv_loop_close == 0 and no leak under ASan */
}

static void test_timer_runs_fn_with_args_later(void **state)
{
    fixture_t *f = fx_new();
    assert_non_null(fx_load(f,
        "return { on_message = function(conn, text)\n"
        "  assert(sg.timer(0.01, function(id, a, b, c)\n"
        "    sg.sleep(0)\n"
        "    sg.send(id, a .. tostring(b) .. c)\n"
        "  end, conn.id, text, nil, '!') == true)\n"
        "  sg.send(conn, 'first')\n"
        "end }\n"));
    on_message(f, "x");
    assert_int_equal(f->sends, 1);
    assert_string_equal(f->last_text, "first");
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->sends, 2);
    assert_string_equal(f->last_text, "xnil!");
    fx_free(f);
}

static void test_timer_error_is_logged_and_counted(void **state)
{
    fixture_t *f = fx_new();
    assert_non_null(fx_load(f,
        "sg.timer(0, function() error('late') end)\n"
        "return {}\n"));
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(sg_script_errors(f->s), 1);
    fx_free(f);
}

static void test_send_and_close_report_failures(void **state)
{
    fixture_t *f = fx_new();
    assert_non_null(fx_load(f,
        "return { on_message = function(conn, text)\n"
        "  local ok, err = sg.send(99, 'x')\n"
        "  local ok2 = sg.close(conn, 4008, 'slow consumer')\n"
        "  local ok3, e3 = pcall(sg.send, nil, 'x')\n"
        "  local ok4, e4 = pcall(sg.close, 1, 5000)\n"
        "  sg.send(conn, table.concat({tostring(ok), err, tostring(ok2),\n"
        "    tostring(ok3), e3, e4}, '|'))\n"
        "end }\n"));
    on_message(f, "x");
    assert_string_equal(f->last_text,
        "nil|closed|true|false|bad argument #1 to '?' (conn or id expected, "
        "got nil)|bad argument #2 to '?' (expected a close code 1000..4999)");
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->close_code, 4008);
    fx_free(f);
}

/* ------------------------------------------------------------------
 * on_http
 * ---------------------------------------------------------------- */

static const char *HTTP_SRC =
    "return { on_http = function(req)\n"
    "  if req.path == '/json' then\n"
    "    return 201, {ok = true, m = req.method, b = req.body,\n"
    "      ct = req.headers['content-type'],\n"
    "      x = req.headers['x-mixed-case']},\n"
    "      {['X-Extra'] = 'yes'}\n"
    "  elseif req.path == '/text' then\n"
    "    return 200, 'hello', {['Content-Type'] = 'text/plain'}\n"
    "  elseif req.path == '/slow' then\n"
    "    sg.sleep(0.01)\n"
    "    return 200, {slow = true}\n"
    "  elseif req.path == '/err' then\n"
    "    error('broken route')\n"
    "  elseif req.path == '/badstatus' then\n"
    "    return 'x'\n"
    "  end\n"
    "  return nil\n"
    "end }\n";

static void test_http_table_body_is_json(void **state)
{
    fixture_t *f = fx_new();
    sg_script_task_t *task = (void *)1;
    assert_non_null(fx_load(f, HTTP_SRC));
    http(f, "POST", "/json", "{}", &task);
    assert_null(task);
    assert_int_equal(f->done_calls, 1);
    assert_int_equal(f->done_status, 201);
    assert_string_equal(f->done_ctype, "application/json");
    assert_non_null(strstr(f->done_body, "\"ok\":true"));
    assert_non_null(strstr(f->done_body, "\"m\":\"POST\""));
    assert_non_null(strstr(f->done_body, "\"b\":\"{}\""));
    assert_non_null(strstr(f->done_body, "\"ct\":\"application\\/json\""));
    assert_non_null(strstr(f->done_body, "\"x\":\"v\""));
    assert_string_equal(f->done_hdr, "X-Extra: yes");
    fx_free(f);
}

static void test_http_text_body_and_no_route(void **state)
{
    fixture_t *f = fx_new();
    assert_non_null(fx_load(f, HTTP_SRC));
    http(f, "GET", "/text", NULL, NULL);
    assert_int_equal(f->done_status, 200);
    assert_string_equal(f->done_ctype, "text/plain");
    assert_string_equal(f->done_body, "hello");
    assert_string_equal(f->done_hdr, "");
    http(f, "GET", "/nothing", NULL, NULL);
    assert_int_equal(f->done_calls, 2);
    assert_int_equal(f->done_status, 0);
    fx_free(f);
}

static void test_http_error_gives_500_once(void **state)
{
    fixture_t *f = fx_new();
    assert_non_null(fx_load(f, HTTP_SRC));
    http(f, "GET", "/err", NULL, NULL);
    assert_int_equal(f->done_calls, 1);
    assert_int_equal(f->done_status, 500);
    assert_string_equal(f->done_body, "{\"error\":\"Internal server error\","
                                      "\"detail\":\"script error\"}");
    http(f, "GET", "/badstatus", NULL, NULL);
    assert_int_equal(f->done_calls, 2);
    assert_int_equal(f->done_status, 500);
    assert_int_equal(sg_script_errors(f->s), 2);
    fx_free(f);
}

static void test_http_suspended_done_called_once_later(void **state)
{
    fixture_t *f = fx_new();
    sg_script_task_t *task = NULL;
    assert_non_null(fx_load(f, HTTP_SRC));
    http(f, "GET", "/slow", NULL, &task);
    assert_non_null(task);
    assert_int_equal(f->done_calls, 0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->done_calls, 1);
    assert_int_equal(f->done_status, 200);
    assert_string_equal(f->done_body, "{\"slow\":true}");
    fx_free(f);
}

static void test_http_detach_prevents_done(void **state)
{
    fixture_t *f = fx_new();
    sg_script_task_t *task = NULL;
    assert_non_null(fx_load(f, HTTP_SRC));
    http(f, "GET", "/slow", NULL, &task);
    assert_non_null(task);
    sg_script_task_detach(task);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->done_calls, 0);
    assert_int_equal(sg_script_pending(f->s), 0);
    fx_free(f);
}

static void test_free_completes_pending_http_with_503(void **state)
{
    fixture_t *f = fx_new();
    sg_script_task_t *task = NULL;
    assert_non_null(fx_load(f, HTTP_SRC));
    http(f, "GET", "/slow", NULL, &task);
    assert_non_null(task);
    sg_script_free(f->s);
    f->s = NULL;
    assert_int_equal(f->done_calls, 1);
    assert_int_equal(f->done_status, 503);
    fx_free(f);
    /* fx_free ran the loop: the sleep timer never fired into freed memory */
}

/* ------------------------------------------------------------------
 * Broker API
 * ---------------------------------------------------------------- */

static const char *HISTORY_SRC =
    "return { on_message = function(conn, text)\n"
    "  assert(sg.publish('s1', {a = 1}) == true)\n"
    "  assert(sg.history.append('s1', '{\"n\":1}') == true)\n"
    "  assert(sg.history.append('s1', {n = 2}) == true)\n"
    "  local items = sg.history.get('s1')\n"
    "  local out = table.concat(items, ',')\n"
    "  assert(sg.history.clear('s1') == true)\n"
    "  out = out .. '|' .. #sg.history.get('s1')\n"
    "  sg.send(conn, out)\n"
    "end }\n";

static void test_history_round_trip_yields(void **state)
{
    fixture_t *f = fx_new();
    assert_non_null(fx_load(f, HISTORY_SRC));
    on_message(f, "x");
    assert_int_equal(f->broker->published, 1);
    assert_string_equal(f->broker->last_pub, "s1|{\"a\":1}");
    assert_int_equal(sg_script_pending(f->s), 1);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(sg_script_errors(f->s), 0);
    assert_string_equal(f->last_text, "{\"n\":1},{\"n\":2}|0");
    fx_free(f);
}

static void test_history_outside_coroutine_raises(void **state)
{
    fixture_t *f = fx_new();
    assert_null(fx_load(f, "sg.history.get('x')\nreturn {}\n"));
    assert_non_null(strstr(f->err, "sg.history.get: not in a hook "
                                   "coroutine"));
    fx_free(f);
}

static void test_free_with_pending_broker_op_is_safe(void **state)
{
    fixture_t *f = fx_new();
    assert_non_null(fx_load(f, HISTORY_SRC));
    on_message(f, "x");
    assert_int_equal(sg_script_pending(f->s), 1);
    /* fx_free frees the script first, then the broker completes the op
     * with SG_ECANCELED: only the detached op is touched. */
    fx_free(f);
}

static void test_broker_closed_resumes_with_closed(void **state)
{
    fixture_t *f = fx_new();
    assert_non_null(fx_load(f,
        "return { on_message = function(conn, text)\n"
        "  local ok, err = sg.history.get('s1')\n"
        "  sg.send(conn, tostring(ok) .. ' ' .. tostring(err))\n"
        "end }\n"));
    on_message(f, "x");
    sg_broker_close(&f->broker->base, NULL, NULL);
    assert_string_equal(f->last_text, "nil closed");
    assert_int_equal(sg_script_pending(f->s), 0);
    f->broker = fake_new(&f->loop); /* fx_free closes a broker */
    fx_free(f);
}

/* ------------------------------------------------------------------
 * Misc API: config, time, uuid, json, log, jwt
 * ---------------------------------------------------------------- */

static void test_api_values(void **state)
{
    fixture_t *f = fx_new();
    assert_non_null(fx_load(f,
        "return { on_message = function(conn, text)\n"
        "  local c = sg.config\n"
        "  local now = sg.now()\n"
        "  local out = {c.port, c.env, c.node_id, tostring(c.auth.dev_mode),\n"
        "    c.auth.jwt_algorithm, c.auth.leeway,\n"
        "    tostring(c.auth.jwt_secret),\n"
        "    c.demo.words_per_second, tostring(c.redis.enabled), c.upstream,\n"
        "    sg.node_id, sg.mode,\n"
        "    tostring(now == math.floor(now) and now > 1.7e12),\n"
        "    tostring(sg.iso_now():match(\n"
        "      '^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$') ~= nil),\n"
        "    tostring(sg.uuid():match(\n"
        "      '^%x+%-%x+%-4%x+%-[89ab]%x+%-%x+$') ~= nil),\n"
        "    tostring(#sg.uuid() == 36 and sg.uuid() ~= sg.uuid()),\n"
        "    sg.json.encode({1, 2}), tostring(sg.json.decode('[') == nil),\n"
        "    tostring(sg.json.decode('null') == sg.json.null)}\n"
        "  sg.send(conn, table.concat(out, ','))\n"
        "end }\n"));
    on_message(f, "x");
    assert_string_equal(f->last_text,
        "8080,development,node-1,true,HS256,30,nil,30,false,demo,node-1,"
        "embedded,true,true,true,true,[1,2],true,true");
    fx_free(f);
}

static void log_from_lua(fixture_t *f)
{
    on_message(f, "x");
}

static void test_log_concatenates_with_location(void **state)
{
    fixture_t *f = fx_new();
    char log[2048];
    assert_non_null(fx_load(f,
        "return { on_message = function()\n"
        "  sg.log('warn', 'a', 1, nil, true)\n"
        "  local ok, err = pcall(sg.log, 'loud', 'x')\n"
        "  sg.log('error', err)\n"
        "end }\n"));
    capture_stderr(log, sizeof log, log_from_lua, f);
    assert_non_null(strstr(log, "[lua] "));
    assert_non_null(strstr(log, "init.lua:2: a1niltrue"));
    assert_non_null(strstr(log, "bad argument #1 to '?' (invalid option "
                                "'loud')"));
    fx_free(f);
}

static void test_jwt_sign_then_verify(void **state)
{
    fixture_t *f = fx_new();
    assert_non_null(fx_load(f,
        "return { on_message = function(conn)\n"
        "  local tok = assert(sg.jwt.sign({sub = 'alice'}))\n"
        "  local claims = assert(sg.jwt.verify('Bearer ' .. tok))\n"
        "  local _, e1 = sg.jwt.verify(tok, {secret = 'other'})\n"
        "  local _, e2 = sg.jwt.verify('abc.def')\n"
        "  local _, e3 = sg.jwt.verify(tok, {algorithm = 'HS384'})\n"
        "  sg.send(conn, table.concat({claims.sub,\n"
        "    tostring(claims.exp - claims.iat), e1, e2, e3}, '|'))\n"
        "end }\n"));
    on_message(f, "x");
    assert_string_equal(f->last_text,
        "alice|3600|malformed token or bad signature|"
        "malformed token or bad signature|"
        "algorithm HS256 not allowed (expected HS384)");
    fx_free(f);
}

static void test_jwt_without_secret_fails_softly(void **state)
{
    fixture_t *f = fx_new();
    f->cfg.auth.jwt_secret = NULL;
    assert_non_null(fx_load(f,
        "return { on_message = function(conn)\n"
        "  local t, err = sg.jwt.verify('x')\n"
        "  sg.send(conn, tostring(t) .. ' ' .. err)\n"
        "end }\n"));
    on_message(f, "x");
    assert_string_equal(f->last_text, "nil no jwt secret configured");
    fx_free(f);
}

/* ------------------------------------------------------------------
 * on_chunk: synchronous transform / drop before the append
 * ---------------------------------------------------------------- */

static void chunk_msg(sg_chatmsg_t *m, const char *content, int complete)
{
    char json[512];
    char err[64];
    snprintf(json, sizeof json,
             "{\"message_id\":\"m1\",\"session_id\":\"s1\",\"role\":"
             "\"assistant\",\"content\":\"%s\",\"chunk\":\"x\","
             "\"is_complete\":%s}", content, complete ? "true" : "false");
    assert_int_equal(sg_chatmsg_parse(json, strlen(json), m, err, sizeof err),
                     0);
}

static void test_on_chunk_rewrites_drops_and_fails_open(void **state)
{
    fixture_t *f = fx_new();
    sg_chatmsg_t m;
    assert_non_null(fx_load(f,
        "return { on_chunk = function(c)\n"
        "  if c.content == 'drop me' then return false end\n"
        "  if c.content == 'boom' then error('kaput') end\n"
        "  if c.content == 'wait' then sg.sleep(1) end\n"
        "  c.content = c.content:gsub('secret', '******')\n"
        "  c.chunk = nil\n"
        "end }\n"));
    chunk_msg(&m, "my secret word", 0);
    assert_int_equal(sg_script_on_chunk(f->s, &m), 1);
    assert_string_equal(m.content, "my ****** word");
    assert_int_equal(m.content_len, 14);
    assert_null(m.chunk);
    sg_chatmsg_clear(&m);

    chunk_msg(&m, "drop me", 1);
    assert_int_equal(sg_script_on_chunk(f->s, &m), 0);
    sg_chatmsg_clear(&m);

    /* an error or a yield keeps the chunk unchanged and is counted */
    chunk_msg(&m, "boom", 0);
    assert_int_equal(sg_script_on_chunk(f->s, &m), 1);
    assert_string_equal(m.content, "boom");
    assert_string_equal(m.chunk, "x");
    sg_chatmsg_clear(&m);
    chunk_msg(&m, "wait", 0);
    assert_int_equal(sg_script_on_chunk(f->s, &m), 1);
    assert_string_equal(m.content, "wait");
    sg_chatmsg_clear(&m);
    assert_int_equal(sg_script_errors(f->s), 2);
    assert_int_equal(sg_script_pending(f->s), 0);
    fx_free(f);
}

static void test_on_chunk_absent_keeps_everything(void **state)
{
    fixture_t *f = fx_new();
    sg_chatmsg_t m;
    assert_non_null(fx_load(f, "return {}\n"));
    chunk_msg(&m, "as is", 0);
    assert_int_equal(sg_script_on_chunk(f->s, &m), 1);
    assert_string_equal(m.content, "as is");
    sg_chatmsg_clear(&m);
    fx_free(f);
}

/* ------------------------------------------------------------------
 * The shipped scripts (lua/) on the real host
 * ---------------------------------------------------------------- */

static sg_script_t *load_shipped(fixture_t *f)
{
    sg_script_host_t host = {f, host_send, host_close, NULL, NULL, NULL, NULL};
    f->cfg.lua.path = SG_SOURCE_DIR "/lua";
    f->cfg.demo.words_per_second = 2000;
    f->cfg.stream.max_message_bytes = 1 << 20;
    f->s = sg_script_new(&f->loop, &f->cfg, &f->broker->base, NULL, &host,
                         f->err, sizeof f->err);
    return f->s;
}

static void test_shipped_scripts_demo_flow(void **state)
{
    fixture_t *f = fx_new();
    char reason[64] = "", uid[64] = "", frame[256];
    assert_non_null(load_shipped(f));

    assert_int_equal(do_connect(f, "dev-token", reason, uid), 1);
    assert_string_equal(uid, "bob");

    http(f, "POST", "/api/chat",
         "{\"session_id\":\"sess-1\",\"message\":\"hello\"}", NULL);
    assert_int_equal(f->done_calls, 0); /* waiting on history.append */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->done_calls, 1);
    assert_int_equal(f->done_status, 200);
    assert_non_null(strstr(f->done_body, "\"status\":\"streaming\""));
    assert_int_equal(sg_script_errors(f->s), 0);
    assert_int_equal(sg_script_pending(f->s), 0);

    /* 86 partials + the final appended (the user message only stored);
     * history: user + final */
    assert_int_equal(f->broker->published, 87);
    assert_int_equal(f->broker->n, 2);
    json_t *fin = json_loads(f->broker->items[1], 0, NULL);
    assert_non_null(fin);
    assert_true(json_is_true(json_object_get(fin, "is_complete")));
    assert_true(json_is_null(json_object_get(fin, "chunk")));
    assert_int_equal(json_object_size(fin), 8);
    snprintf(frame, sizeof frame, "sess-1|%s|1",
             json_string_value(json_object_get(fin, "message_id")));
    assert_string_equal(f->broker->last_pub, frame);
    json_decref(fin);

    on_message(f, "{\"type\":\"ping\"}");
    assert_string_equal(f->last_text, "{\"type\":\"pong\"}");

    http(f, "GET", "/api/history/sess-1", NULL, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->done_calls, 2);
    assert_non_null(strstr(f->done_body, "\"count\":2}"));

    http(f, "GET", "/api/unknown", NULL, NULL);
    assert_int_equal(f->done_calls, 3);
    assert_int_equal(f->done_status, 0);
    assert_int_equal(sg_script_errors(f->s), 0);
    fx_free(f);
}

static void test_shipped_scripts_production_auth(void **state)
{
    fixture_t *f = fx_new();
    char reason[64] = "", uid[64] = "", *tok = NULL, err[128];
    sg_jwt_opts_t o = {"unit-test-secret", "HS256", 30, NULL, NULL};

    f->cfg.auth.dev_mode = 0;
    assert_non_null(load_shipped(f));
    assert_int_equal(do_connect(f, "dev-token", reason, uid), 0);
    assert_string_equal(reason, "malformed token or bad signature");
    assert_int_equal(do_connect(f, NULL, reason, uid), 0);
    assert_string_equal(reason, "missing token");
    assert_int_equal(sg_auth_jwt_sign("{\"sub\":\"bob\"}", &o, time(NULL),
                                      60, &tok, err, sizeof err), 0);
    assert_int_equal(do_connect(f, tok, reason, uid), 1);
    assert_string_equal(uid, "bob");
    free(tok);
    assert_int_equal(sg_auth_jwt_sign("{\"sub\":\"eve\"}", &o, time(NULL),
                                      60, &tok, err, sizeof err), 0);
    assert_int_equal(do_connect(f, tok, reason, uid), 0);
    assert_string_equal(reason, "token subject does not match user_id");
    free(tok);
    http(f, "POST", "/api/auth/token", "{\"user_id\":\"bob\"}", NULL);
    assert_int_equal(f->done_status, 0); /* no such route: 404 */
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_syntax_error_names_file_and_line),
        cmocka_unit_test(test_load_requires_a_table_of_functions),
        cmocka_unit_test(test_sleep_at_load_time_raises),
        cmocka_unit_test(test_init_can_require_modules_from_lua_path),
        cmocka_unit_test(test_on_connect_allows_with_identity),
        cmocka_unit_test(test_on_connect_yield_or_error_denies),
        cmocka_unit_test(test_no_on_connect_hook_allows),
        cmocka_unit_test(test_sleep_suspends_and_resumes_from_the_loop),
        cmocka_unit_test(test_sleep_zero_yields_once),
        cmocka_unit_test(test_error_in_hook_is_logged_counted_and_answered),
        cmocka_unit_test(test_bare_yield_in_hook_is_an_error),
        cmocka_unit_test(test_free_with_suspended_sleep_closes_cleanly),
        cmocka_unit_test(test_timer_runs_fn_with_args_later),
        cmocka_unit_test(test_timer_error_is_logged_and_counted),
        cmocka_unit_test(test_send_and_close_report_failures),
        cmocka_unit_test(test_http_table_body_is_json),
        cmocka_unit_test(test_http_text_body_and_no_route),
        cmocka_unit_test(test_http_error_gives_500_once),
        cmocka_unit_test(test_http_suspended_done_called_once_later),
        cmocka_unit_test(test_http_detach_prevents_done),
        cmocka_unit_test(test_free_completes_pending_http_with_503),
        cmocka_unit_test(test_history_round_trip_yields),
        cmocka_unit_test(test_history_outside_coroutine_raises),
        cmocka_unit_test(test_free_with_pending_broker_op_is_safe),
        cmocka_unit_test(test_broker_closed_resumes_with_closed),
        cmocka_unit_test(test_api_values),
        cmocka_unit_test(test_log_concatenates_with_location),
        cmocka_unit_test(test_jwt_sign_then_verify),
        cmocka_unit_test(test_jwt_without_secret_fails_softly),
        cmocka_unit_test(test_on_chunk_rewrites_drops_and_fails_open),
        cmocka_unit_test(test_on_chunk_absent_keeps_everything),
        cmocka_unit_test(test_shipped_scripts_demo_flow),
        cmocka_unit_test(test_shipped_scripts_production_auth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
