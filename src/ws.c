/* WebSocket connections on /ws/chat: the handshake (path, query, session id,
 * auth through the Lua on_connect hook), the per-connection bounded send
 * queue of shared buffers, inbound frame reassembly and limits, and close
 * handling. HTTP requests on the same protocol are handed to http.c.
 *
 * Browsers send no subprotocol, and lws binds such connections to
 * protocols[0], so this callback serves both HTTP and WebSocket. */
#include "server_internal.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chatmsg.h"
#include "error.h"
#include "log.h"
#include "query.h"

_Static_assert(LWS_PRE <= SG_BUF_HEADROOM, "buffer headroom below LWS_PRE");

#define WS_MAX_FRAGMENT_ARGS 32
#define WS_WRITES_PER_CALLBACK 32

static void ws_conn_free(sg_conn_t *c);

/* ---- helpers ----------------------------------------------------------- */

/* Maps a payload's "type" to a bounded label set for metrics. Only the
 * first bytes are looked at: every frame we build starts with its type. */
static const char *ws_sniff_type(const char *p, size_t len)
{
    static const char *const known[] = {
        "welcome", "history", "message", "error", "pong", "heartbeat_ack",
        "recovery_status", "ping", "heartbeat", "reconnect", "resume",
        "resumed", "cancel", "presence", NULL};
    size_t n = len < 96 ? len : 96;
    const char *t = memmem(p, n, "\"type\":\"", 8);
    if (t == NULL)
        return "other";
    t += 8;
    size_t rest = (size_t)(p + n - t);
    for (int i = 0; known[i] != NULL; i++) {
        size_t kl = strlen(known[i]);
        if (rest > kl && memcmp(t, known[i], kl) == 0 && t[kl] == '"')
            return known[i];
    }
    return "other";
}

static uint32_t ws_slot(uint64_t id)
{
    return (uint32_t)(id & 0xffffffu);
}

static int ws_slot_alloc(sg_server_t *srv, sg_conn_t *c)
{
    if (srv->nfree == 0) {
        uint32_t n = srv->nslots ? srv->nslots * 2 : 64;
        if (n > 0xffffffu)
            return SG_ENOMEM;
        sg_conn_t **slots = realloc(srv->slots, n * sizeof(*slots));
        if (slots == NULL)
            return SG_ENOMEM;
        srv->slots = slots;
        uint32_t *gen = realloc(srv->slot_gen, n * sizeof(*gen));
        if (gen == NULL)
            return SG_ENOMEM;
        srv->slot_gen = gen;
        uint32_t *fr = realloc(srv->free_slots, n * sizeof(*fr));
        if (fr == NULL)
            return SG_ENOMEM;
        srv->free_slots = fr;
        for (uint32_t i = n; i > srv->nslots; i--) {
            srv->slots[i - 1] = NULL;
            srv->slot_gen[i - 1] = 0;
            srv->free_slots[srv->nfree++] = i - 1;
        }
        srv->nslots = n;
    }
    uint32_t slot = srv->free_slots[--srv->nfree];
    srv->slot_gen[slot]++;
    srv->slots[slot] = c;
    c->id = ((uint64_t)srv->slot_gen[slot] << 24) | slot;
    srv->nconns++;
    return 0;
}

static void ws_slot_release(sg_server_t *srv, sg_conn_t *c)
{
    if (c->id == 0)
        return;
    uint32_t slot = ws_slot(c->id);
    assert(slot < srv->nslots && srv->slots[slot] == c);
    srv->slots[slot] = NULL;
    srv->free_slots[srv->nfree++] = slot;
    srv->nconns--;
    c->id = 0;
}

/* Answers a rejected upgrade with a JSON HTTP response; lws completes the
 * transaction when CONFIRM_UPGRADE returns > 0. */
