/* The server object: builds the metrics registry, the broker (memory or
 * Redis), the Lua host and the libwebsockets context on one libuv loop;
 * runs it; and stops it gracefully (WebSockets close with 1001, then every
 * handle is closed so the loop ends with nothing left behind).
 *
 * lws 4.1.6 on a foreign loop has two traps we work around here (see
 * notes/deps.md §1): a failed bind still returns a context unless vhosts
 * are explicit, and the context must be destroyed twice, once inside the
 * loop and once after uv_run returns, or it leaks. */
#include "server_internal.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "http_client.h"
#include "log.h"
#include "reload.h"
#include "script_api_http.h"

#define SERVER_DRAIN_MS 3000
#define SERVER_DRAIN_TICK_MS 25

static const struct lws_protocols server_protocols[] = {
    /* protocols[0] gets connections without a subprotocol (browsers). */
    {"chat", sg__ws_callback, sizeof(sg_pss_t), 4096, 0, NULL, 0},
    SG_HTTP_CLIENT_PROTOCOL_ENTRY, /* sg.http.request's connections */
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- small public helpers ---------------------------------------------- */

const char *sg_version(void)
{
    return SG_VERSION;
}

uint64_t sg__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)(ts.tv_nsec / 1000000);
}

sg_config_t *sg_config_open(const char *path, char *err, size_t errlen)
{
    sg_config_t *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        snprintf(err, errlen, "no memory");
        return NULL;
    }
    if (sg_config_load(cfg, path, err, errlen) != 0) {
        free(cfg);
        return NULL;
    }
    return cfg;
}

int sg_config_set_port(sg_config_t *cfg, int port)
{
    if (port < 1 || port > 65535)
        return SG_EINVAL;
    cfg->port = port;
    return 0;
}

void sg_config_close(sg_config_t *cfg)
{
    if (cfg == NULL)
        return;
    sg_config_free(cfg);
    free(cfg);
}

void *sg_server_get_data(const sg_server_t *srv)
{
    return srv->data;
}

void sg_server_set_data(sg_server_t *srv, void *data)
{
    srv->data = data;
}

/* ---- metrics ----------------------------------------------------------- */

static const double server_depth_buckets[] = {0, 1, 2, 5, 10, 50, 100, 500,
                                              1000};

