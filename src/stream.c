/* The stream coordinator: idempotent ingest of producer messages into the
 * session's chunk log, fan-out of appended chunks to the connections of
 * this node, and every read that keeps a connection gap-free (join,
 * resume, gap repair after a Redis outage, compat reconnect).
 *
 * Per connection the invariant is: every offset up to c->last_offset has
 * been queued (or is covered by a snapshot frame, which carries the
 * cumulative text), and live chunks are queued only when they continue
 * exactly after it. While a read runs, live chunks are held; when it
 * completes, the held ones past the read's last offset are queued. The
 * subscription is confirmed before any read, so nothing falls between the
 * read and the live stream (the original's defect 2). */
#include "server_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "chatmsg.h"
#include "error.h"
#include "log.h"
#include "map.h"

typedef enum {
    SYNC_JOIN,      /* a new connection: welcome, history/catch-up or replay */
    SYNC_RESUME,    /* {"type":"resume"} on an open socket */
    SYNC_GAP,       /* after a resubscription or a gap in live offsets */
    SYNC_RECONNECT, /* compat {"type":"reconnect"}: answers only */
} sync_kind_t;

typedef struct sync_req {
    sg_server_t *srv;
    uint64_t conn_id;
    uint64_t since;
    sync_kind_t kind;
    int64_t last_index;               /* SYNC_RECONNECT */
    char epoch[SG_EPOCH_LEN * 2 + 1]; /* requested epoch, "" if none */
    char mid[];                       /* SYNC_RECONNECT message id */
} sync_req_t;

static void stream_read_done(void *arg, int status,
                             const sg_stream_state_t *st);

/* ---- helpers ----------------------------------------------------------- */

uint64_t sg__stream_mid_hash(const char *mid)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *mid; mid++) {
        h ^= (unsigned char)*mid;
        h *= 1099511628211ull;
    }
    return h;
}

static void stream_count_error(sg_server_t *srv, const char *type)
{
    sg_metric_inc1(srv->m.stream_errors, type);
}

/* Queues a message frame for chunk or snapshot `k` in c's mode. */
static void stream_send_chunk(sg_conn_t *c, const sg_chunk_t *k)
{
    sg_buf_t *b = sg_chatmsg_chunk_frame(k, c->mode == SG_MODE_DELTA);
    if (b == NULL)
        return;
    sg__ws_enqueue_chunk(c, b, k->offset, sg__stream_mid_hash(k->message_id),
                         !k->is_complete);
    sg_buf_unref(b);
}

static void stream_send_json(sg_conn_t *c, json_t *doc)
{
    char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (s == NULL)
        return;
    sg_buf_t *b = sg_buf_new(s, strlen(s));
    free(s);
    if (b != NULL) {
        sg__ws_enqueue(c, b, SG_FRAME_OTHER);
        sg_buf_unref(b);
    }
}

static void stream_hold(sg_conn_t *c, sg_buf_t *b, uint64_t offset,
                        uint64_t mid, int partial)
{
    if (c->nheld >= (uint32_t)c->srv->cfg->stream.max_pending_chunks) {
        sg_metric_inc(c->srv->m.ws_slow_closes);
        sg__ws_close(c, 4008, "slow consumer");
        return;
    }
    if (c->nheld == c->heldcap) {
        uint32_t cap = c->heldcap ? c->heldcap * 2 : 8;
        sg_qent_t *h = realloc(c->held, cap * sizeof(*h));
        if (h == NULL)
            return;
        c->held = h, c->heldcap = cap;
    }
    sg_qent_t *e = &c->held[c->nheld++];
    e->b = sg_buf_ref(b);
    e->offset = offset;
    e->mid = mid;
    e->partial = (uint8_t)(partial != 0);
    e->kind = SG_FRAME_MESSAGE;
}

void sg__stream_conn_free(sg_conn_t *c)
{
    for (uint32_t i = 0; i < c->nheld; i++)
        sg_buf_unref(c->held[i].b);
    free(c->held);
    c->held = NULL;
    c->nheld = c->heldcap = 0;
}

/* Queues the held frames that continue after last_offset; the connection
 * is live from now on. */