static int ws_reject(struct lws *wsi, unsigned int status, const char *error,
                     const char *detail)
{
    char body[384];
    char detail_esc[256] = "";
    if (detail != NULL) {
        /* detail comes from our own messages, but escape anyway */
        size_t j = 0;
        for (size_t i = 0; detail[i] && j + 2 < sizeof(detail_esc); i++) {
            char ch = detail[i];
            if (ch == '"' || ch == '\\')
                detail_esc[j++] = '\\';
            detail_esc[j++] = (unsigned char)ch < 0x20 ? ' ' : ch;
        }
        detail_esc[j] = '\0';
    }
    int blen;
    if (detail != NULL)
        blen = snprintf(body, sizeof(body),
                        "{\"error\":\"%s\",\"detail\":\"%s\"}", error,
                        detail_esc);
    else
        blen = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", error);

    /* Written by hand: at CONFIRM_UPGRADE lws has not recorded the request's
     * HTTP version yet, so its header helpers answer "HTTP/1.0", which
     * strict WebSocket clients refuse to parse. */
    static const char *const reasons[] = {"400 Bad Request",
                                          "401 Unauthorized", "404 Not Found",
                                          "503 Service Unavailable"};
    const char *status_text = status == 400   ? reasons[0]
                              : status == 401 ? reasons[1]
                              : status == 404 ? reasons[2]
                                              : reasons[3];
    unsigned char buf[LWS_PRE + 1024];
    int n = snprintf((char *)buf + LWS_PRE, sizeof(buf) - LWS_PRE,
                     "HTTP/1.1 %s\r\ncontent-type: application/json\r\n"
                     "content-length: %d\r\nconnection: close\r\n\r\n%s",
                     status_text, blen, body);
    if (n <= 0 || (size_t)n >= sizeof(buf) - LWS_PRE)
        return -1;
    if (lws_write(wsi, buf + LWS_PRE, (size_t)n, LWS_WRITE_HTTP_HEADERS) < 0)
        return -1;
    return 1;
}

/* Reads the query the lws parser split into fragments. lws splits on the
 * raw '&' before it decodes %XX, which is the order docs/protocol.md asks for. */
/* The handshake's query parameters (each malloc'd, NULL when absent). */
typedef struct ws_params {
    char *session_id, *user_id, *token, *since, *epoch, *mode;
} ws_params_t;

static void ws_params_free(ws_params_t *p)
{
    free(p->session_id), free(p->user_id), free(p->token);
    free(p->since), free(p->epoch), free(p->mode);
}

/* Reads every query fragment (lws splits on the raw '&' before decoding).
 * Fails with a message instead of silently skipping what does not fit, so
 * a parameter can never be hidden behind a long or numerous others. */
static int ws_query_params(struct lws *wsi, ws_params_t *p, char *err,
                           size_t errlen)
{
    static const struct {
        const char *prefix;
        size_t off;
    } names[] = {
        {"session_id=", offsetof(ws_params_t, session_id)},
        {"user_id=", offsetof(ws_params_t, user_id)},
        {"token=", offsetof(ws_params_t, token)},
        {"since=", offsetof(ws_params_t, since)},
        {"epoch=", offsetof(ws_params_t, epoch)},
        {"mode=", offsetof(ws_params_t, mode)},
    };
    for (int i = 0;; i++) {
        int flen = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (flen <= 0)
            return 0;
        if (i >= WS_MAX_FRAGMENT_ARGS) {
            snprintf(err, errlen, "too many query parameters (at most %d)",
                     WS_MAX_FRAGMENT_ARGS);
            return SG_EINVAL;
        }
        char *frag = malloc((size_t)flen + 1);
        if (frag == NULL ||
            lws_hdr_copy_fragment(wsi, frag, flen + 1,
                                  WSI_TOKEN_HTTP_URI_ARGS, i) < 0) {
            free(frag);
            snprintf(err, errlen, "unreadable query parameter");
            return SG_EINVAL;
        }
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
            size_t pl = strlen(names[k].prefix);
            char **dst = (char **)((char *)p + names[k].off);
            if (strncmp(frag, names[k].prefix, pl) == 0 && *dst == NULL) {
                *dst = strdup(frag + pl); /* first occurrence wins */
                break;
            }
        }
        free(frag);
    }
}

