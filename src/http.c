/* HTTP on the same port as the WebSockets: built-in endpoints (health,
 * readiness, metrics), static files of the demo page, CORS for the /api/ routes, and
 * hand-off of everything else to the Lua on_http hook. Every response is
 * JSON except metrics and static files; unknown paths get a 404 JSON.
 *
 * A response is produced at once (built-ins) or later (a Lua route that
 * yields); either way it is stored on the request and written from the
 * HTTP_WRITEABLE callback: headers first, then the body in slices. */
#include "server_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "admin.h"
#include "chatmsg.h"
#include "error.h"
#include "log.h"

#define HTTP_BODY_SLICE 16384
#define HTTP_MAX_EXTRA_HEADERS 8

enum http_method { M_GET, M_POST, M_PUT, M_PATCH, M_DELETE, M_OPTIONS,
                   M_HEAD, M_OTHER };

static const char *const method_names[] = {"GET", "POST", "PUT", "PATCH",
                                           "DELETE", "OPTIONS", "HEAD",
                                           "OTHER"};

struct sg_http_req {
    sg_server_t *srv;
    struct lws *wsi;
    enum http_method method;
    char path[512];
    char *query;
    char *body;
    size_t body_len, body_cap;
    int body_too_big;
    int dispatched;

    /* response */
    int status;
    char content_type[64];
    char *resp;
    size_t resp_len, resp_off;
    char *extra[HTTP_MAX_EXTRA_HEADERS * 2];
    int nextra;
    int ready, headers_sent;
    sg_script_task_t *task;
};

static int http_dispatch(sg_http_req_t *r);

/* ---- request lifecycle ----------------------------------------------- */

static void http_req_free(sg_http_req_t *r)
{
    if (r == NULL)
        return;
    if (r->task != NULL)
        sg_script_task_detach(r->task);
    free(r->query);
    free(r->body);
    free(r->resp);
    for (int i = 0; i < r->nextra * 2; i++)
        free(r->extra[i]);
    free(r);
}

