/* The core sg.* functions: talking to connections (send, close), time
 * (sleep, timer, now, iso_now), logging, ids (uuid) and read-only facts
 * about this node (config, node_id, mode). Also the host's uv timers,
 * shared by sg.sleep and sg.timer. */
#include "script_api_core.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <lauxlib.h>

#include "error.h"
#include "log.h"
#include "script_internal.h"

static void push_config(lua_State *L, const sg_config_t *cfg);

/* ---------------------------------------------------------------------
 * Timers (shared by sg.sleep and sg.timer)
 * ------------------------------------------------------------------- */

static void timer_free_cb(uv_handle_t *h)
{
    free(h->data);
}

sg__script_timer_t *sg__script_timer_start(sg_script_t *s, double seconds,
                                           uv_timer_cb cb)
{
    sg__script_timer_t *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    if (uv_timer_init(s->loop, &t->handle) != 0) {
        free(t);
        return NULL;
    }
    t->handle.data = t;
    t->s = s;
    t->fn_ref = LUA_NOREF;
    /* Round up so that sg.sleep(0.0001) still waits for the loop. */
    uv_timer_start(&t->handle, cb, (uint64_t)ceil(seconds * 1000.0), 0);
    t->next = s->timers;
    if (s->timers != NULL)
        s->timers->prev = t;
    s->timers = t;
    return t;
}

void sg__script_timer_close(sg__script_timer_t *t)
{
    sg_script_t *s = t->s;

    uv_timer_stop(&t->handle);
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        s->timers = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    uv_close((uv_handle_t *)&t->handle, timer_free_cb);
}

static double check_seconds(lua_State *L, int arg)
{
    double sec = luaL_checknumber(L, arg);
    luaL_argcheck(L, isfinite(sec) && sec >= 0, arg,
                  "expected a finite number of seconds >= 0");
    return sec;
}

/* ---------------------------------------------------------------------
 * sg.sleep(seconds): yields until the timer fires; returns nothing.
 * ------------------------------------------------------------------- */

static void sleep_cb(uv_timer_t *h)
{
    sg__script_timer_t *t = h->data;
    sg_script_task_t *task = t->task;

    sg__script_timer_close(t);
    task->timer = NULL;
    sg__script_resume(task, 0);
}

static int core_sleep(lua_State *L)
{
    double sec = check_seconds(L, 1);
    sg_script_task_t *task = sg__script_check_yieldable(L, "sg.sleep");
    sg__script_timer_t *t = sg__script_timer_start(task->s, sec, sleep_cb);

    if (t == NULL)
        return luaL_error(L, "sg.sleep: no memory");
    t->task = task;
    task->timer = t;
    sg__script_suspend(task, SG__WAIT_SLEEP);
    return lua_yield(L, 0);
}

/* ---------------------------------------------------------------------
 * sg.timer(delay, fn, ...): runs fn(...) in a new coroutine later.
 * ------------------------------------------------------------------- */

static void timer_fire_cb(uv_timer_t *h)
{
    sg__script_timer_t *t = h->data;
    sg_script_t *s = t->s;
    lua_State *L = s->L;
    int ref = t->fn_ref;

    sg__script_timer_close(t);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    lua_getfield(L, -1, "n");
    int n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, n + 2, "sg.timer: too many arguments");
    for (int i = 1; i <= n + 1; i++)
        lua_rawgeti(L, -i, i);
    lua_remove(L, -(n + 2));
    sg__script_spawn(s, SG__TASK_TIMER, "timer", n);
}

static int core_timer(lua_State *L)
{
    sg_script_t *s = sg__script_from(L);
    double sec = check_seconds(L, 1);
    int n = lua_gettop(L) - 2;

    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_createtable(L, n + 1, 1);
    for (int i = 2; i <= n + 2; i++) {
        lua_pushvalue(L, i);
        lua_rawseti(L, -2, i - 1);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    sg__script_timer_t *t = sg__script_timer_start(s, sec, timer_fire_cb);
    if (t == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "no memory");
        return 2;
    }
    t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---------------------------------------------------------------------
 * Connections
 * ------------------------------------------------------------------- */

uint64_t sg__script_check_conn(lua_State *L, int arg)
{
    lua_Number id;

    if (lua_istable(L, arg)) {
        lua_getfield(L, arg, "id");
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_argerror(L, arg, "conn.id must be a number");
        id = lua_tonumber(L, -1);
        lua_pop(L, 1);
    } else if (lua_type(L, arg) == LUA_TNUMBER) {
        id = lua_tonumber(L, arg);
    } else {
        luaL_typerror(L, arg, "conn or id");
        return 0;
    }
    luaL_argcheck(L, id >= 0 && id == floor(id), arg,
                  "connection id must be a non-negative integer");
    return (uint64_t)id;
}

/* sg.send(conn_or_id, text) -> true | nil, "closed" | "busy" */
static int core_send(lua_State *L)
{
    sg_script_t *s = sg__script_from(L);
    uint64_t id = sg__script_check_conn(L, 1);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);

    if (s->host.send == NULL)
        return sg__script_push_result(L, SG_ECLOSED);
    return sg__script_push_result(L, s->host.send(s->host.data, id, text, len));
}