/* Applies since/epoch/mode to `c`; a message in `err` when one is bad. */
static int ws_stream_params(sg_conn_t *c, const ws_params_t *p, char *err,
                            size_t errlen)
{
    c->since = SG_STREAM_NO_SINCE;
    if (p->since != NULL) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(p->since, &end, 10);
        if (p->since[0] < '0' || p->since[0] > '9' || *end != '\0' ||
            errno != 0 || v >= SG_STREAM_NO_SINCE) {
            snprintf(err, errlen, "since must be a non-negative integer "
                                  "offset");
            return SG_EINVAL;
        }
        c->since = v;
    }
    if (p->epoch != NULL && (c->resume_epoch = strdup(p->epoch)) == NULL)
        return SG_ENOMEM;
    if (p->mode == NULL || strcmp(p->mode, "full") == 0) {
        c->mode = SG_MODE_FULL;
    } else if (strcmp(p->mode, "delta") == 0) {
        c->mode = SG_MODE_DELTA;
    } else {
        snprintf(err, errlen, "mode must be full or delta");
        return SG_EINVAL;
    }
    return 0;
}

static int ws_path_ok(struct lws *wsi)
{
    char uri[128];
    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0)
        return 0;
    return strcmp(uri, "/ws/chat") == 0 || strcmp(uri, "/ws/chat/v2") == 0;
}

/* ---- handshake ------------------------------------------------------- */

static int ws_auth(sg_server_t *srv, struct lws *wsi, sg_conn_t *c,
                   const char *token)
{
    char origin[256] = "";
    int has_origin = lws_hdr_copy(wsi, origin, sizeof(origin),
                                  WSI_TOKEN_ORIGIN) > 0;
    lws_get_peer_simple(wsi, c->remote, sizeof(c->remote));
    const char *remote = c->remote;
    sg_script_connect_req_t req = {
        .session_id = c->session_id,
        .user_id = c->user_id,
        .token = token,
        .path = "/ws/chat",
        .remote_addr = remote,
        .origin = has_origin ? origin : NULL,
    };
    char reason[160] = "", identity[160] = "";
    int ok = sg_script_on_connect(srv->script, &req, reason, sizeof(reason),
                                  identity, sizeof(identity));
    sg_metric_inc1(srv->m.auth_attempts, ok == 1 ? "success" : "failure");
    if (ok != 1) {
        SG_INFO("ws", "handshake rejected sid=%s user=%s from %s: %s",
                c->session_id, c->user_id, remote, reason);
        return 0;
    }
    if (identity[0] != '\0' && strcmp(identity, c->user_id) != 0) {
        char *u = strdup(identity);
        if (u != NULL) {
            free(c->user_id);
            c->user_id = u;
        }
    }
    return 1;
}

/* lws has not allocated the per-wsi user data yet at CONFIRM_UPGRADE, so
 * the handshake state rides on the wsi's opaque pointer until ESTABLISHED
 * moves it into the user data. */
static int ws_confirm_upgrade(sg_server_t *srv, struct lws *wsi)
{
    if (!ws_path_ok(wsi))
        return ws_reject(wsi, 404, "Not found",
                         "WebSocket endpoint is /ws/chat");
    if (srv->stopping)
        return ws_reject(wsi, 503, "Service unavailable", "server draining");
    if ((int)srv->nconns >= srv->cfg->limits.max_connections) {
        sg_metric_inc1(srv->m.ws_connections, "failure");
        return ws_reject(wsi, 503, "Service unavailable",
                         "too many connections");
    }

    ws_params_t p = {0};
    char err[128];
    if (ws_query_params(wsi, &p, err, sizeof(err)) != 0) {
        ws_params_free(&p);
        sg_metric_inc1(srv->m.ws_connections, "failure");
        return ws_reject(wsi, 400, "Bad request", err);
    }
    sg_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        ws_params_free(&p);
        return -1;
    }
    c->srv = srv;
    c->wsi = wsi;
    c->session_id = p.session_id ? p.session_id : strdup("default");
    c->user_id = p.user_id ? p.user_id : strdup("default_user");
    p.session_id = p.user_id = NULL; /* now owned by c */
    int bad = 0;
    if (c->session_id == NULL || c->user_id == NULL) {
        ws_params_free(&p);
        ws_conn_free(c);
        return -1;
    }
    if (!sg_query_session_id_valid(c->session_id, err, sizeof(err)) ||
        ws_stream_params(c, &p, err, sizeof(err)) != 0)
        bad = 1;
    if (bad) {
        sg_metric_inc1(srv->m.ws_connections, "failure");
        ws_params_free(&p);
        ws_conn_free(c);
        return ws_reject(wsi, 400, "Bad request", err);
    }
    int allowed = ws_auth(srv, wsi, c, p.token);
    ws_params_free(&p);
    if (!allowed) {
        sg_metric_inc1(srv->m.ws_connections, "failure");
        ws_conn_free(c);
        return ws_reject(wsi, 401, "Authentication failed", NULL);
    }
    c->authed = 1;
    lws_set_opaque_user_data(wsi, c);
    return 0;
}

