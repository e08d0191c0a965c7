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
 *
 * Hot reload (sg_script_reload): a new state is built and init.lua loaded
 * in it; only then does it become the live state. Tasks and sg.timer
 * callbacks of the old state keep running there (every task knows its
 * state); the old state is closed from the loop once it has neither.
 *
 * Budgets: a count hook stops a resume that runs longer than
 * lua.hook_timeout or a state that grows past lua.memory_limit (see
 * docs/hot-reload.md for what LuaJIT allows).
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
#include "script_api_http.h"
#include "script_api_cache.h"
#include "script_api_metrics.h"
#include "script_api_redis.h"
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
static void push_conn_table(lua_State *L, const sg_script_conn_t *conn);
static void drop_conn(sg_script_t *vm, uint64_t id);
static void push_optstring(lua_State *L, const char *key, const char *v);
static void copy_str(char *dst, size_t dstlen, const char *src);
static sg_script_t *vm_new(sg_script_t *root, unsigned version, char *err,
                           size_t errlen);
static void vm_close(sg_script_t *vm);
static void vm_destroy(sg_script_t *vm);
static void script_reap(sg_script_t *root);
static void script_reap_soon(sg_script_t *vm);
static int script_is_current(lua_State *L);
static void budget_install(sg_script_t *vm);

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
    s->root = s;
    s->live = vm_new(s, 1, err, errlen);
    if (s->live == NULL) {
        free(s);
        return NULL;
    }
    s->version = 1;
    return s;
}

static void reaper_closed_cb(uv_handle_t *h)
{
    free(h);
}

void sg_script_free(sg_script_t *s)
{
    if (s == NULL)
        return;
    assert(s->root == s && "sg_script_free takes the public handle");
    vm_destroy(s->live);
    while (s->retired != NULL) {
        sg_script_t *vm = s->retired;
        s->retired = vm->next;
        vm_destroy(vm);
    }
    if (s->reaper != NULL)
        uv_close((uv_handle_t *)s->reaper, reaper_closed_cb);
    free(s);
}

int sg_script_reload(sg_script_t *s, char *err, size_t errlen)
{
    assert(s->root == s && "sg_script_reload takes the public handle");
    sg_script_t *vm = vm_new(s, s->version + 1, err, errlen);

    if (vm == NULL) {
        s->reload_failures++;
        SG_ERROR("script", "lua: reload failed, keeping version %u: %s",
                 s->version, err);
        return SG_ESCRIPT;
    }
    sg_script_t *old = s->live;
    s->live = vm;
    s->version = vm->version;
    s->reloads++;
    old->next = s->retired;
    s->retired = old;
    if (s->reaper == NULL && s->loop != NULL) {
        s->reaper = malloc(sizeof *s->reaper);
        if (s->reaper != NULL && uv_timer_init(s->loop, s->reaper) != 0) {
            free(s->reaper);
            s->reaper = NULL;
        }
        if (s->reaper != NULL)
            s->reaper->data = s;
    }
    SG_INFO("script", "lua: reloaded (version %u)", s->version);
    script_reap(s);
    return 0;
}

unsigned sg_script_version(const sg_script_t *s)
{
    return s->version;
}

uint64_t sg_script_reloads(const sg_script_t *s, uint64_t *failures)
{
    if (failures != NULL)
        *failures = s->reload_failures;
    return s->reloads;
}

size_t sg_script_states(const sg_script_t *s)
{
    size_t n = 1;
    for (const sg_script_t *vm = s->retired; vm != NULL; vm = vm->next)
        n++;
    return n;
}

/* ---- states ------------------------------------------------------------ */

/* The allocator of every state: counts bytes and, while a hook runs (or
 * init.lua loads), refuses growth past lua.memory_limit. LuaJIT turns the
 * refusal into a "not enough memory" error in that coroutine; the budget
 * hook then stops the task even if a pcall caught the error. Outside a
 * resume nothing is refused: an allocation error there would be
 * unprotected and panic. */
static void *script_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    sg_script_t *vm = ud;
    size_t old = ptr != NULL ? osize : 0;

    if (nsize == 0) {
        free(ptr);
        vm->mem_used -= old;
        return NULL;
    }
    if (nsize > old && vm->mem_enforce && vm->mem_limit > 0 &&
        vm->mem_used - old + nsize > vm->mem_limit) {
        vm->mem_over = 1;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (p != NULL)
        vm->mem_used = vm->mem_used - old + nsize;
    return p;
}