/* sg.close(conn_or_id [, code [, reason]]) -> true | nil, err */
static int core_close(lua_State *L)
{
    sg_script_t *s = sg__script_from(L);
    uint64_t id = sg__script_check_conn(L, 1);
    lua_Integer code = luaL_optinteger(L, 2, 1000);
    const char *reason = luaL_optstring(L, 3, "");

    luaL_argcheck(L, code >= 1000 && code <= 4999, 2,
                  "expected a close code 1000..4999");
    if (s->host.close == NULL)
        return sg__script_push_result(L, SG_ECLOSED);
    return sg__script_push_result(L, s->host.close(s->host.data, id, (int)code,
                                        reason));
}

/* ---------------------------------------------------------------------
 * Logging, time, ids
 * ------------------------------------------------------------------- */

/* sg.log(level, ...): the tostring() of every argument, concatenated, with
 * the caller's file:line in front. */
static int core_log(lua_State *L)
{
    static const char *const levels[] = {"debug", "info", "warn", "error",
                                         NULL};
    static const sg_log_level_t map[] = {SG_LOG_DEBUG, SG_LOG_INFO,
                                         SG_LOG_WARN, SG_LOG_ERROR};
    int lvl = luaL_checkoption(L, 1, NULL, levels);
    int n = lua_gettop(L);

    if (!sg_log_enabled(map[lvl]))
        return 0;
    luaL_where(L, 1);
    lua_getglobal(L, "tostring");
    for (int i = 2; i <= n; i++) {
        lua_pushvalue(L, -1);
        lua_pushvalue(L, i);
        lua_call(L, 1, 1);
        lua_insert(L, -2);
    }
    lua_pop(L, 1);
    lua_concat(L, n);
    sg_log(map[lvl], "lua", "%s", lua_tostring(L, -1));
    return 0;
}

void sg__script_iso_now(char *out, size_t outlen)
{
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L);
}

/* sg.now() -> epoch milliseconds (an integer-valued number) */
static int core_now(lua_State *L)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec * 1000.0 +
                          (lua_Number)(ts.tv_nsec / 1000000L));
    return 1;
}

static int core_iso_now(lua_State *L)
{
    char iso[32];

    sg__script_iso_now(iso, sizeof iso);
    lua_pushstring(L, iso);
    return 1;
}

/* sg.uuid() -> random version-4 UUID "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx" */
static int core_uuid(lua_State *L)
{
    unsigned char b[16];
    char out[37];

    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        return luaL_error(L, "sg.uuid: getrandom failed");
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, sizeof out,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
             b[10], b[11], b[12], b[13], b[14], b[15]);
    lua_pushlstring(L, out, 36);
    return 1;
}

/* ---------------------------------------------------------------------
 * Registration and sg.config
 * ------------------------------------------------------------------- */