static void ws_established(sg_server_t *srv, struct lws *wsi, sg_pss_t *pss)
{
    sg_conn_t *c = lws_get_opaque_user_data(wsi);
    if (pss != NULL)
        pss->conn = c;
    if (c == NULL || pss == NULL || ws_slot_alloc(srv, c) != 0) {
        SG_ERROR("ws", "connection established without handshake state");
        lws_close_reason(wsi, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                         (unsigned char *)"internal error", 14);
        lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
        return;
    }
    c->wsi = wsi;
    c->state = CONN_JOINING;
    sg_metric_add(srv->m.ws_active, NULL, 1);
    sg_metric_inc1(srv->m.ws_connections, "success");
    SG_DEBUG("ws", "connected id=%llu sid=%s user=%s",
             (unsigned long long)c->id, c->session_id, c->user_id);

    /* The welcome normally waits for the join's stream read so it can carry
     * the epoch and offset; with Redis down that could take long, and the
     * frontend's spinner waits for it, so it goes out now without them. */
    if (!sg_broker_is_ready(srv->broker)) {
        sg_welcome_info_t info = {srv->cfg->node_id, NULL, 0, -1};
        sg_buf_t *w = sg_chatmsg_welcome_frame(c->session_id, &info);
        if (w != NULL) {
            sg__ws_enqueue(c, w, SG_FRAME_WELCOME);
            sg_buf_unref(w);
            c->welcomed = 1;
        }
    }
    if (sg__session_attach(srv, c) != 0)
        sg__ws_close(c, LWS_CLOSE_STATUS_UNEXPECTED_CONDITION,
                     "internal error");
}

/* ---- inbound ----------------------------------------------------------- */

/* A client whose requests pile up replies it does not read (a ping
 * flood) stops being read until its queue drains: back-pressure on input
 * instead of a 4008 for a client that does read. */
static void ws_maybe_pause(sg_conn_t *c)
{
    if (!c->rx_paused && c->wsi != NULL &&
        c->qlen >= (uint32_t)c->srv->cfg->stream.max_pending_chunks / 2) {
        c->rx_paused = 1;
        lws_rx_flow_control(c->wsi, 0);
    }
}

/* lua.fast_path: the exact keep-alive frames answered in C. Anything
 * else, even an equivalent frame with spaces, goes to the Lua router. */
static int ws_fast_path(sg_conn_t *c, const char *text, size_t len)
{
    static const struct {
        const char *in, *out;
    } frames[] = {
        {"ping", "pong"},
        {"{\"type\":\"ping\"}", "{\"type\":\"pong\"}"},
        {"{\"type\":\"heartbeat\"}", "{\"type\":\"heartbeat_ack\"}"},
    };
    for (size_t i = 0; i < sizeof(frames) / sizeof(frames[0]); i++) {
        if (len != strlen(frames[i].in) || memcmp(text, frames[i].in, len))
            continue;
        sg_buf_t *b = sg_buf_new(frames[i].out, strlen(frames[i].out));
        if (b != NULL) {
            sg__ws_enqueue(c, b, SG_FRAME_OTHER);
            sg_buf_unref(b);
        }
        return 1;
    }
    return 0;
}

static void ws_dispatch(sg_server_t *srv, sg_conn_t *c, const char *text,
                        size_t len)
{
    const char *type = len == 4 && memcmp(text, "ping", 4) == 0
                           ? "text_ping"
                           : ws_sniff_type(text, len);
    sg_metric_inc1(srv->m.ws_received, type);
    if (srv->cfg->lua.fast_path && ws_fast_path(c, text, len)) {
        ws_maybe_pause(c);
        return;
    }
    sg_script_conn_t info = {c->id, c->session_id, c->user_id, c->remote};
    sg_script_on_message(srv->script, &info, text, len);
    ws_maybe_pause(c);
}

