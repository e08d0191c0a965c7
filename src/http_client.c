/* The asynchronous HTTP client (http_client.h): URL checks, one lws client
 * connection per request, its deadline timer, and the mapping of lws
 * client callbacks to head / data / done. A request is "finished" once its
 * done callback ran or it was cancelled: from then on its wsi is detached
 * (opaque user data NULL, so late lws callbacks ignore it) and its memory
 * goes in the timer's close callback. */
#include "http_client.h"

#include <arpa/inet.h>
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "log.h"

#define CLIENT_BODY_PIECE 4096
#define CLIENT_READ_BUF 4096

struct sg_http_client {
    uv_loop_t *loop;
    struct lws_context *lws;
    struct lws_vhost *vhost;     /* NULL once closed */
    sg_http_client_req_t *reqs;  /* requests not finished yet */
    size_t pending;
    size_t live;                 /* requests whose memory is not freed */
    int closed;
    int freed;                   /* free when `live` drops to 0 */
};

struct sg_http_client_req {
    sg_http_client_t *c;
    uv_timer_t timer;
    struct lws *wsi;             /* NULL before connect and once finished */
    sg_http_client_handlers_t h;
    char method[16];
    char address[64];
    int port;
    char *path;
    char **headers;              /* "name:", value, ... */
    size_t nheaders;             /* strings in `headers` */
    char *body;
    size_t body_len, body_sent;
    size_t max_body, received;
    long long content_length;    /* -1 unknown */
    int chunked;
    int connected;               /* the request head was being sent */
    int got_head;
    int finished;
    int starting;                /* inside lws_client_connect_via_info */
    int deferred_status;         /* failure seen while starting */
    const char *deferred_reason;
    sg_http_client_req_t *prev, *next;
};

typedef struct client_url {
    char address[64];
    int port;
    const char *path;            /* points into the URL; "" means "/" */
} client_url_t;

static void req_finish(sg_http_client_req_t *r, int status,
                       const char *reason, int deliver, int kill);

/* ---------------------------------------------------------------------
 * Lifecycle
 * ------------------------------------------------------------------- */

sg_http_client_t *sg_http_client_new(uv_loop_t *loop, struct lws_context *lws,
                                     struct lws_vhost *vhost)
{
    const struct lws_protocols *prot =
        lws_vhost_name_to_protocol(vhost, SG_HTTP_CLIENT_PROTOCOL);
    if (prot == NULL)
        return NULL;
    sg_http_client_t **slot =
        lws_protocol_vh_priv_zalloc(vhost, prot, sizeof *slot);
    sg_http_client_t *c = calloc(1, sizeof *c);
    if (slot == NULL || c == NULL) {
        free(c);
        return NULL;
    }
    c->loop = loop;
    c->lws = lws;
    c->vhost = vhost;
    *slot = c;
    return c;
}

sg_http_client_t *sg_http_client_from_vhost(struct lws_vhost *vhost)
{
    if (vhost == NULL)
        return NULL;
    const struct lws_protocols *prot =
        lws_vhost_name_to_protocol(vhost, SG_HTTP_CLIENT_PROTOCOL);
    if (prot == NULL)
        return NULL;
    sg_http_client_t **slot = lws_protocol_vh_priv_get(vhost, prot);
    return slot != NULL ? *slot : NULL;
}

void sg_http_client_close(sg_http_client_t *c)
{
    if (c == NULL || c->closed)
        return;
    c->closed = 1;
    if (c->vhost != NULL) {
        sg_http_client_t **slot = lws_protocol_vh_priv_get(
            c->vhost,
            lws_vhost_name_to_protocol(c->vhost, SG_HTTP_CLIENT_PROTOCOL));
        if (slot != NULL)
            *slot = NULL;
        c->vhost = NULL;
    }
    /* A done callback may start (and fail) other requests: they are
     * refused because `closed` is set, so this loop ends. */
    while (c->reqs != NULL)
        req_finish(c->reqs, SG_ECANCELED, "closed", 1, 1);
}

void sg_http_client_free(sg_http_client_t *c)
{
    if (c == NULL)
        return;
    sg_http_client_close(c);
    c->freed = 1;
    if (c->live == 0)
        free(c);
}

size_t sg_http_client_pending(const sg_http_client_t *c)
{
    return c->pending;
}

/* ---------------------------------------------------------------------
 * Checks
 * ------------------------------------------------------------------- */