static void set_str(lua_State *L, const char *k, const char *v)
{
    if (v == NULL)
        return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

/* The config file's `plugins` table, read again in this state (so a hot
 * reload picks up plugin settings). The file already passed config.c's
 * validation; it runs here with only the libraries config.c gives it. An
 * empty table when there is no file or no plugins. */
static void push_plugins(lua_State *L, const char *path)
{
    int top = lua_gettop(L);
    if (path == NULL || luaL_loadfile(L, path) != 0) {
        lua_settop(L, top);
        lua_newtable(L);
        return;
    }
    /* the sandbox: what config.c's state offers a config file, no more */
    static const char *const allowed[] = {"string", "table", "math", "os",
                                          "tonumber", "tostring", "type",
                                          "pairs", "ipairs", "select", NULL};
    lua_newtable(L);
    for (int i = 0; allowed[i] != NULL; i++) {
        lua_getglobal(L, allowed[i]);
        lua_setfield(L, -2, allowed[i]);
    }
    lua_setfenv(L, -2);
    if (lua_pcall(L, 0, 1, 0) != 0 || !lua_istable(L, -1)) {
        lua_settop(L, top);
        lua_newtable(L);
        return;
    }
    lua_getfield(L, -1, "plugins");
    lua_remove(L, -2);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
}

/* A plain-table copy of the configuration, without secrets (no JWT secret,
 * no Redis url/password). */
static void push_config(lua_State *L, const sg_config_t *cfg)
{
    lua_createtable(L, 0, 16);
    set_num(L, "port", cfg->port);
    set_str(L, "env", cfg->env);
    set_str(L, "listen", cfg->listen);
    set_str(L, "node_id", cfg->node_id);
    set_str(L, "upstream", cfg->upstream ? cfg->upstream : "demo");

    lua_createtable(L, 0, 6);
    set_bool(L, "dev_mode", cfg->auth.dev_mode);
    set_str(L, "jwt_algorithm", cfg->auth.jwt_algorithm);
    set_num(L, "leeway", cfg->auth.leeway);
    set_num(L, "token_ttl", cfg->auth.token_ttl);
    set_str(L, "issuer", cfg->auth.issuer);
    set_str(L, "audience", cfg->auth.audience);
    lua_setfield(L, -2, "auth");

    lua_createtable(L, 0, 3);
    set_num(L, "max_frame_bytes", (double)cfg->limits.max_frame_bytes);
    set_num(L, "max_body_bytes", (double)cfg->limits.max_body_bytes);
    set_num(L, "max_connections", cfg->limits.max_connections);
    lua_setfield(L, -2, "limits");

    lua_createtable(L, 0, 8);
    set_num(L, "max_message_bytes", (double)cfg->stream.max_message_bytes);
    set_num(L, "recovery_ttl", cfg->stream.recovery_ttl);
    set_num(L, "linger", cfg->stream.linger);
    set_num(L, "max_pending_chunks", cfg->stream.max_pending_chunks);
    set_num(L, "max_pending_bytes", (double)cfg->stream.max_pending_bytes);
    set_num(L, "history_ttl", cfg->stream.history_ttl);
    lua_setfield(L, -2, "stream");

    lua_createtable(L, 0, 2);
    set_str(L, "cors_origins", cfg->http.cors_origins);
    set_str(L, "static_dir", cfg->http.static_dir);
    lua_setfield(L, -2, "http");

    lua_createtable(L, 0, 1);
    set_num(L, "words_per_second", cfg->demo.words_per_second);
    lua_setfield(L, -2, "demo");

    lua_createtable(L, 0, 2);
    set_str(L, "url", cfg->ai_service.url);
    set_num(L, "timeout", cfg->ai_service.timeout);
    lua_setfield(L, -2, "ai_service");

    lua_createtable(L, 0, 1);
    set_bool(L, "enabled", cfg->redis.enabled);
    lua_setfield(L, -2, "redis");

    lua_createtable(L, 0, 1);
    set_str(L, "path", cfg->lua.path);
    lua_setfield(L, -2, "lua");

    lua_createtable(L, 0, 2);
    set_str(L, "level", cfg->log.level);
    set_str(L, "format", cfg->log.format);
    lua_setfield(L, -2, "log");

    push_plugins(L, cfg->config_path);
    lua_setfield(L, -2, "plugins");
}

static const luaL_Reg core_funcs[] = {
    {"send", core_send},   {"close", core_close},     {"sleep", core_sleep},
    {"timer", core_timer}, {"log", core_log},         {"now", core_now},
    {"iso_now", core_iso_now}, {"uuid", core_uuid},   {NULL, NULL},
};

void sg_script_api_core_open(lua_State *L)
{
    sg_script_t *s = sg__script_from(L);

    for (const luaL_Reg *r = core_funcs; r->name != NULL; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name);
    }
    push_config(L, s->cfg);
    lua_setfield(L, -2, "config");
    set_str(L, "node_id", s->cfg->node_id ? s->cfg->node_id : "");
    set_str(L, "mode", s->broker ? sg_broker_mode(s->broker) : "embedded");
}
