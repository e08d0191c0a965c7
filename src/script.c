/* LuaJIT host: owns the lua_State, loads init.lua, runs every hook in its
 * own coroutine (a "task") and resumes suspended tasks when the primitive
 * they wait on completes. The sg.* functions live in script_api_*.c; this
 * file owns the task lifecycle, error reporting and the hook entry points
 * of script.h.
 *
 * Task lifetime: created per hook call (thread anchored with luaL_ref),
 * freed when the coroutine finishes, fails or is abandoned. A suspended
 * task is abandoned by sg_script_free (or when on_connect yields): its
 * sleep timer is closed through the loop and its broker op is detached, so
 * a broker completion arriving later only frees the op (script_internal.h).
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <lualib.h>
#include <luajit.h>

#include "error.h"
#include "log.h"
#include "script_api_broker.h"
#include "script_api_stream.h"
#include "script_api_data.h"
#include "script_api_core.h"
#include "script_api_json.h"
#include "script_api_jwt.h"
#include "script_internal.h"

enum {
    HOOK_CONNECT,
    HOOK_MESSAGE,
    HOOK_DISCONNECT,
    HOOK_HTTP,
    HOOK_CHUNK,
    HOOK_COUNT
};

static const char *const hook_names[HOOK_COUNT] = {
    "on_connect", "on_message", "on_disconnect", "on_http", "on_chunk",
};

#define SCRIPT_MAX_HEADERS 16

static const char HTTP_ERROR_BODY[] =
    "{\"error\":\"Internal server error\",\"detail\":\"script error\"}";
static const char HTTP_STOPPED_BODY[] =
    "{\"error\":\"Service unavailable\",\"detail\":\"script host stopped\"}";

/* Address used as the registry key of the host pointer. */
static const char script_key = 0;

static int script_open(lua_State *L);
static int script_load(sg_script_t *s, char *err, size_t errlen);
static sg_script_task_t *task_new(sg_script_t *s, sg__task_kind_t kind,
                                  const char *hook);
static void task_free(sg_script_task_t *task);
static void task_abandon(sg_script_task_t *task);
static int task_run(sg_script_task_t *task, int nargs);
static int task_after(sg_script_task_t *task, int rc);
static void task_fail(sg_script_task_t *task, const char *msg);
static void task_fail_traceback(sg_script_task_t *task);
static int task_finish_http(sg_script_task_t *task);
static void push_conn(lua_State *L, const sg_script_conn_t *conn);
static void push_optstring(lua_State *L, const char *key, const char *v);
static void copy_str(char *dst, size_t dstlen, const char *src);

/* ---------------------------------------------------------------------
 * Lifecycle
 * ------------------------------------------------------------------- */

sg_script_t *sg_script_new(uv_loop_t *loop, const sg_config_t *cfg,
                           sg_broker_t *broker, sg_metrics_t *metrics,
                           const sg_script_host_t *host, char *err,
                           size_t errlen)
{
    sg_script_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        copy_str(err, errlen, "no memory");
        return NULL;
    }
    s->loop = loop;
    s->cfg = cfg;
    s->broker = broker;
    s->metrics = metrics;
    if (host != NULL)
        s->host = *host;
    for (int i = 0; i < HOOK_COUNT; i++)
        s->hook_refs[i] = LUA_NOREF;
    s->encode_ref = s->decode_ref = LUA_NOREF;

    s->L = luaL_newstate();
    if (s->L == NULL) {
        copy_str(err, errlen, "no memory");
        goto fail;
    }
    luaL_openlibs(s->L);
    lua_pushlightuserdata(s->L, (void *)&script_key);
    lua_pushlightuserdata(s->L, s);
    lua_rawset(s->L, LUA_REGISTRYINDEX);

    if (lua_cpcall(s->L, script_open, s) != 0) {
        snprintf(err, errlen, "lua: failed to open the sg API: %s",
                 lua_tostring(s->L, -1));
        goto fail;
    }
    if (script_load(s, err, errlen) < 0)
        goto fail;
    return s;

fail:
    if (s->L != NULL)
        lua_close(s->L);
    free(s);
    return NULL;
}

