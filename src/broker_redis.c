/* The Redis broker engine (broker.h), connection half: the two hiredis
 * async contexts, pub/sub on chat:stream:{sid} and sg:{sid}:live, and the
 * history list chat:history:{sid}. The stream log (append/read scripts,
 * live chunk parsing) is in broker_redis_stream.c.
 *
 * `sub` carries only (UN)SUBSCRIBE: hiredis 0.14 misroutes or disconnects
 * on any other command in subscribed mode (deps.md §2). `cmd` carries
 * PUBLISH, RPUSH, EXPIRE, LRANGE, DEL and EVALSHA, and the raw commands of
 * sg_broker_command (scripts), minus those that would change its state.
 * Both do AUTH and SELECT first; `cmd` then loads the stream scripts
 * (SCRIPT LOAD); the engine is ready when both have finished. Losing
 * either tears both down and reconnects them with exponential backoff plus
 * jitter; the wanted set of sessions survives and is resubscribed (both
 * channels of each, with one on_subscribed once both are confirmed).
 *
 * Every hiredis context is freed from a loop timer (defer_timer), never
 * from a hiredis callback (see redis_uv.h for why). */
#include "broker_redis_internal.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "error.h"
#include "log.h"
#include "map.h"
#include "redis_uv.h"

typedef enum { OP_DONE, OP_LIST } op_kind_t;

/* One history operation; privdata of its hiredis callback(s). `refs` is the
 * number of hiredis callbacks still due (RPUSH + EXPIRE share one op). */
typedef struct op {
    broker_redis_t *b;
    op_kind_t kind;
    int refs;
    int status;
    sg_broker_done_cb done_cb;
    sg_broker_list_cb list_cb;
    void *arg;
} op_t;

static const sg_broker_vtable_t broker_redis_vt;

static void br_connect_pair(broker_redis_t *b);
static void br_conn_lost(broker_redis_t *b, const char *reason);
static void br_on_sub_reply(redisAsyncContext *ac, void *reply, void *priv);
static void br_on_defer(uv_timer_t *timer);

/* ---- helpers ----------------------------------------------------------- */

static void br_key(char *out, const char *prefix, const char *sid)
{
    snprintf(out, BR_KEY_MAX, "%s%s", prefix, sid);
}

/* Session ids are validated upstream; this guards the key buffers. */
static int br_sid_ok(const char *sid)
{
    size_t n = sid != NULL ? strlen(sid) : 0;
    return n > 0 && n <= BR_SID_MAX;
}

/* "DOWN: connection refused": hiredis capitalises socket errors, our
 * status texts are lowercase. */
static void br_set_status(broker_redis_t *b, const char *reason)
{
    int n = snprintf(b->status, sizeof(b->status), "DOWN: %s", reason);
    if (n > 6 && b->status[6] >= 'A' && b->status[6] <= 'Z' &&
        b->status[7] >= 'a' && b->status[7] <= 'z')
        b->status[6] = (char)(b->status[6] - 'A' + 'a');
}

/* Calls on_state when readiness changed; never after close. */
static void br_update_ready(broker_redis_t *b)
{
    int ready = !b->closing && !b->down && b->sub_ready && b->cmd_ready;
    if (ready == b->ready)
        return;
    b->ready = ready;
    if (b->h.on_state != NULL)
        b->h.on_state(b->h.arg, ready);
}

/* Next reconnect delay: current delay plus up to 25 % jitter, then the
 * delay doubles up to the maximum. */
static uint64_t br_next_delay(broker_redis_t *b)
{
    uint64_t d = b->delay_ms;
    b->rng ^= b->rng << 13;
    b->rng ^= b->rng >> 7;
    b->rng ^= b->rng << 17;
    uint64_t jitter = d / 4 > 0 ? b->rng % (d / 4 + 1) : 0;
    b->delay_ms = d * 2 > b->max_delay_ms ? b->max_delay_ms : d * 2;
    return d + jitter;
}

static int br_op_status(const broker_redis_t *b)
{
    return b->closing ? SG_ECANCELED : SG_EIO;
}

/* ---- channels ---------------------------------------------------------- */

static void br_send_subscribe(broker_redis_t *b, const char *sid,
                              channel_t *ch)
{
    /* privdata is the broker, never the channel: hiredis keeps channel
     * callbacks until the context is freed, after the entry may be gone. */
    if (sg__broker_redis_send_subscribe(b, sid, br_on_sub_reply) ==
        REDIS_OK) {
        ch->state = CH_SUBSCRIBING;
        ch->pending = 2;
    }
}