static void stream_go_live(sg_conn_t *c)
{
    for (uint32_t i = 0; i < c->nheld; i++) {
        sg_qent_t *e = &c->held[i];
        if (e->offset > c->last_offset) {
            sg__ws_enqueue_chunk(c, e->b, e->offset, e->mid, e->partial);
            c->last_offset = e->offset;
        }
        sg_buf_unref(e->b);
    }
    c->nheld = 0;
    c->state = CONN_LIVE;
}

static int stream_start_read(sg_server_t *srv, sg_conn_t *c, sync_kind_t kind,
                             uint64_t since, const char *epoch,
                             const char *mid, int64_t last_index)
{
    size_t midlen = mid ? strlen(mid) : 0;
    sync_req_t *req = calloc(1, sizeof(*req) + midlen + 1);
    if (req == NULL)
        return SG_ENOMEM;
    req->srv = srv;
    req->conn_id = c->id;
    req->since = since;
    req->kind = kind;
    req->last_index = last_index;
    if (epoch != NULL)
        snprintf(req->epoch, sizeof(req->epoch), "%s", epoch);
    if (mid != NULL)
        memcpy(req->mid, mid, midlen + 1);
    int rc = sg_broker_stream_read(srv->broker, c->session_id, since,
                                   kind != SYNC_GAP, stream_read_done, req);
    if (rc != 0) {
        free(req);
        return rc;
    }
    if (kind != SYNC_RECONNECT) {
        c->sync_pending = 1;
        c->state = CONN_JOINING;
    }
    return 0;
}

/* ---- what a read sends ------------------------------------------------ */

/* The assistant finals of the history a read returned, indexed by
 * message id (value: position + 1), built at most once per read: a long
 * history times a session's snapshots would otherwise cost that many JSON
 * parses per join. Valid only inside stream_read_done. */
static const sg_stream_state_t *finals_of;
static sg_map_t *finals;

static void stream_index_finals(const sg_stream_state_t *st)
{
    finals_of = st;
    finals = sg_map_new();
    for (size_t i = 0; finals != NULL && i < st->nhistory; i++) {
        sg_chatmsg_t m;
        char err[8];
        if (sg_chatmsg_parse(st->history[i], st->history_lens[i], &m, err,
                             sizeof(err)) != 0)
            continue;
        if (m.is_complete == 1 && strcmp(m.role, "assistant") == 0)
            sg_map_put(finals, m.message_id, (void *)(uintptr_t)(i + 1));
        sg_chatmsg_clear(&m);
    }
}

static void stream_drop_finals(void)
{
    sg_map_free(finals, NULL);
    finals = NULL;
    finals_of = NULL;
}

/* Finds the assistant final of `mid` in chat:history: 1 and the parsed
 * message in *out (caller clears it), or 0. */
static int stream_history_final(const sg_stream_state_t *st, const char *mid,
                                sg_chatmsg_t *out)
{
    if (finals_of != st)
        stream_index_finals(st);
    uintptr_t pos = finals ? (uintptr_t)sg_map_get(finals, mid) : 0;
    char err[8];
    if (pos == 0)
        return 0;
    return sg_chatmsg_parse(st->history[pos - 1], st->history_lens[pos - 1],
                            out, err, sizeof(err)) == 0;
}

/* 1 when `mid` is stored in chat:history as an assistant final. */
static int stream_history_has_final(const sg_stream_state_t *st,
                                    const char *mid)
{
    sg_chatmsg_t m;
    if (!stream_history_final(st, mid, &m))
        return 0;
    sg_chatmsg_clear(&m);
    return 1;
}

static void stream_send_welcome(sg_server_t *srv, sg_conn_t *c,
                                const sg_stream_state_t *st, int recovered)
{
    sg_welcome_info_t info = {srv->cfg->node_id, st->epoch, st->last_offset,
                              recovered};
    sg_buf_t *w = sg_chatmsg_welcome_frame(c->session_id, &info);
    if (w == NULL)
        return;
    sg__ws_enqueue(c, w, SG_FRAME_WELCOME);
    sg_buf_unref(w);
    c->welcomed = 1;
}

static void stream_send_history(sg_conn_t *c, const sg_stream_state_t *st)
{
    if (st->nhistory == 0)
        return;
    size_t skipped = 0;
    sg_buf_t *b = sg_chatmsg_history_frame(st->history, st->history_lens,
                                           st->nhistory, &skipped);
    if (skipped > 0)
        SG_WARN("stream", "history of sid=%s: skipped %zu malformed entries",
                c->session_id, skipped);
    if (b != NULL) {
        sg__ws_enqueue(c, b, SG_FRAME_HISTORY);
        sg_buf_unref(b);
    }
}

