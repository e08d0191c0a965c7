/* LuaJIT host: loads `<lua.path>/init.lua`, runs its hooks as coroutines and
 * exposes the `sg.*` API (script_api_*.c). A hook that calls a yielding
 * primitive (sg.sleep, sg.history.*) is suspended and resumed from the loop
 * when the result arrives, so scripts never block the loop. A Lua error is
 * logged with file:line and reported to the caller; it never takes the
 * server down.
 *
 * init.lua returns a table of hooks (all optional):
 *   on_connect(req)        -> true, identity | false, reason   (must not yield)
 *   on_message(conn, text) -> nothing; replies with sg.send
 *   on_disconnect(conn)
 *   on_http(req)           -> status, body, headers | nil when no route
 *   on_chunk(chunk)        -> nil (keep, maybe rewritten) | false (drop);
 *                             must not yield
 * where conn = { id = <int>, session_id = "...", user_id = "..." } and
 * req = { method, path, query, body, headers = {lowercase name = value},
 *         remote_addr } (+ session_id, user_id, token for on_connect). */
#ifndef SG_SCRIPT_H
#define SG_SCRIPT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "broker.h"
#include "chatmsg.h"
#include "config.h"
#include "metrics.h"

typedef struct sg_script sg_script_t;
typedef struct sg_script_task sg_script_task_t;

/* What the host (the server) provides to scripts. */
typedef struct sg_script_host {
    void *data;
    /* Queue a text frame to connection `conn_id`: 0, or SG_ECLOSED when the
     * connection is gone, SG_EBUSY when its send queue is full. */
    int (*send)(void *data, uint64_t conn_id, const char *text, size_t len);
    /* Close connection `conn_id` with a WebSocket close code and reason. */
    int (*close)(void *data, uint64_t conn_id, int code, const char *reason);
    /* Replay the stream after `since` to `conn_id`, then send "resumed"
     * (docs/protocol.md). SG_ECLOSED, SG_EBUSY (a read is running). */
    int (*resume)(void *data, uint64_t conn_id, uint64_t since,
                  const char *epoch);
    /* Compat recovery of one message (docs/protocol.md "reconnect"). */
    int (*reconnect)(void *data, uint64_t conn_id, const char *message_id,
                     int64_t last_index);
    /* Per-connection data kept in C, so it survives hot reloads (sg.data).
     * `type` is one of 's' string, 'n' number, 'b' boolean, 'j' JSON.
     * set: value NULL deletes; 0, SG_ECLOSED, SG_ETOOBIG (over 64 keys or
     * 64 KiB), SG_ENOMEM. get: SG_ENOTFOUND when absent; *value stays
     * valid until that key is set again. */
    int (*data_set)(void *data, uint64_t conn_id, const char *key, int type,
                    const char *value, size_t len);
    int (*data_get)(void *data, uint64_t conn_id, const char *key, int *type,
                    const char **value, size_t *len);
} sg_script_host_t;

typedef struct sg_script_conn {
    uint64_t id;
    const char *session_id;
    const char *user_id;
    const char *remote_addr; /* peer IP; may be NULL */
} sg_script_conn_t;

typedef struct sg_script_connect_req {
    const char *session_id;
    const char *user_id;
    const char *token;       /* NULL when the query had none */
    const char *path;
    const char *remote_addr;
    const char *origin;      /* NULL when absent */
} sg_script_connect_req_t;

typedef struct sg_script_http_req {
    const char *method;
    const char *path;
    const char *query;       /* raw, may be NULL */
    const char *body;        /* may be NULL */
    size_t body_len;
    const char *const *headers; /* name, value, name, value, ..., NULL */
    const char *remote_addr;
} sg_script_http_req_t;

/* Called once when an HTTP hook finishes. status 0 means "no Lua route";
 * 500 is used for a script error (body is then a JSON error). body and
 * content_type are valid only during the call. `headers` is a
 * NULL-terminated name,value list of extra headers (may be NULL). */
typedef void (*sg_script_http_done_cb)(void *ctx, int status,
                                       const char *content_type,
                                       const char *body, size_t len,
                                       const char *const *headers);

