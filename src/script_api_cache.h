/* The sg.* Lua API family: sg.cache.get/set/del (the two-level cache
 * of cache.h). */
#ifndef SG_SCRIPT_API_CACHE_H
#define SG_SCRIPT_API_CACHE_H

#include <lua.h>

/* Fills the `sg` table on top of the stack (left there). Raises a Lua
 * error on failure; runs under lua_cpcall in sg_script_new. */
void sg_script_api_cache_open(lua_State *L);

#endif
