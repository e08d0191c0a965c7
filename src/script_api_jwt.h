/* The sg.* Lua API family: sg.jwt.verify and sg.jwt.sign (auth.h). */
#ifndef SG_SCRIPT_API_JWT_H
#define SG_SCRIPT_API_JWT_H

#include <lua.h>

/* Fills the `sg` table on top of the stack (left there). Raises a Lua
 * error on failure; runs under lua_cpcall in sg_script_new. */
void sg_script_api_jwt_open(lua_State *L);

#endif