/* Catch-up (docs/protocol.md step 3): the latest state of every in-flight
 * answer and every recently completed one that history does not hold yet
 * (a final published before it was stored: defect 1). */
static void stream_catch_up(sg_conn_t *c, const sg_stream_state_t *st)
{
    for (size_t i = 0; i < st->nsnapshots; i++) {
        const sg_chunk_t *k = &st->snapshots[i];
        if (k->offset <= c->last_offset)
            continue;
        /* History already gave this answer's final: a completed snapshot
         * would repeat it, and an in-flight one (a final that reached
         * history but not the log; see stream_repair) would be a partial
         * after the final (defect 7). */
        if (stream_history_has_final(st, k->message_id))
            continue;
        stream_send_chunk(c, k);
    }
}

/* The content of message `mid` in the snapshots, for delta-mode finals. */
static const sg_chunk_t *stream_snapshot_of(const sg_stream_state_t *st,
                                            const char *mid)
{
    for (size_t i = 0; i < st->nsnapshots; i++)
        if (strcmp(st->snapshots[i].message_id, mid) == 0)
            return &st->snapshots[i];
    return NULL;
}

/* Resume replay of everything after `since`. Full mode: one frame per
 * message touched after `since`, built from its snapshot (cumulative, so
 * lossless). Delta mode: every logged delta. */
static void stream_replay(sg_conn_t *c, const sg_stream_state_t *st,
                          uint64_t since)
{
    if (c->mode == SG_MODE_FULL) {
        for (size_t i = 0; i < st->nsnapshots; i++)
            if (st->snapshots[i].offset > since)
                stream_send_chunk(c, &st->snapshots[i]);
        return;
    }
    for (size_t i = 0; i < st->nlog; i++) {
        sg_chunk_t k = st->log[i];
        if (k.offset <= since)
            continue;
        if (k.is_complete) {
            const sg_chunk_t *snap = stream_snapshot_of(st, k.message_id);
            k.content = snap ? snap->content : NULL;
            k.content_len = snap ? snap->content_len : 0;
        }
        stream_send_chunk(c, &k);
    }
}

static int stream_recovered(const sync_req_t *req, const sg_stream_state_t *st)
{
    return req->since != SG_STREAM_NO_SINCE && req->epoch[0] != '\0' &&
           strcmp(req->epoch, st->epoch) == 0 && st->range_ok;
}

/* Remembers that `c` already has the final of `mid` (from the history
 * frame), so the repaired final arriving live is not sent twice. */
static void stream_skip_final(sg_conn_t *c, const char *mid)
{
    uint64_t h = sg__stream_mid_hash(mid);
    size_t n = sizeof(c->skip_final) / sizeof(c->skip_final[0]);
    for (size_t i = 0; i < n; i++) {
        if (c->skip_final[i] == 0 || c->skip_final[i] == h) {
            c->skip_final[i] = h;
            return;
        }
    }
    c->skip_final[0] = h; /* more than four at once: forget the oldest */
}

static int stream_take_skip(sg_conn_t *c, uint64_t mid)
{
    size_t n = sizeof(c->skip_final) / sizeof(c->skip_final[0]);
    for (size_t i = 0; i < n; i++) {
        if (c->skip_final[i] == mid) {
            c->skip_final[i] = 0;
            return 1;
        }
    }
    return 0;
}

/* A final that reached chat:history while its chunks were not being
 * ingested (e.g. the only subscribed node died, or nobody was subscribed)
 * is appended now; the append is idempotent, and the chunk reaches every
 * client live, except `c` when the history frame already gave it one
 * (`c` NULL: no history frame was sent). */
static void stream_repair(sg_server_t *srv, sg_conn_t *c, const char *sid,
                          const sg_stream_state_t *st)
{
    for (size_t i = 0; i < st->nsnapshots; i++) {
        const sg_chunk_t *k = &st->snapshots[i];
        sg_chatmsg_t m;
        if (k->is_complete || !stream_history_final(st, k->message_id, &m))
            continue;
        if (c != NULL)
            stream_skip_final(c, m.message_id);
        sg_broker_stream_append(srv->broker, sid, &m, NULL, NULL);
        sg_chatmsg_clear(&m);
    }
}

