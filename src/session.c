/* Sessions: session_id -> the connections of this node on it, the broker
 * subscription they share (ref-counted: subscribed with the first
 * connection, unsubscribed when the last one leaves), the epoch their
 * offsets refer to, and the answers in flight.
 *
 * Linger: when the last connection leaves while an answer is still
 * streaming, the session stays subscribed for stream.linger seconds (or
 * until the answer completes), so the compat ingest keeps logging the
 * producer's chunks and a page reload finds no hole in the log. A sweep
 * timer ends lingering sessions. */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "log.h"
#include "map.h"

#define SESSION_SWEEP_MS 1000
#define SESSION_MAX_INFLIGHT 256

typedef struct inflight {
    uint64_t first_seen_ms;
    uint32_t chunks;
} inflight_t;

struct sg_session {
    char *id;
    sg_conn_t *conns;
    uint32_t nconns;
    int subscribed;            /* the broker confirmed the subscription */
    uint64_t linger_until_ms;  /* 0: not lingering */
    sg_map_t *inflight;        /* message_id -> inflight_t (lazily made) */
    char epoch[SG_EPOCH_LEN + 1];
};

struct sg_sessions {
    sg_server_t *srv;
    sg_map_t *by_id;  /* session_id -> sg_session_t */
    uv_timer_t sweep; /* ends lingering sessions */
    size_t lingering;
};

static void session_free(void *value);

/* ---- the registry ---------------------------------------------------- */

static sg_session_t *session_find(sg_sessions_t *ss, const char *id)
{
    return sg_map_get(ss->by_id, id);
}

static void session_destroy(sg_server_t *srv, sg_session_t *s)
{
    sg_broker_unsubscribe(srv->broker, s->id);
    sg_map_remove(srv->sessions->by_id, s->id);
    if (s->linger_until_ms != 0)
        srv->sessions->lingering--;
    sg_metric_add(srv->m.sessions_active, NULL, -1);
    session_free(s);
}

static int session_visit_linger(void *ctx, const char *key, void *value)
{
    sg_server_t *srv = ctx;
    sg_session_t *s = value;
    if (s->linger_until_ms == 0 || s->nconns > 0)
        return 0;
    size_t inflight = s->inflight ? sg_map_count(s->inflight) : 0;
    if (inflight > 0 && sg__now_ms() < s->linger_until_ms)
        return 0;
    SG_DEBUG("session", "linger of sid=%s ended (%zu answers in flight)",
             s->id, inflight);
    sg_broker_unsubscribe(srv->broker, s->id);
    srv->sessions->lingering--;
    sg_metric_add(srv->m.sessions_active, NULL, -1);
    session_free(s);
    return 1; /* remove from the map */
}

/* Joins whose stream read failed (Redis refused it: OOM, BUSY...) are
 * retried here, once a second, while Redis is ready. */
static int session_visit_retry(void *ctx, const char *key, void *value)
{
    sg_server_t *srv = ctx;
    sg_session_t *s = value;
    if (!s->subscribed)
        return 0;
    for (sg_conn_t *c = s->conns; c != NULL; c = c->sess_next)
        if (c->state == CONN_JOINING && !c->sync_pending && !c->closing)
            sg__stream_join(srv, c);
    return 0;
}

static void session_on_sweep(uv_timer_t *t)
{
    sg_server_t *srv = t->data;
    if (srv->sessions->lingering > 0)
        sg_map_foreach(srv->sessions->by_id, session_visit_linger, srv);
    if (sg_broker_is_ready(srv->broker))
        sg_map_foreach(srv->sessions->by_id, session_visit_retry, srv);
}

static void session_free(void *value)
{
    sg_session_t *s = value;
    if (s->inflight != NULL)
        sg_map_free(s->inflight, free);
    free(s->id);
    free(s);
}

sg_sessions_t *sg__sessions_new(sg_server_t *srv)
{
    sg_sessions_t *ss = calloc(1, sizeof(*ss));
    if (ss == NULL)
        return NULL;
    ss->srv = srv;
    ss->by_id = sg_map_new();
    if (ss->by_id == NULL) {
        free(ss);
        return NULL;
    }
    uv_timer_init(srv->loop, &ss->sweep);
    ss->sweep.data = srv;
    uv_timer_start(&ss->sweep, session_on_sweep, SESSION_SWEEP_MS,
                   SESSION_SWEEP_MS);
    uv_unref((uv_handle_t *)&ss->sweep);
    return ss;
}

void sg__sessions_close(sg_sessions_t *ss)
{
    if (ss != NULL && !uv_is_closing((uv_handle_t *)&ss->sweep))
        uv_close((uv_handle_t *)&ss->sweep, NULL);
}

void sg__sessions_free(sg_sessions_t *ss)
{
    if (ss == NULL)
        return;
    sg_map_free(ss->by_id, session_free);
    free(ss);
}

size_t sg__sessions_count(const sg_sessions_t *ss)
{
    return sg_map_count(ss->by_id);
}

sg_conn_t *sg__session_conns(sg_server_t *srv, const char *sid)
{
    sg_session_t *s = session_find(srv->sessions, sid);
    return s != NULL ? s->conns : NULL;
}

/* ---- epoch and answers in flight ------------------------------------ */

const char *sg__session_epoch(sg_server_t *srv, const char *sid)
{
    sg_session_t *s = session_find(srv->sessions, sid);
    return s != NULL && s->epoch[0] != '\0' ? s->epoch : NULL;
}

/* Returns 1 when the session had another epoch: the offsets its
 * connections hold mean nothing any more, so they restart from 0. */
