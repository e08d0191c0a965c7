/* Unit tests of hot reload and the per-hook budgets of the LuaJIT host
 * (script.c): the swap, failed reloads, tasks and timers that finish in
 * the old state, closing of old states (no leak under ASan), and hooks
 * stopped for looping or allocating without bound.
 *
 * sg-test: link-core (the whole core, so every sg.* family script.c opens
 * is there; the memory broker backs it). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker.h"
#include "config.h"
#include "error.h"
#include "log.h"
#include "script.h"

#define MAX_SENT 32

typedef struct fixture {
    uv_loop_t loop;
    sg_config_t cfg;
    sg_broker_t *broker;
    sg_script_t *s;
    char dir[64];
    char err[512];
    char sent[MAX_SENT][256];
    int nsent;
    int http_status;
    char http_body[256];
    int http_calls;
} fixture_t;

static int host_send(void *data, uint64_t id, const char *text, size_t len)
{
    fixture_t *f = data;
    if (f->nsent < MAX_SENT)
        snprintf(f->sent[f->nsent++], sizeof f->sent[0], "%.*s", (int)len,
                 text);
    return 0;
}

static void write_init(fixture_t *f, const char *src)
{
    char path[128];
    snprintf(path, sizeof path, "%s/init.lua", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(src, fp);
    fclose(fp);
}

/* A fixture with default config (budgets 0.5 s / 256 MiB) unless the test
 * changes them before fx_load. */
static fixture_t *fx_new(void)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    assert_int_equal(sg_config_load(&f->cfg, NULL, f->err, sizeof f->err), 0);
    strcpy(f->dir, "/tmp/sg_reload_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    free(f->cfg.lua.path);
    f->cfg.lua.path = strdup(f->dir);
    sg_broker_handlers_t bh = {NULL, NULL, NULL, NULL, NULL};
    f->broker = sg_broker_memory_new(&f->loop, &f->cfg, &bh);
    assert_non_null(f->broker);
    return f;
}

static void fx_load(fixture_t *f, const char *src)
{
    sg_script_host_t host = {0};
    host.data = f;
    host.send = host_send;
    write_init(f, src);
    f->s = sg_script_new(&f->loop, &f->cfg, f->broker, NULL, &host, f->err,
                         sizeof f->err);
    if (f->s == NULL)
        fail_msg("load failed: %s", f->err);
}