/* ---- read completions -------------------------------------------------- */

static void stream_join_done(sg_server_t *srv, sg_conn_t *c,
                             const sync_req_t *req,
                             const sg_stream_state_t *st)
{
    int resumed = req->since != SG_STREAM_NO_SINCE;
    int recovered = stream_recovered(req, st);
    if (resumed)
        sg_metric_inc1(srv->m.recovery_attempts,
                       recovered ? "recovered" : "not_recovered");
    if (!c->welcomed)
        stream_send_welcome(srv, c, st, resumed ? recovered : -1);
    if (recovered) {
        stream_replay(c, st, req->since);
    } else {
        stream_send_history(c, st);
        stream_catch_up(c, st);
    }
}

static void stream_resume_done(sg_server_t *srv, sg_conn_t *c,
                               const sync_req_t *req,
                               const sg_stream_state_t *st)
{
    int recovered = stream_recovered(req, st);
    sg_metric_inc1(srv->m.recovery_attempts,
                   recovered ? "recovered" : "not_recovered");
    if (recovered)
        stream_replay(c, st, req->since);
    stream_send_json(c, json_pack("{s:s, s:b, s:I, s:I}", "type", "resumed",
                                  "recovered", recovered, "from",
                                  (json_int_t)(req->since + 1), "to",
                                  (json_int_t)st->last_offset));
}

static void stream_gap_done(sg_server_t *srv, sg_conn_t *c,
                            const sync_req_t *req, const sg_stream_state_t *st)
{
    if (strcmp(req->epoch, st->epoch) == 0 && st->range_ok) {
        stream_replay(c, st, req->since);
        return;
    }
    if (c->mode == SG_MODE_DELTA) {
        /* deltas cannot be rebuilt: let the client resume and learn that */
        stream_count_error(srv, "gap_unrecoverable");
        sg__ws_close(c, 4008, "stream gap; resume");
        return;
    }
    stream_catch_up(c, st); /* snapshots are cumulative: still lossless */
}

static void stream_reconnect_status(sg_conn_t *c, const char *status,
                                    int64_t n)
{
    sg_metric_inc1(c->srv->m.recovery_attempts, status);
    stream_send_json(c, json_pack("{s:s, s:s, s:I}", "type",
                                  "recovery_status", "status", status,
                                  "chunksRecovered", (json_int_t)n));
}

/* Compat recovery (docs/protocol.md): the newest state of the message, then
 * recovered / completed / not_found / expired. */
static void stream_reconnect_done(sg_conn_t *c, const sync_req_t *req,
                                  const sg_stream_state_t *st)
{
    const sg_chunk_t *k = stream_snapshot_of(st, req->mid);
    if (k != NULL) {
        stream_send_chunk(c, k);
        if (k->is_complete) {
            stream_reconnect_status(c, "completed", 0);
        } else {
            int64_t n = (int64_t)k->index - req->last_index;
            stream_reconnect_status(c, "recovered", n > 0 ? n : 0);
        }
        return;
    }
    sg_chatmsg_t m;
    if (stream_history_final(st, req->mid, &m)) {
        sg_buf_t *b = sg_chatmsg_message_frame(&m);
        sg_chatmsg_clear(&m);
        if (b != NULL) {
            sg__ws_enqueue(c, b, SG_FRAME_MESSAGE);
            sg_buf_unref(b);
        }
        stream_reconnect_status(c, "completed", 0);
        return;
    }
    /* A client that saw chunks of the message knew it existed: the log
     * that held it has expired. Otherwise it never existed here. */
    stream_reconnect_status(c, req->last_index >= 0 ? "expired" : "not_found",
                            0);
}

static void stream_note_inflight(sg_server_t *srv, const char *sid,
                                 const sg_stream_state_t *st)
{
    for (size_t i = 0; i < st->nsnapshots; i++)
        if (!st->snapshots[i].is_complete)
            sg__session_track(srv, sid, st->snapshots[i].message_id, 0);
}

