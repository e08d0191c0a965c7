/* sg.data.get / set: values a script keeps per connection. They live in
 * the connection in C, not in the Lua state, so they survive a hot reload
 * (docs/hot-reload.md). Strings, numbers and booleans round-trip as such;
 * tables go through JSON (so no functions, no cycles). */
#include "script_api_data.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "error.h"
#include "script_internal.h"

/* sg.data.set(conn, key, value) -> true | nil, err   (value nil deletes) */
static int data_set(lua_State *L)
{
    sg_script_t *s = sg__script_from(L);
    uint64_t id = sg__script_check_conn(L, 1);
    const char *key = luaL_checkstring(L, 2);
    int t = lua_type(L, 3);
    const char *v = NULL;
    size_t len = 0;
    int type = 0;
    char num[64];
    switch (t) {
    case LUA_TNIL:
    case LUA_TNONE:
        break;
    case LUA_TSTRING:
        type = 's';
        v = lua_tolstring(L, 3, &len);
        break;
    case LUA_TNUMBER:
        type = 'n';
        len = (size_t)snprintf(num, sizeof(num), "%.17g",
                               (double)lua_tonumber(L, 3));
        v = num;
        break;
    case LUA_TBOOLEAN:
        type = 'b';
        v = lua_toboolean(L, 3) ? "1" : "0";
        len = 1;
        break;
    case LUA_TTABLE:
        type = 'j';
        if (sg__script_encode(L, 3) != 1)
            return luaL_argerror(L, 3, lua_tostring(L, -1));
        v = lua_tolstring(L, -1, &len);
        break;
    default:
        return luaL_typerror(L, 3, "string, number, boolean, table or nil");
    }
    if (s->host.data_set == NULL)
        return sg__script_push_error(L, SG_ECLOSED);
    return sg__script_push_result(
        L, s->host.data_set(s->host.data, id, key, type, v, len));
}

/* sg.data.get(conn, key) -> value | nil (absent) | nil, err */
static int data_get(lua_State *L)
{
    sg_script_t *s = sg__script_from(L);
    uint64_t id = sg__script_check_conn(L, 1);
    const char *key = luaL_checkstring(L, 2);
    int type = 0;
    const char *v = NULL;
    size_t len = 0;
    if (s->host.data_get == NULL)
        return sg__script_push_error(L, SG_ECLOSED);
    int rc = s->host.data_get(s->host.data, id, key, &type, &v, &len);
    if (rc == SG_ENOTFOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (rc != 0)
        return sg__script_push_error(L, rc);
    switch (type) {
    case 'n':
        lua_pushnumber(L, strtod(v, NULL));
        return 1;
    case 'b':
        lua_pushboolean(L, v[0] == '1');
        return 1;
    case 'j':
        lua_rawgeti(L, LUA_REGISTRYINDEX, s->decode_ref);
        lua_pushlstring(L, v, len);
        lua_call(L, 1, 1);
        return 1;
    default:
        lua_pushlstring(L, v, len);
        return 1;
    }
}

static const luaL_Reg data_funcs[] = {
    {"get", data_get},
    {"set", data_set},
    {NULL, NULL},
};

void sg_script_api_data_open(lua_State *L)
{
    lua_createtable(L, 0, 2);
    for (const luaL_Reg *r = data_funcs; r->name != NULL; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name);
    }
    lua_setfield(L, -2, "data");
}
