/* The Redis broker engine, stream half: append and read of a session's
 * chunk log (stream.h) through two server-side Lua scripts
 * (src/redis/stream_append.lua, stream_read.lua, embedded at build time),
 * and the live chunk channel sg:{sid}:live parsed into sg_chunk_t.
 *
 * Keys of a session (one Cluster hash tag, all with TTL recovery_ttl,
 * refreshed by every accepted append): sg:{sid}:seq (offset counter),
 * sg:{sid}:epoch, sg:{sid}:log (Redis Stream of deltas, ids "<offset>-0",
 * XADD MAXLEN ~ log_max_len), sg:{sid}:msgs (hash message_id -> meta JSON),
 * sg:{sid}:text:<mid> (cumulative text, APPENDed). The append script
 * decides duplicates, so several nodes ingesting the same producer message
 * log and publish it once.
 *
 * Trade-off: the live message carries the whole cumulative content (like
 * the producer's own publishes), so a node builds a full-mode frame
 * without a read; that is O(len) per chunk on the wire and quadratic over
 * an answer, but pub/sub is not stored. The log, which is stored, keeps
 * only deltas, and the text key grows by APPEND, so Redis writes stay
 * O(delta) per chunk.
 *
 * Live message (compact JSON, produced by cjson in the script):
 *   {"offset":7,"epoch":"<16 hex>","session_id":..,"message_id":..,
 *    "index":3,"content":<cumulative>,"delta":<new text>,
 *    "is_complete":false,"timestamp":<producer ms>,"user_id":..(optional),
 *    "role":"assistant","reset":false,"done_at":<server ms or 0>}
 *
 * Scripts are loaded with SCRIPT LOAD during the handshake and called with
 * EVALSHA; a NOSCRIPT reply (SCRIPT FLUSH, failover to a replica that
 * never saw the load) is retried once with EVAL. */
#include "broker_redis_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <jansson.h>

#include "error.h"
#include "log.h"
#include "sg_redis_scripts.h"

#define BRS_LIVE_SUFFIX "}:live"
#define BRS_APPEND_KEYS 5
#define BRS_APPEND_ARGS 13
#define BRS_READ_KEYS 5
#define BRS_READ_ARGS 5
#define BRS_ARGV_MAX (3 + BRS_APPEND_KEYS + BRS_APPEND_ARGS)

typedef enum { SOP_APPEND, SOP_READ } sop_kind_t;

/* One EVALSHA in flight; privdata of its reply callback. argv[0] and
 * argv[1] ("EVALSHA", sha) are not owned; argv[2..] are, and are kept for
 * the NOSCRIPT retry. */
typedef struct stream_op {
    broker_redis_t *b;
    sop_kind_t kind;
    sg_broker_append_cb append_cb;
    sg_broker_read_cb read_cb;
    void *arg;
    int retried;
    char sid[BR_SID_MAX + 1];
    int argc;
    const char *argv[BRS_ARGV_MAX];
    size_t lens[BRS_ARGV_MAX];
} stream_op_t;

/* Everything a read result points into, freed after the callback. */
typedef struct read_result {
    sg_stream_state_t st;
    sg_chunk_t *log;
    sg_chunk_t *snaps;
    json_t **metas;
    size_t nmetas;
    const char **hist;
    size_t *hist_lens;
} read_result_t;

/* ---- keys, channels and the epoch -------------------------------------- */

/* Session ids are validated (<= 128 chars) before they get here, so the
 * key always fits; the precision bounds what the compiler must assume. */
static void brs_key(char *out, const char *sid, const char *suffix)
{
    snprintf(out, BR_KEY_MAX, "sg:{%.128s}:%.32s", sid, suffix);
}

int sg__broker_redis_send_subscribe(broker_redis_t *b, const char *sid,
                                    redisCallbackFn *cb)
{
    char live[BR_KEY_MAX];
    brs_key(live, sid, "live");
    return redisAsyncCommand(b->sub, cb, b, "SUBSCRIBE " BR_CHANNEL_PREFIX
                             "%s %s", sid, live);
}

