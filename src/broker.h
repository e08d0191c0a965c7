/* The broker: per-session pub/sub plus the compat history list. Two engines
 * implement it: memory (embedded mode, one process) and redis (any number of
 * nodes; channel chat:stream:{sid}, list chat:history:{sid}).
 *
 * Contract for every async operation: it returns 0 when its callback will be
 * called exactly once, later, from the loop (never synchronously), or a
 * negative SG_E* code when it was not started, and then the callback is
 * never called. Closing the broker completes every pending callback with
 * SG_ECANCELED. */
#ifndef SG_BROKER_H
#define SG_BROKER_H

#include <stddef.h>
#include <uv.h>

#include "chatmsg.h"
#include "config.h"
#include "stream.h"

typedef struct sg_broker sg_broker_t;

/* Reply types of sg_broker_command (Redis RESP2). */
enum {
    SG_REPLY_STRING,
    SG_REPLY_STATUS,
    SG_REPLY_INTEGER,
    SG_REPLY_NIL,
    SG_REPLY_ARRAY,
    SG_REPLY_ERROR,
};

/* A Redis reply, without hiredis types. Read-only; owned by the broker and
 * valid only during the callback that receives it. `str`/`len` for
 * STRING, STATUS and ERROR (binary-safe, also NUL-terminated); `integer`
 * for INTEGER; `elements`/`n` for ARRAY (elements may be arrays). */
typedef struct sg_reply {
    int type;
    long long integer;
    const char *str;
    size_t len;
    size_t n;
    const struct sg_reply *elements;
} sg_reply_t;

/* A message published on a session's channel (payload is raw producer
 * JSON, not NUL-terminated; valid only during the call). */
typedef void (*sg_broker_message_cb)(void *arg, const char *session_id,
                                     const char *payload, size_t len);
/* The broker confirmed the subscription of `session_id`: from now on every
 * message published to it is delivered. Called again after every
 * reconnect's resubscription. */
typedef void (*sg_broker_subscribed_cb)(void *arg, const char *session_id);
/* A chunk appended to a session's stream (by any node), in offset order.
 * Delivered to every subscriber of the session. */
typedef void (*sg_broker_chunk_cb)(void *arg, const char *session_id,
                                   const sg_chunk_t *chunk);
/* Readiness changed (Redis connected+authenticated, or lost). */
typedef void (*sg_broker_state_cb)(void *arg, int ready);
/* Result of a list read: `n` items (raw JSON, oldest first); items and lens
 * are owned by the broker and valid only during the call. */
typedef void (*sg_broker_list_cb)(void *arg, int status,
                                  const char *const *items,
                                  const size_t *lens, size_t n);
typedef void (*sg_broker_done_cb)(void *arg, int status);
typedef void (*sg_broker_closed_cb)(void *arg);
/* Append result: offset > 0 when appended, 0 when it was a duplicate. */
typedef void (*sg_broker_append_cb)(void *arg, int status, uint64_t offset);
/* Read result; `st` is valid only during the call (NULL on error). */
typedef void (*sg_broker_read_cb)(void *arg, int status,
                                  const sg_stream_state_t *st);
/* Command result: status 0 with `reply` (an error reply is status 0 with
 * type SG_REPLY_ERROR), or a negative code with `reply` NULL. */
typedef void (*sg_broker_reply_cb)(void *arg, int status,
                                   const sg_reply_t *reply);

typedef struct sg_broker_handlers {
    sg_broker_message_cb on_message;       /* raw chat:stream:{sid} */
    sg_broker_subscribed_cb on_subscribed;
    sg_broker_state_cb on_state;
    void *arg;
    sg_broker_chunk_cb on_chunk;           /* appended chunks (stream.h) */
} sg_broker_handlers_t;

/* Engine constructors. `handlers` is copied. Redis starts connecting at once
 * and keeps reconnecting with backoff; NULL only on no memory. */
sg_broker_t *sg_broker_memory_new(uv_loop_t *loop, const sg_config_t *cfg,
                                  const sg_broker_handlers_t *handlers);
sg_broker_t *sg_broker_redis_new(uv_loop_t *loop, const sg_config_t *cfg,
                                 const sg_broker_handlers_t *handlers);

/* "embedded" | "redis" */
const char *sg_broker_mode(const sg_broker_t *b);
/* 1 when operations can be served now (memory: always). */
int sg_broker_is_ready(const sg_broker_t *b);
/* Short status for /actuator/health: "UP", "DOWN: connection refused". */
const char *sg_broker_status_text(const sg_broker_t *b);

/* Declares interest in a session: its raw producer channel (on_message)
 * and its appended chunks (on_chunk). Idempotent: one call per session
 * while the session has listeners (the caller ref-counts). The broker keeps
 * the wanted set, (re)subscribes whenever connected and calls on_subscribed
 * once each subscription (both channels) is confirmed. Never calls back
 * synchronously. */
int sg_broker_subscribe(sg_broker_t *b, const char *session_id);
/* Withdraws interest; messages stop after the broker's unsubscribe. */
int sg_broker_unsubscribe(sg_broker_t *b, const char *session_id);
/* Number of channels currently wanted (for leak tests and metrics). */
size_t sg_broker_subscription_count(const sg_broker_t *b);