static void stream_read_done(void *arg, int status,
                             const sg_stream_state_t *st)
{
    sync_req_t *req = arg;
    sg_server_t *srv = req->srv;
    sg_conn_t *c = sg__ws_find(srv, req->conn_id);
    if (c == NULL || c->closing) {
        free(req); /* the client left while we were reading */
        return;
    }
    if (req->kind != SYNC_RECONNECT)
        c->sync_pending = 0;
    if (status != 0 || st == NULL) {
        SG_WARN("stream", "stream read for sid=%s failed: %s", c->session_id,
                sg_strerror(status));
        stream_count_error(srv, "read");
        if (req->kind == SYNC_RECONNECT || req->kind == SYNC_RESUME) {
            sg_buf_t *e = sg_chatmsg_error_frame(
                req->kind == SYNC_RESUME ? "Resume failed" : "Recovery failed");
            if (e != NULL) {
                sg__ws_enqueue(c, e, SG_FRAME_ERROR);
                sg_buf_unref(e);
            }
            if (req->kind == SYNC_RESUME)
                stream_go_live(c);
        } else if (req->kind == SYNC_JOIN) {
            /* Redis went away or refused the read (OOM, BUSY, ...): the
             * client still gets its welcome now, and the join is retried
             * by the resubscription or the session sweep (session.c). */
            if (!c->welcomed) {
                sg_welcome_info_t info = {srv->cfg->node_id, NULL, 0, -1};
                sg_buf_t *w = sg_chatmsg_welcome_frame(c->session_id, &info);
                if (w != NULL) {
                    sg__ws_enqueue(c, w, SG_FRAME_WELCOME);
                    sg_buf_unref(w);
                    c->welcomed = 1;
                }
            }
        } else {
            /* Live again; the next resubscription re-reads what is
             * missing (sg__session_on_subscribed). */
            stream_go_live(c);
        }
        free(req);
        return;
    }
    sg__session_set_epoch(srv, c->session_id, st->epoch);
    switch (req->kind) {
    case SYNC_JOIN:
        stream_join_done(srv, c, req, st);
        break;
    case SYNC_RESUME:
        stream_resume_done(srv, c, req, st);
        break;
    case SYNC_GAP:
        stream_gap_done(srv, c, req, st);
        break;
    case SYNC_RECONNECT:
        stream_reconnect_done(c, req, st);
        stream_drop_finals();
        free(req);
        return;
    }
    stream_note_inflight(srv, c->session_id, st);
    if (req->kind != SYNC_GAP) {
        int got_history = req->kind == SYNC_JOIN && !stream_recovered(req, st);
        stream_repair(srv, got_history ? c : NULL, c->session_id, st);
    }
    stream_drop_finals();
    if (c->last_offset < st->last_offset)
        c->last_offset = st->last_offset;
    free(req);
    if (c->closing)
        return;
    stream_go_live(c);
    if (c->resync) {
        c->resync = 0;
        sg__stream_resync(srv, c);
    }
}

/* ---- entry points ------------------------------------------------------ */

void sg__stream_join(sg_server_t *srv, sg_conn_t *c)
{
    if (c->sync_pending || c->closing)
        return;
    int rc = stream_start_read(srv, c, SYNC_JOIN, c->since, c->resume_epoch,
                               NULL, 0);
    if (rc != 0)
        SG_DEBUG("stream", "join of sid=%s waits for the broker: %s",
                 c->session_id, sg_strerror(rc));
}

void sg__stream_resync(sg_server_t *srv, sg_conn_t *c)
{
    if (c->closing)
        return;
    if (c->sync_pending) {
        c->resync = 1;
        return;
    }
    const char *epoch = sg__session_epoch(srv, c->session_id);
    if (stream_start_read(srv, c, SYNC_GAP, c->last_offset, epoch, NULL, 0))
        c->resync = 1; /* retried after the next resubscription */
}

int sg__stream_resume(sg_server_t *srv, sg_conn_t *c, uint64_t since,
                      const char *epoch)
{
    if (c->sync_pending)
        return SG_EBUSY;
    return stream_start_read(srv, c, SYNC_RESUME, since, epoch, NULL, 0);
}

int sg__stream_reconnect(sg_server_t *srv, sg_conn_t *c, const char *mid,
                         int64_t last_index)
{
    return stream_start_read(srv, c, SYNC_RECONNECT, SG_STREAM_NO_SINCE, NULL,
                             mid, last_index);
}

/* ---- live chunks --------------------------------------------------------- */

/* Fans an appended chunk out to this node's connections of the session.
 * The frame is built at most once per mode and shared by every queue. */