int sg__broker_redis_send_unsubscribe(broker_redis_t *b, const char *sid)
{
    char live[BR_KEY_MAX];
    brs_key(live, sid, "live");
    return redisAsyncCommand(b->sub, NULL, NULL, "UNSUBSCRIBE "
                             BR_CHANNEL_PREFIX "%s %s", sid, live);
}

int sg__broker_redis_channel_sid(const char *chan, char *sid, int *live)
{
    size_t cplen = strlen(BR_CHANNEL_PREFIX);
    size_t slen = strlen(BRS_LIVE_SUFFIX);
    size_t n = strlen(chan);

    if (strncmp(chan, BR_CHANNEL_PREFIX, cplen) == 0 &&
        n - cplen < BR_KEY_MAX) {
        memcpy(sid, chan + cplen, n - cplen + 1);
        *live = 0;
        return 0;
    }
    if (strncmp(chan, "sg:{", 4) == 0 && n > 4 + slen &&
        n - 4 - slen < BR_KEY_MAX &&
        strcmp(chan + n - slen, BRS_LIVE_SUFFIX) == 0) {
        memcpy(sid, chan + 4, n - 4 - slen);
        sid[n - 4 - slen] = '\0';
        *live = 1;
        return 0;
    }
    return -1;
}

/* ---- scripts ----------------------------------------------------------- */

int sg__broker_redis_scripts_load(broker_redis_t *b, redisAsyncContext *ac,
                                  redisCallbackFn *cb)
{
    b->append_sha[0] = b->read_sha[0] = '\0';
    if (redisAsyncCommand(ac, cb, b, "SCRIPT LOAD %s",
                          sg_redis_stream_append_lua) != REDIS_OK ||
        redisAsyncCommand(ac, cb, b, "SCRIPT LOAD %s",
                          sg_redis_stream_read_lua) != REDIS_OK)
        return -1;
    return 2;
}

int sg__broker_redis_script_loaded(broker_redis_t *b, const redisReply *r)
{
    if (r->type != REDIS_REPLY_STRING || r->len != BR_SHA_LEN)
        return -1;
    char *dst = b->append_sha[0] == '\0' ? b->append_sha : b->read_sha;
    memcpy(dst, r->str, BR_SHA_LEN + 1);
    return 0;
}

/* ---- live chunks ------------------------------------------------------- */

static const char *brs_json_str(json_t *o, const char *key, size_t *len)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v))
        return NULL;
    if (len != NULL)
        *len = json_string_length(v);
    return json_string_value(v);
}

static int64_t brs_json_int(json_t *o, const char *key, int *ok)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) {
        *ok = 0;
        return 0;
    }
    return (int64_t)json_integer_value(v);
}

/* Fills `c` from a live message; pointers stay inside `o`. 0 or -1. */
static int brs_chunk_from_json(json_t *o, sg_chunk_t *c)
{
    int ok = 1;
    memset(c, 0, sizeof(*c));
    c->offset = (uint64_t)brs_json_int(o, "offset", &ok);
    c->index = (uint32_t)brs_json_int(o, "index", &ok);
    c->timestamp = brs_json_int(o, "timestamp", &ok);
    c->done_at = brs_json_int(o, "done_at", &ok);
    c->epoch = brs_json_str(o, "epoch", NULL);
    c->session_id = brs_json_str(o, "session_id", NULL);
    c->message_id = brs_json_str(o, "message_id", NULL);
    c->user_id = brs_json_str(o, "user_id", NULL);
    c->role = brs_json_str(o, "role", NULL);
    c->content = brs_json_str(o, "content", &c->content_len);
    c->delta = brs_json_str(o, "delta", &c->delta_len);
    c->is_complete = json_is_true(json_object_get(o, "is_complete"));
    c->reset = json_is_true(json_object_get(o, "reset"));
    if (!ok || c->offset == 0 || c->epoch == NULL || c->session_id == NULL ||
        c->message_id == NULL || c->role == NULL || c->content == NULL ||
        c->delta == NULL)
        return -1;
    return 0;
}