/* Publishes `payload` on the session's channel. Fire-and-forget: 0 when
 * queued, SG_ENOTREADY when disconnected. */
int sg_broker_publish(sg_broker_t *b, const char *session_id,
                      const char *payload, size_t len);

/* History list chat:history:{sid}: append (RPUSH + EXPIRE history_ttl), read
 * all (LRANGE 0 -1), clear (DEL). */
int sg_broker_history_append(sg_broker_t *b, const char *session_id,
                             const char *payload, size_t len,
                             sg_broker_done_cb cb, void *arg);
int sg_broker_history_get(sg_broker_t *b, const char *session_id,
                          sg_broker_list_cb cb, void *arg);
int sg_broker_history_clear(sg_broker_t *b, const char *session_id,
                            sg_broker_done_cb cb, void *arg);

/* Appends a producer message to the session's stream following the APPEND
 * RULES of stream.h (idempotent: a message several nodes ingest is logged
 * once). `cb` may be NULL. The accepted chunk reaches every subscriber
 * through on_chunk. SG_ENOTREADY when disconnected. */
int sg_broker_stream_append(sg_broker_t *b, const char *session_id,
                            const sg_chatmsg_t *msg, sg_broker_append_cb cb,
                            void *arg);
/* Reads the session's stream state atomically: epoch (created if absent),
 * last offset, snapshots, the log after `since` (SG_STREAM_NO_SINCE: no
 * log), and chat:history when `with_history`. */
int sg_broker_stream_read(sg_broker_t *b, const char *session_id,
                          uint64_t since, int with_history,
                          sg_broker_read_cb cb, void *arg);

/* Sends any Redis command (argv[0] is its name; args binary-safe, lens
 * required) on the command connection; used by sg.redis and sg.cache.
 * argv/lens stay the caller's (copied before returning). The reply arrives
 * through `cb` (never synchronously). Results: SG_EINVAL for argc < 1 or a
 * command that would break the shared connection's state (the subscribe
 * family, MONITOR, SELECT, AUTH, HELLO, QUIT, RESET, CLIENT REPLY,
 * MULTI/EXEC/DISCARD/WATCH/UNWATCH, SYNC/PSYNC and blocking commands such
 * as BLPOP or XREAD BLOCK); SG_ENOTREADY when disconnected; SG_ECLOSED
 * after close; SG_ENOTSUP for the memory engine. Pending commands get
 * SG_EIO when the connection is lost, SG_ECANCELED on close, and
 * SG_ETIMEOUT after redis.command_timeout: the connection pair is then torn
 * down and reconnected (a reply still due would desynchronise it), so
 * every other pending operation fails with SG_EIO. */
int sg_broker_command(sg_broker_t *b, int argc, const char *const *argv,
                      const size_t *lens, sg_broker_reply_cb cb, void *arg);

/* Starts closing: pending callbacks complete with SG_ECANCELED, handles are
 * closed, then `cb` is called from the loop and the broker is freed. */
void sg_broker_close(sg_broker_t *b, sg_broker_closed_cb cb, void *arg);

/* 16 lowercase hex chars from the kernel's CSPRNG (urandom, then a clock
 * mix as fallbacks, so creating a stream never fails on it). Internal to
 * the engines. */
void sg__broker_new_epoch(char out[SG_EPOCH_LEN + 1]);

/* Engine vtable; internal to broker_*.c. */
typedef struct sg_broker_vtable {
    const char *mode;
    int (*is_ready)(const sg_broker_t *b);
    const char *(*status_text)(const sg_broker_t *b);
    int (*subscribe)(sg_broker_t *b, const char *sid);
    int (*unsubscribe)(sg_broker_t *b, const char *sid);
    size_t (*subscription_count)(const sg_broker_t *b);
    int (*publish)(sg_broker_t *b, const char *sid, const char *p, size_t n);
    int (*history_append)(sg_broker_t *b, const char *sid, const char *p,
                          size_t n, sg_broker_done_cb cb, void *arg);
    int (*history_get)(sg_broker_t *b, const char *sid, sg_broker_list_cb cb,
                       void *arg);
    int (*history_clear)(sg_broker_t *b, const char *sid,
                         sg_broker_done_cb cb, void *arg);
    void (*close)(sg_broker_t *b, sg_broker_closed_cb cb, void *arg);
    int (*stream_append)(sg_broker_t *b, const char *sid,
                         const sg_chatmsg_t *msg, sg_broker_append_cb cb,
                         void *arg);
    int (*stream_read)(sg_broker_t *b, const char *sid, uint64_t since,
                       int with_history, sg_broker_read_cb cb, void *arg);
    /* NULL means SG_ENOTSUP (test doubles may leave it out). */
    int (*command)(sg_broker_t *b, int argc, const char *const *argv,
                   const size_t *lens, sg_broker_reply_cb cb, void *arg);
} sg_broker_vtable_t;

/* Every engine struct starts with this header. */
struct sg_broker {
    const sg_broker_vtable_t *vt;
};

#endif