static void br_send_unsubscribe(broker_redis_t *b, const char *sid,
                                channel_t *ch)
{
    /* UNSUBSCRIBE has no callback of its own in hiredis: its replies go to
     * the channels' SUBSCRIBE callback (br_on_sub_reply). */
    if (sg__broker_redis_send_unsubscribe(b, sid) == REDIS_OK) {
        ch->state = CH_UNSUBSCRIBING;
        ch->pending = 2;
    }
}

static int br_visit_resubscribe(void *ctx, const char *sid, void *value)
{
    broker_redis_t *b = ctx;
    channel_t *ch = value;
    if (ch->wanted && ch->state == CH_UNSUBSCRIBED)
        br_send_subscribe(b, sid, ch);
    return 0;
}

/* The pair was lost: nothing is subscribed on the next one. */
static int br_visit_reset(void *ctx, const char *sid, void *value)
{
    channel_t *ch = value;
    ch->state = CH_UNSUBSCRIBED;
    if (ch->wanted)
        return 0;
    free(ch);
    return 1;
}

static int br_visit_free(void *ctx, const char *sid, void *value)
{
    free(value);
    return 1;
}

static void br_on_subscribe_reply(broker_redis_t *b, const char *sid,
                                  channel_t *ch)
{
    if (ch == NULL || ch->state != CH_SUBSCRIBING) {
        SG_DEBUG("broker", "redis: unexpected subscribe reply sid=%s", sid);
        return;
    }
    if (--ch->pending > 0)
        return; /* the session's other channel is still unconfirmed */
    ch->state = CH_SUBSCRIBED;
    if (!ch->wanted) {
        br_send_unsubscribe(b, sid, ch);
        return;
    }
    if (b->h.on_subscribed != NULL)
        b->h.on_subscribed(b->h.arg, sid);
}

static void br_on_unsubscribe_reply(broker_redis_t *b, const char *sid,
                                    channel_t *ch)
{
    if (ch == NULL || ch->state != CH_UNSUBSCRIBING) {
        SG_DEBUG("broker", "redis: unexpected unsubscribe reply sid=%s", sid);
        return;
    }
    if (--ch->pending > 0)
        return;
    ch->state = CH_UNSUBSCRIBED;
    if (ch->wanted) {
        br_send_subscribe(b, sid, ch);
        return;
    }
    free(sg_map_remove(b->channels, sid));
}

/* Every reply on `sub` arrives here: subscribe/unsubscribe confirmations
 * and messages, or NULL when the context goes away. */