static void fx_free(fixture_t *f)
{
    char cmd[128];
    sg_script_free(f->s);
    sg_broker_close(f->broker, NULL, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    sg_config_free(&f->cfg);
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
}

static int fx_reload(fixture_t *f, const char *src)
{
    write_init(f, src);
    return sg_script_reload(f->s, f->err, sizeof f->err);
}

static void message(fixture_t *f, const char *text)
{
    sg_script_conn_t conn = {7, "s1", "u1", "127.0.0.1"};
    sg_script_on_message(f->s, &conn, text, strlen(text));
}

static const char V1[] =
    "return { on_message = function(conn, text)\n"
    "    sg.send(conn, 'v1:' .. text .. ':' .. sg.version)\n"
    "end }\n";
static const char V2[] =
    "return { on_message = function(conn, text)\n"
    "    sg.send(conn, 'v2:' .. text .. ':' .. sg.version)\n"
    "end }\n";

/* ------------------------------------------------------------------
 * Reload
 * ---------------------------------------------------------------- */

static void test_reload_swaps_the_hooks(void **state)
{
    fixture_t *f = fx_new();
    fx_load(f, V1);
    assert_int_equal(sg_script_version(f->s), 1);
    message(f, "a");
    assert_int_equal(fx_reload(f, V2), 0);
    assert_int_equal(sg_script_version(f->s), 2);
    message(f, "b");
    assert_int_equal(f->nsent, 2);
    assert_string_equal(f->sent[0], "v1:a:1");
    assert_string_equal(f->sent[1], "v2:b:2");
    uint64_t failures = 9;
    assert_int_equal(sg_script_reloads(f->s, &failures), 1);
    assert_int_equal(failures, 0);
    /* nothing was pending: the old state is closed at once */
    assert_int_equal(sg_script_states(f->s), 1);
    fx_free(f);
}

static void test_syntax_error_keeps_the_old_state(void **state)
{
    fixture_t *f = fx_new();
    fx_load(f, V1);
    assert_int_equal(fx_reload(f, "return {\n  on_message = function()\n"
                                  "    local x = = 1\n  end }\n"),
                     SG_ESCRIPT);
    char want[128];
    snprintf(want, sizeof want, "lua: %s/init.lua:3: unexpected symbol near "
                                "'='", f->dir);
    assert_string_equal(f->err, want);
    assert_int_equal(sg_script_version(f->s), 1);
    message(f, "still");
    assert_int_equal(f->nsent, 1);
    assert_string_equal(f->sent[0], "v1:still:1");
    uint64_t failures = 0;
    assert_int_equal(sg_script_reloads(f->s, &failures), 0);
    assert_int_equal(failures, 1);
    assert_int_equal(sg_script_states(f->s), 1);
    fx_free(f);
}

static void test_error_raised_at_load_is_reported_with_file_line(void **state)
{
    fixture_t *f = fx_new();
    fx_load(f, V1);
    assert_int_equal(fx_reload(f, "local limit = -1\n"
                                  "if limit < 0 then\n"
                                  "  error('plugins.rate-limiting.limit = -1:"
                                  " expected >= 1')\nend\nreturn {}\n"),
                     SG_ESCRIPT);
    char want[160];
    snprintf(want, sizeof want, "lua: %s/init.lua:3: plugins.rate-limiting."
                                "limit = -1: expected >= 1", f->dir);
    assert_string_equal(f->err, want);
    /* a state that does not return a table is refused too */
    assert_int_equal(fx_reload(f, "return 42\n"), SG_ESCRIPT);
    assert_non_null(strstr(f->err, "must return a table of hooks (got "
                                   "number)"));
    message(f, "x");
    assert_string_equal(f->sent[0], "v1:x:1");
    fx_free(f);
}

static const char SLEEPER[] =
    "return { on_message = function(conn, text)\n"
    "    if text == 'slow' then\n"
    "        sg.sleep(0.05)\n"
    "        sg.send(conn, 'old state finished v' .. sg.version ..\n"
    "                ' current=' .. tostring(sg.is_current()))\n"
    "        return\n"
    "    end\n"
    "    sg.send(conn, 'v1:' .. text)\n"
    "end }\n";

static void test_suspended_task_finishes_in_the_old_state(void **state)
{
    fixture_t *f = fx_new();
    fx_load(f, SLEEPER);
    message(f, "slow");
    assert_int_equal(sg_script_pending(f->s), 1);
    assert_int_equal(fx_reload(f, V2), 0);
    assert_int_equal(sg_script_states(f->s), 2);
    assert_int_equal(sg_script_pending(f->s), 1);
    message(f, "new");
    assert_int_equal(f->nsent, 1);
    assert_string_equal(f->sent[0], "v2:new:2");
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->nsent, 2);
    assert_string_equal(f->sent[1], "old state finished v1 current=false");
    assert_int_equal(sg_script_pending(f->s), 0);
    /* the reaper closed the old state (ASan reports it if not freed) */
    assert_int_equal(sg_script_states(f->s), 1);
    fx_free(f);
}

static void test_two_reloads_with_pending_tasks(void **state)
{
    fixture_t *f = fx_new();
    fx_load(f, SLEEPER);
    message(f, "slow");
    assert_int_equal(fx_reload(f, SLEEPER), 0);
    message(f, "slow");
    assert_int_equal(fx_reload(f, V2), 0);
    assert_int_equal(sg_script_version(f->s), 3);
    assert_int_equal(sg_script_states(f->s), 3);
    assert_int_equal(sg_script_pending(f->s), 2);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->nsent, 2);
    /* each task resumed in the state it started in */
    int v1 = 0, v2 = 0;
    for (int i = 0; i < f->nsent; i++) {
        v1 += strcmp(f->sent[i], "old state finished v1 current=false") == 0;
        v2 += strcmp(f->sent[i], "old state finished v2 current=false") == 0;
    }
    assert_int_equal(v1, 1);
    assert_int_equal(v2, 1);
    assert_int_equal(sg_script_states(f->s), 1);
    assert_int_equal(sg_script_pending(f->s), 0);
    fx_free(f);
}

static void test_free_with_old_states_pending(void **state)
{
    fixture_t *f = fx_new();
    fx_load(f, SLEEPER);
    message(f, "slow");
    assert_int_equal(fx_reload(f, SLEEPER), 0);
    message(f, "slow");
    assert_int_equal(sg_script_states(f->s), 2);
    /* freed with a task suspended in each state: no resume, no leak */
    fx_free(f);
}