void sg__broker_redis_on_live(broker_redis_t *b, const char *sid,
                              const char *payload, size_t len)
{
    json_error_t err;
    sg_chunk_t c;

    if (b->h.on_chunk == NULL)
        return;
    json_t *o = json_loadb(payload, len, JSON_ALLOW_NUL, &err);
    if (o == NULL || brs_chunk_from_json(o, &c) != 0) {
        SG_WARN("broker", "redis: bad live chunk on sg:{%s}:live: %s", sid,
                o == NULL ? err.text : "missing or mistyped field");
        json_decref(o);
        return;
    }
    b->h.on_chunk(b->h.arg, sid, &c);
    json_decref(o);
}

/* ---- operations -------------------------------------------------------- */

static void brs_op_free(stream_op_t *op)
{
    for (int i = 2; i < op->argc; i++)
        free((char *)op->argv[i]);
    free(op);
}

/* Appends an owned copy of `len` bytes to op's argv; -1 on no memory. */
static int brs_arg(stream_op_t *op, const char *s, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, s, len);
    copy[len] = '\0';
    op->argv[op->argc] = copy;
    op->lens[op->argc] = len;
    op->argc++;
    return 0;
}

static int brs_arg_str(stream_op_t *op, const char *s)
{
    return brs_arg(op, s, strlen(s));
}

static int brs_arg_int(stream_op_t *op, int64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%" PRId64, v);
    return brs_arg_str(op, num);
}

static void brs_on_reply(redisAsyncContext *ac, void *r, void *priv);

/* Sends op as EVALSHA, or as EVAL with the script body on the retry. */
static int brs_send(stream_op_t *op)
{
    broker_redis_t *b = op->b;
    int append = op->kind == SOP_APPEND;
    const char *sha = append ? b->append_sha : b->read_sha;
    if (op->retried || sha[0] == '\0') {
        op->argv[0] = "EVAL";
        op->argv[1] = append ? sg_redis_stream_append_lua
                             : sg_redis_stream_read_lua;
    } else {
        op->argv[0] = "EVALSHA";
        op->argv[1] = sha;
    }
    op->lens[0] = strlen(op->argv[0]);
    op->lens[1] = strlen(op->argv[1]);
    return redisAsyncCommandArgv(b->cmd, brs_on_reply, op, op->argc,
                                 op->argv, op->lens) == REDIS_OK
               ? 0
               : SG_EIO;
}

static stream_op_t *brs_op_new(broker_redis_t *b, sop_kind_t kind,
                               const char *sid, void *arg)
{
    stream_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->b = b;
    op->kind = kind;
    op->arg = arg;
    snprintf(op->sid, sizeof(op->sid), "%s", sid);
    op->argc = 2; /* EVALSHA sha, filled by brs_send */
    return op;
}

static void brs_fail(stream_op_t *op, int status)
{
    if (op->kind == SOP_APPEND) {
        if (op->append_cb != NULL)
            op->append_cb(op->arg, status, 0);
    } else {
        op->read_cb(op->arg, status, NULL);
    }
}

/* ---- read results ------------------------------------------------------ */

static const redisReply *brs_el(const redisReply *r, size_t i, int type)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || i >= r->elements ||
        r->element[i]->type != type)
        return NULL;
    return r->element[i];
}

/* One XRANGE entry {id, {field, value, ...}} into `c`. 0 or -1. */
static int brs_log_entry(const redisReply *e, sg_chunk_t *c)
{
    const redisReply *id = brs_el(e, 0, REDIS_REPLY_STRING);
    const redisReply *f = brs_el(e, 1, REDIS_REPLY_ARRAY);
    if (id == NULL || f == NULL)
        return -1;
    c->offset = strtoull(id->str, NULL, 10);
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        const redisReply *k = f->element[i], *v = f->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING ||
            k->len != 1)
            return -1;
        switch (k->str[0]) {
        case 'm': c->message_id = v->str; break;
        case 'i': c->index = (uint32_t)strtoul(v->str, NULL, 10); break;
        case 'd': c->delta = v->str; c->delta_len = v->len; break;
        case 'f': c->is_complete = v->str[0] == '1'; break;
        case 't': c->timestamp = strtoll(v->str, NULL, 10); break;
        case 'r': c->role = v->str; break;
        case 'x': c->reset = v->str[0] == '1'; break;
        case 'u': c->user_id = v->str; break;
        default: break;
        }
    }
    return c->message_id != NULL && c->delta != NULL && c->role != NULL
               ? 0
               : -1;
}