static int server_register_metrics(sg_server_t *srv)
{
    sg_metrics_t *r = srv->metrics;
    sg_core_metrics_t *m = &srv->m;
#define REG(field, type, name, help, labels)                                   \
    if ((m->field = sg_metrics_register(r, type, name, help, labels, NULL,     \
                                        0)) == NULL)                           \
        return SG_ENOMEM;
    REG(ws_active, SG_METRIC_GAUGE, "websocket_active_connections",
        "Open WebSocket connections on this node", NULL)
    REG(ws_connections, SG_METRIC_COUNTER, "websocket_connections_total",
        "WebSocket handshakes by result", "status")
    REG(ws_disconnections, SG_METRIC_COUNTER,
        "websocket_disconnections_total",
        "WebSocket connections closed after being established", NULL)
    REG(ws_received, SG_METRIC_COUNTER, "websocket_messages_received_total",
        "Inbound WebSocket messages by frame type", "type")
    REG(ws_sent, SG_METRIC_COUNTER, "websocket_messages_sent_total",
        "Outbound WebSocket messages queued, by frame type", "type")
    REG(ws_slow_closes, SG_METRIC_COUNTER,
        "websocket_slow_consumer_closes_total",
        "Connections closed with 4008 because their send queue was full",
        NULL)
    REG(auth_attempts, SG_METRIC_COUNTER, "authentication_attempts_total",
        "WebSocket authentication decisions by result", "status")
    REG(errors, SG_METRIC_COUNTER, "errors_total",
        "Errors by type and component", "type,component")
    REG(sessions_active, SG_METRIC_GAUGE, "stream_active_sessions",
        "Sessions with at least one connection on this node", NULL)
    REG(ingest, SG_METRIC_COUNTER, "stream_ingest_messages_total",
        "Producer messages received on session channels, by outcome",
        "result")
    REG(subscriptions, SG_METRIC_GAUGE, "broker_subscriptions",
        "Session channels this node is subscribed to", NULL)
    REG(redis_up, SG_METRIC_GAUGE, "redis_up",
        "1 when the Redis connections are ready (embedded mode: 1)", NULL)
    REG(http_requests, SG_METRIC_COUNTER, "http_requests_total",
        "HTTP responses by route kind and status class", "route,status")
    REG(lua_errors, SG_METRIC_COUNTER, "lua_errors_total",
        "Errors raised by Lua hooks", NULL)
    if (sg_metrics_register(r, SG_METRIC_COUNTER, "lua_reloads_total",
                            "Hot reloads of the Lua scripts by result",
                            "result", NULL, 0) == NULL)
        return SG_ENOMEM;
    REG(rss, SG_METRIC_GAUGE, "process_resident_memory_bytes",
        "Resident memory size in bytes", NULL)
    REG(fds, SG_METRIC_GAUGE, "process_open_fds", "Open file descriptors",
        NULL)
    REG(uptime, SG_METRIC_GAUGE, "process_uptime_seconds",
        "Seconds since the server started", NULL)
    REG(coalesced, SG_METRIC_COUNTER, "stream_coalesced_frames_total",
        "Queued partials dropped because a newer frame of the same message "
        "superseded them (slow readers, full mode)", NULL)
    REG(stream_started, SG_METRIC_COUNTER, "stream_started_total",
        "Answers that started streaming to sessions of this node", NULL)
    REG(stream_completed, SG_METRIC_COUNTER, "stream_completed_total",
        "Answers that completed on sessions of this node", NULL)
    REG(stream_errors, SG_METRIC_COUNTER, "stream_errors_total",
        "Stream failures by type (parse, append, read, gap, "
        "gap_unrecoverable)", "type")
    REG(recovery_attempts, SG_METRIC_COUNTER, "recovery_attempts_total",
        "Resume and compat reconnect outcomes", "status")
#undef REG
    static const double duration_buckets[] = {0.5, 1, 2.5, 5, 10, 30, 60,
                                               120, 300};
    static const double chunk_buckets[] = {1, 10, 50, 100, 250, 500, 1000,
                                           5000};
    m->stream_duration = sg_metrics_register(
        r, SG_METRIC_HISTOGRAM, "stream_duration_seconds",
        "Time from the first to the final chunk of an answer", NULL,
        duration_buckets, sizeof(duration_buckets) / sizeof(double));
    m->stream_chunks = sg_metrics_register(
        r, SG_METRIC_HISTOGRAM, "stream_chunks", "Chunks per answer", NULL,
        chunk_buckets, sizeof(chunk_buckets) / sizeof(double));
    if (m->stream_duration == NULL || m->stream_chunks == NULL)
        return SG_ENOMEM;
    m->ws_queue_depth = sg_metrics_register(
        r, SG_METRIC_HISTOGRAM, "websocket_send_queue_depth",
        "Frames queued on a connection when a new frame is added", NULL,
        server_depth_buckets,
        sizeof(server_depth_buckets) / sizeof(server_depth_buckets[0]));
    return m->ws_queue_depth ? 0 : SG_ENOMEM;
}

static double server_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = 0;
    fclose(f);
    return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

static double server_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return 0;
    double n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the DIR itself */
}

static void server_collect(sg_metrics_t *reg, void *arg)
{
    sg_server_t *srv = arg;
    sg_metric_set(srv->m.rss, NULL, server_rss_bytes());
    sg_metric_set(srv->m.fds, NULL, server_open_fds());
    sg_metric_set(srv->m.uptime, NULL,
                  (double)(sg__now_ms() - srv->started_ms) / 1000.0);
    sg_metric_set(srv->m.redis_up, NULL, sg_broker_is_ready(srv->broker));
    sg_metric_set(srv->m.subscriptions, NULL,
                  (double)sg_broker_subscription_count(srv->broker));
    sg_metric_set(srv->m.lua_errors, NULL,
                  (double)sg_script_errors(srv->script));
}

/* ---- broker and script glue ------------------------------------------- */

static void server_broker_state(void *arg, int ready)
{
    sg_server_t *srv = arg;
    sg_metric_set(srv->m.redis_up, NULL, ready);
}

