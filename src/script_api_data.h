/* sg.data: per-connection values kept in C (survive hot reloads). */
#ifndef SG_SCRIPT_API_DATA_H
#define SG_SCRIPT_API_DATA_H

#include <lua.h>

/* Adds sg.data to the `sg` table on top of the stack. */
void sg_script_api_data_open(lua_State *L);

#endif