static int ws_receive(sg_server_t *srv, struct lws *wsi, sg_conn_t *c,
                      const char *in, size_t len)
{
    if (c->closing)
        return 0;
    if (lws_frame_is_binary(wsi)) {
        sg_metric_inc1(srv->m.ws_received, "binary");
        lws_close_reason(wsi, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE,
                         (unsigned char *)"binary frames not supported", 27);
        return -1;
    }
    size_t max = srv->cfg->limits.max_frame_bytes;
    if (c->rxlen + len > max) {
        static const char *const labels[] = {"frame_too_big", "ws"};
        sg_metric_add(srv->m.errors, labels, 1);
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)"message too big", 15);
        return -1;
    }
    int final = lws_is_final_fragment(wsi) &&
                lws_remaining_packet_payload(wsi) == 0;
    if (final && c->rxlen == 0) { /* common case: one fragment, no copy */
        ws_dispatch(srv, c, in, len);
        return 0;
    }
    if (c->rxlen + len + 1 > c->rxcap) {
        size_t cap = c->rxcap ? c->rxcap : 1024;
        while (cap < c->rxlen + len + 1)
            cap *= 2;
        char *rx = realloc(c->rx, cap);
        if (rx == NULL)
            return -1;
        c->rx = rx, c->rxcap = cap;
    }
    memcpy(c->rx + c->rxlen, in, len);
    c->rxlen += len;
    if (final) {
        c->rx[c->rxlen] = '\0';
        ws_dispatch(srv, c, c->rx, c->rxlen);
        free(c->rx); /* large messages are rare; keep idle memory small */
        c->rx = NULL, c->rxlen = 0, c->rxcap = 0;
    }
    return 0;
}

/* ---- outbound ---------------------------------------------------------- */

static void ws_queue_clear(sg_conn_t *c)
{
    for (uint32_t i = 0; i < c->qlen; i++)
        sg_buf_unref(c->q[(c->qhead + i) % c->qcap].b);
    c->qhead = c->qlen = 0;
    c->qbytes = 0;
}

static int ws_queue_push(sg_conn_t *c, const sg_qent_t *e)
{
    if (c->qlen == c->qcap) {
        uint32_t cap = c->qcap ? c->qcap * 2 : 8;
        sg_qent_t *q = malloc(cap * sizeof(*q));
        if (q == NULL)
            return SG_ENOMEM;
        for (uint32_t i = 0; i < c->qlen; i++)
            q[i] = c->q[(c->qhead + i) % c->qcap];
        free(c->q);
        c->q = q, c->qcap = cap, c->qhead = 0;
    }
    sg_qent_t *slot = &c->q[(c->qhead + c->qlen) % c->qcap];
    *slot = *e;
    slot->b = sg_buf_ref(e->b);
    c->qlen++;
    c->qbytes += e->b->len;
    return 0;
}

/* Drops the queued frame of message `mid` that a newer frame supersedes.
 * Every enqueue coalesces, so at most one such frame is queued; frames are
 * written whole, so a queued one has not been partly sent. */
static int ws_queue_coalesce(sg_conn_t *c, uint64_t mid)
{
    for (uint32_t i = c->qlen; i-- > 0;) {
        sg_qent_t *e = &c->q[(c->qhead + i) % c->qcap];
        if (!e->partial || e->mid != mid)
            continue;
        c->qbytes -= e->b->len;
        sg_buf_unref(e->b);
        for (uint32_t j = i; j + 1 < c->qlen; j++)
            c->q[(c->qhead + j) % c->qcap] =
                c->q[(c->qhead + j + 1) % c->qcap];
        c->qlen--;
        return 1;
    }
    return 0;
}

/* The byte cap bounds what piles up behind a socket, not single frames: a
 * frame is refused only when the queue is already over it, so one big frame
 * (a long history) always fits; memory stays under the cap plus one frame,
 * whose size stream.max_message_bytes and the history bound. */
static int ws_over_limits(const sg_conn_t *c, size_t add)
{
    const sg_config_t *cfg = c->srv->cfg;
    (void)add;
    return c->qlen >= (uint32_t)cfg->stream.max_pending_chunks ||
           c->qbytes > cfg->stream.max_pending_bytes;
}

static void ws_slow_consumer(sg_conn_t *c)
{
    sg_metric_inc(c->srv->m.ws_slow_closes);
    SG_WARN("ws", "closing slow consumer id=%llu sid=%s (%u frames, %zu bytes "
                  "queued)",
            (unsigned long long)c->id, c->session_id, c->qlen, c->qbytes);
    sg__ws_close(c, 4008, "slow consumer");
}