void sg_script_free(sg_script_t *s)
{
    if (s == NULL)
        return;
    assert(s->current == NULL && "sg_script_free called from a hook");
    while (s->tasks != NULL) {
        sg_script_task_t *t = s->tasks;
        if (t->kind == SG__TASK_HTTP && t->done != NULL) {
            sg_script_http_done_cb done = t->done;
            t->done = NULL;
            done(t->done_ctx, 503, "application/json", HTTP_STOPPED_BODY,
                 sizeof HTTP_STOPPED_BODY - 1, NULL);
        }
        task_abandon(t);
    }
    while (s->timers != NULL)
        sg__script_timer_close(s->timers);
    lua_close(s->L);
    free(s);
}

/* Runs under lua_cpcall: builds the global `sg` table (also
 * package.loaded.sg) and sets package.path to the script directory. */
static int script_open(lua_State *L)
{
    sg_script_t *s = lua_touserdata(L, 1);
    const char *dir = s->cfg->lua.path ? s->cfg->lua.path : "lua";

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir,
                    lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);

    lua_newtable(L);
    sg_script_api_json_open(L);
    sg_script_api_core_open(L);
    sg_script_api_broker_open(L);
    sg_script_api_stream_open(L);
    sg_script_api_data_open(L);
    sg_script_api_jwt_open(L);
    lua_getfield(L, -2, "loaded");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "sg");
    lua_pop(L, 1);
    lua_setglobal(L, "sg");
    lua_pop(L, 1);
    return 0;
}

/* Loading must finish: a script that loops at load time would hang the
 * start (and `streamgate -t`). A count hook checks a deadline; LuaJIT
 * calls hooks only from the interpreter, so the JIT is off while loading.
 * (Budgets for hooks at run time are issue 4's.) */
#define SCRIPT_LOAD_BUDGET_MS 5000
static uint64_t script_load_deadline;

static void script_load_hook(lua_State *L, lua_Debug *ar)
{
    if (uv_hrtime() / 1000000 > script_load_deadline)
        luaL_error(L, "init.lua did not finish loading within %d ms",
                   SCRIPT_LOAD_BUDGET_MS);
}

/* Loads <lua.path>/init.lua (errors carry file:line) and keeps a registry
 * reference to each hook it returns. Loading runs on the main thread, so a
 * yielding primitive at load time raises instead of yielding. */
static int script_load(sg_script_t *s, char *err, size_t errlen)
{
    lua_State *L = s->L;
    const char *dir = s->cfg->lua.path ? s->cfg->lua.path : "lua";
    char path[4096];

    snprintf(path, sizeof path, "%s/init.lua", dir);
    script_load_deadline = uv_hrtime() / 1000000 + SCRIPT_LOAD_BUDGET_MS;
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    lua_sethook(L, script_load_hook, LUA_MASKCOUNT, 10000);
    int rc = luaL_loadfile(L, path);
    if (rc == 0)
        rc = lua_pcall(L, 0, 1, 0);
    lua_sethook(L, NULL, 0, 0);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
    if (rc != 0) {
        snprintf(err, errlen, "lua: %s", lua_tostring(L, -1));
        lua_settop(L, 0);
        return SG_ESCRIPT;
    }
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "lua: %s must return a table of hooks (got %s)",
                 path, luaL_typename(L, -1));
        lua_settop(L, 0);
        return SG_ESCRIPT;
    }
    for (int i = 0; i < HOOK_COUNT; i++) {
        lua_getfield(L, -1, hook_names[i]);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        if (!lua_isfunction(L, -1)) {
            snprintf(err, errlen, "lua: %s: hook %s = %s: expected a function",
                     path, hook_names[i], luaL_typename(L, -1));
            lua_settop(L, 0);
            return SG_ESCRIPT;
        }
        s->hook_refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_settop(L, 0);
    return 0;
}

/* ---------------------------------------------------------------------
 * Hook entry points
 * ------------------------------------------------------------------- */

