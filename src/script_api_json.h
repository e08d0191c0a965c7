/* The sg.* Lua API family: sg.json (encode/decode/null from lua-cjson's
 * cjson.safe). */
#ifndef SG_SCRIPT_API_JSON_H
#define SG_SCRIPT_API_JSON_H

#include <lua.h>

/* Fills the `sg` table on top of the stack (left there). Raises a Lua
 * error on failure; runs under lua_cpcall in sg_script_new. */
void sg_script_api_json_open(lua_State *L);

#endif