/* "localhost" or a dotted IPv4 literal, copied to `out`. */
static int url_host(const char *h, size_t n, char *out, size_t outlen)
{
    struct in_addr a;

    if (n == 0 || n >= outlen)
        return -1;
    memcpy(out, h, n);
    out[n] = '\0';
    if (strcasecmp(out, "localhost") == 0) {
        snprintf(out, outlen, "127.0.0.1");
        return 0;
    }
    return inet_pton(AF_INET, out, &a) == 1 ? 0 : -1;
}

static int url_parse(const char *url, client_url_t *u, char *err,
                     size_t errlen)
{
    if (strlen(url) > SG_HTTP_CLIENT_MAX_URL) {
        snprintf(err, errlen, "url longer than %d bytes",
                 SG_HTTP_CLIENT_MAX_URL);
        return SG_EINVAL;
    }
    if (strncasecmp(url, "https://", 8) == 0) {
        snprintf(err, errlen, "https is not supported yet");
        return SG_ENOTSUP;
    }
    if (strncasecmp(url, "http://", 7) != 0) {
        snprintf(err, errlen, "url '%s' must start with http://", url);
        return SG_EINVAL;
    }
    for (const char *p = url; *p != '\0'; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            snprintf(err, errlen, "url must not contain spaces or control "
                                  "characters");
            return SG_EINVAL;
        }
    }
    const char *host = url + 7;
    size_t hlen = strcspn(host, ":/?#");
    const char *rest = host + hlen;
    u->port = 80;
    if (*rest == ':') {
        char *end;
        long port = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || port < 1 || port > 65535 ||
            (*end != '\0' && *end != '/' && *end != '?')) {
            snprintf(err, errlen, "url port must be 1..65535");
            return SG_EINVAL;
        }
        u->port = (int)port;
        rest = end;
    }
    if (*rest == '#' || memchr(host, '@', hlen) != NULL ||
        url_host(host, hlen, u->address, sizeof u->address) < 0) {
        snprintf(err, errlen, "url host must be an IPv4 address or localhost "
                              "(names would need a blocking DNS lookup)");
        return SG_EINVAL;
    }
    u->path = rest;
    return 0;
}

int sg_http_client_check_url(const char *url, char *err, size_t errlen)
{
    client_url_t u;

    return url_parse(url, &u, err, errlen);
}

static int check_method(const char *m)
{
    static const char *const ok[] = {"GET", "POST", "PUT", "PATCH",
                                     "DELETE", "HEAD", "OPTIONS", NULL};
    for (size_t i = 0; ok[i] != NULL; i++)
        if (strcmp(m, ok[i]) == 0)
            return 0;
    return SG_EINVAL;
}