static int server_script_send(void *data, uint64_t conn_id, const char *text,
                              size_t len)
{
    sg_conn_t *c = sg__ws_find(data, conn_id);
    if (c == NULL || c->closing)
        return SG_ECLOSED;
    sg_buf_t *b = sg_buf_new(text, len);
    if (b == NULL)
        return SG_ENOMEM;
    int rc = sg__ws_enqueue(c, b, SG_FRAME_OTHER);
    sg_buf_unref(b);
    return rc;
}

static int server_script_resume(void *data, uint64_t conn_id, uint64_t since,
                                const char *epoch)
{
    sg_conn_t *c = sg__ws_find(data, conn_id);
    if (c == NULL || c->closing)
        return SG_ECLOSED;
    return sg__stream_resume(data, c, since, epoch);
}

static int server_script_reconnect(void *data, uint64_t conn_id,
                                   const char *mid, int64_t last_index)
{
    sg_conn_t *c = sg__ws_find(data, conn_id);
    if (c == NULL || c->closing)
        return SG_ECLOSED;
    return sg__stream_reconnect(data, c, mid, last_index);
}

static int server_script_data_set(void *data, uint64_t conn_id,
                                  const char *key, int type, const char *value,
                                  size_t len)
{
    sg_conn_t *c = sg__ws_find(data, conn_id);
    if (c == NULL || c->closing)
        return SG_ECLOSED;
    return sg__conn_data_set(c, key, type, value, len);
}

static int server_script_data_get(void *data, uint64_t conn_id,
                                  const char *key, int *type,
                                  const char **value, size_t *len)
{
    sg_conn_t *c = sg__ws_find(data, conn_id);
    if (c == NULL)
        return SG_ECLOSED;
    return sg__conn_data_get(c, key, type, value, len);
}

static int server_script_close(void *data, uint64_t conn_id, int code,
                               const char *reason)
{
    sg_conn_t *c = sg__ws_find(data, conn_id);
    if (c == NULL || c->closing)
        return SG_ECLOSED;
    sg__ws_close_after_flush(c, code, reason ? reason : "");
    return 0;
}

/* ---- lws ----------------------------------------------------------------- */

static void server_lws_log(int level, const char *line)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    sg_log(level == LLL_ERR ? SG_LOG_ERROR : SG_LOG_WARN, "lws", "%.*s",
           (int)n, line);
}

static int server_lws_start(sg_server_t *srv, char *err, size_t errlen)
{
    const sg_config_t *cfg = srv->cfg;
    lws_set_log_level(LLL_ERR, server_lws_log);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    void *foreign_loops[1] = {srv->loop};
    info.foreign_loops = foreign_loops;
    /* DISABLE_IPV6: with IPv6 on, an IPv4 iface binds every interface. */
    info.options = LWS_SERVER_OPTION_LIBUV |
                   LWS_SERVER_OPTION_VALIDATE_UTF8 |
                   LWS_SERVER_OPTION_DISABLE_IPV6 |
                   LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.protocols = server_protocols;
    info.port = cfg->port;
    info.iface = strcmp(cfg->listen, "0.0.0.0") == 0 ? NULL : cfg->listen;
    info.user = srv;
    /* Long JWTs in the query: 8 KiB of headers. Larger requests are
     * dropped by lws 4.1.6 without a response (a known limit). */
    info.max_http_header_data = 8192;
    info.timeout_secs = 30;
    info.vhost_name = "streamgate";
    srv->lws = lws_create_context(&info);
    if (srv->lws == NULL) {
        snprintf(err, errlen, "cannot create the WebSocket context");
        return SG_EIO;
    }
    srv->vhost = lws_create_vhost(srv->lws, &info);
    if (srv->vhost == NULL) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use or "
                              "not available)",
                 cfg->listen, cfg->port);
        return SG_EIO;
    }
    return 0;
}

/* ---- construction ------------------------------------------------------ */

static void server_on_signal(uv_signal_t *h, int signum)
{
    sg_server_t *srv = h->data;
    SG_INFO("server", "received %s, shutting down",
            signum == SIGTERM ? "SIGTERM" : "SIGINT");
    sg_server_stop(srv);
}

