/* libstreamgate: embed the streamgate WebSocket streaming server in a C
 * program. The server runs on a libuv loop (yours, or one it creates).
 *
 *   sg_config_t *cfg = sg_config_open("streamgate.lua", err, sizeof err);
 *   sg_server_t *srv = sg_server_new(NULL, cfg, err, sizeof err);
 *   sg_server_run(srv);          // until SIGTERM/SIGINT or sg_server_stop
 *   sg_server_free(srv);
 *   sg_config_close(cfg);
 */
#ifndef STREAMGATE_H
#define STREAMGATE_H

#include <stddef.h>
#include <uv.h>

#ifndef SG_EXTERN
#define SG_EXTERN __attribute__((visibility("default")))
#endif

typedef struct sg_server sg_server_t;
typedef struct sg_config sg_config_t;

/* Version string, e.g. "0.1.0". */
SG_EXTERN const char *sg_version(void);

/* Loads and validates a config (path NULL: built-in defaults + environment).
 * NULL on error with a one-line message naming the bad key in `err`. */
SG_EXTERN sg_config_t *sg_config_open(const char *path, char *err,
                                      size_t errlen);
/* Overrides the listen port (command line --port). 0 or SG_EINVAL. */
SG_EXTERN int sg_config_set_port(sg_config_t *cfg, int port);
SG_EXTERN void sg_config_close(sg_config_t *cfg);

/* Builds a server on `loop` (NULL: the server creates and owns one) and
 * binds its port. `cfg` stays the caller's and must outlive the server.
 * NULL on error (port in use, Lua scripts fail to load) with `err`. */
SG_EXTERN sg_server_t *sg_server_new(uv_loop_t *loop, const sg_config_t *cfg,
                                     char *err, size_t errlen);
/* Runs the loop until the server has stopped (own loop only); installs
 * SIGTERM/SIGINT handlers that stop gracefully. Returns 0. */
SG_EXTERN int sg_server_run(sg_server_t *srv);
/* Starts a graceful stop: WebSockets close with 1001, then everything the
 * server owns is closed. Safe to call more than once. */
SG_EXTERN void sg_server_stop(sg_server_t *srv);
/* Frees a stopped server (call after the loop has finished). */
SG_EXTERN void sg_server_free(sg_server_t *srv);

SG_EXTERN void *sg_server_get_data(const sg_server_t *srv);
SG_EXTERN void sg_server_set_data(sg_server_t *srv, void *data);

#endif