static void test_old_state_timer_keeps_running_there(void **state)
{
    fixture_t *f = fx_new();
    fx_load(f, "sg.timer(0.03, function()\n"
               "    sg.send(1, 'timer v' .. sg.version .. ' current=' ..\n"
               "            tostring(sg.is_current()))\n"
               "end)\n"
               "return {}\n");
    assert_int_equal(fx_reload(f, V2), 0);
    assert_int_equal(sg_script_states(f->s), 2); /* the timer holds it */
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->nsent, 1);
    assert_string_equal(f->sent[0], "timer v1 current=false");
    assert_int_equal(sg_script_states(f->s), 1);
    fx_free(f);
}

static void http_done(void *ctx, int status, const char *ctype,
                      const char *body, size_t len,
                      const char *const *headers)
{
    fixture_t *f = ctx;
    f->http_calls++;
    f->http_status = status;
    snprintf(f->http_body, sizeof f->http_body, "%.*s", (int)len, body);
}

static void test_http_hook_in_flight_answers_from_the_old_state(void **state)
{
    fixture_t *f = fx_new();
    fx_load(f, "return { on_http = function(req)\n"
               "    sg.sleep(0.02)\n"
               "    return 200, 'old ' .. sg.version\n"
               "end }\n");
    sg_script_http_req_t req = {"GET", "/x", NULL, NULL, 0, NULL, "127.0.0.1"};
    sg_script_task_t *task = NULL;
    sg_script_http(f->s, &req, http_done, f, &task);
    assert_non_null(task);
    assert_int_equal(fx_reload(f, "return { on_http = function(req)\n"
                                  "    return 201, 'new ' .. sg.version\n"
                                  "end }\n"),
                     0);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->http_calls, 1);
    assert_int_equal(f->http_status, 200);
    assert_string_equal(f->http_body, "old 1");
    sg_script_http(f->s, &req, http_done, f, &task);
    assert_int_equal(f->http_calls, 2);
    assert_int_equal(f->http_status, 201);
    assert_string_equal(f->http_body, "new 2");
    fx_free(f);
}

/* ------------------------------------------------------------------
 * Budgets
 * ---------------------------------------------------------------- */

static const char LOOPER[] =
    "return { on_message = function(conn, text)\n"
    "    if text == 'loop' then\n"
    "        while true do end\n"
    "    elseif text == 'pcall-loop' then\n"
    "        while true do pcall(function() while true do end end) end\n"
    "    elseif text == 'bomb' then\n"
    "        local t = {}\n"
    "        while true do t[#t + 1] = string.rep('x', 1000) .. #t end\n"
    "    elseif text == 'pcall-bomb' then\n"
    "        local t = {}\n"
    "        while true do\n"
    "            pcall(function()\n"
    "                t[#t + 1] = string.rep('y', 1000) .. #t\n"
    "            end)\n"
    "        end\n"
    "    end\n"
    "    sg.send(conn, 'ok ' .. text .. ' jit=' .. tostring(jit.status()))\n"
    "end,\n"
    "on_connect = function(req)\n"
    "    if req.token == 'loop' then while true do end end\n"
    "    return true\n"
    "end }\n";

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void assert_error_frame(const char *frame)
{
    assert_non_null(strstr(frame, "\"type\":\"error\""));
    assert_non_null(strstr(frame, "\"error\":\"internal error\""));
}

static void test_infinite_loop_is_stopped(void **state)
{
    fixture_t *f = fx_new();
    f->cfg.lua.hook_timeout = 0.1;
    fx_load(f, LOOPER);
    uint64_t t0 = now_ms();
    message(f, "loop");
    uint64_t took = now_ms() - t0;
    assert_true(took >= 100 && took < 1000);
    assert_int_equal(f->nsent, 1);
    assert_error_frame(f->sent[0]);
    assert_int_equal(sg_script_errors(f->s), 1);
    assert_int_equal(sg_script_pending(f->s), 0);
    /* the next message still works, in the interpreter */
    message(f, "hello");
    assert_int_equal(f->nsent, 2);
    assert_string_equal(f->sent[1], "ok hello jit=false");
    fx_free(f);
}

static void test_loop_inside_pcall_is_stopped(void **state)
{
    fixture_t *f = fx_new();
    f->cfg.lua.hook_timeout = 0.1;
    fx_load(f, LOOPER);
    uint64_t t0 = now_ms();
    message(f, "pcall-loop");
    assert_true(now_ms() - t0 < 1000);
    assert_int_equal(f->nsent, 1);
    assert_error_frame(f->sent[0]);
    message(f, "after");
    assert_string_equal(f->sent[1], "ok after jit=false");
    fx_free(f);
}

