/* Core-internal types shared by server.c, ws.c, http.c and session.c: the
 * server object, connections and sessions. Not part of the public API. */
#ifndef SG_SERVER_INTERNAL_H
#define SG_SERVER_INTERNAL_H

#include <stdint.h>
#include <uv.h>
#include <libwebsockets.h>

#include "streamgate.h"
#include "broker.h"
#include "buf.h"
#include "config.h"
#include "metrics.h"
#include "script.h"

typedef struct sg_conn sg_conn_t;
typedef struct sg_session sg_session_t;
typedef struct sg_sessions sg_sessions_t;
typedef struct sg_http_req sg_http_req_t;

/* Metric families the core updates (registered in server.c). */
typedef struct sg_core_metrics {
    sg_metric_t *ws_active;         /* websocket_active_connections */
    sg_metric_t *ws_connections;    /* websocket_connections_total{status} */
    sg_metric_t *ws_disconnections; /* websocket_disconnections_total */
    sg_metric_t *ws_received;       /* websocket_messages_received_total{type} */
    sg_metric_t *ws_sent;           /* websocket_messages_sent_total{type} */
    sg_metric_t *ws_slow_closes;    /* websocket_slow_consumer_closes_total */
    sg_metric_t *ws_queue_depth;    /* websocket_send_queue_depth (histogram) */
    sg_metric_t *auth_attempts;     /* authentication_attempts_total{status} */
    sg_metric_t *errors;            /* errors_total{type,component} */
    sg_metric_t *sessions_active;   /* stream_active_sessions */
    sg_metric_t *ingest;            /* stream_ingest_messages_total{result} */
    sg_metric_t *subscriptions;     /* broker_subscriptions */
    sg_metric_t *redis_up;          /* redis_up */
    sg_metric_t *http_requests;     /* http_requests_total{route,status} */
    sg_metric_t *lua_errors;        /* lua_errors_total */
    sg_metric_t *rss;               /* process_resident_memory_bytes */
    sg_metric_t *fds;               /* process_open_fds */
    sg_metric_t *uptime;            /* process_uptime_seconds */
    sg_metric_t *coalesced;         /* stream_coalesced_frames_total */
    sg_metric_t *stream_started;    /* stream_started_total */
    sg_metric_t *stream_completed;  /* stream_completed_total */
    sg_metric_t *stream_errors;     /* stream_errors_total{type} */
    sg_metric_t *stream_duration;   /* stream_duration_seconds */
    sg_metric_t *stream_chunks;     /* stream_chunks */
    sg_metric_t *recovery_attempts; /* recovery_attempts_total{status} */
} sg_core_metrics_t;

struct sg_server {
    uv_loop_t *loop;
    uv_loop_t own_loop;
    int owns_loop;
    const sg_config_t *cfg;
    void *data;

    struct lws_context *lws;
    struct lws_vhost *vhost;
    sg_broker_t *broker;
    sg_script_t *script;
    struct sg_reload *reload; /* reload.c: SIGHUP, lua.watch */
    sg_metrics_t *metrics;
    sg_core_metrics_t m;
    sg_sessions_t *sessions;

    /* Connection slots: a connection id is (generation << 24 | slot), so a
     * stale id held by a script never reaches a reused slot. */
    sg_conn_t **slots;
    uint32_t *slot_gen;
    uint32_t nslots;
    uint32_t *free_slots;
    uint32_t nfree;
    uint32_t nconns;

    uv_signal_t sigterm, sigint;
    uv_timer_t stop_timer;
    int stopping;      /* graceful stop started */
    int stopped;       /* handles closed */
    int pending_closes;
    uint64_t drain_deadline; /* uv_now() limit for closing connections */
    uint64_t started_ms;
};

/* Per-wsi user data for protocols[0]: lws allocates it on every wsi, HTTP
 * and WebSocket alike (browsers send no subprotocol). */
typedef struct sg_pss {
    sg_conn_t *conn;     /* WebSocket state (ws.c) */
    sg_http_req_t *http; /* current HTTP request (http.c) */
} sg_pss_t;