static int server_build(sg_server_t *srv, char *err, size_t errlen)
{
    const sg_config_t *cfg = srv->cfg;
    srv->metrics = sg_metrics_new();
    if (srv->metrics == NULL || server_register_metrics(srv) != 0) {
        snprintf(err, errlen, "no memory for metrics");
        return SG_ENOMEM;
    }
    sg_metrics_set_collect_cb(srv->metrics, server_collect, srv);
    srv->sessions = sg__sessions_new(srv);
    if (srv->sessions == NULL) {
        snprintf(err, errlen, "no memory");
        return SG_ENOMEM;
    }
    sg_broker_handlers_t bh = {sg__stream_on_message,
                               sg__session_on_subscribed,
                               server_broker_state, srv, sg__stream_on_chunk};
    srv->broker = cfg->redis.enabled
                      ? sg_broker_redis_new(srv->loop, cfg, &bh)
                      : sg_broker_memory_new(srv->loop, cfg, &bh);
    if (srv->broker == NULL) {
        snprintf(err, errlen, "no memory for the broker");
        return SG_ENOMEM;
    }
    sg_metric_set(srv->m.redis_up, NULL, sg_broker_is_ready(srv->broker));
    sg_script_host_t host = {srv,
                             server_script_send,
                             server_script_close,
                             server_script_resume,
                             server_script_reconnect,
                             server_script_data_set,
                             server_script_data_get};
    srv->script = sg_script_new(srv->loop, cfg, srv->broker, srv->metrics,
                                &host, err, errlen);
    if (srv->script == NULL)
        return SG_ESCRIPT;
    int rc = server_lws_start(srv, err, errlen);
    if (rc != 0)
        return rc;
    /* The client lives in the vhost's per-protocol data (no field here). */
    sg_http_client_t *hc = sg_http_client_new(srv->loop, srv->lws,
                                              srv->vhost);
    if (hc == NULL) {
        snprintf(err, errlen, "no memory for the HTTP client");
        return SG_ENOMEM;
    }
    sg_script_set_http_client(srv->script, hc);
    return 0;
}

static void server_handle_closed(uv_handle_t *h)
{
    sg_server_t *srv = h->data;
    srv->pending_closes--;
}

static void server_broker_closed(void *arg)
{
    sg_server_t *srv = arg;
    srv->broker = NULL;
}

/* Closes everything the server owns that lives on the loop. Called from
 * inside the loop (end of the drain) or after a failed build. */
static void server_close_handles(sg_server_t *srv)
{
    if (srv->stopped)
        return;
    srv->stopped = 1;
    /* Pending sg.http.request calls resume with nil, "closed" now, while
     * the script host and lws are intact. */
    sg_http_client_t *hc = sg_http_client_from_vhost(srv->vhost);
    sg_http_client_close(hc);
    if (srv->lws != NULL)
        lws_context_destroy(srv->lws); /* first of two calls (deps.md) */
    sg_reload_close(srv->reload);
    srv->reload = NULL;
    if (srv->script != NULL) {
        sg_script_set_http_client(srv->script, NULL);
        sg_script_free(srv->script);
        srv->script = NULL;
    }
    sg_http_client_free(hc); /* after the scripts: their handles point in */
    if (srv->broker != NULL)
        sg_broker_close(srv->broker, server_broker_closed, srv);
    sg__sessions_close(srv->sessions);
    uv_handle_t *handles[] = {(uv_handle_t *)&srv->sigterm,
                              (uv_handle_t *)&srv->sigint,
                              (uv_handle_t *)&srv->stop_timer};
    for (size_t i = 0; i < 3; i++) {
        if (handles[i]->data == srv && !uv_is_closing(handles[i])) {
            srv->pending_closes++;
            uv_close(handles[i], server_handle_closed);
        }
    }
}