static int ws_push(sg_conn_t *c, const sg_qent_t *e)
{
    if (c->closing)
        return SG_ECLOSED;
    if (ws_over_limits(c, e->b->len)) {
        ws_slow_consumer(c);
        return SG_EBUSY;
    }
    if (ws_queue_push(c, e) != 0)
        return SG_ENOMEM;
    sg_metric_observe(c->srv->m.ws_queue_depth, NULL, c->qlen);
    if (c->wsi != NULL)
        lws_callback_on_writable(c->wsi);
    return 0;
}

int sg__ws_enqueue(sg_conn_t *c, sg_buf_t *b, enum sg_frame_kind kind)
{
    sg_qent_t e = {b, 0, 0, 0, (uint8_t)kind};
    return ws_push(c, &e);
}

int sg__ws_enqueue_chunk(sg_conn_t *c, sg_buf_t *b, uint64_t offset,
                         uint64_t mid, int partial)
{
    if (c->closing)
        return SG_ECLOSED;
    if (c->mode == SG_MODE_FULL && c->qlen > 0 && ws_queue_coalesce(c, mid))
        sg_metric_inc(c->srv->m.coalesced);
    sg_qent_t e = {b, offset, mid, (uint8_t)(partial != 0),
                   SG_FRAME_MESSAGE};
    return ws_push(c, &e);
}

static void ws_count_sent(sg_conn_t *c, const sg_qent_t *e)
{
    static const char *const kinds[] = {"welcome", "history", "message",
                                        "error"};
    const char *label = e->kind == SG_FRAME_OTHER
                            ? ws_sniff_type((const char *)sg_buf_data(e->b),
                                            e->b->len)
                            : kinds[e->kind];
    sg_metric_inc1(c->srv->m.ws_sent, label);
}

/* Sends our close frame and tells lws to drop the socket. lws 4.1.6 treats
 * a non-zero return from SERVER_WRITEABLE as a failed write and kills the
 * socket without the close frame that lws_close_reason() prepared, so the
 * frame is written here explicitly. */
static int ws_send_close(sg_conn_t *c, struct lws *wsi)
{
    unsigned char buf[LWS_PRE + 125];
    size_t rlen = strlen(c->close_reason);
    if (rlen > 123)
        rlen = 123;
    buf[LWS_PRE] = (unsigned char)(c->close_code >> 8);
    buf[LWS_PRE + 1] = (unsigned char)(c->close_code & 0xff);
    memcpy(buf + LWS_PRE + 2, c->close_reason, rlen);
    /* 4 is lws' private LWS_WRITE_CLOSE: the public header leaves it to
     * lws_close_reason(), which cannot send from this callback. */
    if (lws_write(wsi, buf + LWS_PRE, 2 + rlen, (enum lws_write_protocol)4) <
        0)
        return -1;
    /* Keep reading until the peer answers with its close frame (lws then
     * finishes the handshake) or 2 s pass. Dropping the socket at once
     * made the kernel reset it when the client had frames in flight, and
     * the client lost our close frame (it saw 1006). */
    c->close_sent = 1;
    lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, 2);
    return 0;
}

/* Writes queued frames while the kernel takes them (a burst from one
 * Redis read must not need one loop turn per frame), then resumes reading
 * once the queue has drained (see ws_receive). */
static int ws_writeable(sg_conn_t *c, struct lws *wsi)
{
    if (c->close_sent)
        return 0;
    if (c->closing && c->qlen == 0)
        return ws_send_close(c, wsi);
    for (int i = 0; i < WS_WRITES_PER_CALLBACK && c->qlen > 0; i++) {
        if (i > 0 && lws_send_pipe_choked(wsi))
            break;
        sg_qent_t e = c->q[c->qhead];
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
        c->qbytes -= e.b->len;
        ws_count_sent(c, &e);
        int n = lws_write(wsi, sg_buf_data(e.b), e.b->len, LWS_WRITE_TEXT);
        sg_buf_unref(e.b);
        if (n < 0)
            return -1;
    }
    if (c->rx_paused &&
        c->qlen <= (uint32_t)c->srv->cfg->stream.max_pending_chunks / 4) {
        c->rx_paused = 0;
        lws_rx_flow_control(wsi, 1);
    }
    if (c->qlen > 0 || c->closing) /* closing: the close frame is next */
        lws_callback_on_writable(wsi);
    return 0;
}

