/* The sg.* Lua API family: sg.send, sg.close, sg.sleep, sg.timer, sg.log,
 * sg.now, sg.iso_now, sg.uuid, sg.config, sg.node_id and sg.mode. */
#ifndef SG_SCRIPT_API_CORE_H
#define SG_SCRIPT_API_CORE_H

#include <lua.h>

/* Fills the `sg` table on top of the stack (left there). Raises a Lua
 * error on failure; runs under lua_cpcall in sg_script_new. */
void sg_script_api_core_open(lua_State *L);

#endif
