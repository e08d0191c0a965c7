/* sg.cache.get/set/del: the two-level cache of cache.h seen from Lua. The
 * script host's cache lives in a full userdata ("sg.cache") that is the
 * upvalue of the three functions; its __gc releases the cache when the
 * state closes (pending Redis operations keep it alive until they
 * complete). An L1 hit, and everything in embedded mode, returns without
 * yielding; going to Redis yields. */
#include "script_api_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "cache.h"
#include "error.h"
#include "script_internal.h"

#define LCACHE_MT "sg.cache"

/* ---- helpers ----------------------------------------------------------- */

static sg_cache_t *lcache_of(lua_State *L)
{
    sg_cache_t **box = lua_touserdata(L, lua_upvalueindex(1));
    return *box;
}

static int lcache_gc(lua_State *L)
{
    sg_cache_t **box = luaL_checkudata(L, 1, LCACHE_MT);
    sg_cache_free(*box);
    *box = NULL;
    return 0;
}

/* The value to store as bytes: strings as they are, numbers and booleans
 * as tostring would write them (integers without ".0"); else raises. */
static const char *lcache_value(lua_State *L, int i, size_t *len)
{
    char buf[32];

    switch (lua_type(L, i)) {
    case LUA_TSTRING:
        return lua_tolstring(L, i, len);
    case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, i) ? "true" : "false");
        break;
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, i);
        if (d == floor(d) && fabs(d) < 9.2e18)
            snprintf(buf, sizeof buf, "%lld", (long long)d);
        else
            snprintf(buf, sizeof buf, "%.17g", d);
        lua_pushstring(L, buf);
        break;
    }
    default:
        luaL_typerror(L, i, "string, number or boolean");
    }
    lua_replace(L, i);
    return lua_tolstring(L, i, len);
}

/* An op for the current task, or NULL after pushing nil, "no memory". */
static sg__script_op_t *lcache_op(lua_State *L, sg_script_task_t *task)
{
    sg__script_op_t *op = sg__script_op_new(task);
    if (op == NULL)
        sg__script_push_error(L, SG_ENOMEM);
    return op;
}


/* ---- sg.cache.get(key) -> value | nil | nil, err ----------------------- */

static void lcache_get_cb(void *arg, int status, const char *value,
                          size_t len)
{
    sg_script_task_t *task = sg__script_op_done(arg);

    if (task == NULL)
        return;
    if (status == 0) {
        lua_pushlstring(task->co, value, len);
        sg__script_resume(task, 1);
    } else if (status == SG_ENOTFOUND) {
        lua_pushnil(task->co);
        sg__script_resume(task, 1);
    } else {
        sg__script_resume(task, sg__script_push_error(task->co, status));
    }
}

static int lcache_get(lua_State *L)
{
    size_t klen, vlen;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *value;
    sg_script_task_t *task = sg__script_check_yieldable(L, "sg.cache.get");
    sg_cache_t *c = lcache_of(L);

    if (sg_cache_lookup(c, key, klen, &value, &vlen) == 0) {
        lua_pushlstring(L, value, vlen);
        return 1;
    }
    if (!sg_cache_has_l2(c)) {
        lua_pushnil(L);
        return 1;
    }
    sg__script_op_t *op = lcache_op(L, task);
    if (op == NULL)
        return 2;
    return sg__script_op_wait(L, task, op,
                              sg_cache_fetch(c, key, klen, lcache_get_cb, op));
}

/* ---- sg.cache.set / del -> true | nil, err ------------------------------ */

static void lcache_done_cb(void *arg, int status)
{
    sg_script_task_t *task = sg__script_op_done(arg);

    if (task != NULL)
        sg__script_resume(task, sg__script_push_result(task->co, status));
}

/* rc of sg_cache_set/del: 1 started (wait), else the result now. */
static int lcache_finish(lua_State *L, sg_script_task_t *task,
                         sg__script_op_t *op, int rc)
{
    if (rc == 1)
        return sg__script_op_wait(L, task, op, 0);
    free(op);
    return sg__script_push_result(L, rc);
}

static int lcache_set(lua_State *L)
{
    size_t klen, vlen;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *value = lcache_value(L, 2, &vlen);
    double ttl = luaL_optnumber(L, 3, 0);
    luaL_argcheck(L, lua_isnoneornil(L, 3) || (isfinite(ttl) && ttl > 0), 3,
                  "expected a number of seconds > 0");
    sg_script_task_t *task = sg__script_check_yieldable(L, "sg.cache.set");
    sg__script_op_t *op = lcache_op(L, task);

    if (op == NULL)
        return 2;
    uint64_t ttl_ms = ttl > 0 ? (uint64_t)ceil(ttl * 1000.0) : 0;
    return lcache_finish(L, task, op,
                         sg_cache_set(lcache_of(L), key, klen, value, vlen,
                                      ttl_ms, lcache_done_cb, op));
}

static int lcache_del(lua_State *L)
{
    size_t klen;
    const char *key = luaL_checklstring(L, 1, &klen);
    sg_script_task_t *task = sg__script_check_yieldable(L, "sg.cache.del");
    sg__script_op_t *op = lcache_op(L, task);

    if (op == NULL)
        return 2;
    return lcache_finish(L, task, op,
                         sg_cache_del(lcache_of(L), key, klen,
                                      lcache_done_cb, op));
}

static const luaL_Reg lcache_funcs[] = {
    {"get", lcache_get},
    {"set", lcache_set},
    {"del", lcache_del},
    {NULL, NULL},
};

void sg_script_api_cache_open(lua_State *L)
{
    sg_script_t *s = sg__script_from(L);
    sg_cache_t **box = lua_newuserdata(L, sizeof *box);

    *box = NULL;
    luaL_newmetatable(L, LCACHE_MT);
    lua_pushcfunction(L, lcache_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    *box = sg_cache_new(s->broker, s->metrics, 0, 0, 0);
    if (*box == NULL)
        luaL_error(L, "sg.cache: no memory");
    lua_createtable(L, 0, 3);
    for (const luaL_Reg *r = lcache_funcs; r->name != NULL; r++) {
        lua_pushvalue(L, -2);
        lua_pushcclosure(L, r->func, 1);
        lua_setfield(L, -2, r->name);
    }
    lua_setfield(L, -3, "cache");
    lua_pop(L, 1); /* the box: the closures hold it */
}