static void ws_start_close(sg_conn_t *c, int code, const char *reason,
                           int flush)
{
    if (c->closing)
        return;
    c->closing = 1;
    c->close_code = (uint16_t)code;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
    if (!flush)
        ws_queue_clear(c);
    if (c->wsi != NULL) {
        lws_callback_on_writable(c->wsi);
        /* A peer that never reads never makes us writable: bound the wait. */
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, 5);
    }
}

void sg__ws_close(sg_conn_t *c, int code, const char *reason)
{
    ws_start_close(c, code, reason, 0);
}

void sg__ws_close_after_flush(sg_conn_t *c, int code, const char *reason)
{
    ws_start_close(c, code, reason, 1);
}

void sg__ws_close_all(sg_server_t *srv, int code, const char *reason)
{
    for (uint32_t i = 0; i < srv->nslots; i++)
        if (srv->slots[i] != NULL)
            sg__ws_close(srv->slots[i], code, reason);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void ws_conn_free(sg_conn_t *c)
{
    ws_queue_clear(c);
    sg__stream_conn_free(c);
    sg__conn_data_free(c);
    free(c->q);
    free(c->resume_epoch);
    free(c->rx);
    free(c->session_id);
    free(c->user_id);
    free(c);
}

static void ws_closed(sg_server_t *srv, struct lws *wsi, sg_pss_t *pss)
{
    sg_conn_t *c = lws_get_opaque_user_data(wsi);
    lws_set_opaque_user_data(wsi, NULL);
    if (pss != NULL)
        pss->conn = NULL;
    if (c == NULL)
        return;
    if (c->id != 0) {
        sg__session_detach(srv, c);
        sg_script_conn_t info = {c->id, c->session_id, c->user_id, c->remote};
        sg_script_on_disconnect(srv->script, &info);
        sg_metric_add(srv->m.ws_active, NULL, -1);
        sg_metric_inc(srv->m.ws_disconnections);
        SG_DEBUG("ws", "disconnected id=%llu sid=%s",
                 (unsigned long long)c->id, c->session_id);
        ws_slot_release(srv, c);
    } else if (c->authed && srv->script != NULL) {
        /* on_connect allowed it, but the upgrade failed before ESTABLISHED:
         * scripts that counted it there (presence) must uncount it. */
        sg_script_conn_t info = {0, c->session_id, c->user_id, c->remote};
        sg_script_on_disconnect(srv->script, &info);
    }
    c->wsi = NULL;
    ws_conn_free(c);
}

sg_conn_t *sg__ws_find(sg_server_t *srv, uint64_t id)
{
    uint32_t slot = ws_slot(id);
    if (slot >= srv->nslots)
        return NULL;
    sg_conn_t *c = srv->slots[slot];
    return c != NULL && c->id == id ? c : NULL;
}

/* ---- the protocol callback ------------------------------------------- */

int sg__ws_callback(struct lws *wsi, enum lws_callback_reasons reason,
                    void *user, void *in, size_t len)
{
    struct lws_context *ctx = lws_get_context(wsi);
    sg_server_t *srv = ctx ? lws_context_user(ctx) : NULL;
    sg_pss_t *pss = user;

    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        if (in == NULL || strcmp(in, "websocket") != 0)
            return -1;
        return ws_confirm_upgrade(srv, wsi);
    case LWS_CALLBACK_ESTABLISHED:
        ws_established(srv, wsi, pss);
        return 0;
    case LWS_CALLBACK_RECEIVE:
        if (pss == NULL || pss->conn == NULL)
            return -1;
        return ws_receive(srv, wsi, pss->conn, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (pss == NULL || pss->conn == NULL)
            return -1;
        return ws_writeable(pss->conn, wsi);
    case LWS_CALLBACK_CLOSED:
        ws_closed(srv, wsi, pss);
        return 0;
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_WSI_DESTROY:
        /* an upgrade that failed after CONFIRM_UPGRADE leaves state here */
        ws_closed(srv, wsi, NULL);
        return sg__http_callback(wsi, reason, user, in, len);
    default:
        return sg__http_callback(wsi, reason, user, in, len);
    }
}