/* One snapshot {message_id, meta JSON, text} into `c`; the parsed meta is
 * stored in *meta (the caller's to decref). 0 or -1. */
static int brs_snapshot(const redisReply *e, sg_chunk_t *c, json_t **meta)
{
    const redisReply *mid = brs_el(e, 0, REDIS_REPLY_STRING);
    const redisReply *js = brs_el(e, 1, REDIS_REPLY_STRING);
    const redisReply *text = brs_el(e, 2, REDIS_REPLY_STRING);
    int ok = 1;
    if (mid == NULL || js == NULL || text == NULL)
        return -1;
    *meta = json_loadb(js->str, js->len, 0, NULL);
    if (*meta == NULL)
        return -1;
    c->message_id = mid->str;
    c->content = text->str;
    c->content_len = text->len;
    c->offset = (uint64_t)brs_json_int(*meta, "offset", &ok);
    c->index = (uint32_t)brs_json_int(*meta, "index", &ok);
    c->timestamp = brs_json_int(*meta, "ts", &ok);
    c->done_at = brs_json_int(*meta, "done_at", &ok);
    c->is_complete = brs_json_int(*meta, "fin", &ok) == 1;
    c->user_id = brs_json_str(*meta, "uid", NULL);
    c->role = brs_json_str(*meta, "role", NULL);
    return ok && c->role != NULL ? 0 : -1;
}

static void brs_result_free(read_result_t *res)
{
    for (size_t i = 0; i < res->nmetas; i++)
        json_decref(res->metas[i]);
    free(res->metas);
    free(res->log);
    free(res->snaps);
    free(res->hist);
    free(res->hist_lens);
}

static int brs_parse_log(read_result_t *res, const redisReply *log,
                         const char *sid)
{
    res->log = calloc(log->elements + 1, sizeof(*res->log));
    if (res->log == NULL)
        return SG_ENOMEM;
    for (size_t i = 0; i < log->elements; i++) {
        sg_chunk_t *c = &res->log[i];
        if (brs_log_entry(log->element[i], c) != 0)
            return SG_EREMOTE;
        c->epoch = res->st.epoch;
        c->session_id = sid;
    }
    res->st.log = res->log;
    res->st.nlog = log->elements;
    return 0;
}

static int brs_parse_snaps(read_result_t *res, const redisReply *snaps,
                           const char *sid)
{
    size_t n = snaps->elements;
    res->snaps = calloc(n + 1, sizeof(*res->snaps));
    res->metas = calloc(n + 1, sizeof(*res->metas));
    if (res->snaps == NULL || res->metas == NULL)
        return SG_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        sg_chunk_t *c = &res->snaps[i];
        int rc = brs_snapshot(snaps->element[i], c, &res->metas[i]);
        if (res->metas[i] != NULL)
            res->nmetas = i + 1;
        if (rc != 0)
            return SG_EREMOTE;
        c->epoch = res->st.epoch;
        c->session_id = sid;
    }
    res->st.snapshots = res->snaps;
    res->st.nsnapshots = n;
    return 0;
}

static int brs_parse_history(read_result_t *res, const redisReply *h)
{
    size_t n = h->elements;
    res->hist = calloc(n + 1, sizeof(*res->hist));
    res->hist_lens = calloc(n + 1, sizeof(*res->hist_lens));
    if (res->hist == NULL || res->hist_lens == NULL)
        return SG_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (h->element[i]->type != REDIS_REPLY_STRING)
            return SG_EREMOTE;
        res->hist[i] = h->element[i]->str;
        res->hist_lens[i] = h->element[i]->len;
    }
    res->st.history = res->hist;
    res->st.history_lens = res->hist_lens;
    res->st.nhistory = n;
    return 0;
}

/* The read script's reply {epoch, last, first, range_ok, log, snapshots,
 * history} into res (pointers into `r`). 0, SG_EREMOTE or SG_ENOMEM. */