static void test_jit_cannot_be_turned_back_on(void **state)
{
    fixture_t *f = fx_new();
    f->cfg.lua.hook_timeout = 0.1;
    fx_load(f, "return { on_message = function(conn, text)\n"
               "    local ok, err = pcall(jit.on)\n"
               "    sg.send(conn, tostring(ok) .. ' ' .. err)\n"
               "end }\n");
    message(f, "x");
    assert_int_equal(f->nsent, 1);
    assert_non_null(strstr(f->sent[0], "false "));
    assert_non_null(strstr(f->sent[0], "jit.on is disabled"));
    fx_free(f);
}

static void test_on_connect_loop_denies(void **state)
{
    fixture_t *f = fx_new();
    f->cfg.lua.hook_timeout = 0.1;
    fx_load(f, LOOPER);
    char reason[64], uid[64];
    sg_script_connect_req_t req = {"s1", "u1", "loop", "/ws", "127.0.0.1",
                                   NULL};
    assert_int_equal(sg_script_on_connect(f->s, &req, reason, sizeof reason,
                                          uid, sizeof uid),
                     0);
    assert_string_equal(reason, "internal error");
    assert_int_equal(sg_script_errors(f->s), 1);
    req.token = "fine";
    assert_int_equal(sg_script_on_connect(f->s, &req, reason, sizeof reason,
                                          uid, sizeof uid),
                     1);
    fx_free(f);
}

static void test_allocation_bomb_is_stopped(void **state)
{
    fixture_t *f = fx_new();
    f->cfg.lua.memory_limit = 16;
    fx_load(f, LOOPER);
    message(f, "bomb");
    assert_int_equal(f->nsent, 1);
    assert_error_frame(f->sent[0]);
    message(f, "pcall-bomb");
    assert_int_equal(f->nsent, 2);
    assert_error_frame(f->sent[1]);
    assert_int_equal(sg_script_errors(f->s), 2);
    /* the garbage was collected: the next hook has room again */
    message(f, "fine");
    assert_int_equal(f->nsent, 3);
    assert_string_equal(f->sent[2], "ok fine jit=false");
    fx_free(f);
}

static void test_no_budget_keeps_the_jit(void **state)
{
    fixture_t *f = fx_new();
    f->cfg.lua.hook_timeout = 0;
    fx_load(f, LOOPER);
    message(f, "x");
    assert_string_equal(f->sent[0], "ok x jit=true");
    fx_free(f);
}

static void test_reload_keeps_the_budgets(void **state)
{
    fixture_t *f = fx_new();
    f->cfg.lua.hook_timeout = 0.1;
    fx_load(f, V1);
    assert_int_equal(fx_reload(f, LOOPER), 0);
    message(f, "loop");
    assert_error_frame(f->sent[0]);
    message(f, "y");
    assert_string_equal(f->sent[1], "ok y jit=false");
    fx_free(f);
}

static void test_load_loop_is_stopped_on_reload(void **state)
{
    fixture_t *f = fx_new();
    fx_load(f, V1);
    uint64_t t0 = now_ms();
    assert_int_equal(fx_reload(f, "while true do end\nreturn {}\n"),
                     SG_ESCRIPT);
    assert_true(now_ms() - t0 < 8000);
    assert_non_null(strstr(f->err, "did not finish loading within 5000 ms"));
    message(f, "z");
    assert_string_equal(f->sent[0], "v1:z:1");
    fx_free(f);
}

int main(void)
{
    sg_log_set_level(getenv("SG_TEST_LOG") ? SG_LOG_DEBUG : SG_LOG_ERROR + 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reload_swaps_the_hooks),
        cmocka_unit_test(test_syntax_error_keeps_the_old_state),
        cmocka_unit_test(test_error_raised_at_load_is_reported_with_file_line),
        cmocka_unit_test(test_suspended_task_finishes_in_the_old_state),
        cmocka_unit_test(test_two_reloads_with_pending_tasks),
        cmocka_unit_test(test_free_with_old_states_pending),
        cmocka_unit_test(test_old_state_timer_keeps_running_there),
        cmocka_unit_test(test_http_hook_in_flight_answers_from_the_old_state),
        cmocka_unit_test(test_infinite_loop_is_stopped),
        cmocka_unit_test(test_loop_inside_pcall_is_stopped),
        cmocka_unit_test(test_jit_cannot_be_turned_back_on),
        cmocka_unit_test(test_on_connect_loop_denies),
        cmocka_unit_test(test_allocation_bomb_is_stopped),
        cmocka_unit_test(test_no_budget_keeps_the_jit),
        cmocka_unit_test(test_reload_keeps_the_budgets),
        cmocka_unit_test(test_load_loop_is_stopped_on_reload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