static void br_on_sub_reply(redisAsyncContext *ac, void *r, void *priv)
{
    broker_redis_t *b = priv;
    redisReply *reply = r;

    if (ac != b->sub || b->closing)
        return; /* a context we are freeing */
    if (reply == NULL) {
        br_conn_lost(b, ac->errstr != NULL && ac->err ? ac->errstr
                                                      : "connection lost");
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    char sid[BR_KEY_MAX];
    int live;
    if (sg__broker_redis_channel_sid(reply->element[1]->str, sid,
                                     &live) != 0)
        return;
    channel_t *ch = sg_map_get(b->channels, sid);

    if (strcasecmp(kind, "message") == 0) {
        redisReply *p = reply->element[2];
        if (ch == NULL || !ch->wanted || ch->state != CH_SUBSCRIBED ||
            p->type != REDIS_REPLY_STRING)
            return;
        if (live)
            sg__broker_redis_on_live(b, sid, p->str, p->len);
        else if (b->h.on_message != NULL)
            b->h.on_message(b->h.arg, sid, p->str, p->len);
    } else if (strcasecmp(kind, "subscribe") == 0) {
        br_on_subscribe_reply(b, sid, ch);
    } else if (strcasecmp(kind, "unsubscribe") == 0) {
        br_on_unsubscribe_reply(b, sid, ch);
    }
}

/* ---- connection -------------------------------------------------------- */

static int *br_ready_flag(broker_redis_t *b, const redisAsyncContext *ac)
{
    return ac == b->sub ? &b->sub_ready : &b->cmd_ready;
}

static int *br_handshake_count(broker_redis_t *b, const redisAsyncContext *ac)
{
    return ac == b->sub ? &b->sub_handshake : &b->cmd_handshake;
}

static void br_went_up(broker_redis_t *b)
{
    snprintf(b->status, sizeof(b->status), "UP");
    SG_INFO("broker", "redis: connected to %s:%d", b->host, b->port);
    b->outage_logged = 0;
    b->ever_ready = 1;
    b->delay_ms = b->min_delay_ms;
    sg_map_foreach(b->channels, br_visit_resubscribe, b);
    br_update_ready(b);
}

static void br_context_ready(broker_redis_t *b, const redisAsyncContext *ac)
{
    *br_ready_flag(b, ac) = 1;
    if (b->sub_ready && b->cmd_ready)
        br_went_up(b);
}

static void br_handshake_step(broker_redis_t *b, const redisAsyncContext *ac)
{
    if (--*br_handshake_count(b, ac) == 0)
        br_context_ready(b, ac);
}

/* SCRIPT LOAD replies (cmd only). A script Redis rejects is a bug of
 * ours, but it is reported like any other handshake failure. */
static void br_on_script_load(redisAsyncContext *ac, void *r, void *priv)
{
    broker_redis_t *b = priv;
    redisReply *reply = r;
    char reason[200];

    if (ac != b->cmd || b->closing || b->down)
        return;
    if (reply == NULL) {
        br_conn_lost(b, ac->err ? ac->errstr : "connection lost");
        return;
    }
    if (sg__broker_redis_script_loaded(b, reply) != 0) {
        snprintf(reason, sizeof(reason), "script load failed: %s",
                 reply->type == REDIS_REPLY_ERROR ? reply->str
                                                  : "unexpected reply");
        br_conn_lost(b, reason);
        return;
    }
    br_handshake_step(b, ac);
}

/* AUTH, SELECT and PING replies. An error reply (wrong or missing
 * password, no such db) fails the pair like a lost connection, with the
 * server's text. */
static void br_on_handshake(redisAsyncContext *ac, void *r, void *priv)
{
    broker_redis_t *b = priv;
    redisReply *reply = r;
    char reason[200];

    if ((ac != b->sub && ac != b->cmd) || b->closing || b->down)
        return;
    if (reply == NULL) {
        br_conn_lost(b, ac->err ? ac->errstr : "connection lost");
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(reason, sizeof(reason), "auth failed: %s", reply->str);
        br_conn_lost(b, reason);
        return;
    }
    br_handshake_step(b, ac);
}

static int br_send_handshake(broker_redis_t *b, redisAsyncContext *ac)
{
    int n = 0;
    if (b->password != NULL) {
        const char *argv[3] = {"AUTH", b->username, b->password};
        size_t lens[3] = {4, 0, strlen(b->password)};
        int argc = 2;
        if (b->username != NULL) {
            lens[1] = strlen(b->username);
            argc = 3;
        } else {
            argv[1] = b->password;
            lens[1] = lens[2];
        }
        if (redisAsyncCommandArgv(ac, br_on_handshake, b, argc, argv,
                                  lens) != REDIS_OK)
            return -1;
        n++;
    }
    if (b->db != 0) {
        if (redisAsyncCommand(ac, br_on_handshake, b, "SELECT %d",
                              b->db) != REDIS_OK)
            return -1;
        n++;
    }
    if (ac == b->cmd) {
        int k = sg__broker_redis_scripts_load(b, ac, br_on_script_load);
        if (k < 0)
            return -1;
        n += k;
    }
    /* PING last: a server that wants a password we do not have answers
     * NOAUTH here, so the pair reports DOWN instead of looking ready and
     * failing every command (and SUBSCRIBE dropping the connection). */
    if (redisAsyncCommand(ac, br_on_handshake, b, "PING") != REDIS_OK)
        return -1;
    n++;
    *br_handshake_count(b, ac) = n;
    return n;
}

static void br_on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    broker_redis_t *b = ac->data;

    if (ac != b->sub && ac != b->cmd)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees this context after we return. */
        if (ac == b->sub)
            b->sub = NULL;
        else
            b->cmd = NULL;
        br_conn_lost(b, ac->errstr);
        return;
    }
    if (b->closing || b->down)
        return;
    int n = br_send_handshake(b, ac);
    if (n < 0)
        br_conn_lost(b, "cannot send AUTH/SELECT");
    else if (n == 0)
        br_context_ready(b, ac);
}

static void br_on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    broker_redis_t *b = ac->data;

    if (ac != b->sub && ac != b->cmd)
        return;
    /* hiredis is freeing this context right now. */
    if (ac == b->sub)
        b->sub = NULL;
    else
        b->cmd = NULL;
    br_conn_lost(b, ac->err ? ac->errstr : "server closed the connection");
}

