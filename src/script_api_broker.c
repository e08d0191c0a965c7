/* sg.publish and sg.history.*: the broker seen from Lua. publish is
 * fire-and-forget; the history functions yield until the broker answers.
 * Every pending operation carries an sg__script_op_t, so a completion that
 * arrives after its task was abandoned only frees the op. */
#include "script_api_broker.h"

#include <stdlib.h>

#include <lauxlib.h>

#include "error.h"
#include "script_internal.h"

/* A string payload at `idx`, or a table encoded to JSON (left on the
 * stack). Returns NULL with nil, err pushed when encoding failed. */
static const char *check_payload(lua_State *L, int idx, size_t *len)
{
    if (lua_istable(L, idx)) {
        if (sg__script_encode(L, idx) != 1)
            return NULL;
        return lua_tolstring(L, -1, len);
    }
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_typerror(L, idx, "string or table");
    return lua_tolstring(L, idx, len);
}

/* Starts a broker op for the current task: returns the op, or NULL after
 * pushing nil, err (no broker, no memory). */
static sg__script_op_t *op_new(lua_State *L, sg_script_task_t *task)
{
    if (task->s->broker == NULL) {
        sg__script_push_error(L, SG_ENOTREADY);
        return NULL;
    }
    sg__script_op_t *op = sg__script_op_new(task);
    if (op == NULL)
        sg__script_push_error(L, SG_ENOMEM);
    return op;
}

/* ---------------------------------------------------------------------
 * sg.publish(session_id, message) -> true | nil, err
 * ------------------------------------------------------------------- */

static int broker_publish(lua_State *L)
{
    sg_script_t *s = sg__script_from(L);
    const char *sid = luaL_checkstring(L, 1);
    size_t len;
    const char *p = check_payload(L, 2, &len);

    if (p == NULL)
        return 2;
    if (s->broker == NULL)
        return sg__script_push_error(L, SG_ENOTREADY);
    int rc = sg_broker_publish(s->broker, sid, p, len);
    if (rc < 0)
        return sg__script_push_error(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---------------------------------------------------------------------
 * sg.history.append / clear -> true | nil, err (yield)
 * ------------------------------------------------------------------- */

static void history_done_cb(void *arg, int status)
{
    sg_script_task_t *task = sg__script_op_done(arg);

    if (task == NULL)
        return;
    if (status < 0) {
        sg__script_push_error(task->co, status);
        sg__script_resume(task, 2);
        return;
    }
    lua_pushboolean(task->co, 1);
    sg__script_resume(task, 1);
}

static int history_append(lua_State *L)
{
    const char *sid = luaL_checkstring(L, 1);
    size_t len;
    const char *p = check_payload(L, 2, &len);
    sg_script_task_t *task =
        sg__script_check_yieldable(L, "sg.history.append");

    if (p == NULL)
        return 2;
    sg__script_op_t *op = op_new(L, task);
    if (op == NULL)
        return 2;
    return sg__script_op_wait(L, task, op,
                   sg_broker_history_append(task->s->broker, sid, p, len,
                                            history_done_cb, op));
}

static int history_clear(lua_State *L)
{
    const char *sid = luaL_checkstring(L, 1);
    sg_script_task_t *task = sg__script_check_yieldable(L, "sg.history.clear");
    sg__script_op_t *op = op_new(L, task);

    if (op == NULL)
        return 2;
    return sg__script_op_wait(L, task, op,
                   sg_broker_history_clear(task->s->broker, sid,
                                           history_done_cb, op));
}

/* ---------------------------------------------------------------------
 * sg.history.get(session_id) -> {json, ...} | nil, err (yields)
 * ------------------------------------------------------------------- */

static void history_list_cb(void *arg, int status, const char *const *items,
                            const size_t *lens, size_t n)
{
    sg_script_task_t *task = sg__script_op_done(arg);

    if (task == NULL)
        return;
    if (status < 0) {
        sg__script_push_error(task->co, status);
        sg__script_resume(task, 2);
        return;
    }
    lua_createtable(task->co, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushlstring(task->co, items[i], lens[i]);
        lua_rawseti(task->co, -2, (int)i + 1);
    }
    sg__script_resume(task, 1);
}

static int history_get(lua_State *L)
{
    const char *sid = luaL_checkstring(L, 1);
    sg_script_task_t *task = sg__script_check_yieldable(L, "sg.history.get");
    sg__script_op_t *op = op_new(L, task);

    if (op == NULL)
        return 2;
    return sg__script_op_wait(L, task, op,
                   sg_broker_history_get(task->s->broker, sid,
                                         history_list_cb, op));
}

static const luaL_Reg history_funcs[] = {
    {"get", history_get},
    {"append", history_append},
    {"clear", history_clear},
    {NULL, NULL},
};

void sg_script_api_broker_open(lua_State *L)
{
    lua_pushcfunction(L, broker_publish);
    lua_setfield(L, -2, "publish");
    lua_createtable(L, 0, 3);
    for (const luaL_Reg *r = history_funcs; r->name != NULL; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name);
    }
    lua_setfield(L, -2, "history");
}