/* Creates the Lua state, opens the sg API and loads init.lua. `broker`,
 * `metrics` and `host` stay the caller's and must outlive the script host.
 * NULL on error with a message in `err` (syntax errors carry file:line). */
sg_script_t *sg_script_new(uv_loop_t *loop, const sg_config_t *cfg,
                           sg_broker_t *broker, sg_metrics_t *metrics,
                           const sg_script_host_t *host, char *err,
                           size_t errlen);
/* Stops timers, abandons suspended coroutines (their waiters complete with
 * SG_ECANCELED), closes the state. Handles are closed through the loop, so
 * run the loop once more before uv_loop_close. */
void sg_script_free(sg_script_t *s);

/* Auth decision (synchronous). Returns 1 allow, 0 deny with a reason in
 * `reason`; a script error or a hook that yields denies with reason
 * "internal error" and is logged. On allow, `user_id_out` (size `idlen`)
 * receives the identity's user_id if the hook returned one. */
int sg_script_on_connect(sg_script_t *s, const sg_script_connect_req_t *req,
                         char *reason, size_t reasonlen, char *user_id_out,
                         size_t idlen);

/* Runs on_message in a new coroutine. A script error is logged and answered
 * on the connection with an error frame. */
void sg_script_on_message(sg_script_t *s, const sg_script_conn_t *conn,
                          const char *text, size_t len);
void sg_script_on_disconnect(sg_script_t *s, const sg_script_conn_t *conn);

/* on_chunk(chunk): runs synchronously on every producer message before it
 * is appended to the stream (so the log, every node and every reader see
 * the same result). The hook may change chunk.content / chunk.chunk in
 * place, and returns false to drop the message. Returns 1 keep (msg may
 * have been rewritten), 0 drop. A script error or a yield keeps the
 * message unchanged (fail open: dropping could lose an answer's final) and
 * is logged. Without an on_chunk hook this costs one comparison. */
int sg_script_on_chunk(sg_script_t *s, sg_chatmsg_t *msg);

/* Runs on_http in a new coroutine; `done` is called exactly once, possibly
 * synchronously. If `task` is not NULL and the hook suspended, *task is a
 * handle to sg_script_task_detach() if the request goes away first (then
 * `done` is never called); otherwise *task is NULL. */
void sg_script_http(sg_script_t *s, const sg_script_http_req_t *req,
                    sg_script_http_done_cb done, void *ctx,
                    sg_script_task_t **task);
void sg_script_task_detach(sg_script_task_t *task);

/* Hot reload: builds a new Lua state with the same API, loads init.lua in
 * it (with the same 5 s load budget) and, only when that succeeded, makes
 * it the state new hook calls run in. Tasks suspended in the old state
 * finish there (their completions resume them in the old state), and so do
 * sg.timer callbacks created there; the old state is closed from the loop
 * once it has neither. C-side state (connections, subscriptions, offsets,
 * sg.data) is not touched. Returns 0, or SG_ESCRIPT with the loader's
 * message ("lua: <dir>/init.lua:3: ...") in `err`, keeping the old state.
 * Logs "lua: reloaded (version N)" or "lua: reload failed, keeping
 * version N: <error>" (the caller counts lua_reloads_total). Must not be
 * called from a hook. */
int sg_script_reload(sg_script_t *s, char *err, size_t errlen);
/* The live state's version: 1 after sg_script_new, +1 per reload. */
unsigned sg_script_version(const sg_script_t *s);
/* Successful reloads; *failures (if not NULL) gets the failed ones. */
uint64_t sg_script_reloads(const sg_script_t *s, uint64_t *failures);
/* Lua states alive: the live one plus old ones still finishing tasks. */
size_t sg_script_states(const sg_script_t *s);

/* Number of coroutines currently suspended, in every state (for tests and
 * /admin/status). */
size_t sg_script_pending(const sg_script_t *s);
/* Counters: hooks run, script errors. */
uint64_t sg_script_errors(const sg_script_t *s);

#endif
