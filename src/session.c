/* Sessions: session_id -> the connections of this node on it, and the
 * broker subscription they share (ref-counted: subscribed with the first
 * connection, unsubscribed when the last one leaves).
 *
 * Join order per connection: welcome (ws.c) -> subscription confirmed ->
 * history read -> history frame -> live frames. Live frames that arrive
 * between the confirmation and the history frame are held by ws.c and
 * queued right after it, so nothing published during a connect is lost
 * (the original read history before subscribing: defect 2). */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>

#include "chatmsg.h"
#include "error.h"
#include "log.h"
#include "map.h"

struct sg_session {
    char *id;
    sg_conn_t *conns;
    uint32_t nconns;
    int subscribed; /* the broker confirmed the subscription */
};

struct sg_sessions {
    sg_server_t *srv;
    sg_map_t *by_id; /* session_id -> sg_session_t */
    uint64_t malformed_logged;
};

typedef struct history_req {
    sg_server_t *srv;
    uint64_t conn_id;
} history_req_t;

/* ---- the registry ---------------------------------------------------- */

static sg_session_t *session_find(sg_sessions_t *ss, const char *id)
{
    return sg_map_get(ss->by_id, id);
}

static void session_free(void *value)
{
    sg_session_t *s = value;
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
    return ss;
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

/* ---- join: history after the subscription ---------------------------- */

static void session_history_done(void *arg, int status,
                                 const char *const *items, const size_t *lens,
                                 size_t n)
{
    history_req_t *req = arg;
    sg_conn_t *c = sg__ws_find(req->srv, req->conn_id);
    sg_server_t *srv = req->srv;
    free(req);
    if (c == NULL)
        return; /* the client left while we were reading */
    c->history_pending = 0;
    if (status != 0) {
        SG_WARN("session", "history read for sid=%s failed: %s; continuing "
                           "without history",
                c->session_id, sg_strerror(status));
        static const char *const labels[] = {"history_read", "session"};
        sg_metric_add(srv->m.errors, labels, 1);
    } else if (n > 0) {
        size_t skipped = 0;
        sg_buf_t *frame = sg_chatmsg_history_frame(items, lens, n, &skipped);
        if (skipped > 0)
            SG_WARN("session", "history of sid=%s: skipped %zu malformed "
                               "entries",
                    c->session_id, skipped);
        if (frame != NULL) {
            sg__ws_enqueue(c, frame, SG_FRAME_HISTORY);
            sg_buf_unref(frame);
        }
    }
    sg__ws_set_live(c);
}

static void session_request_history(sg_server_t *srv, sg_conn_t *c)
{
    if (c->history_pending || c->state == CONN_LIVE)
        return;
    history_req_t *req = malloc(sizeof(*req));
    if (req == NULL) {
        sg__ws_set_live(c);
        return;
    }
    req->srv = srv;
    req->conn_id = c->id;
    int rc = sg_broker_history_get(srv->broker, c->session_id,
                                   session_history_done, req);
    if (rc != 0) {
        free(req);
        SG_WARN("session", "history read for sid=%s not started: %s",
                c->session_id, sg_strerror(rc));
        sg__ws_set_live(c);
        return;
    }
    c->history_pending = 1;
}

void sg__session_on_subscribed(void *arg, const char *sid)
{
    sg_server_t *srv = arg;
    sg_session_t *s = session_find(srv->sessions, sid);
    if (s == NULL)
        return; /* confirmation of a channel we no longer want */
    if (!s->subscribed)
        SG_DEBUG("session", "subscribed sid=%s", sid);
    s->subscribed = 1;
    for (sg_conn_t *c = s->conns; c != NULL; c = c->sess_next)
        session_request_history(srv, c);
}

/* ---- attach / detach ----------------------------------------------- */

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
    c->sess_prev = NULL;
    c->sess_next = s->conns;
    if (s->conns != NULL)
        s->conns->sess_prev = c;
    s->conns = c;
    s->nconns++;
    if (s->subscribed)
        session_request_history(srv, c);
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
    sg_broker_unsubscribe(srv->broker, s->id);
    sg_map_remove(srv->sessions->by_id, s->id);
    sg_metric_add(srv->m.sessions_active, NULL, -1);
    session_free(s);
}

/* ---- ingest ------------------------------------------------------------ */

static void session_malformed(sg_server_t *srv, const char *sid,
                              const char *why)
{
    static const char *const labels[] = {"parse", "ingest"};
    sg_metric_add(srv->m.errors, labels, 1);
    sg_metric_inc1(srv->m.ingest, "malformed");
    /* A broken producer can flood: log the first ten, then every 1000th. */
    uint64_t n = ++srv->sessions->malformed_logged;
    if (n <= 10 || n % 1000 == 0)
        SG_WARN("ingest", "dropped malformed message on sid=%s: %s "
                          "(%llu so far)",
                sid, why, (unsigned long long)n);
}

void sg__session_on_message(void *arg, const char *sid, const char *payload,
                            size_t len)
{
    sg_server_t *srv = arg;
    sg_session_t *s = session_find(srv->sessions, sid);
    if (s == NULL || s->nconns == 0) {
        sg_metric_inc1(srv->m.ingest, "no_listener");
        return;
    }
    sg_chatmsg_t msg;
    char err[160];
    if (sg_chatmsg_parse(payload, len, &msg, err, sizeof(err)) != 0) {
        session_malformed(srv, sid, err);
        return;
    }
    /* Live user messages are not forwarded: the sending tab shows its own
     * optimistic copy and dedups only by message_id (defect 19). */
    if (strcmp(msg.role, "assistant") != 0) {
        sg_metric_inc1(srv->m.ingest, "not_assistant");
        sg_chatmsg_clear(&msg);
        return;
    }
    sg_buf_t *frame = sg_chatmsg_message_frame(&msg);
    sg_chatmsg_clear(&msg);
    if (frame == NULL)
        return;
    sg_metric_inc1(srv->m.ingest, "forwarded");
    for (sg_conn_t *c = s->conns; c != NULL; c = c->sess_next)
        sg__ws_deliver(c, frame, SG_FRAME_MESSAGE);
    sg_buf_unref(frame);
}