int sg_script_on_connect(sg_script_t *s, const sg_script_connect_req_t *req,
                         char *reason, size_t reasonlen, char *user_id_out,
                         size_t idlen)
{
    int allow = 0;

    if (idlen > 0)
        user_id_out[0] = '\0';
    if (s->hook_refs[HOOK_CONNECT] == LUA_NOREF) {
        /* No auth rules at all: fine for development, never fail-open in
         * production. */
        if (s->cfg->auth.dev_mode)
            return 1;
        copy_str(reason, reasonlen, "no on_connect hook (auth rules) loaded");
        return 0;
    }
    sg_script_task_t *task = task_new(s, SG__TASK_CONNECT, "on_connect");
    lua_State *co = task->co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, s->hook_refs[HOOK_CONNECT]);
    lua_createtable(co, 0, 8);
    push_optstring(co, "session_id", req->session_id);
    push_optstring(co, "user_id", req->user_id);
    push_optstring(co, "token", req->token);
    push_optstring(co, "path", req->path);
    push_optstring(co, "remote_addr", req->remote_addr);
    push_optstring(co, "origin", req->origin);
    push_optstring(co, "method", "GET");

    int rc = task_run(task, 1);
    if (rc == LUA_YIELD) {
        s->errors++;
        luaL_where(co, 1);
        SG_ERROR("script", "on_connect failed: %syielded, but it must decide "
                 "without waiting; denying the connection",
                 lua_tostring(co, -1));
        task_abandon(task);
        copy_str(reason, reasonlen, "internal error");
        return 0;
    }
    if (rc != 0) {
        task_fail_traceback(task);
        copy_str(reason, reasonlen, "internal error");
        return 0;
    }
    allow = lua_toboolean(co, 1);
    if (allow && lua_istable(co, 2)) {
        lua_getfield(co, 2, "user_id");
        if (lua_type(co, -1) == LUA_TSTRING)
            copy_str(user_id_out, idlen, lua_tostring(co, -1));
    } else if (!allow) {
        const char *r = lua_type(co, 2) == LUA_TSTRING
                            ? lua_tostring(co, 2) : "authentication failed";
        copy_str(reason, reasonlen, r);
    }
    task_free(task);
    return allow;
}

/* Replaces *dst (length *dlen) with the string field `name` of the table
 * at `idx` when the hook set one. */
static void chunk_take_field(lua_State *co, int idx, const char *name,
                             char **dst, size_t *dlen, int nullable)
{
    lua_getfield(co, idx, name);
    if (lua_type(co, -1) == LUA_TSTRING) {
        size_t n;
        const char *v = lua_tolstring(co, -1, &n);
        char *copy = malloc(n + 1);
        if (copy != NULL) {
            memcpy(copy, v, n + 1);
            free(*dst);
            *dst = copy;
            *dlen = n;
        }
    } else if (nullable && lua_isnil(co, -1)) {
        free(*dst);
        *dst = NULL;
        *dlen = 0;
    }
    lua_pop(co, 1);
}

int sg_script_on_chunk(sg_script_t *s, sg_chatmsg_t *msg)
{
    if (s == NULL || s->hook_refs[HOOK_CHUNK] == LUA_NOREF)
        return 1; /* the common case costs one comparison */
    sg_script_task_t *task = task_new(s, SG__TASK_CHUNK, "on_chunk");
    lua_State *co = task->co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, s->hook_refs[HOOK_CHUNK]);
    lua_createtable(co, 0, 8);
    push_optstring(co, "session_id", msg->session_id);
    push_optstring(co, "message_id", msg->message_id);
    push_optstring(co, "user_id", msg->user_id);
    push_optstring(co, "role", msg->role);
    lua_pushlstring(co, msg->content, msg->content_len);
    lua_setfield(co, -2, "content");
    if (msg->chunk != NULL) {
        lua_pushlstring(co, msg->chunk, msg->chunk_len);
        lua_setfield(co, -2, "chunk");
    }
    lua_pushnumber(co, (lua_Number)msg->timestamp);
    lua_setfield(co, -2, "timestamp");
    lua_pushboolean(co, msg->is_complete == 1);
    lua_setfield(co, -2, "is_complete");
    lua_pushvalue(co, -1);
    int ref = luaL_ref(co, LUA_REGISTRYINDEX); /* the table, after the run */

    int rc = task_run(task, 1);
    int keep = 1;
    if (rc == LUA_YIELD) {
        s->errors++;
        SG_ERROR("script", "on_chunk yielded: it must transform without "
                           "waiting; chunk kept unchanged");
        task_abandon(task);
        luaL_unref(s->L, LUA_REGISTRYINDEX, ref);
        return 1;
    }
    if (rc != 0) {
        /* Fail open: dropping would lose an answer's final. */
        task_fail_traceback(task);
        luaL_unref(s->L, LUA_REGISTRYINDEX, ref);
        return 1;
    }
    if (lua_gettop(co) >= 1 && lua_isboolean(co, 1) && !lua_toboolean(co, 1))
        keep = 0;
    lua_rawgeti(co, LUA_REGISTRYINDEX, ref);
    luaL_unref(co, LUA_REGISTRYINDEX, ref);
    int t = lua_gettop(co);
    chunk_take_field(co, t, "content", &msg->content, &msg->content_len, 0);
    chunk_take_field(co, t, "chunk", &msg->chunk, &msg->chunk_len, 1);
    task_free(task);
    return keep;
}

