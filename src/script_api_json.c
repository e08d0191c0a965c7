/* sg.json: a cjson.safe-like table (encode, decode, null). encode/decode
 * return nil, err instead of raising. The host keeps registry references
 * to both so that C can encode response bodies and decode JWT claims.
 *
 * lua-cjson 2.1.0 (Debian) encodes an empty table as {} and has no
 * empty-array marker: scripts that need [] build that part themselves. */
#include "script_api_json.h"

#include <lauxlib.h>

#include "script_internal.h"

void sg_script_api_json_open(lua_State *L)
{
    sg_script_t *s = sg__script_from(L);

    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson.safe");
    lua_call(L, 1, 1);
    if (!lua_istable(L, -1))
        luaL_error(L, "require 'cjson.safe' returned %s, expected a table",
                   luaL_typename(L, -1));

    lua_createtable(L, 0, 3);
    lua_getfield(L, -2, "encode");
    lua_pushvalue(L, -1);
    s->encode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_setfield(L, -2, "encode");
    lua_getfield(L, -2, "decode");
    lua_pushvalue(L, -1);
    s->decode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_setfield(L, -2, "decode");
    lua_getfield(L, -2, "null");
    lua_setfield(L, -2, "null");
    lua_setfield(L, -3, "json");
    lua_pop(L, 1);
}

int sg__script_encode(lua_State *L, int idx)
{
    sg_script_t *s = sg__script_from(L);

    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->encode_ref);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 2, 0) != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (lua_type(L, -2) == LUA_TSTRING) {
        lua_pop(L, 1);
        return 1;
    }
    return 2;
}