void sg__stream_on_chunk(void *arg, const char *sid, const sg_chunk_t *k)
{
    sg_server_t *srv = arg;
    sg__session_track(srv, sid, k->message_id, k->is_complete);
    sg__session_set_epoch(srv, sid, k->epoch);
    sg_buf_t *frames[2] = {NULL, NULL};
    uint64_t mid = sg__stream_mid_hash(k->message_id);
    for (sg_conn_t *c = sg__session_conns(srv, sid); c != NULL;
         c = c->sess_next) {
        if (c->closing)
            continue;
        if (frames[c->mode] == NULL &&
            (frames[c->mode] = sg_chatmsg_chunk_frame(k, c->mode)) == NULL)
            continue;
        sg_buf_t *b = frames[c->mode];
        if (c->state != CONN_LIVE) {
            stream_hold(c, b, k->offset, mid, !k->is_complete);
            continue;
        }
        if (k->offset <= c->last_offset)
            continue; /* already queued or covered by a snapshot */
        if (k->is_complete && stream_take_skip(c, mid)) {
            c->last_offset = k->offset; /* history gave it already */
            continue;
        }
        if (k->offset > c->last_offset + 1) {
            /* a hole (missed publish): read the log, hold this one */
            stream_count_error(srv, "gap");
            stream_hold(c, b, k->offset, mid, !k->is_complete);
            sg__stream_resync(srv, c);
            continue;
        }
        sg__ws_enqueue_chunk(c, b, k->offset, mid, !k->is_complete);
        c->last_offset = k->offset;
    }
    sg_buf_unref(frames[0]);
    sg_buf_unref(frames[1]);
}

/* ---- ingest ------------------------------------------------------------ */

static void stream_append_done(void *arg, int status, uint64_t offset)
{
    sg_server_t *srv = arg;
    if (status == SG_ECANCELED)
        return;
    if (status != 0) {
        stream_count_error(srv, "append");
        sg_metric_inc1(srv->m.ingest, "failed");
        SG_WARN("ingest", "append failed: %s", sg_strerror(status));
        return;
    }
    sg_metric_inc1(srv->m.ingest, offset > 0 ? "appended" : "duplicate");
}

static void stream_malformed(sg_server_t *srv, const char *sid,
                             const char *why)
{
    static const char *const labels[] = {"parse", "ingest"};
    static uint64_t logged;
    sg_metric_add(srv->m.errors, labels, 1);
    sg_metric_inc1(srv->m.ingest, "malformed");
    stream_count_error(srv, "parse");
    /* A broken producer can flood: log the first ten, then every 1000th. */
    if (++logged <= 10 || logged % 1000 == 0)
        SG_WARN("ingest", "dropped malformed message on sid=%s: %s "
                          "(%llu so far)",
                sid, why, (unsigned long long)logged);
}

/* A raw producer message (chat:stream:{sid}): assistant messages are
 * appended to the stream; every node subscribed to the session does this
 * and the append rules log each chunk once. User messages are not
 * forwarded (the sending tab shows its own copy: defect 19). */
void sg__stream_on_message(void *arg, const char *sid, const char *payload,
                           size_t len)
{
    sg_server_t *srv = arg;
    sg_chatmsg_t msg;
    char err[160];
    if (len > srv->cfg->stream.max_message_bytes) {
        snprintf(err, sizeof(err), "%zu bytes, over stream.max_message_bytes "
                                   "(%zu)",
                 len, srv->cfg->stream.max_message_bytes);
        stream_malformed(srv, sid, err);
        return;
    }
    if (sg_chatmsg_parse(payload, len, &msg, err, sizeof(err)) != 0) {
        stream_malformed(srv, sid, err);
        return;
    }
    if (msg.message_id[0] == '\0') {
        sg_chatmsg_clear(&msg);
        stream_malformed(srv, sid, "empty message_id");
        return;
    }
    if (strcmp(msg.role, "assistant") != 0) {
        sg_metric_inc1(srv->m.ingest, "not_assistant");
        sg_chatmsg_clear(&msg);
        return;
    }
    if (!sg_script_on_chunk(srv->script, &msg)) {
        sg_metric_inc1(srv->m.ingest, "dropped_by_script");
        sg_chatmsg_clear(&msg);
        return;
    }
    int rc = sg_broker_stream_append(srv->broker, sid, &msg,
                                     stream_append_done, srv);
    if (rc != 0)
        stream_append_done(srv, rc, 0);
    sg_chatmsg_clear(&msg);
}