static redisAsyncContext *br_connect_one(broker_redis_t *b, char *err,
                                         size_t errlen)
{
    redisAsyncContext *ac = redisAsyncConnect(b->host, b->port);
    if (ac == NULL) {
        snprintf(err, errlen, "no memory");
        return NULL;
    }
    if (ac->err) {
        snprintf(err, errlen, "%s", ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    if (sg_redis_uv_attach(ac, b->loop, b->connect_timeout_ms) != 0) {
        snprintf(err, errlen, "cannot watch the redis socket");
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = b;
    redisAsyncSetConnectCallback(ac, br_on_connect);
    redisAsyncSetDisconnectCallback(ac, br_on_disconnect);
    return ac;
}

/* Starts a new pair. A synchronous failure (e.g. the host does not
 * resolve) is handled like an asynchronous one. */
static void br_connect_pair(broker_redis_t *b)
{
    char err[160];

    b->down = 0;
    b->sub_ready = b->cmd_ready = 0;
    b->sub = br_connect_one(b, err, sizeof(err));
    if (b->sub != NULL)
        b->cmd = br_connect_one(b, err, sizeof(err));
    if (b->sub == NULL || b->cmd == NULL)
        br_conn_lost(b, err);
}

/* Frees whatever is left of the current pair. Only from loop callbacks.
 * Pending command callbacks complete (NULL reply) with SG_EIO, or with
 * SG_ECANCELED when closing. */
static void br_free_pair(broker_redis_t *b)
{
    redisAsyncContext *sub = b->sub, *cmd = b->cmd;
    b->sub = b->cmd = NULL;
    b->sub_ready = b->cmd_ready = 0;
    if (sub != NULL)
        redisAsyncFree(sub);
    if (cmd != NULL)
        redisAsyncFree(cmd);
}

/* Marks the pair lost (idempotent per pair): not ready, channels reset,
 * teardown and reconnect scheduled. Safe from any hiredis callback. */
static void br_conn_lost(broker_redis_t *b, const char *reason)
{
    if (b->closing || b->down)
        return;
    b->down = 1;
    if (reason == NULL || reason[0] == '\0')
        reason = "connection lost";
    br_set_status(b, reason);
    if (!b->outage_logged) {
        b->outage_logged = 1;
        if (b->ever_ready)
            SG_WARN("broker", "redis: connection lost (%s); reconnecting",
                    reason);
        else
            SG_WARN("broker", "redis: cannot connect to %s:%d (%s); "
                    "retrying", b->host, b->port, reason);
    } else {
        SG_DEBUG("broker", "redis: reconnect failed (%s)", reason);
    }
    b->sub_ready = b->cmd_ready = 0;
    sg_map_foreach(b->channels, br_visit_reset, b);
    br_update_ready(b);
    uv_timer_start(&b->defer_timer, br_on_defer, 0, 0);
}

void sg__broker_redis_conn_lost(broker_redis_t *b, const char *reason)
{
    br_conn_lost(b, reason);
}

/* ---- loop callbacks ---------------------------------------------------- */

static void br_on_handle_closed(uv_handle_t *handle)
{
    broker_redis_t *b = handle->data;
    if (--b->open_handles > 0)
        return;
    sg_broker_closed_cb cb = b->closed_cb;
    void *arg = b->closed_arg;
    sg_map_foreach(b->channels, br_visit_free, NULL);
    sg_map_free(b->channels, NULL);
    free(b->host);
    free(b->username);
    free(b->password);
    free(b);
    if (cb != NULL)
        cb(arg);
}

static void br_on_reconnect(uv_timer_t *timer)
{
    broker_redis_t *b = timer->data;
    if (!b->closing)
        br_connect_pair(b);
}

/* The safe point: frees contexts outside hiredis, then either finishes
 * closing or waits for the backoff before reconnecting. */
static void br_on_defer(uv_timer_t *timer)
{
    broker_redis_t *b = timer->data;

    br_free_pair(b);
    if (b->closing) {
        uv_close((uv_handle_t *)&b->reconnect_timer, br_on_handle_closed);
        uv_close((uv_handle_t *)&b->defer_timer, br_on_handle_closed);
        return;
    }
    if (b->down)
        uv_timer_start(&b->reconnect_timer, br_on_reconnect,
                       br_next_delay(b), 0);
}

/* ---- history operations ------------------------------------------------ */

static op_t *br_op_new(broker_redis_t *b, op_kind_t kind, void *arg)
{
    op_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->b = b;
    op->kind = kind;
    op->arg = arg;
    return op;
}

static void br_op_finish(op_t *op, const redisReply *reply)
{
    if (op->kind == OP_DONE) {
        op->done_cb(op->arg, op->status);
    } else if (op->status != 0) {
        op->list_cb(op->arg, op->status, NULL, NULL, 0);
    } else {
        size_t n = reply->elements;
        const char **items = calloc(n + 1, sizeof(*items));
        size_t *lens = calloc(n + 1, sizeof(*lens));
        if (items == NULL || lens == NULL) {
            op->list_cb(op->arg, SG_ENOMEM, NULL, NULL, 0);
        } else {
            for (size_t i = 0; i < n; i++) {
                items[i] = reply->element[i]->str;
                lens[i] = reply->element[i]->len;
            }
            op->list_cb(op->arg, 0, items, lens, n);
        }
        free(items);
        free(lens);
    }
    free(op);
}

/* Reply callback of every history command. A NULL reply means the context
 * went away (lost: SG_EIO; closing: SG_ECANCELED). */
static void br_on_op_reply(redisAsyncContext *ac, void *r, void *priv)
{
    op_t *op = priv;
    broker_redis_t *b = op->b;
    redisReply *reply = r;

    if (reply == NULL) {
        if (ac == b->cmd)
            br_conn_lost(b, ac->err ? ac->errstr : "connection lost");
        if (op->status == 0)
            op->status = br_op_status(b);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        SG_WARN("broker", "redis: command failed: %s", reply->str);
        if (op->status == 0)
            op->status = SG_EREMOTE;
    } else if (op->kind == OP_LIST && reply->type != REDIS_REPLY_ARRAY) {
        op->status = SG_EREMOTE;
    }
    if (--op->refs == 0)
        br_op_finish(op, reply);
}

int sg__broker_redis_check(const broker_redis_t *b, const char *sid)
{
    if (b->closing)
        return SG_ECLOSED;
    if (!br_sid_ok(sid))
        return SG_EINVAL;
    if (!b->ready)
        return SG_ENOTREADY;
    return 0;
}

static int br_history_append(sg_broker_t *base, const char *sid,
                             const char *p, size_t n, sg_broker_done_cb cb,
                             void *arg)
{
    broker_redis_t *b = (broker_redis_t *)base;
    char key[BR_KEY_MAX], ttl[24];
    int rc = sg__broker_redis_check(b, sid);
    if (rc != 0)
        return rc;
    op_t *op = br_op_new(b, OP_DONE, arg);
    if (op == NULL)
        return SG_ENOMEM;
    op->done_cb = cb;
    br_key(key, BR_HISTORY_PREFIX, sid);
    snprintf(ttl, sizeof(ttl), "%d", b->history_ttl);
    const char *rpush[3] = {"RPUSH", key, p};
    size_t rpush_len[3] = {5, strlen(key), n};
    const char *expire[3] = {"EXPIRE", key, ttl};
    size_t expire_len[3] = {6, strlen(key), strlen(ttl)};

    /* Pipelined; the op completes with the later (EXPIRE) callback, or
     * with the RPUSH one if EXPIRE could not be queued. */
    op->refs = 1;
    if (redisAsyncCommandArgv(b->cmd, br_on_op_reply, op, 3, rpush,
                              rpush_len) != REDIS_OK) {
        free(op);
        return SG_EIO;
    }
    if (redisAsyncCommandArgv(b->cmd, br_on_op_reply, op, 3, expire,
                              expire_len) == REDIS_OK)
        op->refs++;
    else
        op->status = SG_EIO;
    return 0;
}

static int br_simple_op(broker_redis_t *b, op_t *op, const char *verb,
                        const char *sid)
{
    char key[BR_KEY_MAX];
    br_key(key, BR_HISTORY_PREFIX, sid);
    op->refs = 1;
    int rc = op->kind == OP_LIST
                 ? redisAsyncCommand(b->cmd, br_on_op_reply, op,
                                     "LRANGE %s 0 -1", key)
                 : redisAsyncCommand(b->cmd, br_on_op_reply, op, "%s %s",
                                     verb, key);
    if (rc != REDIS_OK) {
        free(op);
        return SG_EIO;
    }
    return 0;
}

static int br_history_get(sg_broker_t *base, const char *sid,
                          sg_broker_list_cb cb, void *arg)
{
    broker_redis_t *b = (broker_redis_t *)base;
    int rc = sg__broker_redis_check(b, sid);
    if (rc != 0)
        return rc;
    op_t *op = br_op_new(b, OP_LIST, arg);
    if (op == NULL)
        return SG_ENOMEM;
    op->list_cb = cb;
    return br_simple_op(b, op, "LRANGE", sid);
}

static int br_history_clear(sg_broker_t *base, const char *sid,
                            sg_broker_done_cb cb, void *arg)
{
    broker_redis_t *b = (broker_redis_t *)base;
    int rc = sg__broker_redis_check(b, sid);
    if (rc != 0)
        return rc;
    op_t *op = br_op_new(b, OP_DONE, arg);
    if (op == NULL)
        return SG_ENOMEM;
    op->done_cb = cb;
    return br_simple_op(b, op, "DEL", sid);
}

/* ---- pub/sub ----------------------------------------------------------- */

static int br_publish(sg_broker_t *base, const char *sid, const char *p,
                      size_t n)
{
    broker_redis_t *b = (broker_redis_t *)base;
    char chan[BR_KEY_MAX];
    int rc = sg__broker_redis_check(b, sid);
    if (rc != 0)
        return rc;
    br_key(chan, BR_CHANNEL_PREFIX, sid);
    const char *argv[3] = {"PUBLISH", chan, p};
    size_t lens[3] = {7, strlen(chan), n};
    if (redisAsyncCommandArgv(b->cmd, NULL, NULL, 3, argv, lens) != REDIS_OK)
        return SG_EIO;
    return 0;
}

static int br_subscribe(sg_broker_t *base, const char *sid)
{
    broker_redis_t *b = (broker_redis_t *)base;
    if (b->closing)
        return SG_ECLOSED;
    if (!br_sid_ok(sid))
        return SG_EINVAL;
    channel_t *ch = sg_map_get(b->channels, sid);
    if (ch == NULL) {
        ch = calloc(1, sizeof(*ch));
        if (ch == NULL)
            return SG_ENOMEM;
        if (sg_map_put(b->channels, sid, ch) != 0) {
            free(ch);
            return SG_ENOMEM;
        }
    }
    if (ch->wanted)
        return 0;
    ch->wanted = 1;
    b->wanted_count++;
    /* SUBSCRIBING: the reply will confirm it. UNSUBSCRIBING: the reply
     * handler resubscribes. Not ready: br_went_up subscribes. */
    if (b->ready && ch->state == CH_UNSUBSCRIBED)
        br_send_subscribe(b, sid, ch);
    return 0;
}

static int br_unsubscribe(sg_broker_t *base, const char *sid)
{
    broker_redis_t *b = (broker_redis_t *)base;
    if (b->closing)
        return SG_ECLOSED;
    if (!br_sid_ok(sid))
        return SG_EINVAL;
    channel_t *ch = sg_map_get(b->channels, sid);
    if (ch == NULL || !ch->wanted)
        return 0;
    ch->wanted = 0;
    b->wanted_count--;
    if (ch->state == CH_UNSUBSCRIBED)
        free(sg_map_remove(b->channels, sid));
    else if (ch->state == CH_SUBSCRIBED)
        br_send_unsubscribe(b, sid, ch);
    /* SUBSCRIBING / UNSUBSCRIBING: the pending reply decides. */
    return 0;
}

static size_t br_subscription_count(const sg_broker_t *base)
{
    return ((const broker_redis_t *)base)->wanted_count;
}

/* ---- raw commands (sg_broker_command) ---------------------------------- */

/* One raw command. Freed by its timer's close callback, which is started
 * only from the hiredis reply callback (every queued command gets exactly
 * one, a NULL reply at the latest when the context is freed), so the op
 * never outlives a callback that could still touch it. */
typedef struct cmd_op {
    broker_redis_t *b;
    sg_broker_reply_cb cb;
    void *arg;
    int finished; /* cb already called (timeout) */
    uv_timer_t timer;
} cmd_op_t;

/* Commands that would change the shared connection's state for every
 * other user of it (reply routing, db, identity, transactions) or block
 * it for everyone. */
static const char *const br_refused[] = {
    "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE",
    "SUNSUBSCRIBE", "MONITOR", "SELECT", "AUTH", "HELLO", "QUIT", "RESET",
    "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "SYNC", "PSYNC",
    "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN",
    "BZPOPMAX", "BZMPOP", "WAIT", "WAITAOF", NULL,
};

static int br_word_is(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

/* 1 when the command may run on the shared command connection. */
static int br_command_allowed(int argc, const char *const *argv,
                              const size_t *lens)
{
    for (const char *const *w = br_refused; *w != NULL; w++)
        if (br_word_is(argv[0], lens[0], *w))
            return 0;
    if (br_word_is(argv[0], lens[0], "CLIENT") && argc > 1 &&
        br_word_is(argv[1], lens[1], "REPLY"))
        return 0;
    if (br_word_is(argv[0], lens[0], "XREAD") ||
        br_word_is(argv[0], lens[0], "XREADGROUP")) {
        /* Options come before STREAMS; after it are key names. */
        for (int i = 1; i < argc; i++) {
            if (br_word_is(argv[i], lens[i], "STREAMS"))
                break;
            if (br_word_is(argv[i], lens[i], "BLOCK"))
                return 0;
        }
    }
    return 1;
}

static void br_reply_free(sg_reply_t *r)
{
    if (r->type != SG_REPLY_ARRAY || r->elements == NULL)
        return;
    sg_reply_t *el = (sg_reply_t *)r->elements;
    for (size_t i = 0; i < r->n; i++)
        br_reply_free(&el[i]);
    free(el);
}

/* Converts a hiredis reply (strings are borrowed, arrays allocated).
 * 0 or SG_ENOMEM (then `out` holds nothing to free). */
static int br_reply_convert(const redisReply *r, sg_reply_t *out)
{
    memset(out, 0, sizeof(*out));
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        out->type = r->type == REDIS_REPLY_STRING   ? SG_REPLY_STRING
                    : r->type == REDIS_REPLY_STATUS ? SG_REPLY_STATUS
                                                    : SG_REPLY_ERROR;
        out->str = r->str;
        out->len = r->len;
        return 0;
    case REDIS_REPLY_INTEGER:
        out->type = SG_REPLY_INTEGER;
        out->integer = r->integer;
        return 0;
    case REDIS_REPLY_ARRAY:
        break;
    default:
        out->type = SG_REPLY_NIL;
        return 0;
    }
    out->type = SG_REPLY_ARRAY;
    if (r->elements == 0)
        return 0;
    sg_reply_t *el = calloc(r->elements, sizeof(*el));
    if (el == NULL)
        return SG_ENOMEM;
    out->elements = el;
    for (size_t i = 0; i < r->elements; i++) {
        if (br_reply_convert(r->element[i], &el[i]) != 0) {
            br_reply_free(out);
            out->elements = NULL;
            return SG_ENOMEM;
        }
        out->n = i + 1;
    }
    return 0;
}

static void br_cmd_free(uv_handle_t *handle)
{
    free(handle->data);
}

static void br_on_cmd_reply(redisAsyncContext *ac, void *r, void *priv)
{
    cmd_op_t *op = priv;
    broker_redis_t *b = op->b;
    redisReply *reply = r;
    sg_reply_t rep;

    uv_timer_stop(&op->timer);
    if (op->finished) {
        /* Timed out: the late reply is dropped. */
    } else if (reply == NULL) {
        if (ac == b->cmd)
            br_conn_lost(b, ac->err ? ac->errstr : "connection lost");
        op->finished = 1;
        op->cb(op->arg, br_op_status(b), NULL);
    } else {
        int rc = br_reply_convert(reply, &rep);
        op->finished = 1;
        op->cb(op->arg, rc, rc == 0 ? &rep : NULL);
        if (rc == 0)
            br_reply_free(&rep);
    }
    uv_close((uv_handle_t *)&op->timer, br_cmd_free);
}

/* The reply is overdue. Its slot in hiredis's reply queue stays taken, and
 * a reply arriving later would be matched to it, so the connection can no
 * longer be trusted: it is torn down and reconnected (the advice of
 * lua-resty-redis: close a connection that timed out mid-reply). */
static void br_on_cmd_timeout(uv_timer_t *timer)
{
    cmd_op_t *op = timer->data;
    broker_redis_t *b = op->b;

    op->finished = 1;
    if (b->closing) {
        op->cb(op->arg, SG_ECANCELED, NULL);
        return;
    }
    br_conn_lost(b, "command timeout");
    op->cb(op->arg, SG_ETIMEOUT, NULL);
}

static int br_command(sg_broker_t *base, int argc, const char *const *argv,
                      const size_t *lens, sg_broker_reply_cb cb, void *arg)
{
    broker_redis_t *b = (broker_redis_t *)base;

    assert(cb != NULL);
    if (b->closing)
        return SG_ECLOSED;
    if (argc < 1 || !br_command_allowed(argc, argv, lens))
        return SG_EINVAL;
    if (!b->ready)
        return SG_ENOTREADY;
    cmd_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return SG_ENOMEM;
    op->b = b;
    op->cb = cb;
    op->arg = arg;
    uv_timer_init(b->loop, &op->timer);
    op->timer.data = op;
    if (redisAsyncCommandArgv(b->cmd, br_on_cmd_reply, op, argc,
                              (const char **)argv, lens) != REDIS_OK) {
        uv_close((uv_handle_t *)&op->timer, br_cmd_free);
        return SG_EIO;
    }
    uv_timer_start(&op->timer, br_on_cmd_timeout, b->command_timeout_ms, 0);
    return 0;
}

/* ---- state ------------------------------------------------------------- */

static int br_is_ready(const sg_broker_t *base)
{
    return ((const broker_redis_t *)base)->ready;
}

static const char *br_status_text(const sg_broker_t *base)
{
    return ((const broker_redis_t *)base)->status;
}

/* ---- lifecycle --------------------------------------------------------- */

static void br_close(sg_broker_t *base, sg_broker_closed_cb cb, void *arg)
{
    broker_redis_t *b = (broker_redis_t *)base;
    assert(!b->closing);
    b->closing = 1;
    b->closed_cb = cb;
    b->closed_arg = arg;
    b->ready = 0;
    snprintf(b->status, sizeof(b->status), "DOWN: closed");
    uv_timer_stop(&b->reconnect_timer);
    /* Contexts are freed (and pending callbacks cancelled) from the loop,
     * never here: close may be called from inside a hiredis callback. */
    uv_timer_start(&b->defer_timer, br_on_defer, 0, 0);
}

static char *br_strdup(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

static uint64_t br_ms(double seconds, uint64_t fallback)
{
    return seconds > 0 ? (uint64_t)(seconds * 1000.0 + 0.5) : fallback;
}

sg_broker_t *sg_broker_redis_new(uv_loop_t *loop, const sg_config_t *cfg,
                                 const sg_broker_handlers_t *handlers)
{
    broker_redis_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->base.vt = &broker_redis_vt;
    b->loop = loop;
    b->h = *handlers;
    b->host = strdup(cfg->redis.host != NULL ? cfg->redis.host
                                             : "127.0.0.1");
    b->port = cfg->redis.port > 0 ? cfg->redis.port : 6379;
    b->username = br_strdup(cfg->redis.username);
    b->password = br_strdup(cfg->redis.password);
    b->channels = sg_map_new();
    if (b->host == NULL || b->channels == NULL ||
        (cfg->redis.username != NULL && b->username == NULL) ||
        (cfg->redis.password != NULL && b->password == NULL))
        goto fail;
    b->db = cfg->redis.db;
    b->connect_timeout_ms = br_ms(cfg->redis.connect_timeout, 2000);
    b->command_timeout_ms = br_ms(cfg->redis.command_timeout, 5000);
    b->min_delay_ms = br_ms(cfg->redis.reconnect_min_delay, 100);
    b->max_delay_ms = br_ms(cfg->redis.reconnect_max_delay, 5000);
    if (b->max_delay_ms < b->min_delay_ms)
        b->max_delay_ms = b->min_delay_ms;
    b->delay_ms = b->min_delay_ms;
    b->history_ttl = cfg->stream.history_ttl > 0 ? cfg->stream.history_ttl
                                                 : 86400;
    b->recovery_ttl = cfg->stream.recovery_ttl > 0 ? cfg->stream.recovery_ttl
                                                   : 600;
    b->log_max_len = cfg->stream.log_max_len > 0 ? cfg->stream.log_max_len
                                                 : 10000;
    b->rng = uv_hrtime() | 1;
    snprintf(b->status, sizeof(b->status), "DOWN: connecting");

    uv_timer_init(loop, &b->reconnect_timer);
    uv_timer_init(loop, &b->defer_timer);
    b->reconnect_timer.data = b;
    b->defer_timer.data = b;
    b->open_handles = 2;
    br_connect_pair(b);
    return &b->base;

fail:
    sg_map_free(b->channels, NULL);
    free(b->host);
    free(b->username);
    free(b->password);
    free(b);
    return NULL;
}

static const sg_broker_vtable_t broker_redis_vt = {
    .mode = "redis",
    .is_ready = br_is_ready,
    .status_text = br_status_text,
    .subscribe = br_subscribe,
    .unsubscribe = br_unsubscribe,
    .subscription_count = br_subscription_count,
    .publish = br_publish,
    .history_append = br_history_append,
    .history_get = br_history_get,
    .history_clear = br_history_clear,
    .close = br_close,
    .stream_append = sg__broker_redis_stream_append,
    .stream_read = sg__broker_redis_stream_read,
    .command = br_command,
};
