/* sg.redis(cmd, ...): any Redis command on the broker's command connection
 * (sg_broker_command), yielding until the reply. Replies map to Lua as
 * lua-resty-redis does: bulk and status strings are strings, integers
 * numbers, nil is sg.null, arrays are tables (nested arrays too, nil
 * elements as sg.null, an error element as {false, msg}); an error reply
 * returns false, msg; a failure nil, err. Also registers sg.null (the
 * NULL lightuserdata that cjson.null is). */
#include "script_api_redis.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "error.h"
#include "script_internal.h"

/* ---- helpers ----------------------------------------------------------- */

/* Argument `i` as bytes: strings as they are, numbers as integers when
 * integral ("42", not "42.0" or "4.2e+01"), otherwise with 17 digits.
 * Anything else raises. A converted number replaces the stack slot. */
static const char *lredis_arg(lua_State *L, int i, size_t *len)
{
    char buf[32];

    if (lua_type(L, i) == LUA_TSTRING)
        return lua_tolstring(L, i, len);
    if (lua_type(L, i) != LUA_TNUMBER)
        luaL_typerror(L, i, "string or number");
    double d = lua_tonumber(L, i);
    if (d == floor(d) && fabs(d) < 9.2e18)
        snprintf(buf, sizeof buf, "%lld", (long long)d);
    else
        snprintf(buf, sizeof buf, "%.17g", d);
    lua_pushstring(L, buf);
    lua_replace(L, i);
    return lua_tolstring(L, i, len);
}

/* Runtime failures: a lost connection reads "closed" like a closed one. */
static int lredis_push_error(lua_State *L, int rc)
{
    return sg__script_push_error(L, rc == SG_EIO ? SG_ECANCELED : rc);
}

static void lredis_push_reply(lua_State *L, const sg_reply_t *r)
{
    luaL_checkstack(L, 4, "sg.redis: reply nested too deeply");
    switch (r->type) {
    case SG_REPLY_STRING:
    case SG_REPLY_STATUS:
        lua_pushlstring(L, r->str, r->len);
        break;
    case SG_REPLY_INTEGER:
        lua_pushnumber(L, (lua_Number)r->integer);
        break;
    case SG_REPLY_ERROR:
        /* Only inside arrays (EVAL results); top-level is false, msg. */
        lua_createtable(L, 2, 0);
        lua_pushboolean(L, 0);
        lua_rawseti(L, -2, 1);
        lua_pushlstring(L, r->str, r->len);
        lua_rawseti(L, -2, 2);
        break;
    case SG_REPLY_ARRAY:
        lua_createtable(L, (int)r->n, 0);
        for (size_t i = 0; i < r->n; i++) {
            lredis_push_reply(L, &r->elements[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        break;
    default:
        lua_pushlightuserdata(L, NULL); /* sg.null */
        break;
    }
}

/* ---- sg.redis ---------------------------------------------------------- */

static void lredis_reply_cb(void *arg, int status, const sg_reply_t *r)
{
    sg_script_task_t *task = sg__script_op_done(arg);
    if (task == NULL)
        return; /* abandoned */
    if (status < 0) {
        sg__script_resume(task, lredis_push_error(task->co, status));
        return;
    }
    if (r->type == SG_REPLY_ERROR) {
        lua_pushboolean(task->co, 0);
        lua_pushlstring(task->co, r->str, r->len);
        sg__script_resume(task, 2);
        return;
    }
    lredis_push_reply(task->co, r);
    sg__script_resume(task, 1);
}

/* Sends the command; returns 0 or the broker's code. */
static int lredis_send(lua_State *L, sg_script_t *s, int argc,
                       sg__script_op_t *op)
{
    const char **argv = malloc((size_t)argc * sizeof(*argv));
    size_t *lens = malloc((size_t)argc * sizeof(*lens));
    int rc = SG_ENOMEM;

    if (argv != NULL && lens != NULL) {
        for (int i = 0; i < argc; i++)
            argv[i] = lua_tolstring(L, i + 1, &lens[i]);
        rc = sg_broker_command(s->broker, argc, argv, lens,
                               lredis_reply_cb, op);
    }
    free(argv);
    free(lens);
    return rc;
}

static int lredis_call(lua_State *L)
{
    int argc = lua_gettop(L);
    size_t len;

    if (argc < 1 || lua_type(L, 1) != LUA_TSTRING)
        luaL_typerror(L, 1, "command name");
    for (int i = 2; i <= argc; i++)
        lredis_arg(L, i, &len);
    sg_script_task_t *task = sg__script_check_yieldable(L, "sg.redis");
    sg_script_t *s = task->s;
    if (s->broker == NULL)
        return lredis_push_error(L, SG_ENOTREADY);
    sg__script_op_t *op = sg__script_op_new(task);
    if (op == NULL)
        return lredis_push_error(L, SG_ENOMEM);
    int rc = lredis_send(L, s, argc, op);
    if (rc == SG_EINVAL) {
        free(op);
        return luaL_argerror(L, 1, lua_pushfstring(L, "%s is not allowed: "
                             "it would change the state of the shared "
                             "connection", lua_tostring(L, 1)));
    }
    if (rc < 0) {
        free(op);
        return lredis_push_error(L, rc);
    }
    task->op = op;
    sg__script_suspend(task, SG__WAIT_BROKER);
    return lua_yield(L, 0);
}

void sg_script_api_redis_open(lua_State *L)
{
    lua_pushcfunction(L, lredis_call);
    lua_setfield(L, -2, "redis");
    lua_getfield(L, -1, "null");
    if (lua_isnil(L, -1)) {
        lua_pushlightuserdata(L, NULL); /* what cjson.null is */
        lua_setfield(L, -3, "null");
    }
    lua_pop(L, 1);
}