void sg_script_on_message(sg_script_t *s, const sg_script_conn_t *conn,
                          const char *text, size_t len)
{
    if (s->hook_refs[HOOK_MESSAGE] == LUA_NOREF)
        return;
    sg_script_task_t *task = task_new(s, SG__TASK_MESSAGE, "on_message");
    task->conn_id = conn->id;
    lua_rawgeti(task->co, LUA_REGISTRYINDEX, s->hook_refs[HOOK_MESSAGE]);
    push_conn(task->co, conn);
    lua_pushlstring(task->co, text, len);
    task_after(task, task_run(task, 2));
}

void sg_script_on_disconnect(sg_script_t *s, const sg_script_conn_t *conn)
{
    if (s->hook_refs[HOOK_DISCONNECT] == LUA_NOREF)
        return;
    sg_script_task_t *task =
        task_new(s, SG__TASK_DISCONNECT, "on_disconnect");
    lua_rawgeti(task->co, LUA_REGISTRYINDEX, s->hook_refs[HOOK_DISCONNECT]);
    push_conn(task->co, conn);
    task_after(task, task_run(task, 1));
}

/* req = {method, path, query, body, headers = {lowercase = value},
 * remote_addr}. */
static void push_http_req(lua_State *L, const sg_script_http_req_t *req)
{
    char name[128];

    lua_createtable(L, 0, 6);
    push_optstring(L, "method", req->method);
    push_optstring(L, "path", req->path);
    push_optstring(L, "query", req->query);
    push_optstring(L, "remote_addr", req->remote_addr);
    if (req->body != NULL) {
        lua_pushlstring(L, req->body, req->body_len);
        lua_setfield(L, -2, "body");
    }
    lua_newtable(L);
    for (const char *const *h = req->headers; h && h[0] && h[1]; h += 2) {
        size_t n = strlen(h[0]);
        if (n >= sizeof name)
            continue;
        for (size_t i = 0; i < n; i++)
            name[i] = (char)((h[0][i] >= 'A' && h[0][i] <= 'Z')
                                 ? h[0][i] + 32 : h[0][i]);
        lua_pushlstring(L, name, n);
        lua_pushstring(L, h[1]);
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
}

void sg_script_http(sg_script_t *s, const sg_script_http_req_t *req,
                    sg_script_http_done_cb done, void *ctx,
                    sg_script_task_t **task_out)
{
    if (task_out != NULL)
        *task_out = NULL;
    if (s->hook_refs[HOOK_HTTP] == LUA_NOREF) {
        done(ctx, 0, NULL, NULL, 0, NULL);
        return;
    }
    sg_script_task_t *task = task_new(s, SG__TASK_HTTP, "on_http");
    task->done = done;
    task->done_ctx = ctx;
    lua_rawgeti(task->co, LUA_REGISTRYINDEX, s->hook_refs[HOOK_HTTP]);
    push_http_req(task->co, req);
    if (task_after(task, task_run(task, 1)) && task_out != NULL)
        *task_out = task;
}

void sg_script_task_detach(sg_script_task_t *task)
{
    task->done = NULL;
    task->done_ctx = NULL;
}

size_t sg_script_pending(const sg_script_t *s)
{
    return s->pending;
}

uint64_t sg_script_errors(const sg_script_t *s)
{
    return s->errors;
}

/* ---------------------------------------------------------------------
 * Internal API for script_api_*.c
 * ------------------------------------------------------------------- */

sg_script_t *sg__script_from(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&script_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    sg_script_t *s = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return s;
}

sg_script_task_t *sg__script_check_yieldable(lua_State *L, const char *api)
{
    sg_script_t *s = sg__script_from(L);
    sg_script_task_t *t = s->current;

    if (t == NULL || t->co != L)
        luaL_error(L, "%s: not in a hook coroutine", api);
    if (t->kind == SG__TASK_CONNECT || t->kind == SG__TASK_CHUNK)
        luaL_error(L, "%s is not available in %s", api, t->hook);
    return t;
}

void sg__script_suspend(sg_script_task_t *task, sg__wait_t wait)
{
    assert(task->wait == SG__WAIT_NONE);
    task->wait = wait;
}

void sg__script_resume(sg_script_task_t *task, int nres)
{
    assert(task->wait != SG__WAIT_NONE);
    task->wait = SG__WAIT_NONE;
    task->s->pending--;
    task_after(task, task_run(task, nres));
}

void sg__script_spawn(sg_script_t *s, sg__task_kind_t kind, const char *hook,
                      int nargs)
{
    sg_script_task_t *task = task_new(s, kind, hook);
    lua_xmove(s->L, task->co, nargs + 1);
    task_after(task, task_run(task, nargs));
}

/* ---------------------------------------------------------------------
 * Tasks
 * ------------------------------------------------------------------- */

static sg_script_task_t *task_new(sg_script_t *s, sg__task_kind_t kind,
                                  const char *hook)
{
    sg_script_task_t *task = calloc(1, sizeof *task);
    /* Out of memory here is as fatal as it is inside the Lua allocator. */
    assert(task != NULL);
    task->s = s;
    task->kind = kind;
    task->hook = hook;
    task->co = lua_newthread(s->L);
    task->co_ref = luaL_ref(s->L, LUA_REGISTRYINDEX);
    task->next = s->tasks;
    if (s->tasks != NULL)
        s->tasks->prev = task;
    s->tasks = task;
    s->runs++;
    return task;
}

static void task_free(sg_script_task_t *task)
{
    sg_script_t *s = task->s;

    if (task->prev != NULL)
        task->prev->next = task->next;
    else
        s->tasks = task->next;
    if (task->next != NULL)
        task->next->prev = task->prev;
    luaL_unref(s->L, LUA_REGISTRYINDEX, task->co_ref);
    free(task);
}

/* Drops a task without resuming it: its timer is closed and its broker op
 * detached (the op is freed by the broker's completion). */
static void task_abandon(sg_script_task_t *task)
{
    if (task->timer != NULL) {
        task->timer->task = NULL;
        sg__script_timer_close(task->timer);
        task->timer = NULL;
    }
    if (task->op != NULL) {
        task->op->task = NULL;
        task->op = NULL;
    }
    if (task->wait != SG__WAIT_NONE)
        task->s->pending--;
    task_free(task);
}

static int task_run(sg_script_task_t *task, int nargs)
{
    sg_script_t *s = task->s;
    sg_script_task_t *saved = s->current;

    s->current = task;
    int rc = lua_resume(task->co, nargs);
    s->current = saved;
    return rc;
}

/* Handles the outcome of a resume. Returns 1 when the task is suspended
 * (and still alive), 0 when it finished or failed and was freed. */
static int task_after(sg_script_task_t *task, int rc)
{
    if (rc == LUA_YIELD && task->wait != SG__WAIT_NONE) {
        task->s->pending++;
        return 1;
    }
    if (rc == LUA_YIELD) {
        lua_State *L = task->s->L;
        luaL_where(task->co, 1);
        lua_pushfstring(L, "%syielded outside an sg primitive "
                        "(coroutine.yield in a hook is not supported)",
                        lua_tostring(task->co, -1));
        task_fail(task, lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    if (rc != 0) {
        task_fail_traceback(task);
        return 0;
    }
    if (task->kind == SG__TASK_HTTP && task_finish_http(task) < 0)
        return 0;
    task_free(task);
    return 0;
}

static void send_error_frame(sg_script_t *s, uint64_t conn_id)
{
    char iso[32];

    if (s->host.send == NULL)
        return;
    sg__script_iso_now(iso, sizeof iso);
    json_t *o = json_pack("{s:s,s:s,s:s}", "type", "error", "error",
                          "internal error", "timestamp", iso);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (text != NULL)
        s->host.send(s->host.data, conn_id, text, strlen(text));
    free(text);
    json_decref(o);
}

/* Counts and logs a failed task, answers its waiter, frees it. */
static void task_fail(sg_script_task_t *task, const char *msg)
{
    sg_script_t *s = task->s;

    s->errors++;
    SG_ERROR("script", "%s failed: %s", task->hook, msg);
    if (task->kind == SG__TASK_MESSAGE) {
        send_error_frame(s, task->conn_id);
    } else if (task->kind == SG__TASK_HTTP && task->done != NULL) {
        task->done(task->done_ctx, 500, "application/json", HTTP_ERROR_BODY,
                   sizeof HTTP_ERROR_BODY - 1, NULL);
        task->done = NULL;
    }
    task_abandon(task);
}

/* The error value is on top of the dead coroutine's stack. A runtime
 * error's message already starts with "file:line:"; the traceback adds the
 * call chain. */
static void task_fail_traceback(sg_script_task_t *task)
{
    lua_State *L = task->s->L;
    lua_State *co = task->co;
    int top = lua_gettop(L);
    const char *msg = lua_tostring(co, -1);

    if (msg == NULL) {
        lua_pushfstring(L, "(error object is a %s value)",
                        luaL_typename(co, -1));
        msg = lua_tostring(L, -1);
    }
    luaL_traceback(L, co, msg, 0);
    task_fail(task, lua_tostring(L, -1));
    lua_settop(L, top);
}

/* Collects the extra response headers from the table at `idx`: string
 * names and values only; content-type goes to *ctype. Returns the number
 * of strings stored in `out` or -1 on a non-string entry. The strings stay
 * valid while the table is on the stack. */
static int collect_headers(lua_State *L, int idx, const char **out,
                           const char **ctype)
{
    int n = 0;

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 2);
            return -1;
        }
        const char *name = lua_tostring(L, -2);
        if (strcasecmp(name, "content-type") == 0) {
            *ctype = lua_tostring(L, -1);
        } else if (n < 2 * SCRIPT_MAX_HEADERS) {
            out[n++] = name;
            out[n++] = lua_tostring(L, -1);
        }
        lua_pop(L, 1);
    }
    out[n] = NULL;
    return n;
}

