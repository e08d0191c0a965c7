/* sg.jwt.verify and sg.jwt.sign over auth.h. Options default to the
 * configuration's auth section; the secret never reaches Lua unless a
 * script passes its own. */
#include "script_api_jwt.h"

#include <stdlib.h>
#include <time.h>

#include <lauxlib.h>

#include "auth.h"
#include "script_internal.h"

/* Reads opts (table at `idx` or nil) over the configured defaults. String
 * pointers stay valid while the opts table is on the stack. */
static void jwt_opts(lua_State *L, int idx, const sg_config_t *cfg,
                     sg_jwt_opts_t *o, long *ttl)
{
    o->secret = cfg->auth.jwt_secret;
    o->algorithm = cfg->auth.jwt_algorithm ? cfg->auth.jwt_algorithm
                                           : "HS256";
    o->leeway = cfg->auth.leeway;
    o->issuer = cfg->auth.issuer;
    o->audience = cfg->auth.audience;
    *ttl = cfg->auth.token_ttl;
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    static const char *const keys[] = {"secret", "algorithm", "issuer",
                                       "audience"};
    const char **dst[] = {&o->secret, &o->algorithm, &o->issuer,
                          &o->audience};
    for (int i = 0; i < 4; i++) {
        lua_getfield(L, idx, keys[i]);
        if (lua_type(L, -1) == LUA_TSTRING)
            *dst[i] = lua_tostring(L, -1);
        else if (!lua_isnil(L, -1))
            luaL_argerror(L, idx, lua_pushfstring(L, "opts.%s must be a "
                                                  "string", keys[i]));
        lua_pop(L, 1);
    }
    lua_getfield(L, idx, "leeway");
    o->leeway = (long)luaL_optinteger(L, -1, o->leeway);
    lua_getfield(L, idx, "ttl");
    *ttl = (long)luaL_optinteger(L, -1, *ttl);
    lua_pop(L, 2);
}

static int push_fail(lua_State *L, const char *err)
{
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
}

/* sg.jwt.verify(token [, opts]) -> claims | nil, reason */
static int jwt_verify(lua_State *L)
{
    sg_script_t *s = sg__script_from(L);
    const char *token = luaL_checkstring(L, 1);
    sg_jwt_opts_t o;
    long ttl;
    char err[256] = "";
    char *claims = NULL;

    jwt_opts(L, 2, s->cfg, &o, &ttl);
    if (o.secret == NULL || o.secret[0] == '\0')
        return push_fail(L, "no jwt secret configured");
    if (sg_auth_jwt_verify(token, &o, time(NULL), &claims, err,
                           sizeof err) != 0)
        return push_fail(L, err[0] ? err : "invalid token");
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->decode_ref);
    lua_pushstring(L, claims);
    free(claims);
    lua_call(L, 1, 2);
    if (!lua_istable(L, -2))
        return push_fail(L, "claims are not a JSON object");
    lua_pop(L, 1);
    return 1;
}

/* sg.jwt.sign(claims [, opts]) -> token | nil, err */
static int jwt_sign(lua_State *L)
{
    sg_script_t *s = sg__script_from(L);
    sg_jwt_opts_t o;
    long ttl;
    char err[256] = "";
    char *token = NULL;

    luaL_checktype(L, 1, LUA_TTABLE);
    jwt_opts(L, 2, s->cfg, &o, &ttl);
    if (o.secret == NULL || o.secret[0] == '\0')
        return push_fail(L, "no jwt secret configured");
    if (sg__script_encode(L, 1) != 1)
        return 2;
    if (sg_auth_jwt_sign(lua_tostring(L, -1), &o, time(NULL), ttl, &token,
                         err, sizeof err) != 0)
        return push_fail(L, err[0] ? err : "failed to sign");
    lua_pushstring(L, token);
    free(token);
    return 1;
}

void sg_script_api_jwt_open(lua_State *L)
{
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, jwt_verify);
    lua_setfield(L, -2, "verify");
    lua_pushcfunction(L, jwt_sign);
    lua_setfield(L, -2, "sign");
    lua_setfield(L, -2, "jwt");
}
