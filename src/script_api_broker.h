/* The sg.* Lua API family: sg.publish and sg.history.get/append/clear
 * (the broker). */
#ifndef SG_SCRIPT_API_BROKER_H
#define SG_SCRIPT_API_BROKER_H

#include <lua.h>

/* Fills the `sg` table on top of the stack (left there). Raises a Lua
 * error on failure; runs under lua_cpcall in sg_script_new. */
void sg_script_api_broker_open(lua_State *L);

#endif