/* RFC 7230 token characters for names; no CR/LF/NUL in values. */
static int check_header(const char *name, const char *value, char *err,
                        size_t errlen)
{
    size_t n = strlen(name);

    if (n == 0 || n > 100 ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789!#$%&'*+-.^_`|~") != n) {
        snprintf(err, errlen, "header name '%.100s' is not a valid token",
                 name);
        return SG_EINVAL;
    }
    if (strpbrk(value, "\r\n") != NULL) {
        snprintf(err, errlen, "header '%s' value must not contain CR or LF",
                 name);
        return SG_EINVAL;
    }
    if (strcasecmp(name, "content-length") == 0 ||
        strcasecmp(name, "host") == 0 ||
        strcasecmp(name, "transfer-encoding") == 0) {
        snprintf(err, errlen, "header '%s' is set by the client", name);
        return SG_EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------------
 * Requests
 * ------------------------------------------------------------------- */

static void req_closed_cb(uv_handle_t *h)
{
    sg_http_client_req_t *r = h->data;
    sg_http_client_t *c = r->c;

    for (size_t i = 0; i < r->nheaders; i++)
        free(r->headers[i]);
    free(r->headers);
    free(r->path);
    free(r->body);
    free(r);
    if (--c->live == 0 && c->freed)
        free(c);
}

static void req_timer_cb(uv_timer_t *t)
{
    sg_http_client_req_t *r = t->data;

    if (r->deferred_reason != NULL)
        req_finish(r, r->deferred_status, r->deferred_reason, 1, 0);
    else
        req_finish(r, SG_ETIMEOUT, "timeout", 1, 1);
}

/* Marks `r` finished (once): unlinks it, detaches its wsi (killing the
 * connection if `kill`), closes its timer (which frees it) and, if
 * `deliver`, calls done last so the callback may do anything. */
static void req_finish(sg_http_client_req_t *r, int status,
                       const char *reason, int deliver, int kill)
{
    sg_http_client_t *c = r->c;

    if (r->finished)
        return;
    r->finished = 1;
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    c->pending--;
    if (r->wsi != NULL) {
        lws_set_opaque_user_data(r->wsi, NULL);
        if (kill)
            lws_set_timeout(r->wsi, PENDING_TIMEOUT_USER_OK,
                            LWS_TO_KILL_ASYNC);
        r->wsi = NULL;
    }
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, req_closed_cb);
    if (deliver)
        r->h.done(r->h.arg, status, reason);
}

void sg_http_client_cancel(sg_http_client_req_t *r)
{
    req_finish(r, SG_ECANCELED, "closed", 0, 1);
}

/* Copies the opts into a new request (not linked yet). */
static sg_http_client_req_t *req_build(const sg_http_client_opts_t *o,
                                       const client_url_t *u)
{
    sg_http_client_req_t *r = calloc(1, sizeof *r);
    size_t n = 0;

    if (r == NULL)
        return NULL;
    snprintf(r->method, sizeof r->method, "%s", o->method);
    snprintf(r->address, sizeof r->address, "%s", u->address);
    r->port = u->port;
    r->max_body = o->max_body;
    r->content_length = -1;
    r->path = *u->path == '/' ? strdup(u->path)
                              : (char *)calloc(1, strlen(u->path) + 2);
    if (r->path != NULL && *u->path != '/')
        sprintf(r->path, "/%s", u->path);
    for (const char *const *h = o->headers; h && h[0] && h[1]; h += 2)
        n += 2;
    r->headers = calloc(n + 1, sizeof *r->headers);
    if (r->path == NULL || r->headers == NULL)
        goto fail;
    for (size_t i = 0; i < n; i += 2) {
        size_t nl = strlen(o->headers[i]);
        if ((r->headers[i] = malloc(nl + 2)) == NULL)
            goto fail;
        r->nheaders = i + 1;
        memcpy(r->headers[i], o->headers[i], nl);
        memcpy(r->headers[i] + nl, ":", 2);
        if ((r->headers[i + 1] = strdup(o->headers[i + 1])) == NULL)
            goto fail;
        r->nheaders = i + 2;
    }
    if (o->body != NULL && o->body_len > 0) {
        if ((r->body = malloc(o->body_len)) == NULL)
            goto fail;
        memcpy(r->body, o->body, o->body_len);
        r->body_len = o->body_len;
    }
    return r;
fail:
    for (size_t i = 0; i < r->nheaders; i++)
        free(r->headers[i]);
    free(r->headers);
    free(r->path);
    free(r);
    return NULL;
}

static int req_check(const sg_http_client_opts_t *o, client_url_t *u,
                     char *err, size_t errlen)
{
    if (o->method == NULL || check_method(o->method) != 0) {
        snprintf(err, errlen, "method must be one of GET, POST, PUT, PATCH, "
                              "DELETE, HEAD, OPTIONS");
        return SG_EINVAL;
    }
    if (o->url == NULL) {
        snprintf(err, errlen, "url is required");
        return SG_EINVAL;
    }
    int rc = url_parse(o->url, u, err, errlen);
    if (rc != 0)
        return rc;
    for (const char *const *h = o->headers; h && h[0] && h[1]; h += 2)
        if ((rc = check_header(h[0], h[1], err, errlen)) != 0)
            return rc;
    if (!(o->timeout > 0) || o->timeout > 86400) {
        snprintf(err, errlen, "timeout must be > 0 and <= 86400 seconds");
        return SG_EINVAL;
    }
    return 0;
}

/* Links `r`, starts its deadline and the lws connection. A failure lws
 * reports while connecting is delivered from the loop (a 0 ms timer), so
 * done never runs inside sg_http_client_request. */
static void req_start(sg_http_client_t *c, sg_http_client_req_t *r,
                      double timeout)
{
    struct lws_client_connect_info ci;

    r->c = c;
    r->next = c->reqs;
    if (c->reqs != NULL)
        c->reqs->prev = r;
    c->reqs = r;
    c->pending++;
    c->live++;
    uv_timer_init(c->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, req_timer_cb, (uint64_t)ceil(timeout * 1000),
                   0);

    memset(&ci, 0, sizeof ci);
    ci.context = c->lws;
    ci.vhost = c->vhost;
    ci.address = r->address;
    ci.port = r->port;
    ci.path = r->path;
    ci.host = r->address;
    ci.method = r->method;
    ci.protocol = SG_HTTP_CLIENT_PROTOCOL;
    ci.local_protocol_name = SG_HTTP_CLIENT_PROTOCOL;
    /* A redirect could lead to a name that needs blocking DNS. */
    ci.ssl_connection = LCCSCF_HTTP_NO_FOLLOW_REDIRECT;
    ci.opaque_user_data = r;
    r->starting = 1;
    struct lws *wsi = lws_client_connect_via_info(&ci);
    r->starting = 0;
    if (r->deferred_reason == NULL && wsi == NULL) {
        r->deferred_status = SG_EIO;
        r->deferred_reason = "connection failed";
    }
    if (r->deferred_reason != NULL) {
        uv_timer_start(&r->timer, req_timer_cb, 0, 0);
        return;
    }
    r->wsi = wsi;
}

int sg_http_client_request(sg_http_client_t *c,
                           const sg_http_client_opts_t *opts,
                           const sg_http_client_handlers_t *h,
                           sg_http_client_req_t **out, char *err,
                           size_t errlen)
{
    client_url_t u;

    assert(h != NULL && h->done != NULL);
    *out = NULL;
    int rc = req_check(opts, &u, err, errlen);
    if (rc != 0)
        return rc;
    if (c->closed) {
        snprintf(err, errlen, "closed");
        return SG_ECLOSED;
    }
    sg_http_client_req_t *r = req_build(opts, &u);
    if (r == NULL) {
        snprintf(err, errlen, "no memory");
        return SG_ENOMEM;
    }
    r->h = *h;
    req_start(c, r, opts->timeout);
    *out = r;
    return 0;
}

/* ---------------------------------------------------------------------
 * lws callbacks
 * ------------------------------------------------------------------- */

static int cb_append_headers(struct lws *wsi, sg_http_client_req_t *r,
                             unsigned char **p, unsigned char *end)
{
    char num[32];
    int body_method = strcmp(r->method, "POST") == 0 ||
                      strcmp(r->method, "PUT") == 0 ||
                      strcmp(r->method, "PATCH") == 0;

    for (size_t i = 0; i + 1 < r->nheaders; i += 2) {
        if (lws_add_http_header_by_name(
                wsi, (const unsigned char *)r->headers[i],
                (const unsigned char *)r->headers[i + 1],
                (int)strlen(r->headers[i + 1]), p, end))
            return -1;
    }
    if (r->body_len > 0 || body_method) {
        int n = snprintf(num, sizeof num, "%zu", r->body_len);
        if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH,
                                         (const unsigned char *)num, n, p,
                                         end))
            return -1;
    }
    if (r->body_len > 0) {
        lws_client_http_body_pending(wsi, 1);
        lws_callback_on_writable(wsi);
    }
    return 0;
}

