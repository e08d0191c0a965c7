/* sg.append, sg.resume, sg.reconnect: the stream coordinator seen from
 * Lua. */
#ifndef SG_SCRIPT_API_STREAM_H
#define SG_SCRIPT_API_STREAM_H

#include <lua.h>

/* Adds the stream functions to the `sg` table on top of the stack. */
void sg_script_api_stream_open(lua_State *L);

#endif