static enum http_method http_method_of(struct lws *wsi)
{
    static const struct {
        enum lws_token_indexes tok;
        enum http_method m;
    } map[] = {
        {WSI_TOKEN_GET_URI, M_GET},       {WSI_TOKEN_POST_URI, M_POST},
        {WSI_TOKEN_PUT_URI, M_PUT},       {WSI_TOKEN_PATCH_URI, M_PATCH},
        {WSI_TOKEN_DELETE_URI, M_DELETE}, {WSI_TOKEN_OPTIONS_URI, M_OPTIONS},
        {WSI_TOKEN_HEAD_URI, M_HEAD},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (lws_hdr_total_length(wsi, map[i].tok) > 0)
            return map[i].m;
    return M_OTHER;
}

static int http_has_body(sg_http_req_t *r)
{
    if (r->method != M_POST && r->method != M_PUT && r->method != M_PATCH)
        return 0;
    return lws_hdr_total_length(r->wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 ||
           lws_hdr_total_length(r->wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
}

static sg_http_req_t *http_req_new(sg_server_t *srv, struct lws *wsi,
                                   const char *path)
{
    sg_http_req_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->srv = srv;
    r->wsi = wsi;
    r->method = http_method_of(wsi);
    snprintf(r->path, sizeof(r->path), "%s", path ? path : "/");
    int qlen = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    if (qlen > 0) {
        r->query = malloc((size_t)qlen + 64);
        if (r->query != NULL &&
            lws_hdr_copy(wsi, r->query, qlen + 64, WSI_TOKEN_HTTP_URI_ARGS) < 0)
            r->query[0] = '\0';
    }
    return r;
}

static int http_body_append(sg_http_req_t *r, const char *in, size_t len)
{
    if (r->body_too_big || len == 0 || in == NULL)
        return 0;
    if (r->body_len + len > r->srv->cfg->limits.max_body_bytes) {
        r->body_too_big = 1;
        return 0;
    }
    if (r->body_len + len + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 1024;
        while (cap < r->body_len + len + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (b == NULL)
            return SG_ENOMEM;
        r->body = b, r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, in, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return 0;
}

/* ---- responses --------------------------------------------------------- */

static void http_add_header(sg_http_req_t *r, const char *name,
                            const char *value)
{
    if (r->nextra >= HTTP_MAX_EXTRA_HEADERS)
        return;
    char *n = strdup(name), *v = strdup(value);
    if (n == NULL || v == NULL) {
        free(n), free(v);
        return;
    }
    r->extra[r->nextra * 2] = n;
    r->extra[r->nextra * 2 + 1] = v;
    r->nextra++;
}

static int http_is_api(const sg_http_req_t *r)
{
    return strncmp(r->path, "/api/", 5) == 0 || strcmp(r->path, "/api") == 0;
}

/* Access-Control-Allow-Origin per http.cors_origins: "*" or a
 * comma-separated list that must contain the request's Origin. */
static void http_add_cors(sg_http_req_t *r)
{
    const char *allowed = r->srv->cfg->http.cors_origins;
    if (allowed == NULL || allowed[0] == '\0')
        return;
    if (strcmp(allowed, "*") == 0) {
        http_add_header(r, "access-control-allow-origin:", "*");
        return;
    }
    char origin[256];
    if (lws_hdr_copy(r->wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) <= 0)
        return;
    size_t olen = strlen(origin);
    for (const char *p = allowed; *p != '\0';) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m > 0 && p[m - 1] == ' ')
            m--;
        if (m == olen && m > 0 && memcmp(p, origin, m) == 0) {
            http_add_header(r, "access-control-allow-origin:", origin);
            http_add_header(r, "vary:", "Origin");
            return;
        }
        p += n;
    }
}

/* Stores the response and asks for a writable callback. Takes a copy of
 * `body`. Safe to call once per request; later calls are ignored. */
static void http_respond(sg_http_req_t *r, int status, const char *ctype,
                         const char *body, size_t len)
{
    if (r->ready)
        return;
    r->status = status;
    snprintf(r->content_type, sizeof(r->content_type), "%s", ctype);
    r->resp = malloc(len + 1);
    if (r->resp != NULL) {
        memcpy(r->resp, body, len);
        r->resp_len = len;
    }
    if (http_is_api(r))
        http_add_cors(r);
    r->ready = 1;
    const char *labels[] = {
        http_is_api(r) ? "api" : "builtin",
        status >= 500 ? "5xx" : status >= 400 ? "4xx" : "2xx"};
    sg_metric_add(r->srv->m.http_requests, labels, 1);
    lws_callback_on_writable(r->wsi);
}

static void http_respond_json(sg_http_req_t *r, int status, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (s == NULL) {
        static const char oom[] = "{\"error\":\"Internal server error\"}";
        http_respond(r, 500, "application/json", oom, sizeof(oom) - 1);
        return;
    }
    http_respond(r, status, "application/json", s, strlen(s));
    free(s);
}

static void http_respond_error(sg_http_req_t *r, int status,
                               const char *error, const char *detail)
{
    http_respond_json(r, status,
                      json_pack("{s:s, s:s}", "error", error, "detail",
                                detail));
}

static int http_write_headers(sg_http_req_t *r)
{
    unsigned char buf[LWS_PRE + 2048];
    unsigned char *start = buf + LWS_PRE, *p = start;
    unsigned char *end = buf + sizeof(buf) - 1;
    if (lws_add_http_common_headers(r->wsi, (unsigned int)r->status,
                                    r->content_type,
                                    (lws_filepos_t)r->resp_len, &p, end))
        return -1;
    for (int i = 0; i < r->nextra; i++) {
        const char *v = r->extra[i * 2 + 1];
        if (lws_add_http_header_by_name(r->wsi,
                                        (unsigned char *)r->extra[i * 2],
                                        (unsigned char *)v, (int)strlen(v),
                                        &p, end))
            return -1;
    }
    if (lws_finalize_write_http_header(r->wsi, start, &p, end))
        return -1;
    r->headers_sent = 1;
    return 0;
}

/* Returns -1 when lws must close the connection. */
static int http_writeable(sg_pss_t *pss, struct lws *wsi)
{
    sg_http_req_t *r = pss->http;
    if (r == NULL || !r->ready)
        return 0;
    if (!r->headers_sent) {
        if (http_write_headers(r) != 0)
            return -1;
        if (r->method == M_HEAD)
            r->resp_len = 0; /* the length was announced; no body */
        if (r->resp_len > 0) {
            lws_callback_on_writable(wsi);
            return 0;
        }
    } else {
        size_t n = r->resp_len - r->resp_off;
        if (n > HTTP_BODY_SLICE)
            n = HTTP_BODY_SLICE;
        unsigned char *slice = malloc(LWS_PRE + n);
        if (slice == NULL)
            return -1;
        memcpy(slice + LWS_PRE, r->resp + r->resp_off, n);
        r->resp_off += n;
        int final = r->resp_off == r->resp_len;
        int w = lws_write(wsi, slice + LWS_PRE, n,
                          final ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
        free(slice);
        if (w < 0)
            return -1;
        if (!final) {
            lws_callback_on_writable(wsi);
            return 0;
        }
    }
    pss->http = NULL;
    http_req_free(r);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* ---- built-in endpoints ----------------------------------------------- */

static void http_health(sg_http_req_t *r)
{
    char ts[40];
    sg_chatmsg_iso_now(ts, sizeof(ts));
    http_respond_json(r, 200,
                      json_pack("{s:s, s:s, s:s, s:i}", "status", "UP",
                                "timestamp", ts, "nodeId",
                                r->srv->cfg->node_id, "port",
                                r->srv->cfg->port));
}

static void http_live(sg_http_req_t *r)
{
    char ts[40];
    sg_chatmsg_iso_now(ts, sizeof(ts));
    http_respond_json(r, 200,
                      json_pack("{s:s, s:s, s:s}", "status", "ALIVE",
                                "nodeId", r->srv->cfg->node_id, "timestamp",
                                ts));
}

static void http_ready(sg_http_req_t *r)
{
    sg_server_t *srv = r->srv;
    if (srv->stopping) {
        http_respond_json(r, 503,
                          json_pack("{s:s, s:s, s:s}", "status", "NOT_READY",
                                    "reason", "Server is draining", "nodeId",
                                    srv->cfg->node_id));
    } else if (!sg_broker_is_ready(srv->broker)) {
        http_respond_json(r, 503,
                          json_pack("{s:s, s:s, s:s}", "status", "NOT_READY",
                                    "reason", "Redis not available", "nodeId",
                                    srv->cfg->node_id));
    } else {
        http_respond_json(r, 200,
                          json_pack("{s:s, s:s}", "status", "READY", "nodeId",
                                    srv->cfg->node_id));
    }
}

static void http_actuator_health(sg_http_req_t *r)
{
    sg_server_t *srv = r->srv;
    int redis_up = sg_broker_is_ready(srv->broker);
    const char *mode = sg_broker_mode(srv->broker);
    json_t *redis = json_pack(
        "{s:s, s:{s:s, s:s, s:I}}", "status", redis_up ? "UP" : "DOWN",
        "details", "mode", mode, "state", sg_broker_status_text(srv->broker),
        "subscriptions",
        (json_int_t)sg_broker_subscription_count(srv->broker));
    json_t *lua = json_pack("{s:s, s:{s:I, s:I}}", "status", "UP", "details",
                            "errors", (json_int_t)sg_script_errors(srv->script),
                            "pending",
                            (json_int_t)sg_script_pending(srv->script));
    json_t *ws = json_pack("{s:s, s:{s:I, s:I}}", "status", "UP", "details",
                           "connections", (json_int_t)srv->nconns, "sessions",
                           (json_int_t)sg__sessions_count(srv->sessions));
    int up = redis_up && !srv->stopping;
    json_t *obj = json_pack("{s:s, s:s, s:{s:o, s:o, s:o, s:{s:s}}}",
                            "status", up ? "UP" : "DOWN", "nodeId",
                            srv->cfg->node_id, "components", "redis", redis,
                            "lua", lua, "websocket", ws, "ping", "status",
                            "UP");
    http_respond_json(r, up ? 200 : 503, obj);
}

static void http_metrics(sg_http_req_t *r)
{
    char *text = NULL;
    size_t len = 0;
    if (sg_metrics_render(r->srv->metrics, &text, &len) != 0) {
        http_respond_error(r, 500, "Internal server error",
                           "metrics rendering failed");
        return;
    }
    http_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", text,
                 len);
    free(text);
}

static void http_actuator_metrics(sg_http_req_t *r, const char *name)
{
    char *text = NULL;
    size_t len = 0;
    int rc = sg_metrics_render_json(r->srv->metrics, name, &text, &len);
    if (rc == SG_ENOTFOUND) {
        http_respond_error(r, 404, "Not found", "no such metric");
        return;
    }
    if (rc != 0) {
        http_respond_error(r, 500, "Internal server error",
                           "metrics rendering failed");
        return;
    }
    http_respond(r, 200, "application/json", text, len);
    free(text);
}

static void http_preflight(sg_http_req_t *r)
{
    char req_headers[512] = "";
    lws_hdr_copy(r->wsi, req_headers, sizeof(req_headers),
                 WSI_TOKEN_HTTP_AC_REQUEST_HEADERS);
    http_add_header(r, "access-control-allow-methods:",
                    "GET, POST, DELETE, OPTIONS");
    if (req_headers[0] != '\0')
        http_add_header(r, "access-control-allow-headers:", req_headers);
    http_add_header(r, "access-control-max-age:", "1800");
    http_respond(r, 204, "text/plain", "", 0);
}

/* Built-in GET routes; returns 1 when handled. */
static int http_builtin(sg_http_req_t *r)
{
    const char *p = r->path;
    if (r->method != M_GET && r->method != M_HEAD)
        return 0;
    if (strcmp(p, "/health") == 0)
        http_health(r);
    else if (strcmp(p, "/healthz") == 0 || strcmp(p, "/health/live") == 0)
        http_live(r);
    else if (strcmp(p, "/readyz") == 0 || strcmp(p, "/health/ready") == 0)
        http_ready(r);
    else if (strcmp(p, "/actuator/health") == 0)
        http_actuator_health(r);
    else if (strcmp(p, "/metrics") == 0 ||
             strcmp(p, "/actuator/prometheus") == 0)
        http_metrics(r);
    else if (strcmp(p, "/actuator/metrics") == 0)
        http_actuator_metrics(r, NULL);
    else if (strncmp(p, "/actuator/metrics/", 18) == 0)
        http_actuator_metrics(r, p + 18);
    else
        return 0;
    return 1;
}

/* ---- static files ---------------------------------------------------- */

static const char *http_mime(const char *path)
{
    static const struct {
        const char *ext, *mime;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].mime;
    return "application/octet-stream";
}

/* Only plain relative names: letters, digits, '-', '_', '.', '/', and no
 * ".." segment, so a request can never leave static_dir. */
static int http_static_path_ok(const char *p)
{
    if (strstr(p, "..") != NULL)
        return 0;
    for (; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
              c == '/'))
            return 0;
    }
    return 1;
}

/* Returns 1 when lws took over the response (file served). */
static int http_static(sg_http_req_t *r, sg_pss_t *pss)
{
    if (r->method != M_GET && r->method != M_HEAD)
        return 0;
    const char *rel = strcmp(r->path, "/") == 0 ? "/index.html" : r->path;
    if (!http_static_path_ok(rel))
        return 0;
    char file[1024];
    int n = snprintf(file, sizeof(file), "%s%s", r->srv->cfg->http.static_dir,
                     rel);
    struct stat st;
    if (n <= 0 || (size_t)n >= sizeof(file) || stat(file, &st) != 0 ||
        !S_ISREG(st.st_mode))
        return 0;
    pss->http = NULL;
    struct lws *wsi = r->wsi;
    http_req_free(r);
    static const char cache[] = "cache-control: no-cache\r\n";
    int rc = lws_serve_http_file(wsi, file, http_mime(file), cache,
                                 (int)sizeof(cache) - 1);
    return rc < 0 ? -1 : 1;
}

/* ---- Lua routes ------------------------------------------------------ */

static void http_lua_done(void *ctx, int status, const char *ctype,
                          const char *body, size_t len,
                          const char *const *headers)
{
    sg_http_req_t *r = ctx;
    r->task = NULL;
    if (status == 0) {
        http_respond_error(r, 404, "Not found", r->path);
        return;
    }
    for (int i = 0; headers != NULL && headers[i] && headers[i + 1]; i += 2) {
        char name[96];
        snprintf(name, sizeof(name), "%s:", headers[i]);
        http_add_header(r, name, headers[i + 1]);
    }
    http_respond(r, status, ctype ? ctype : "application/json", body ? body
                                                                     : "",
                 body ? len : 0);
}

static void http_lua(sg_http_req_t *r)
{
    char ctype[128] = "", auth[1024] = "", origin[256] = "";
    char apikey[256] = "", admin[256] = "", remote[64] = "";
    lws_hdr_copy(r->wsi, ctype, sizeof(ctype), WSI_TOKEN_HTTP_CONTENT_TYPE);
    lws_hdr_copy(r->wsi, auth, sizeof(auth), WSI_TOKEN_HTTP_AUTHORIZATION);
    lws_hdr_copy(r->wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN);
    lws_hdr_custom_copy(r->wsi, apikey, sizeof(apikey), "x-api-key:", 10);
    lws_hdr_custom_copy(r->wsi, admin, sizeof(admin), "x-admin-token:", 14);
    lws_get_peer_simple(r->wsi, remote, sizeof(remote));
    const char *headers[16];
    int h = 0;
    const char *pairs[][2] = {{"content-type", ctype},
                              {"authorization", auth},
                              {"origin", origin},
                              {"x-api-key", apikey},
                              {"x-admin-token", admin}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        if (pairs[i][1][0] != '\0') {
            headers[h++] = pairs[i][0];
            headers[h++] = pairs[i][1];
        }
    }
    headers[h] = NULL;
    sg_script_http_req_t req = {
        .method = method_names[r->method],
        .path = r->path,
        .query = r->query,
        .body = r->body,
        .body_len = r->body_len,
        .headers = headers,
        .remote_addr = remote,
    };
    sg_script_task_t *task = NULL;
    sg_script_http(r->srv->script, &req, http_lua_done, r, &task);
    if (!r->ready)
        r->task = task;
}

/* ---- admin routes (admin.c) ----------------------------------------- */

static void http_admin(sg_http_req_t *r)
{
    char token[256] = "", auth[1024] = "", peer[64] = "";
    int status = 500;
    char *body = NULL;

    lws_hdr_custom_copy(r->wsi, token, sizeof(token), "x-admin-token:", 14);
    lws_hdr_copy(r->wsi, auth, sizeof(auth), WSI_TOKEN_HTTP_AUTHORIZATION);
    lws_get_peer_simple(r->wsi, peer, sizeof(peer));
    sg_admin_req_t req = {method_names[r->method], r->path, token, auth,
                          peer};
    sg_admin_handle(r->srv, &req, &status, &body);
    if (body == NULL) {
        http_respond_error(r, 500, "Internal server error", "no memory");
        return;
    }
    http_respond(r, status, "application/json", body, strlen(body));
    free(body);
}

/* Returns -1 when lws must close the connection. */
static int http_dispatch(sg_http_req_t *r)
{
    sg_pss_t *pss = lws_wsi_user(r->wsi);
    r->dispatched = 1;
    if (r->body_too_big) {
        http_respond_error(r, 413, "Payload too large",
                           "request body exceeds limits.max_body_bytes");
        return 0;
    }
    if (r->method == M_OPTIONS && http_is_api(r)) {
        http_preflight(r);
        return 0;
    }
    if (strncmp(r->path, "/admin/", 7) == 0) {
        http_admin(r);
        return 0;
    }
    if (http_builtin(r))
        return 0;
    if (!http_is_api(r)) {
        int rc = http_static(r, pss);
        if (rc != 0)
            return rc < 0 ? -1 : 0; /* r was freed by http_static */
    }
    http_lua(r);
    return 0;
}

/* ---- the callback ---------------------------------------------------- */

int sg__http_callback(struct lws *wsi, enum lws_callback_reasons reason,
                      void *user, void *in, size_t len)
{
    struct lws_context *ctx = lws_get_context(wsi);
    sg_server_t *srv = ctx ? lws_context_user(ctx) : NULL;
    sg_pss_t *pss = user;

    if (pss == NULL && reason != LWS_CALLBACK_WSI_DESTROY &&
        reason != LWS_CALLBACK_CLOSED_HTTP)
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        http_req_free(pss->http);
        pss->http = http_req_new(srv, wsi, in);
        if (pss->http == NULL)
            return -1;
        if (http_has_body(pss->http) &&
            lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0) {
            /* lws 4.1.6 does not decode chunked request bodies: say so at
             * once instead of letting the request time out. */
            pss->http->dispatched = 1;
            http_respond_error(pss->http, 411, "Length required",
                               "send the request body with Content-Length");
            return 0;
        }
        if (http_has_body(pss->http))
            return 0; /* wait for HTTP_BODY_COMPLETION */
        return http_dispatch(pss->http);
    }
    case LWS_CALLBACK_HTTP_BODY:
        if (pss->http != NULL &&
            http_body_append(pss->http, in, len) != 0)
            return -1;
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (pss->http != NULL && !pss->http->dispatched)
            return http_dispatch(pss->http);
        /* lws 4.1.6 stays in its body state until the transaction
         * completes and, when more (pipelined) input is buffered, replays
         * BODY_COMPLETION in a busy loop while our response is pending.
         * Browsers do not pipeline; drop such a connection instead of
         * spinning. */
        SG_DEBUG("http", "pipelined request while a response is pending; "
                         "closing the connection");
        return -1;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return http_writeable(pss, wsi);
    case LWS_CALLBACK_HTTP_FILE_COMPLETION:
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_WSI_DESTROY:
        if (pss != NULL) {
            http_req_free(pss->http);
            pss->http = NULL;
        }
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}