sg_server_t *sg_server_new(uv_loop_t *loop, const sg_config_t *cfg, char *err,
                           size_t errlen)
{
    sg_server_t *srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        snprintf(err, errlen, "no memory");
        return NULL;
    }
    srv->cfg = cfg;
    srv->started_ms = sg__now_ms();
    if (loop == NULL) {
        uv_loop_init(&srv->own_loop);
        srv->owns_loop = 1;
        loop = &srv->own_loop;
    }
    srv->loop = loop;
    uv_timer_init(loop, &srv->stop_timer);
    srv->stop_timer.data = srv;
    uv_signal_init(loop, &srv->sigterm);
    srv->sigterm.data = srv;
    uv_signal_init(loop, &srv->sigint);
    srv->sigint.data = srv;

    if (server_build(srv, err, errlen) != 0) {
        server_close_handles(srv);
        if (srv->owns_loop)
            uv_run(loop, UV_RUN_DEFAULT);
        sg_server_free(srv);
        return NULL;
    }
    uv_signal_start(&srv->sigterm, server_on_signal, SIGTERM);
    uv_signal_start(&srv->sigint, server_on_signal, SIGINT);
    srv->reload = sg_reload_start(srv);
    SG_INFO("server", "streamgate %s listening on %s:%d (%s mode, node %s, "
                      "upstream %s)",
            SG_VERSION, cfg->listen, cfg->port, sg_broker_mode(srv->broker),
            cfg->node_id, cfg->upstream);
    return srv;
}

/* ---- run / stop ---------------------------------------------------------- */

static void server_drain_tick(uv_timer_t *t)
{
    sg_server_t *srv = t->data;
    if (srv->nconns > 0 && uv_now(srv->loop) < srv->drain_deadline)
        return;
    if (srv->nconns > 0)
        SG_WARN("server", "drain deadline passed with %u connections open",
                srv->nconns);
    uv_timer_stop(t);
    server_close_handles(srv);
}

void sg_server_stop(sg_server_t *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = 1;
    SG_INFO("server", "draining %u connections", srv->nconns);
    srv->drain_deadline = uv_now(srv->loop) + SERVER_DRAIN_MS;
    sg__ws_close_all(srv, LWS_CLOSE_STATUS_GOINGAWAY, "server shutting down");
    uv_timer_start(&srv->stop_timer, server_drain_tick, 0,
                   SERVER_DRAIN_TICK_MS);
}

int sg_server_run(sg_server_t *srv)
{
    uv_run(srv->loop, UV_RUN_DEFAULT);
    return 0;
}

void sg_server_free(sg_server_t *srv)
{
    if (srv == NULL)
        return;
    if (srv->lws != NULL) {
        lws_context_destroy(srv->lws); /* second call, after the loop */
        srv->lws = NULL;
        if (srv->owns_loop)
            uv_run(srv->loop, UV_RUN_DEFAULT);
    }
    sg__sessions_free(srv->sessions);
    sg_metrics_free(srv->metrics);
    free(srv->slots);
    free(srv->slot_gen);
    free(srv->free_slots);
    if (srv->owns_loop) {
        int rc = uv_loop_close(srv->loop);
        if (rc != 0)
            SG_WARN("server", "event loop closed with handles still open: %s",
                    uv_strerror(rc));
    }
    free(srv);
}

/* ---- config check (-t) ----------------------------------------------- */

/* Loads the Lua scripts in a throwaway state on a private loop with the
 * memory broker, so `streamgate -t` catches script errors as well as
 * config errors. 0, or SG_ESCRIPT with the loader's message. */
int sg_server_check_scripts(const sg_config_t *cfg, char *err, size_t errlen)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sg_broker_handlers_t bh = {NULL, NULL, NULL, NULL, NULL};
    sg_broker_t *b = sg_broker_memory_new(&loop, cfg, &bh);
    sg_metrics_t *m = sg_metrics_new();
    int rc = SG_ENOMEM;
    if (b != NULL && m != NULL) {
        sg_script_host_t host = {NULL};
        sg_script_t *s = sg_script_new(&loop, cfg, b, m, &host, err, errlen);
        rc = s != NULL ? 0 : SG_ESCRIPT;
        if (s != NULL)
            sg_script_free(s);
    } else {
        snprintf(err, errlen, "no memory");
    }
    if (b != NULL)
        sg_broker_close(b, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    sg_metrics_free(m);
    uv_loop_close(&loop);
    return rc;
}