/* A WebSocket connection (owned by ws.c; session.c links it into its
 * session; stream.c drives its join/resume and fans chunks out to it). */
enum sg_conn_state {
    CONN_PENDING,  /* upgrade accepted, not established yet */
    CONN_JOINING,  /* established; a stream read (join, resume, gap) runs */
    CONN_LIVE,
};

enum sg_conn_mode {
    SG_MODE_FULL = 0,  /* cumulative content (compat) */
    SG_MODE_DELTA = 1, /* deltas; content only on finals */
};

/* One queued (or held) frame. `mid` is a hash of the message id, so a
 * newer partial of the same message can replace an older queued one. */
typedef struct sg_qent {
    sg_buf_t *b;
    uint64_t offset;  /* 0 for frames that are not stream chunks */
    uint64_t mid;
    uint8_t partial;  /* a stream partial that may be coalesced */
    uint8_t kind;     /* enum sg_frame_kind, for metrics */
} sg_qent_t;

struct sg_conn {
    uint64_t id;
    sg_server_t *srv;
    struct lws *wsi;
    char *session_id;
    char *user_id;
    char remote[48];        /* peer IP, for scripts (rate limits per IP) */
    sg_conn_t *sess_next, *sess_prev;

    /* Send queue: a ring of frames. */
    sg_qent_t *q;
    uint32_t qhead, qlen, qcap;
    size_t qbytes;

    /* Stream frames that arrived while a stream read was running; queued
     * (those past last_offset) when it completes. */
    sg_qent_t *held;
    uint32_t nheld, heldcap;

    /* Reassembly of fragmented inbound messages. */
    char *rx;
    size_t rxlen, rxcap;

    /* Stream position: the highest offset queued (or covered by a
     * snapshot frame) for this connection, in the session's epoch. */
    uint64_t last_offset;
    uint64_t since;        /* resume offset from the handshake, or
                              SG_STREAM_NO_SINCE */
    char *resume_epoch;    /* epoch from the handshake, or NULL */

    uint8_t state;          /* enum sg_conn_state */
    uint8_t mode;           /* enum sg_conn_mode */
    uint8_t welcomed;       /* the welcome frame was queued */
    uint8_t sync_pending;   /* stream.c: a stream read is in flight */
    uint8_t resync;         /* stream.c: another gap read is wanted */
    struct sg_map *data;    /* sg.data values (lazily made) */
    /* Finals this connection already got from history while stream.c
     * repairs them into the log (mid hashes; 0 = free slot). */
    uint64_t skip_final[4];
    uint8_t rx_paused;      /* ws.c: reading stopped until the queue
                               drains (inbound back-pressure) */
    uint8_t closing;
    uint8_t close_sent;     /* our close frame is out; awaiting the peer's */
    uint8_t authed;         /* on_connect allowed it (on_disconnect owed) */
    uint16_t close_code;
    char close_reason[64];
};


/* ---- ws.c ---- */
enum sg_frame_kind {
    SG_FRAME_WELCOME,
    SG_FRAME_HISTORY,
    SG_FRAME_MESSAGE,
    SG_FRAME_ERROR,
    SG_FRAME_OTHER, /* sniffed from the payload's "type" */
};

/* lws protocol callback for HTTP and WebSocket (protocols[0]). */
int sg__ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len);
/* Queues `b` (takes a new reference) on `c`; counts it as sent with the
 * frame kind. Closes the connection 4008 when its queue is over the limits.
 * 0, SG_ECLOSED when closing, SG_EBUSY when the limit closed it. */
int sg__ws_enqueue(sg_conn_t *c, sg_buf_t *b, enum sg_frame_kind kind);
/* Queues a stream `message` frame. In full mode a queued, not yet written
 * partial of the same message (same `mid` hash) is dropped first: content
 * is cumulative, so the newer frame carries everything the older one did
 * (coalescing; the final is never dropped and stays last). Then as
 * sg__ws_enqueue. */
int sg__ws_enqueue_chunk(sg_conn_t *c, sg_buf_t *b, uint64_t offset,
                         uint64_t mid, int partial);
/* Starts closing `c` with a WebSocket close code and reason; frames still
 * queued are dropped (slow consumer, shutdown). */
