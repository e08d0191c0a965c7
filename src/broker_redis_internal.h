/* Internals shared by the two files of the Redis broker engine:
 * broker_redis.c (connection, pub/sub, history) and broker_redis_stream.c
 * (the stream log: server-side scripts, append, read, live chunks).
 * Nothing outside those two files may include this header. */
#ifndef SG_BROKER_REDIS_INTERNAL_H
#define SG_BROKER_REDIS_INTERNAL_H

#include <stdint.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "broker.h"
#include "map.h"

#define BR_CHANNEL_PREFIX "chat:stream:"
#define BR_HISTORY_PREFIX "chat:history:"
#define BR_SID_MAX 128 /* session ids are validated to this length */
#define BR_KEY_MAX 192 /* prefix + sid */
#define BR_SHA_LEN 40

/* Per-session subscription state: one SUBSCRIBE (or UNSUBSCRIBE) names both
 * channels of the session (chat:stream:{sid} and sg:{sid}:live), so every
 * transition waits for two confirmations (`pending`). hiredis 0.14 drops a
 * channel's callback when an UNSUBSCRIBE reply arrives, so a SUBSCRIBE sent
 * while an UNSUBSCRIBE is in flight could lose its callback: at most one of
 * them is ever in flight per session, and the reply handler sends the next
 * one if `wanted` changed meanwhile. */
typedef enum {
    CH_UNSUBSCRIBED,
    CH_SUBSCRIBING,
    CH_SUBSCRIBED,
    CH_UNSUBSCRIBING,
} channel_state_t;

typedef struct channel {
    channel_state_t state;
    int wanted;
    int pending; /* confirmations still due for the current transition */
} channel_t;

typedef struct broker_redis {
    sg_broker_t base;
    uv_loop_t *loop;
    sg_broker_handlers_t h;
    /* settings copied from the config */
    char *host;
    int port;
    char *username;
    char *password;
    int db;
    uint64_t connect_timeout_ms;
    uint64_t command_timeout_ms; /* sg_broker_command only */
    uint64_t min_delay_ms;
    uint64_t max_delay_ms;
    int history_ttl;
    int recovery_ttl;
    int log_max_len;
    /* connection */
    redisAsyncContext *sub;
    redisAsyncContext *cmd;
    int sub_ready;           /* connected + AUTH/SELECT (+ SCRIPT LOAD) */
    int cmd_ready;
    int sub_handshake;       /* handshake replies still due */
    int cmd_handshake;
    int ready;               /* last value reported through on_state */
    int down;                /* teardown of the current pair scheduled */
    int outage_logged;       /* "connection lost" said for this outage */
    int ever_ready;
    uint64_t delay_ms;       /* next reconnect delay */
    uint64_t rng;
    char status[256];
    uv_timer_t reconnect_timer;
    uv_timer_t defer_timer;
    /* scripts: SHA1 from SCRIPT LOAD ("" until loaded) */
    char append_sha[BR_SHA_LEN + 1];
    char read_sha[BR_SHA_LEN + 1];
    /* channels */
    sg_map_t *channels;      /* sid -> channel_t */
    size_t wanted_count;
    /* closing */
    int closing;
    int open_handles;
    sg_broker_closed_cb closed_cb;
    void *closed_arg;
} broker_redis_t;

/* ---- broker_redis.c ---- */

/* 0 when an operation on `sid` may be sent now, else SG_ECLOSED,
 * SG_EINVAL or SG_ENOTREADY. */
int sg__broker_redis_check(const broker_redis_t *b, const char *sid);
/* Marks the connection pair lost (see broker_redis.c). */
void sg__broker_redis_conn_lost(broker_redis_t *b, const char *reason);

/* ---- broker_redis_stream.c ---- */

/* Queues SCRIPT LOAD of both scripts on `ac` with `cb`/`b` as reply
 * callback; the SHA of each reply is stored by
 * sg__broker_redis_script_loaded. Returns the number of replies due (2) or
 * -1 when hiredis refused the command. */
int sg__broker_redis_scripts_load(broker_redis_t *b, redisAsyncContext *ac,
                                  redisCallbackFn *cb);
/* Stores the SHA of a SCRIPT LOAD reply (in load order). 0, or -1 when
 * the reply is not a 40-char SHA. */
int sg__broker_redis_script_loaded(broker_redis_t *b, const redisReply *r);
/* Subscribes/unsubscribes both channels of `sid` on `ac`; REDIS_OK or
 * REDIS_ERR as hiredis returns it. */
int sg__broker_redis_send_subscribe(broker_redis_t *b, const char *sid,
                                    redisCallbackFn *cb);
int sg__broker_redis_send_unsubscribe(broker_redis_t *b, const char *sid);
/* The session id of a channel we subscribe to, written into `sid` (size
 * BR_KEY_MAX); *live is 1 for the live chunk channel. 0, or -1 when the
 * channel is not ours. */
int sg__broker_redis_channel_sid(const char *chan, char *sid, int *live);
/* A message on a live chunk channel: parsed and handed to on_chunk. */
void sg__broker_redis_on_live(broker_redis_t *b, const char *sid,
                              const char *payload, size_t len);
/* vtable entries (broker.h) */
int sg__broker_redis_stream_append(sg_broker_t *base, const char *sid,
                                   const sg_chatmsg_t *msg,
                                   sg_broker_append_cb cb, void *arg);
int sg__broker_redis_stream_read(sg_broker_t *b, const char *sid,
                                 uint64_t since, int with_history,
                                 sg_broker_read_cb cb, void *arg);

#endif