/* One body piece per WRITEABLE callback. */
static int cb_write_body(struct lws *wsi, sg_http_client_req_t *r)
{
    unsigned char buf[LWS_PRE + CLIENT_BODY_PIECE];
    size_t n = r->body_len - r->body_sent;

    if (n == 0)
        return 0;
    if (n > CLIENT_BODY_PIECE)
        n = CLIENT_BODY_PIECE;
    memcpy(buf + LWS_PRE, r->body + r->body_sent, n);
    int last = r->body_sent + n == r->body_len;
    if (lws_write(wsi, buf + LWS_PRE, n,
                  last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
        return -1;
    r->body_sent += n;
    if (last)
        lws_client_http_body_pending(wsi, 0);
    else
        lws_callback_on_writable(wsi);
    return 0;
}

/* Status and every header lws parsed ("content-type:" style names). */
static void cb_head(struct lws *wsi, sg_http_client_req_t *r)
{
    const char *list[2 * SG_HTTP_CLIENT_MAX_HEADERS + 1];
    char store[8192];
    size_t used = 0, n = 0;

    r->got_head = 1;
    for (int t = 0; t < WSI_TOKEN_COUNT && n < 2 * SG_HTTP_CLIENT_MAX_HEADERS;
         t++) {
        const char *name = (const char *)lws_token_to_string(t);
        int len = lws_hdr_total_length(wsi, t);
        size_t nl = name ? strlen(name) : 0;
        if (len <= 0 || nl < 2 || name[nl - 1] != ':' || name[0] == ':' ||
            used + nl + (size_t)len + 2 > sizeof store)
            continue;
        char *k = store + used;
        memcpy(k, name, nl - 1);
        k[nl - 1] = '\0';
        char *v = k + nl;
        if (lws_hdr_copy(wsi, v, len + 1, t) < 0)
            continue;
        used += nl + (size_t)len + 1;
        list[n++] = k;
        list[n++] = v;
        if (t == WSI_TOKEN_HTTP_CONTENT_LENGTH)
            r->content_length = atoll(v);
        else if (t == WSI_TOKEN_HTTP_TRANSFER_ENCODING)
            r->chunked = strcasestr(v, "chunked") != NULL;
    }
    list[n] = NULL;
    int status = (int)lws_http_client_http_response(wsi);
    if (r->h.head != NULL)
        r->h.head(r->h.arg, status, list);
    /* 204 and 304 never have a body (RFC 9110): done now, instead of
     * waiting for a close that a keep-alive server never sends. */
    if ((status == 204 || status == 304) && !r->finished)
        req_finish(r, 0, NULL, 1, 0);
}

static int cb_data(sg_http_client_req_t *r, const char *in, size_t len)
{
    r->received += len;
    if (r->max_body > 0 && r->received > r->max_body) {
        req_finish(r, SG_ETOOBIG, "too big", 1, 0);
        return -1;
    }
    if (len > 0 && r->h.data != NULL)
        r->h.data(r->h.arg, in, len);
    return r->finished ? -1 : 0;
}

/* The connection closed: a body without length or chunking ends here;
 * anything else was cut short. */
static void cb_closed(sg_http_client_req_t *r)
{
    if (r->got_head && r->content_length < 0 && !r->chunked)
        req_finish(r, 0, NULL, 1, 0);
    else if (r->got_head && r->content_length >= 0 &&
             (long long)r->received >= r->content_length)
        req_finish(r, 0, NULL, 1, 0);
    else
        req_finish(r, SG_EIO, "closed", 1, 0);
}

/* lws 4.1.6 reports every failure before the response head with the same
 * text ("closed before established") and no errno. Whether the TCP
 * connection was ever up tells the two cases scripts care about apart:
 * before it, the peer refused (or was unreachable); after it, the server
 * hung up without answering. */
static void cb_conn_error(struct lws *wsi, sg_http_client_req_t *r,
                          const char *in)
{
    const char *reason = r->connected ? "closed" : "connection refused";

    SG_DEBUG("http-client", "%s:%d: %s", r->address, r->port,
             in ? in : "connection error");
    lws_set_opaque_user_data(wsi, NULL);
    if (r->starting) {
        r->deferred_status = SG_EIO;
        r->deferred_reason = reason;
        return;
    }
    r->wsi = NULL;
    req_finish(r, SG_EIO, reason, 1, 0);
}

int sg_http_client_callback(struct lws *wsi, enum lws_callback_reasons reason,
                            void *user, void *in, size_t len)
{
    sg_http_client_req_t *r = NULL;
    char buf[LWS_PRE + CLIENT_READ_BUF];
    char *px = buf + LWS_PRE;
    int lenx = CLIENT_READ_BUF;

    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return 1; /* a WebSocket asking for our name as its subprotocol */
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
    case LWS_CALLBACK_CLIENT_HTTP_WRITEABLE:
    case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP:
    case LWS_CALLBACK_RECEIVE_CLIENT_HTTP:
    case LWS_CALLBACK_RECEIVE_CLIENT_HTTP_READ:
    case LWS_CALLBACK_COMPLETED_CLIENT_HTTP:
    case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
        r = lws_get_opaque_user_data(wsi);
        break;
    default:
        return 0;
    }
    if (r == NULL) /* finished or cancelled: drop the connection */
        return reason == LWS_CALLBACK_CLOSED_CLIENT_HTTP ||
                       reason == LWS_CALLBACK_CLIENT_CONNECTION_ERROR
                   ? 0 : -1;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        cb_conn_error(wsi, r, in);
        return 0;
    case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
        r->connected = 1;
        return cb_append_headers(wsi, r, (unsigned char **)in,
                                 *(unsigned char **)in + len);
    case LWS_CALLBACK_CLIENT_HTTP_WRITEABLE:
        return cb_write_body(wsi, r);
    case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP:
        cb_head(wsi, r);
        return r->finished ? -1 : 0;
    case LWS_CALLBACK_RECEIVE_CLIENT_HTTP:
        /* Pumps the body: lws calls RECEIVE_CLIENT_HTTP_READ (and maybe
         * COMPLETED_CLIENT_HTTP) from inside lws_http_client_read. */
        return lws_http_client_read(wsi, &px, &lenx) < 0 ? -1 : 0;
    case LWS_CALLBACK_RECEIVE_CLIENT_HTTP_READ:
        return cb_data(r, in, len);
    case LWS_CALLBACK_COMPLETED_CLIENT_HTTP:
        req_finish(r, 0, NULL, 1, 0);
        return -1; /* no keep-alive: one connection per request */
    case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
        r->wsi = NULL;
        lws_set_opaque_user_data(wsi, NULL);
        cb_closed(r);
        return 0;
    default:
        return 0;
    }
}