void sg__ws_close(sg_conn_t *c, int code, const char *reason);
/* Same, but the frames already queued are written first (a script that
 * sends an error frame and then closes). No new frame is accepted. */
void sg__ws_close_after_flush(sg_conn_t *c, int code, const char *reason);
/* Looks up a connection by script id; NULL when gone. */
sg_conn_t *sg__ws_find(sg_server_t *srv, uint64_t id);
/* Closes every WebSocket with 1001 (graceful stop). */
void sg__ws_close_all(sg_server_t *srv, int code, const char *reason);

/* ---- conn_data.c (sg.data) ---- */
int sg__conn_data_set(sg_conn_t *c, const char *key, int type,
                      const char *value, size_t len);
int sg__conn_data_get(const sg_conn_t *c, const char *key, int *type,
                      const char **value, size_t *len);
void sg__conn_data_free(sg_conn_t *c);

/* ---- stream.c (the stream coordinator) ---- */
/* Starts the join of `c` (its session is subscribed): one atomic stream
 * read, then welcome, history/catch-up or replay, then live frames. */
void sg__stream_join(sg_server_t *srv, sg_conn_t *c);
/* Re-reads the stream after a resubscription (Redis reconnect) so every
 * live connection of the session gets what it missed. */
void sg__stream_resync(sg_server_t *srv, sg_conn_t *c);
/* Broker handlers: raw producer messages (idempotent ingest) and appended
 * chunks (fan-out). */
void sg__stream_on_message(void *srv, const char *sid, const char *payload,
                           size_t len);
void sg__stream_on_chunk(void *srv, const char *sid, const sg_chunk_t *c);
/* `{"type":"resume","since":N,"epoch":E}` on an open socket. */
int sg__stream_resume(sg_server_t *srv, sg_conn_t *c, uint64_t since,
                      const char *epoch);
/* Compat `{"type":"reconnect","messageId":M,"lastChunkIndex":N}`. */
int sg__stream_reconnect(sg_server_t *srv, sg_conn_t *c, const char *mid,
                         int64_t last_index);
/* Frees the frames held on `c` (connection teardown). */
void sg__stream_conn_free(sg_conn_t *c);
/* FNV-1a hash of a message id, for coalescing. */
uint64_t sg__stream_mid_hash(const char *mid);

/* ---- session.c ---- */
sg_sessions_t *sg__sessions_new(sg_server_t *srv);
/* Closes the sweep timer (inside the loop, before it ends). */
void sg__sessions_close(sg_sessions_t *ss);
void sg__sessions_free(sg_sessions_t *ss);
/* Adds `c` to its session (creating it and subscribing on first use); the
 * join starts once the subscription is confirmed. */
int sg__session_attach(sg_server_t *srv, sg_conn_t *c);
/* Removes `c`. When the session has no connection left it unsubscribes,
 * unless an answer is in flight: then it lingers (stream.linger seconds or
 * until the answer completes) so the chunk log has no hole when the page
 * reloads. */
void sg__session_detach(sg_server_t *srv, sg_conn_t *c);
size_t sg__sessions_count(const sg_sessions_t *ss);
/* The first connection of the session's list, or NULL. */
sg_conn_t *sg__session_conns(sg_server_t *srv, const char *sid);
/* In-flight bookkeeping for linger: a partial (complete = 0) or final of
 * `mid` was seen on `sid`. */
void sg__session_track(sg_server_t *srv, const char *sid, const char *mid,
                       int complete);
/* The epoch the session's connections' offsets refer to; stream.c resets
 * their positions when a chunk arrives with another one. */
const char *sg__session_epoch(sg_server_t *srv, const char *sid);
int sg__session_set_epoch(sg_server_t *srv, const char *sid,
                          const char *epoch);
/* Broker handler. */
void sg__session_on_subscribed(void *srv, const char *sid);

/* ---- http.c ---- */
int sg__http_callback(struct lws *wsi, enum lws_callback_reasons reason,
                      void *user, void *in, size_t len);

/* ---- server.c ---- */
uint64_t sg__now_ms(void);

#endif
