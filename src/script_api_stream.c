/* sg.append, sg.resume and sg.reconnect. append is how upstreams written
 * in Lua produce answers: the message goes through the same idempotent
 * append path as the Python service's messages (stream.h), so clients
 * cannot tell producers apart. resume and reconnect hand a client request
 * to the stream coordinator, which answers on the connection itself. */
#include "script_api_stream.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "chatmsg.h"
#include "error.h"
#include "script_internal.h"

/* ---------------------------------------------------------------------
 * sg.append(session_id, message) -> offset | nil, err (yields)
 * offset is 0 when the message was a duplicate (already logged).
 * ------------------------------------------------------------------- */

static void append_done(void *arg, int status, uint64_t offset)
{
    sg_script_task_t *task = sg__script_op_done(arg);
    if (task == NULL)
        return; /* abandoned by sg_script_free */
    if (status < 0) {
        sg__script_push_error(task->co, status);
        sg__script_resume(task, 2);
        return;
    }
    lua_pushnumber(task->co, (lua_Number)offset);
    sg__script_resume(task, 1);
}

/* Parses the message at `idx` (a table, encoded first, or a JSON string)
 * into `msg`; raises on a bad argument. */
static void check_message(lua_State *L, int idx, sg_chatmsg_t *msg)
{
    size_t len;
    const char *json;
    if (lua_istable(L, idx)) {
        if (sg__script_encode(L, idx) != 1)
            luaL_argerror(L, idx, lua_tostring(L, -1));
        json = lua_tolstring(L, -1, &len);
    } else {
        json = luaL_checklstring(L, idx, &len);
    }
    char err[160];
    if (sg_chatmsg_parse(json, len, msg, err, sizeof(err)) != 0)
        luaL_argerror(L, idx, err);
}

static int stream_append(lua_State *L)
{
    const char *sid = luaL_checkstring(L, 1);
    sg_script_task_t *task = sg__script_check_yieldable(L, "sg.append");
    sg_chatmsg_t msg;
    check_message(L, 2, &msg);
    if (task->s->broker == NULL) {
        sg_chatmsg_clear(&msg);
        return sg__script_push_error(L, SG_ENOTREADY);
    }
    if (!sg_script_on_chunk(task->s, &msg)) {
        sg_chatmsg_clear(&msg);
        lua_pushnumber(L, 0); /* dropped by on_chunk: nothing appended */
        return 1;
    }
    sg__script_op_t *op = sg__script_op_new(task);
    if (op == NULL) {
        sg_chatmsg_clear(&msg);
        return sg__script_push_error(L, SG_ENOMEM);
    }
    int rc = sg_broker_stream_append(task->s->broker, sid, &msg, append_done,
                                     op);
    sg_chatmsg_clear(&msg);
    return sg__script_op_wait(L, task, op, rc);
}

/* ---------------------------------------------------------------------
 * sg.resume(conn, since [, epoch]) -> true | nil, err
 * sg.reconnect(conn, message_id [, last_chunk_index]) -> true | nil, err
 * The coordinator answers on the connection; these return at once.
 * ------------------------------------------------------------------- */

static int stream_resume(lua_State *L)
{
    sg_script_t *s = sg__script_from(L);
    uint64_t id = sg__script_check_conn(L, 1);
    lua_Number since = luaL_checknumber(L, 2);
    const char *epoch = luaL_optstring(L, 3, NULL);
    luaL_argcheck(L, since >= 0 && since == floor(since) && since < 9e15, 2,
                  "offset must be a non-negative integer");
    if (s->host.resume == NULL)
        return sg__script_push_error(L, SG_ECLOSED);
    return sg__script_push_result(L, s->host.resume(s->host.data, id, (uint64_t)since,
                                         epoch));
}

static int stream_reconnect(lua_State *L)
{
    sg_script_t *s = sg__script_from(L);
    uint64_t id = sg__script_check_conn(L, 1);
    const char *mid = luaL_checkstring(L, 2);
    lua_Number idx = luaL_optnumber(L, 3, -1);
    luaL_argcheck(L, idx >= -1 && idx == floor(idx) && idx < 9e15, 3,
                  "index must be an integer >= -1");
    if (s->host.reconnect == NULL)
        return sg__script_push_error(L, SG_ECLOSED);
    return sg__script_push_result(L, s->host.reconnect(s->host.data, id, mid,
                                            (int64_t)idx));
}

static const luaL_Reg stream_funcs[] = {
    {"append", stream_append},
    {"resume", stream_resume},
    {"reconnect", stream_reconnect},
    {NULL, NULL},
};

void sg_script_api_stream_open(lua_State *L)
{
    for (const luaL_Reg *r = stream_funcs; r->name != NULL; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name);
    }
}
