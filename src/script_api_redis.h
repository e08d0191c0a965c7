/* The sg.* Lua API family: sg.redis (any Redis command, yielding) and
 * sg.null. */
#ifndef SG_SCRIPT_API_REDIS_H
#define SG_SCRIPT_API_REDIS_H

#include <lua.h>

/* Fills the `sg` table on top of the stack (left there). Raises a Lua
 * error on failure; runs under lua_cpcall in sg_script_new. */
void sg_script_api_redis_open(lua_State *L);

#endif