int sg__session_set_epoch(sg_server_t *srv, const char *sid,
                          const char *epoch)
{
    sg_session_t *s = session_find(srv->sessions, sid);
    if (s == NULL || epoch == NULL || strcmp(s->epoch, epoch) == 0)
        return 0;
    int changed = s->epoch[0] != '\0';
    snprintf(s->epoch, sizeof(s->epoch), "%s", epoch);
    if (changed) {
        SG_INFO("session", "sid=%s: stream epoch changed to %s (log was "
                           "lost or expired); offsets restart",
                sid, epoch);
        for (sg_conn_t *c = s->conns; c != NULL; c = c->sess_next) {
            c->last_offset = 0;
            /* A delta reader cannot rebuild text across the reset (the
             * next delta of an answer is its whole text again): it must
             * resume, learn recovered:false and reload from history. */
            if (c->mode == SG_MODE_DELTA)
                sg__ws_close(c, 4008, "stream reset; resume");
        }
    }
    return changed;
}

static void session_completed(sg_server_t *srv, sg_session_t *s,
                              const char *mid)
{
    inflight_t *f = s->inflight ? sg_map_remove(s->inflight, mid) : NULL;
    sg_metric_inc(srv->m.stream_completed);
    if (f != NULL) {
        sg_metric_observe(srv->m.stream_duration, NULL,
                          (double)(sg__now_ms() - f->first_seen_ms) / 1000.0);
        sg_metric_observe(srv->m.stream_chunks, NULL, f->chunks + 1.0);
        free(f);
    }
}

void sg__session_track(sg_server_t *srv, const char *sid, const char *mid,
                       int complete)
{
    sg_session_t *s = session_find(srv->sessions, sid);
    if (s == NULL)
        return;
    if (complete) {
        session_completed(srv, s, mid);
        return;
    }
    if (s->inflight == NULL && (s->inflight = sg_map_new()) == NULL)
        return;
    inflight_t *f = sg_map_get(s->inflight, mid);
    if (f != NULL) {
        f->chunks++;
        return;
    }
    if (sg_map_count(s->inflight) >= SESSION_MAX_INFLIGHT)
        return; /* a producer that never finishes must not grow memory */
    f = calloc(1, sizeof(*f));
    if (f == NULL)
        return;
    f->first_seen_ms = sg__now_ms();
    f->chunks = 1;
    if (sg_map_put(s->inflight, mid, f) != 0) {
        free(f);
        return;
    }
    sg_metric_inc(srv->m.stream_started);
}

/* ---- subscription and join ------------------------------------------ */

void sg__session_on_subscribed(void *arg, const char *sid)
{
    sg_server_t *srv = arg;
    sg_session_t *s = session_find(srv->sessions, sid);
    if (s == NULL)
        return; /* confirmation of a channel we no longer want */
    int first = !s->subscribed;
    s->subscribed = 1;
    SG_DEBUG("session", "%s sid=%s", first ? "subscribed" : "resubscribed",
             sid);
    for (sg_conn_t *c = s->conns; c != NULL; c = c->sess_next) {
        if (c->state == CONN_LIVE)
            sg__stream_resync(srv, c); /* fill what the outage lost */
        else if (!c->sync_pending)
            sg__stream_join(srv, c);
    }
}

static sg_session_t *session_create(sg_server_t *srv, const char *sid)
{
    sg_session_t *s = calloc(1, sizeof(*s));
    if (s == NULL || (s->id = strdup(sid)) == NULL) {
        free(s);
        return NULL;
    }
    if (sg_map_put(srv->sessions->by_id, sid, s) != 0) {
        session_free(s);
        return NULL;
    }
    if (sg_broker_subscribe(srv->broker, sid) != 0) {
        sg_map_remove(srv->sessions->by_id, sid);
        session_free(s);
        return NULL;
    }
    sg_metric_add(srv->m.sessions_active, NULL, 1);
    return s;
}

int sg__session_attach(sg_server_t *srv, sg_conn_t *c)
{
    sg_session_t *s = session_find(srv->sessions, c->session_id);
    if (s == NULL && (s = session_create(srv, c->session_id)) == NULL)
        return SG_ENOMEM;
    if (s->linger_until_ms != 0) {
        s->linger_until_ms = 0;
        srv->sessions->lingering--;
    }
    c->sess_prev = NULL;
    c->sess_next = s->conns;
    if (s->conns != NULL)
        s->conns->sess_prev = c;
    s->conns = c;
    s->nconns++;
    if (s->subscribed)
        sg__stream_join(srv, c);
    return 0;
}

void sg__session_detach(sg_server_t *srv, sg_conn_t *c)
{
    sg_session_t *s = session_find(srv->sessions, c->session_id);
    if (s == NULL)
        return;
    if (c->sess_prev != NULL)
        c->sess_prev->sess_next = c->sess_next;
    else if (s->conns == c)
        s->conns = c->sess_next;
    else
        return; /* never attached */
    if (c->sess_next != NULL)
        c->sess_next->sess_prev = c->sess_prev;
    c->sess_next = c->sess_prev = NULL;
    if (--s->nconns > 0)
        return;
    size_t inflight = s->inflight ? sg_map_count(s->inflight) : 0;
    if (inflight > 0 && srv->cfg->stream.linger > 0 && !srv->stopping) {
        s->linger_until_ms =
            sg__now_ms() + (uint64_t)(srv->cfg->stream.linger * 1000.0);
        srv->sessions->lingering++;
        SG_DEBUG("session", "sid=%s lingers %.1fs (%zu answers in flight)",
                 s->id, srv->cfg->stream.linger, inflight);
        return;
    }
    session_destroy(srv, s);
}