static int brs_parse_read(read_result_t *res, const redisReply *r,
                          const char *sid)
{
    const redisReply *epoch = brs_el(r, 0, REDIS_REPLY_STRING);
    const redisReply *last = brs_el(r, 1, REDIS_REPLY_INTEGER);
    const redisReply *first = brs_el(r, 2, REDIS_REPLY_INTEGER);
    const redisReply *ok = brs_el(r, 3, REDIS_REPLY_INTEGER);
    const redisReply *log = brs_el(r, 4, REDIS_REPLY_ARRAY);
    const redisReply *snaps = brs_el(r, 5, REDIS_REPLY_ARRAY);
    const redisReply *hist = brs_el(r, 6, REDIS_REPLY_ARRAY);
    int rc;

    if (epoch == NULL || last == NULL || first == NULL || ok == NULL ||
        log == NULL || snaps == NULL || hist == NULL)
        return SG_EREMOTE;
    res->st.epoch = epoch->str;
    res->st.last_offset = (uint64_t)last->integer;
    res->st.first_offset = (uint64_t)first->integer;
    res->st.range_ok = ok->integer == 1;
    if ((rc = brs_parse_log(res, log, sid)) != 0 ||
        (rc = brs_parse_snaps(res, snaps, sid)) != 0)
        return rc;
    return brs_parse_history(res, hist);
}

static void brs_finish_read(stream_op_t *op, const redisReply *r)
{
    read_result_t res;
    memset(&res, 0, sizeof(res));
    int rc = brs_parse_read(&res, r, op->sid);
    if (rc != 0) {
        SG_WARN("broker", "redis: unexpected stream read reply for %s",
                op->sid);
        op->read_cb(op->arg, rc, NULL);
    } else {
        op->read_cb(op->arg, 0, &res.st);
    }
    brs_result_free(&res);
}

/* Reply of every EVALSHA/EVAL. A NULL reply means the context went away
 * (lost: SG_EIO; closing: SG_ECANCELED). */
static void brs_on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    stream_op_t *op = priv;
    broker_redis_t *b = op->b;
    redisReply *reply = r;

    if (reply == NULL) {
        if (ac == b->cmd)
            sg__broker_redis_conn_lost(b, ac->err ? ac->errstr
                                                  : "connection lost");
        brs_fail(op, b->closing ? SG_ECANCELED : SG_EIO);
    } else if (reply->type == REDIS_REPLY_ERROR) {
        if (!op->retried && strncmp(reply->str, "NOSCRIPT", 8) == 0 &&
            !b->closing) {
            op->retried = 1;
            if (brs_send(op) == 0)
                return; /* the EVAL's reply completes the op */
            brs_fail(op, SG_EIO);
        } else {
            SG_WARN("broker", "redis: stream script failed: %s",
                    reply->str);
            brs_fail(op, SG_EREMOTE);
        }
    } else if (op->kind == SOP_APPEND) {
        if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 0)
            brs_fail(op, SG_EREMOTE);
        else if (op->append_cb != NULL)
            op->append_cb(op->arg, 0, (uint64_t)reply->integer);
    } else {
        brs_finish_read(op, reply);
    }
    brs_op_free(op);
}

/* ---- API --------------------------------------------------------------- */

