/* The sg.* Lua API family sg.http: sg.http.request, an asynchronous HTTP
 * client call that yields the calling hook (docs/lua-api.md). */
#ifndef SG_SCRIPT_API_HTTP_H
#define SG_SCRIPT_API_HTTP_H

#include <lua.h>

#include "http_client.h"
#include "script.h"

/* Fills the `sg` table on top of the stack with `sg.http` (left there).
 * Raises a Lua error on failure; runs under lua_cpcall in sg_script_new. */
void sg_script_api_http_open(lua_State *L);

/* Hands the HTTP client to the script host `s` and to every Lua state it
 * builds later (hot reload): they share the host's loop and host data,
 * which is what the binding is keyed on. `c` stays the caller's; pass NULL
 * to remove the binding before the client is freed (then sg.http.request
 * returns nil, "not ready"). Not thread-safe against scripts of the same
 * host running elsewhere (there are none: one loop per host). */
void sg_script_set_http_client(sg_script_t *s, sg_http_client_t *c);

#endif
