/* The sg.* Lua API family: sg.metrics.counter/gauge/histogram
 * (script-defined metrics). */
#ifndef SG_SCRIPT_API_METRICS_H
#define SG_SCRIPT_API_METRICS_H

#include <lua.h>

/* Fills the `sg` table on top of the stack (left there). Raises a Lua
 * error on failure; runs under lua_cpcall in sg_script_new. */
void sg_script_api_metrics_open(lua_State *L);

#endif