/* on_http returned: status [, body [, headers]]. A nil status means "no
 * route" (done status 0). Body: string as is, table JSON-encoded, nil
 * empty; content type "application/json" unless headers say otherwise.
 * Returns 0, or -1 when the results were invalid and the task was failed
 * (and freed). */
static int task_finish_http(sg_script_task_t *task)
{
    lua_State *L = task->s->L;
    int top = lua_gettop(L);
    const char *hdrs[2 * SCRIPT_MAX_HEADERS + 1] = {NULL};
    const char *ctype = "application/json";
    const char *body = "";
    size_t len = 0;

    if (task->done == NULL)
        return 0;
    lua_settop(task->co, 3);
    lua_xmove(task->co, L, 3);
    if (lua_isnil(L, top + 1)) {
        task->done(task->done_ctx, 0, NULL, NULL, 0, NULL);
        goto out;
    }
    lua_Number st = lua_tonumber(L, top + 1);
    if (lua_type(L, top + 1) != LUA_TNUMBER || st < 100 || st > 599) {
        task_fail(task, "on_http returned an invalid status (expected an "
                        "integer 100..599 or nil)");
        lua_settop(L, top);
        return -1;
    }
    if (lua_istable(L, top + 2)) {
        if (sg__script_encode(L, top + 2) != 1) {
            lua_pushfstring(L, "on_http body could not be JSON-encoded: %s",
                            lua_tostring(L, -1));
            task_fail(task, lua_tostring(L, -1));
            lua_settop(L, top);
            return -1;
        }
        lua_replace(L, top + 2);
    }
    if (lua_type(L, top + 2) == LUA_TSTRING)
        body = lua_tolstring(L, top + 2, &len);
    if (lua_istable(L, top + 3) &&
        collect_headers(L, top + 3, hdrs, &ctype) < 0) {
        task_fail(task, "on_http headers must map strings to strings");
        lua_settop(L, top);
        return -1;
    }
    task->done(task->done_ctx, (int)st, ctype, body, len, hdrs);
out:
    task->done = NULL;
    lua_settop(L, top);
    return 0;
}

/* ---------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------- */

static void push_conn(lua_State *L, const sg_script_conn_t *conn)
{
    lua_createtable(L, 0, 3);
    lua_pushnumber(L, (lua_Number)conn->id);
    lua_setfield(L, -2, "id");
    push_optstring(L, "session_id", conn->session_id);
    push_optstring(L, "user_id", conn->user_id);
}

static void push_optstring(lua_State *L, const char *key, const char *v)
{
    if (v == NULL)
        return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, key);
}

static void copy_str(char *dst, size_t dstlen, const char *src)
{
    if (dstlen == 0)
        return;
    snprintf(dst, dstlen, "%s", src);
}

/* ---- return conventions shared by the sg.* families --------------------- */

int sg__script_push_error(lua_State *L, int rc)
{
    lua_pushnil(L);
    lua_pushstring(L, rc == SG_ECANCELED ? "closed" : sg_strerror(rc));
    return 2;
}

int sg__script_push_result(lua_State *L, int rc)
{
    if (rc != 0)
        return sg__script_push_error(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}