static int script_panic(lua_State *L)
{
    SG_ERROR("script", "lua: unprotected error: %s",
             lua_isstring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
    return 0; /* LuaJIT then aborts the process */
}

static int script_jit_refused(lua_State *L)
{
    return luaL_error(L, "jit.on is disabled: hooks run in the interpreter "
                         "while lua.hook_timeout is set");
}

/* Builds one state: libraries, the sg API, init.lua, the budget hook. NULL
 * with a message in `err` (file:line for script errors). */
static sg_script_t *vm_new(sg_script_t *root, unsigned version, char *err,
                           size_t errlen)
{
    sg_script_t *vm = calloc(1, sizeof *vm);
    if (vm == NULL) {
        copy_str(err, errlen, "no memory");
        return NULL;
    }
    vm->loop = root->loop;
    vm->cfg = root->cfg;
    vm->broker = root->broker;
    vm->metrics = root->metrics;
    vm->host = root->host;
    vm->root = root;
    vm->version = version;
    for (int i = 0; i < HOOK_COUNT; i++)
        vm->hook_refs[i] = LUA_NOREF;
    vm->encode_ref = vm->decode_ref = LUA_NOREF;
    if (vm->cfg->lua.memory_limit > 0)
        vm->mem_limit = (size_t)vm->cfg->lua.memory_limit << 20;

    /* LuaJIT builds without GC64 refuse custom allocators on x86_64: then
     * the hook checks collectgarbage("count") instead. */
    vm->L = lua_newstate(script_alloc, vm);
    vm->own_alloc = vm->L != NULL;
    if (vm->L == NULL)
        vm->L = luaL_newstate();
    if (vm->L == NULL) {
        copy_str(err, errlen, "no memory");
        free(vm);
        return NULL;
    }
    lua_atpanic(vm->L, script_panic);
    luaL_openlibs(vm->L);
    lua_newtable(vm->L);
    vm->conns_ref = luaL_ref(vm->L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(vm->L, (void *)&script_key);
    lua_pushlightuserdata(vm->L, vm);
    lua_rawset(vm->L, LUA_REGISTRYINDEX);

    if (lua_cpcall(vm->L, script_open, vm) != 0) {
        snprintf(err, errlen, "lua: failed to open the sg API: %s",
                 lua_tostring(vm->L, -1));
        goto fail;
    }
    if (script_load(vm, err, errlen) < 0)
        goto fail;
    budget_install(vm);
    return vm;

fail:
    vm_close(vm);
    return NULL;
}

/* Closes a state that has no task and no timer left. */
static void vm_close(sg_script_t *vm)
{
    assert(vm->tasks == NULL && vm->timers == NULL && vm->current == NULL);
    lua_close(vm->L);
    vm->root->errors += vm->errors;
    free(vm);
}

/* sg_script_free: abandons the tasks (HTTP waiters get a 503), closes the
 * timers, closes the state. */
static void vm_destroy(sg_script_t *vm)
{
    assert(vm->current == NULL && "sg_script_free called from a hook");
    while (vm->tasks != NULL) {
        sg_script_task_t *t = vm->tasks;
        if (t->kind == SG__TASK_HTTP && t->done != NULL) {
            sg_script_http_done_cb done = t->done;
            t->done = NULL;
            done(t->done_ctx, 503, "application/json", HTTP_STOPPED_BODY,
                 sizeof HTTP_STOPPED_BODY - 1, NULL);
        }
        task_abandon(t);
    }
    while (vm->timers != NULL)
        sg__script_timer_close(vm->timers);
    vm_close(vm);
}

/* Closes the retired states that have nothing left to run. */
static void script_reap(sg_script_t *root)
{
    sg_script_t **pp = &root->retired;

    while (*pp != NULL) {
        sg_script_t *vm = *pp;
        if (vm->tasks == NULL && vm->timers == NULL && vm->current == NULL) {
            *pp = vm->next;
            SG_DEBUG("script", "lua: closed version %u", vm->version);
            vm_close(vm);
        } else {
            pp = &vm->next;
        }
    }
}

static void script_reap_cb(uv_timer_t *h)
{
    script_reap(h->data);
}

/* A retired state just lost a task: close it from the loop, never from
 * inside the callback that finished the task (its caller may still hold
 * the state). */
static void script_reap_soon(sg_script_t *vm)
{
    sg_script_t *root = vm->root;

    if (vm != root->live && root->reaper != NULL && vm->tasks == NULL)
        uv_timer_start(root->reaper, script_reap_cb, 0, 0);
}

/* sg.is_current() -> true while this state is the one new hooks run in
 * (a periodic sg.timer chain in an old state can stop itself). */
static int script_is_current(lua_State *L)
{
    sg_script_t *vm = sg__script_from(L);
    lua_pushboolean(L, vm->root->live == vm);
    return 1;
}

/* ---- budgets ----------------------------------------------------------- */

/* Every SCRIPT_BUDGET_COUNT VM instructions the hook checks the running
 * task's deadline (lua.hook_timeout) and the memory limit. LuaJIT calls
 * hooks only from the interpreter: a loop compiled to a trace would never
 * see it, so the JIT is off in states with a time budget. */
#define SCRIPT_BUDGET_COUNT 1000

static int budget_memory_over(sg_script_t *vm, lua_State *L)
{
    if (vm->mem_over)
        return 1;
    if (vm->own_alloc || vm->mem_limit == 0)
        return 0;
    if ((size_t)lua_gc(L, LUA_GCCOUNT, 0) << 10 <= vm->mem_limit)
        return 0;
    lua_gc(L, LUA_GCCOLLECT, 0);
    return (size_t)lua_gc(L, LUA_GCCOUNT, 0) << 10 > vm->mem_limit;
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    sg_script_t *vm = sg__script_from(L);
    sg_script_task_t *task = vm->current;
    int mem;

    if (task == NULL)
        return;
    mem = budget_memory_over(vm, L);
    if (!mem && (vm->deadline == 0 || uv_hrtime() <= vm->deadline))
        return;
    if (!task->stopped) {
        task->stopped = 1;
        lua_getinfo(L, "Sl", ar);
        if (mem)
            snprintf(task->stop_msg, sizeof task->stop_msg,
                     "%s:%d: %s exceeded its memory limit (%d MiB)",
                     ar->short_src, ar->currentline, task->hook,
                     vm->cfg->lua.memory_limit);
        else
            snprintf(task->stop_msg, sizeof task->stop_msg,
                     "%s:%d: %s exceeded its time budget (%g s)",
                     ar->short_src, ar->currentline, task->hook,
                     vm->cfg->lua.hook_timeout);
    }
    /* A yield from a hook cannot be caught by pcall: the task is left
     * suspended and task_after fails it. In a coroutine the script made
     * itself, an error ends that coroutine; the next check yields the
     * task. */
    if (L == task->co) {
        lua_yield(L, 0);
        return;
    }
    luaL_error(L, "%s", task->stop_msg);
}

/* The stop message of the running task once its budget is spent, else
 * nothing (used by the pcall wrappers below). */
static int budget_stopped(lua_State *L)
{
    sg_script_t *vm = sg__script_from(L);
    sg_script_task_t *task = vm->current;
    if (task == NULL || !task->stopped)
        return 0;
    lua_pushstring(L, task->stop_msg);
    return 1;
}

/* pcall, xpcall and coroutine.resume rethrow once the running task's
 * budget is spent. The hook stops a task by yielding from it; inside a C
 * function (a table.sort comparator, a gsub callback) that yield is an
 * error, which a script's pcall could catch and loop on forever. They stay
 * Lua functions around the originals, so yielding through pcall (e.g.
 * pcall(sg.redis, ...)) keeps working. */
static const char budget_wrappers[] =
    "local stopped, pcall, xpcall, resume, error, select ="
    "  ..., pcall, xpcall, coroutine.resume, error, select\n"
    "local function check(ok, ...)\n"
    "  if not ok then local m = stopped(); if m then error(m, 0) end end\n"
    "  return ok, ...\n"
    "end\n"
    "_G.pcall = function(...) return check(pcall(...)) end\n"
    "_G.xpcall = function(...) return check(xpcall(...)) end\n"
    "coroutine.resume = function(...) return check(resume(...)) end\n";

static void budget_wrap_pcall(lua_State *L)
{
    if (luaL_loadbuffer(L, budget_wrappers, sizeof(budget_wrappers) - 1,
                        "=budget") != 0)
        lua_error(L);
    lua_pushcfunction(L, budget_stopped);
    lua_call(L, 1, 0);
}

static void budget_install(sg_script_t *vm)
{
    const sg_config_t *cfg = vm->cfg;

    if (cfg->lua.hook_timeout > 0) {
        luaJIT_setmode(vm->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
        lua_getglobal(vm->L, "jit");
        if (lua_istable(vm->L, -1)) {
            lua_pushcfunction(vm->L, script_jit_refused);
            lua_setfield(vm->L, -2, "on");
        }
        lua_pop(vm->L, 1);
    }
    if (cfg->lua.hook_timeout > 0 || cfg->lua.memory_limit > 0)
        lua_sethook(vm->L, budget_hook, LUA_MASKCOUNT, SCRIPT_BUDGET_COUNT);
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

    if (s->cfg->lua.hook_timeout > 0 || s->cfg->lua.memory_limit > 0)
        budget_wrap_pcall(L);
    lua_newtable(L);
    sg_script_api_json_open(L);
    sg_script_api_core_open(L);
    sg_script_api_broker_open(L);
    sg_script_api_stream_open(L);
    sg_script_api_data_open(L);
    sg_script_api_jwt_open(L);
    sg_script_api_http_open(L);
    sg_script_api_redis_open(L);
    sg_script_api_cache_open(L);
    sg_script_api_metrics_open(L);
    lua_pushinteger(L, (lua_Integer)s->version);
    lua_setfield(L, -2, "version");
    lua_pushcfunction(L, script_is_current);
    lua_setfield(L, -2, "is_current");
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
 * Run-time budgets: budget_hook. */
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
    if (rc == 0) {
        s->mem_enforce = 1;
        rc = lua_pcall(L, 0, 1, 0);
        s->mem_enforce = 0;
    }
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

    s = s->live;
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
    if (rc == LUA_YIELD && task->stopped) {
        task_fail(task, task->stop_msg);
        copy_str(reason, reasonlen, "internal error");
        return 0;
    }
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
    /* Callers hold the root (the server) or a task's own state (sg.append
     * in a coroutine of a retired state): the live state's policy applies
     * to every chunk appended from now on. */
    if (s != NULL)
        s = s->root->live;
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
    if (rc == LUA_YIELD && task->stopped) {
        task_fail(task, task->stop_msg);
        luaL_unref(s->L, LUA_REGISTRYINDEX, ref);
        return 1;
    }
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
    s = s->live;
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
    if (s == NULL)
        return; /* the server is past freeing its scripts */
    s = s->live;
    if (s->hook_refs[HOOK_DISCONNECT] == LUA_NOREF) {
        drop_conn(s, conn->id);
        return;
    }
    sg_script_task_t *task =
        task_new(s, SG__TASK_DISCONNECT, "on_disconnect");
    lua_rawgeti(task->co, LUA_REGISTRYINDEX, s->hook_refs[HOOK_DISCONNECT]);
    push_conn(task->co, conn);
    drop_conn(s, conn->id);
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
    s = s->live;
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
    size_t n = s->live->pending;
    for (const sg_script_t *vm = s->retired; vm != NULL; vm = vm->next)
        n += vm->pending;
    return n;
}

uint64_t sg_script_errors(const sg_script_t *s)
{
    uint64_t n = s->errors + s->live->errors;
    for (const sg_script_t *vm = s->retired; vm != NULL; vm = vm->next)
        n += vm->errors;
    return n;
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
    if (s->nspare > 0) {
        s->nspare--;
        task->co = s->spare_co[s->nspare];
        task->co_ref = s->spare_ref[s->nspare];
    } else {
        task->co = lua_newthread(s->L);
        task->co_ref = luaL_ref(s->L, LUA_REGISTRYINDEX);
    }
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
    if (task->co_ref != LUA_NOREF)
        luaL_unref(s->L, LUA_REGISTRYINDEX, task->co_ref);
    free(task);
    script_reap_soon(s);
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
    uint64_t saved_deadline = s->deadline;
    int saved_enforce = s->mem_enforce;

    /* The time budget is per outermost resume; a nested one (a hook that
     * synchronously starts another) shares it. */
    if (saved == NULL) {
        double t = s->cfg->lua.hook_timeout;
        s->deadline = t > 0 ? uv_hrtime() + (uint64_t)(t * 1e9) : 0;
        s->mem_over = 0;
    }
    s->current = task;
    s->mem_enforce = 1;
    int rc = lua_resume(task->co, nargs);
    s->mem_enforce = saved_enforce;
    s->current = saved;
    s->deadline = saved_deadline;
    return rc;
}

/* Handles the outcome of a resume. Returns 1 when the task is suspended
 * (and still alive), 0 when it finished or failed and was freed. */
static int task_after(sg_script_task_t *task, int rc)
{
    if (rc == LUA_YIELD && task->stopped) {
        task_fail(task, task->stop_msg);
        return 0;
    }
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
    /* Finished cleanly: the coroutine can run the next hook. */
    sg_script_t *s = task->s;
    if (s->nspare < (int)(sizeof(s->spare_co) / sizeof(s->spare_co[0])) &&
        lua_status(task->co) == 0) {
        lua_settop(task->co, 0);
        s->spare_co[s->nspare] = task->co;
        s->spare_ref[s->nspare] = task->co_ref;
        s->nspare++;
        task->co_ref = LUA_NOREF;
    }
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
    int collect = task->stopped || s->mem_over;

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
    /* A stopped loop or allocation bomb leaves garbage: give it back now,
     * before the next hook meets the memory limit. */
    if (collect)
        lua_gc(s->L, LUA_GCCOLLECT, 0);
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
    if (task->s->mem_over && !task->stopped) {
        lua_pushfstring(L, "%s exceeded its memory limit (%d MiB): %s",
                        task->hook, task->s->cfg->lua.memory_limit, msg);
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

/* The conn table a hook receives is built once per connection and kept in
 * the state (per-frame hooks are the hot path: no table and no string
 * interning per frame); on_disconnect drops it. */
static void push_conn(lua_State *L, const sg_script_conn_t *conn)
{
    sg_script_t *vm = sg__script_from(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->conns_ref);
    lua_rawgeti(L, -1, (int)(conn->id & 0x7fffffff) ^ (int)(conn->id >> 31));
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "id");
        int same = lua_tonumber(L, -1) == (lua_Number)conn->id;
        lua_pop(L, 1);
        if (same) {
            lua_remove(L, -2);
            return;
        }
    }
    lua_pop(L, 1);
    push_conn_table(L, conn);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, (int)(conn->id & 0x7fffffff) ^ (int)(conn->id >> 31));
    lua_remove(L, -2);
}

static void drop_conn(sg_script_t *vm, uint64_t id)
{
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->conns_ref);
    lua_pushnil(L);
    lua_rawseti(L, -2, (int)(id & 0x7fffffff) ^ (int)(id >> 31));
    lua_pop(L, 1);
}

static void push_conn_table(lua_State *L, const sg_script_conn_t *conn)
{
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, (lua_Number)conn->id);
    lua_setfield(L, -2, "id");
    push_optstring(L, "session_id", conn->session_id);
    push_optstring(L, "user_id", conn->user_id);
    push_optstring(L, "remote_addr", conn->remote_addr);
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

/* ---- the op protocol of the yielding primitives ------------------------ */

sg__script_op_t *sg__script_op_new(sg_script_task_t *task)
{
    sg__script_op_t *op = malloc(sizeof(*op));
    if (op != NULL)
        op->task = task;
    return op;
}

int sg__script_op_wait(lua_State *L, sg_script_task_t *task,
                       sg__script_op_t *op, int rc)
{
    if (rc < 0) {
        free(op);
        return sg__script_push_error(L, rc);
    }
    task->op = op;
    sg__script_suspend(task, SG__WAIT_BROKER);
    return lua_yield(L, 0);
}

sg_script_task_t *sg__script_op_done(void *arg)
{
    sg__script_op_t *op = arg;
    sg_script_task_t *task = op->task;
    free(op);
    if (task != NULL)
        task->op = NULL;
    return task;
}
