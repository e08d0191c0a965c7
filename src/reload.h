/* Hot-reload triggers of the server: SIGHUP, the admin endpoint (through
 * sg_reload_now) and, with lua.watch, a watch of the Lua directory that
 * reloads 200 ms after the last change. The reload itself is
 * sg_script_reload (script.h); this module counts lua_reloads_total. */
#ifndef SG_RELOAD_H
#define SG_RELOAD_H

#include <stddef.h>

#include "streamgate.h"

typedef struct sg_reload sg_reload_t;

/* Starts SIGHUP handling and, when cfg->lua.watch is set, the directory
 * watch for `srv` (whose script host must exist). A directory that cannot
 * be watched is logged and skipped. NULL only on no memory. */
sg_reload_t *sg_reload_start(sg_server_t *srv);
/* Closes the handles; the object is freed by the last close callback, so
 * run the loop afterwards. Safe with NULL. */
void sg_reload_close(sg_reload_t *r);

/* Reloads the Lua scripts of `srv` now (`why` is logged: "SIGHUP",
 * "admin", "file change"). Returns 0, or SG_ESCRIPT with the loader's
 * message in `err` (the old state keeps serving). Counts
 * lua_reloads_total{result="success"|"failure"}. */
int sg_reload_now(sg_server_t *srv, const char *why, char *err,
                  size_t errlen);

#endif