static int brs_append_args(stream_op_t *op, const sg_chatmsg_t *msg)
{
    broker_redis_t *b = op->b;
    char key[BR_KEY_MAX], epoch[SG_EPOCH_LEN + 1];
    static const char *const suffix[] = {"seq", "epoch", "log", "msgs"};
    int fail = brs_arg_int(op, BRS_APPEND_KEYS);

    for (int i = 0; i < 4; i++) {
        brs_key(key, op->sid, suffix[i]);
        fail |= brs_arg_str(op, key);
    }
    /* KEYS[5]: sg:{sid}:text:<mid>, the message id may be long. */
    snprintf(key, sizeof(key), "sg:{%s}:text:", op->sid);
    size_t plen = strlen(key), mlen = strlen(msg->message_id);
    char *text_key = malloc(plen + mlen + 1);
    if (text_key == NULL)
        return -1;
    memcpy(text_key, key, plen);
    memcpy(text_key + plen, msg->message_id, mlen + 1);
    fail |= brs_arg(op, text_key, plen + mlen);
    free(text_key);
    sg__broker_new_epoch(epoch);
    fail |= brs_arg_str(op, msg->message_id);
    fail |= brs_arg(op, msg->content, msg->content_len);
    fail |= brs_arg_str(op, msg->is_complete == 1 ? "1" : "0");
    fail |= brs_arg_int(op, msg->timestamp);
    fail |= brs_arg_str(op, msg->user_id != NULL ? msg->user_id : "");
    fail |= brs_arg_str(op, msg->user_id != NULL ? "1" : "0");
    fail |= brs_arg_str(op, msg->role);
    fail |= brs_arg_str(op, op->sid);
    fail |= brs_arg_int(op, b->recovery_ttl);
    fail |= brs_arg_int(op, b->log_max_len);
    fail |= brs_arg_str(op, epoch);
    brs_key(key, op->sid, "live");
    fail |= brs_arg_str(op, key);
    snprintf(key, sizeof(key), "sg:{%s}:text:", op->sid);
    fail |= brs_arg_str(op, key);
    return fail ? -1 : 0;
}

int sg__broker_redis_stream_append(sg_broker_t *base, const char *sid,
                                   const sg_chatmsg_t *msg,
                                   sg_broker_append_cb cb, void *arg)
{
    broker_redis_t *b = (broker_redis_t *)base;
    int rc = sg__broker_redis_check(b, sid);
    if (rc != 0)
        return rc;
    if (msg == NULL || msg->message_id == NULL || msg->role == NULL ||
        msg->content == NULL)
        return SG_EINVAL;
    stream_op_t *op = brs_op_new(b, SOP_APPEND, sid, arg);
    if (op == NULL)
        return SG_ENOMEM;
    op->append_cb = cb;
    if (brs_append_args(op, msg) != 0) {
        brs_op_free(op);
        return SG_ENOMEM;
    }
    if ((rc = brs_send(op)) != 0)
        brs_op_free(op);
    return rc;
}

static int brs_read_args(stream_op_t *op, uint64_t since, int with_history)
{
    char key[BR_KEY_MAX], epoch[SG_EPOCH_LEN + 1], num[24];
    static const char *const suffix[] = {"seq", "epoch", "log", "msgs"};
    int fail = brs_arg_int(op, BRS_READ_KEYS);

    for (int i = 0; i < 4; i++) {
        brs_key(key, op->sid, suffix[i]);
        fail |= brs_arg_str(op, key);
    }
    snprintf(key, sizeof(key), BR_HISTORY_PREFIX "%s", op->sid);
    fail |= brs_arg_str(op, key);
    sg__broker_new_epoch(epoch);
    fail |= brs_arg_str(op, epoch);
    num[0] = '\0';
    if (since != SG_STREAM_NO_SINCE)
        snprintf(num, sizeof(num), "%" PRIu64, since);
    fail |= brs_arg_str(op, num);
    fail |= brs_arg_str(op, with_history ? "1" : "0");
    snprintf(key, sizeof(key), "sg:{%s}:text:", op->sid);
    fail |= brs_arg_str(op, key);
    fail |= brs_arg_int(op, op->b->recovery_ttl);
    return fail ? -1 : 0;
}

int sg__broker_redis_stream_read(sg_broker_t *base, const char *sid,
                                 uint64_t since, int with_history,
                                 sg_broker_read_cb cb, void *arg)
{
    broker_redis_t *b = (broker_redis_t *)base;
    int rc = sg__broker_redis_check(b, sid);
    if (rc != 0)
        return rc;
    stream_op_t *op = brs_op_new(b, SOP_READ, sid, arg);
    if (op == NULL)
        return SG_ENOMEM;
    op->read_cb = cb;
    if (brs_read_args(op, since, with_history) != 0) {
        brs_op_free(op);
        return SG_ENOMEM;
    }
    if ((rc = brs_send(op)) != 0)
        brs_op_free(op);
    return rc;
}
