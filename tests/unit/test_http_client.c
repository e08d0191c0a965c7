/* Unit tests of the async HTTP client (http_client.c) and of sg.http.request
 * (script_api_http.c) against a tiny HTTP/1.1 server that runs on the same
 * libuv loop (a uv TCP server in this file): GET, POST echo, 404, refused,
 * timeout, max_body, a chunked SSE stream of 5 events 50 ms apart, EOF-
 * delimited bodies, closing the client with requests in flight, and the Lua
 * wrapper (streaming on_chunk + lua/sse.lua, misuse errors, abandoned
 * coroutines). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/http_client.c"
#include "../../src/error.c"
#include "../../src/log.c"
#include "../../src/script_api_http.c"

#include <lualib.h>

/* ------------------------------------------------------------------
 * The test server: one request per connection, answered by path.
 * ---------------------------------------------------------------- */

typedef struct tsrv {
    uv_tcp_t tcp;
    int port;
    int accepted;
    char last_req[70000];  /* the last complete request, head + body */
    int open_conns;
} tsrv_t;

typedef struct tconn {
    uv_tcp_t tcp;
    tsrv_t *srv;
    char buf[65536];
    size_t len;
    int answered;
    uv_timer_t timer;     /* SSE pacing */
    int events;
    int timer_on;
} tconn_t;

typedef struct twrite {
    uv_write_t req;
    char *data;
} twrite_t;

static void tconn_write_done(uv_write_t *w, int status)
{
    twrite_t *tw = (twrite_t *)w;
    free(tw->data);
    free(tw);
}

static void tconn_send(tconn_t *tc, const char *data, size_t len)
{
    twrite_t *tw = calloc(1, sizeof *tw);
    tw->data = malloc(len);
    memcpy(tw->data, data, len);
    uv_buf_t b = uv_buf_init(tw->data, (unsigned)len);
    uv_write(&tw->req, (uv_stream_t *)&tc->tcp, &b, 1, tconn_write_done);
}

static void tconn_sendf(tconn_t *tc, const char *fmt, ...)
{
    char out[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, sizeof out, fmt, ap);
    va_end(ap);
    tconn_send(tc, out, (size_t)n);
}

static void tconn_closed(uv_handle_t *h)
{
    tconn_t *tc = h->data;
    if (tc->timer_on) {
        tc->timer_on = 0;
        uv_close((uv_handle_t *)&tc->timer, tconn_closed);
        return;
    }
    tc->srv->open_conns--;
    free(tc);
}

static void tconn_close(tconn_t *tc)
{
    if (!uv_is_closing((uv_handle_t *)&tc->tcp))
        uv_close((uv_handle_t *)&tc->tcp, tconn_closed);
}

static void tconn_shutdown_cb(uv_shutdown_t *s, int status)
{
    tconn_close(s->data);
    free(s);
}

static void tconn_end(tconn_t *tc)
{
    uv_shutdown_t *s = calloc(1, sizeof *s);
    s->data = tc;
    if (uv_shutdown(s, (uv_stream_t *)&tc->tcp, tconn_shutdown_cb) != 0) {
        free(s);
        tconn_close(tc);
    }
}

static void tconn_sse_tick(uv_timer_t *t)
{
    tconn_t *tc = t->data;
    char ev[128];
    int n;

    if (tc->events == 5) {
        uv_timer_stop(t);
        tconn_send(tc, "0\r\n\r\n", 5);
        return;
    }
    tc->events++;
    /* Event 3 is split over two chunks to exercise the SSE parser. */
    if (tc->events == 3) {
        tconn_sendf(tc, "%x\r\n%s\r\n", 10, "id: 3\ndata");
        n = snprintf(ev, sizeof ev, ": {\"n\":3}\n\n");
    } else {
        n = snprintf(ev, sizeof ev, "event: delta\ndata: {\"n\":%d}\n\n",
                     tc->events);
    }
    tconn_sendf(tc, "%x\r\n", n);
    tconn_send(tc, ev, (size_t)n);
    tconn_send(tc, "\r\n", 2);
}

/* Answers a complete request by its path. */
static void tconn_answer(tconn_t *tc, const char *path, const char *body,
                         size_t blen)
{
    if (strcmp(path, "/hello") == 0) {
        tconn_sendf(tc, "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                        "content-length: 11\r\nx-extra: yes\r\n"
                        "connection: close\r\n\r\nhello world");
    } else if (strcmp(path, "/echo") == 0) {
        tconn_sendf(tc, "HTTP/1.1 201 Created\r\ncontent-type: "
                        "application/json\r\ncontent-length: %zu\r\n\r\n",
                    blen);
        tconn_send(tc, body, blen);
    } else if (strcmp(path, "/big") == 0) {
        static char big[100000];
        memset(big, 'x', sizeof big);
        tconn_sendf(tc, "HTTP/1.1 200 OK\r\ncontent-length: %zu\r\n\r\n",
                    sizeof big);
        tconn_send(tc, big, sizeof big);
    } else if (strcmp(path, "/eof") == 0) {
        tconn_sendf(tc, "HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\n"
                        "until the end");
        tconn_end(tc);
    } else if (strcmp(path, "/cut") == 0) {
        tconn_sendf(tc, "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"
                        "only part");
        tconn_end(tc);
    } else if (strcmp(path, "/sse") == 0) {
        tconn_sendf(tc, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream"
                        "\r\ntransfer-encoding: chunked\r\n\r\n");
        uv_timer_init(tc->tcp.loop, &tc->timer);
        tc->timer.data = tc;
        tc->timer_on = 1;
        uv_timer_start(&tc->timer, tconn_sse_tick, 50, 50);
    } else if (strcmp(path, "/drop") == 0) {
        tconn_close(tc);
    } else if (strcmp(path, "/hang") == 0) {
        /* never answers */
    } else {
        tconn_sendf(tc, "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain"
                        "\r\ncontent-length: 4\r\n\r\nnope");
    }
}

static void tconn_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    tconn_t *tc = h->data;
    b->base = tc->buf + tc->len;
    b->len = sizeof tc->buf - tc->len - 1;
}

static void tconn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    tconn_t *tc = s->data;
    if (n < 0) {
        tconn_close(tc);
        return;
    }
    tc->len += (size_t)n;
    tc->buf[tc->len] = '\0';
    char *end = strstr(tc->buf, "\r\n\r\n");
    if (end == NULL || tc->answered)
        return;
    size_t blen = 0;
    const char *cl = strcasestr(tc->buf, "content-length:");
    if (cl != NULL && cl < end)
        blen = (size_t)atol(cl + 15);
    if (tc->len < (size_t)(end + 4 - tc->buf) + blen)
        return;
    tc->answered = 1;
    snprintf(tc->srv->last_req, sizeof tc->srv->last_req, "%s", tc->buf);
    char path[256] = "";
    sscanf(tc->buf, "%*s %255s", path);
    tconn_answer(tc, path, end + 4, blen);
}

static void tsrv_on_conn(uv_stream_t *s, int status)
{
    tsrv_t *ts = s->data;
    tconn_t *tc = calloc(1, sizeof *tc);
    tc->srv = ts;
    uv_tcp_init(s->loop, &tc->tcp);
    tc->tcp.data = tc;
    tc->timer.data = tc;
    ts->open_conns++;
    if (uv_accept(s, (uv_stream_t *)&tc->tcp) != 0) {
        tconn_close(tc);
        return;
    }
    ts->accepted++;
    uv_read_start((uv_stream_t *)&tc->tcp, tconn_alloc, tconn_read);
}

static void tsrv_start(uv_loop_t *loop, tsrv_t *ts)
{
    struct sockaddr_in a;
    struct sockaddr_storage got;
    int glen = sizeof got;

    memset(ts, 0, sizeof *ts);
    uv_tcp_init(loop, &ts->tcp);
    ts->tcp.data = ts;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&ts->tcp, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&ts->tcp, 16, tsrv_on_conn),
                     0);
    uv_tcp_getsockname(&ts->tcp, (struct sockaddr *)&got, &glen);
    ts->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
}

/* A loopback port nobody listens on (bound, then closed). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t l = sizeof a;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

/* ------------------------------------------------------------------
 * Fixture: loop + lws context with the client protocol + test server.
 * ---------------------------------------------------------------- */

static const struct lws_protocols test_protocols[] = {
    {"http", lws_callback_http_dummy, 0, 0, 0, NULL, 0},
    SG_HTTP_CLIENT_PROTOCOL_ENTRY,
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

typedef struct fx {
    uv_loop_t loop;
    struct lws_context *lws;
    struct lws_vhost *vh;
    sg_http_client_t *c;
    tsrv_t srv;
    uv_timer_t watchdog;
    /* recorded results */
    int heads, dones, status, done_status;
    char reason[64];
    char headers[2048];
    char body[200000];
    size_t body_len;
    int pieces;
    int stop_after_done;
} fx_t;

static void watchdog_cb(uv_timer_t *t)
{
    fail_msg("watchdog: the loop ran for 10 s");
}

static int fx_setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    struct lws_context_creation_info info;
    void *loops[1];

    sg_log_set_level(SG_LOG_ERROR);
    uv_loop_init(&f->loop);
    loops[0] = &f->loop;
    memset(&info, 0, sizeof info);
    info.foreign_loops = loops;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DISABLE_IPV6 |
                   LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    info.protocols = test_protocols;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.vhost_name = "test";
    lws_set_log_level(LLL_ERR, NULL);
    f->lws = lws_create_context(&info);
    assert_non_null(f->lws);
    f->vh = lws_create_vhost(f->lws, &info);
    assert_non_null(f->vh);
    f->c = sg_http_client_new(&f->loop, f->lws, f->vh);
    assert_non_null(f->c);
    assert_ptr_equal(sg_http_client_from_vhost(f->vh), f->c);
    tsrv_start(&f->loop, &f->srv);
    uv_timer_init(&f->loop, &f->watchdog);
    uv_timer_start(&f->watchdog, watchdog_cb, 10000, 0);
    uv_unref((uv_handle_t *)&f->watchdog);
    *state = f;
    return 0;
}

static void fx_close_conns(uv_handle_t *h, void *arg)
{
    if (h->type == UV_TCP && h->data != NULL && h->data != arg &&
        !uv_is_closing(h) && ((tconn_t *)h->data)->srv == arg)
        tconn_close(h->data);
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;

    sg_http_client_close(f->c);
    assert_null(sg_http_client_from_vhost(f->vh));
    lws_context_destroy(f->lws);
    uv_walk(&f->loop, fx_close_conns, &f->srv);
    uv_close((uv_handle_t *)&f->srv.tcp, NULL);
    uv_close((uv_handle_t *)&f->watchdog, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    lws_context_destroy(f->lws);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    sg_http_client_free(f->c);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    free(f);
    return 0;
}

/* Runs the loop until `*flag` becomes nonzero. */
static void fx_run_until(fx_t *f, int *flag)
{
    uv_ref((uv_handle_t *)&f->watchdog);
    while (*flag == 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_unref((uv_handle_t *)&f->watchdog);
}

static void rec_head(void *arg, int status, const char *const *h)
{
    fx_t *f = arg;
    f->heads++;
    f->status = status;
    f->headers[0] = '\0';
    for (; h[0] != NULL; h += 2) {
        size_t n = strlen(f->headers);
        snprintf(f->headers + n, sizeof f->headers - n, "%s=%s;", h[0], h[1]);
    }
}

static void rec_data(void *arg, const char *d, size_t n)
{
    fx_t *f = arg;
    f->pieces++;
    assert_true(f->body_len + n < sizeof f->body);
    memcpy(f->body + f->body_len, d, n);
    f->body_len += n;
    f->body[f->body_len] = '\0';
}

static void rec_done(void *arg, int status, const char *reason)
{
    fx_t *f = arg;
    f->dones++;
    f->done_status = status;
    snprintf(f->reason, sizeof f->reason, "%s", reason ? reason : "");
}

static const sg_http_client_handlers_t rec_handlers_proto = {
    rec_head, rec_data, rec_done, NULL};

static int fx_request(fx_t *f, const char *method, const char *path,
                      const char *const *headers, const char *body,
                      double timeout, size_t max_body)
{
    char url[256], err[256];
    sg_http_client_handlers_t h = rec_handlers_proto;
    sg_http_client_req_t *r;

    h.arg = f;
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", f->srv.port, path);
    sg_http_client_opts_t o = {method, url, headers, body,
                               body ? strlen(body) : 0, timeout, max_body};
    return sg_http_client_request(f->c, &o, &h, &r, err, sizeof err);
}

/* ------------------------------------------------------------------
 * C client tests
 * ---------------------------------------------------------------- */

static void test_url_checks_say_what_is_wrong(void **state)
{
    char err[256];

    assert_int_equal(sg_http_client_check_url("http://127.0.0.1:8000/x?y=1",
                                              err, sizeof err), 0);
    assert_int_equal(sg_http_client_check_url("http://localhost", err,
                                              sizeof err), 0);
    assert_int_equal(sg_http_client_check_url("https://127.0.0.1/", err,
                                              sizeof err), SG_ENOTSUP);
    assert_string_equal(err, "https is not supported yet");
    assert_int_equal(sg_http_client_check_url("ftp://x", err, sizeof err),
                     SG_EINVAL);
    assert_string_equal(err, "url 'ftp://x' must start with http://");
    assert_int_equal(sg_http_client_check_url("http://example.com/", err,
                                              sizeof err), SG_EINVAL);
    assert_string_equal(err, "url host must be an IPv4 address or localhost "
                             "(names would need a blocking DNS lookup)");
    assert_int_equal(sg_http_client_check_url("http://127.0.0.1:0/", err,
                                              sizeof err), SG_EINVAL);
    assert_string_equal(err, "url port must be 1..65535");
    assert_int_equal(sg_http_client_check_url("http://127.0.0.1:99999", err,
                                              sizeof err), SG_EINVAL);
    assert_int_equal(sg_http_client_check_url("http://u@127.0.0.1/", err,
                                              sizeof err), SG_EINVAL);
    assert_int_equal(sg_http_client_check_url("http://127.0.0.1/a b", err,
                                              sizeof err), SG_EINVAL);
    assert_int_equal(sg_http_client_check_url("http:///x", err, sizeof err),
                     SG_EINVAL);
}

static void test_bad_method_header_timeout_are_refused(void **state)
{
    fx_t *f = *state;
    const char *bad_name[] = {"bad name", "v", NULL};
    const char *crlf[] = {"x-a", "1\r\nx-b: 2", NULL};
    const char *host[] = {"Host", "evil", NULL};

    assert_int_equal(fx_request(f, "get", "/hello", NULL, NULL, 5, 0),
                     SG_EINVAL);
    assert_int_equal(fx_request(f, "GET", "/hello", bad_name, NULL, 5, 0),
                     SG_EINVAL);
    assert_int_equal(fx_request(f, "GET", "/hello", crlf, NULL, 5, 0),
                     SG_EINVAL);
    assert_int_equal(fx_request(f, "GET", "/hello", host, NULL, 5, 0),
                     SG_EINVAL);
    assert_int_equal(fx_request(f, "GET", "/hello", NULL, NULL, 0, 0),
                     SG_EINVAL);
    assert_int_equal(sg_http_client_pending(f->c), 0);
    assert_int_equal(f->dones, 0);
}

static void test_get_200_with_body_and_headers(void **state)
{
    fx_t *f = *state;

    assert_int_equal(fx_request(f, "GET", "/hello", NULL, NULL, 5, 0), 0);
    assert_int_equal(sg_http_client_pending(f->c), 1);
    assert_int_equal(f->dones, 0); /* never synchronous */
    fx_run_until(f, &f->dones);
    assert_int_equal(f->dones, 1);
    assert_int_equal(f->done_status, 0);
    assert_int_equal(f->heads, 1);
    assert_int_equal(f->status, 200);
    assert_string_equal(f->body, "hello world");
    assert_non_null(strstr(f->headers, "content-type=text/plain;"));
    assert_non_null(strstr(f->headers, "content-length=11;"));
    assert_int_equal(strncmp(f->srv.last_req, "GET /hello HTTP/1.1\r\n", 21),
                     0);
    assert_int_equal(sg_http_client_pending(f->c), 0);
}

static void test_post_body_is_echoed_with_our_headers(void **state)
{
    fx_t *f = *state;
    const char *hdrs[] = {"Content-Type", "application/json", "x-trace",
                          "abc", NULL};

    assert_int_equal(fx_request(f, "POST", "/echo", hdrs, "{\"q\":\"hi\"}",
                                5, 0), 0);
    fx_run_until(f, &f->dones);
    assert_int_equal(f->done_status, 0);
    assert_int_equal(f->status, 201);
    assert_string_equal(f->body, "{\"q\":\"hi\"}");
    assert_non_null(strcasestr(f->srv.last_req,
                               "content-type: application/json\r\n"));
    assert_non_null(strcasestr(f->srv.last_req, "x-trace: abc\r\n"));
    assert_non_null(strcasestr(f->srv.last_req, "content-length: 10\r\n"));
}

static void test_large_post_body_is_sent_whole(void **state)
{
    fx_t *f = *state;
    size_t n = 20000;
    char *body = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        body[i] = (char)('a' + i % 26);
    body[n] = '\0';

    assert_int_equal(fx_request(f, "PUT", "/echo", NULL, body, 5, 0), 0);
    fx_run_until(f, &f->dones);
    assert_int_equal(f->done_status, 0);
    assert_int_equal(f->body_len, n);
    assert_memory_equal(f->body, body, n);
    free(body);
}

static void test_404_status_is_passed_through(void **state)
{
    fx_t *f = *state;

    assert_int_equal(fx_request(f, "GET", "/nothing-here", NULL, NULL, 5, 0),
                     0);
    fx_run_until(f, &f->dones);
    assert_int_equal(f->done_status, 0);
    assert_int_equal(f->status, 404);
    assert_string_equal(f->body, "nope");
}

static void test_connection_refused(void **state)
{
    fx_t *f = *state;
    char url[64], err[128];
    sg_http_client_handlers_t h = rec_handlers_proto;
    sg_http_client_req_t *r;

    h.arg = f;
    snprintf(url, sizeof url, "http://localhost:%d/", free_port());
    sg_http_client_opts_t o = {"GET", url, NULL, NULL, 0, 5, 0};
    assert_int_equal(sg_http_client_request(f->c, &o, &h, &r, err,
                                            sizeof err), 0);
    assert_int_equal(f->dones, 0);
    fx_run_until(f, &f->dones);
    assert_int_equal(f->dones, 1);
    assert_int_equal(f->done_status, SG_EIO);
    assert_string_equal(f->reason, "connection refused");
    assert_int_equal(f->heads, 0);
}

static void test_timeout_when_the_server_never_answers(void **state)
{
    fx_t *f = *state;
    uint64_t t0 = uv_hrtime();

    assert_int_equal(fx_request(f, "GET", "/hang", NULL, NULL, 0.2, 0), 0);
    fx_run_until(f, &f->dones);
    uint64_t ms = (uv_hrtime() - t0) / 1000000;
    assert_int_equal(f->done_status, SG_ETIMEOUT);
    assert_string_equal(f->reason, "timeout");
    assert_true(ms >= 190 && ms < 2000);
    assert_int_equal(f->heads, 0);
}

static void test_max_body_exceeded_is_too_big(void **state)
{
    fx_t *f = *state;

    assert_int_equal(fx_request(f, "GET", "/big", NULL, NULL, 5, 1000), 0);
    fx_run_until(f, &f->dones);
    assert_int_equal(f->dones, 1);
    assert_int_equal(f->done_status, SG_ETOOBIG);
    assert_string_equal(f->reason, "too big");
    assert_true(f->body_len <= 1000);
}

static void test_large_body_within_max_arrives_whole(void **state)
{
    fx_t *f = *state;

    assert_int_equal(fx_request(f, "GET", "/big", NULL, NULL, 5, 100000), 0);
    fx_run_until(f, &f->dones);
    assert_int_equal(f->done_status, 0);
    assert_int_equal(f->body_len, 100000);
    assert_true(f->pieces > 1);
}

static void test_sse_stream_arrives_in_order(void **state)
{
    fx_t *f = *state;

    assert_int_equal(fx_request(f, "GET", "/sse", NULL, NULL, 5, 0), 0);
    fx_run_until(f, &f->dones);
    assert_int_equal(f->done_status, 0);
    assert_int_equal(f->status, 200);
    assert_non_null(strstr(f->headers, "content-type=text/event-stream;"));
    assert_string_equal(f->body,
                        "event: delta\ndata: {\"n\":1}\n\n"
                        "event: delta\ndata: {\"n\":2}\n\n"
                        "id: 3\ndata: {\"n\":3}\n\n"
                        "event: delta\ndata: {\"n\":4}\n\n"
                        "event: delta\ndata: {\"n\":5}\n\n");
    assert_true(f->pieces >= 5);
}

static void test_eof_delimited_body_completes(void **state)
{
    fx_t *f = *state;

    assert_int_equal(fx_request(f, "GET", "/eof", NULL, NULL, 5, 0), 0);
    fx_run_until(f, &f->dones);
    assert_int_equal(f->done_status, 0);
    assert_int_equal(f->status, 200);
    assert_string_equal(f->body, "until the end");
}

static void test_body_cut_short_is_closed(void **state)
{
    fx_t *f = *state;

    assert_int_equal(fx_request(f, "GET", "/cut", NULL, NULL, 5, 0), 0);
    fx_run_until(f, &f->dones);
    assert_int_equal(f->done_status, SG_EIO);
    assert_string_equal(f->reason, "closed");
}

static void test_close_completes_pending_with_closed_once(void **state)
{
    fx_t *f = *state;

    assert_int_equal(fx_request(f, "GET", "/hang", NULL, NULL, 5, 0), 0);
    assert_int_equal(fx_request(f, "GET", "/hang", NULL, NULL, 5, 0), 0);
    while (f->srv.accepted < 2)
        uv_run(&f->loop, UV_RUN_ONCE);
    sg_http_client_close(f->c);
    assert_int_equal(f->dones, 2);
    assert_int_equal(f->done_status, SG_ECANCELED);
    assert_string_equal(f->reason, "closed");
    assert_int_equal(sg_http_client_pending(f->c), 0);
    assert_int_equal(fx_request(f, "GET", "/hello", NULL, NULL, 5, 0),
                     SG_ECLOSED);
    for (int i = 0; i < 20; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->dones, 2);
}

static void test_server_hanging_up_before_answering_is_closed(
    void **state)
{
    fx_t *f = *state;

    assert_int_equal(fx_request(f, "GET", "/drop", NULL, NULL, 5, 0), 0);
    fx_run_until(f, &f->dones);
    assert_int_equal(f->done_status, SG_EIO);
    assert_string_equal(f->reason, "closed");
    assert_int_equal(f->heads, 0);
}

static void test_cancel_calls_nothing_more(void **state)
{
    fx_t *f = *state;
    char url[128], err[128];
    sg_http_client_handlers_t h = rec_handlers_proto;
    sg_http_client_req_t *r;

    h.arg = f;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/sse", f->srv.port);
    sg_http_client_opts_t o = {"GET", url, NULL, NULL, 0, 0.3, 0};
    assert_int_equal(sg_http_client_request(f->c, &o, &h, &r, err,
                                            sizeof err), 0);
    while (f->pieces == 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    sg_http_client_cancel(r);
    int pieces = f->pieces;
    /* Past the request's deadline: neither data nor done may come. */
    uint64_t until = uv_hrtime() + 500 * 1000000ull;
    while (uv_hrtime() < until) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        uv_sleep(5);
    }
    assert_int_equal(f->pieces, pieces);
    assert_int_equal(f->dones, 0);
    assert_int_equal(sg_http_client_pending(f->c), 0);
}

static void test_websocket_asking_for_the_client_protocol_is_refused(
    void **state)
{
    assert_int_equal(sg_http_client_callback(
                         NULL, LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION, NULL,
                         NULL, 0), 1);
}

/* ------------------------------------------------------------------
 * sg.http.request on a minimal stand-in for the script host: the five
 * sg__script_* functions script_api_http.c uses, with the same
 * suspend/resume/abandon contract as script.c (script_internal.h).
 * ---------------------------------------------------------------- */

static sg_script_t host_s;
static int task_rc;               /* last lua_resume result */
static char task_err[512];

sg_script_t *sg__script_from(lua_State *L)
{
    return &host_s;
}

sg_script_task_t *sg__script_check_yieldable(lua_State *L, const char *api)
{
    sg_script_task_t *t = host_s.current;
    if (t == NULL || t->co != L)
        luaL_error(L, "%s: not in a hook coroutine", api);
    return t;
}

void sg__script_suspend(sg_script_task_t *task, sg__wait_t wait)
{
    assert_int_equal(task->wait, SG__WAIT_NONE);
    task->wait = wait;
}

static void task_run(sg_script_task_t *task, int nargs)
{
    sg_script_task_t *saved = host_s.current;
    host_s.current = task;
    task_rc = lua_resume(task->co, nargs);
    host_s.current = saved;
    if (task_rc != 0 && task_rc != LUA_YIELD)
        snprintf(task_err, sizeof task_err, "%s", lua_tostring(task->co, -1));
}

void sg__script_resume(sg_script_task_t *task, int nres)
{
    assert_int_not_equal(task->wait, SG__WAIT_NONE);
    task->wait = SG__WAIT_NONE;
    task_run(task, nres);
}

int sg__script_push_error(lua_State *L, int rc)
{
    lua_pushnil(L);
    lua_pushstring(L, rc == SG_ECANCELED ? "closed" : sg_strerror(rc));
    return 2;
}

typedef struct lfx {
    fx_t *f;
    lua_State *L;
    sg_script_task_t task;
} lfx_t;

static int lfx_setup(void **state)
{
    fx_setup(state);
    fx_t *f = *state;
    lfx_t *l = calloc(1, sizeof *l);
    l->f = f;
    memset(&host_s, 0, sizeof host_s);
    host_s.loop = &f->loop;
    host_s.host.data = l;
    l->L = luaL_newstate();
    luaL_openlibs(l->L);
    host_s.L = l->L;
    lua_newtable(l->L);
    sg_script_api_http_open(l->L);
    lua_setglobal(l->L, "sg");
    lua_pushfstring(l->L, "http://127.0.0.1:%d", f->srv.port);
    lua_setglobal(l->L, "BASE");
    luaL_dostring(l->L, "package.path = '" SG_SOURCE_DIR "/lua/?.lua;' .. "
                        "package.path");
    sg_script_set_http_client(&host_s, f->c);
    task_err[0] = '\0';
    *state = l;
    return 0;
}

static int lfx_teardown(void **state)
{
    lfx_t *l = *state;
    fx_t *f = l->f;
    sg_http_client_close(f->c);
    sg_script_set_http_client(&host_s, NULL);
    assert_null(http_bindings);
    lua_close(l->L);
    *state = f;
    free(l);
    return fx_teardown(state);
}

/* Runs `code` (a function body) as a hook task; returns after it finished
 * or suspended. */
static void lfx_start(lfx_t *l, const char *code)
{
    lua_State *L = l->L;
    memset(&l->task, 0, sizeof l->task);
    l->task.co = lua_newthread(L);
    l->task.co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    l->task.kind = SG__TASK_MESSAGE;
    l->task.hook = "on_message";
    l->task.s = &host_s;
    if (luaL_loadstring(l->task.co, code) != 0)
        fail_msg("%s", lua_tostring(l->task.co, -1));
    task_run(&l->task, 0);
}

/* Runs the loop until the task is no longer suspended. */
static void lfx_finish(lfx_t *l)
{
    uv_ref((uv_handle_t *)&l->f->watchdog);
    while (task_rc == LUA_YIELD)
        uv_run(&l->f->loop, UV_RUN_ONCE);
    uv_unref((uv_handle_t *)&l->f->watchdog);
    if (task_rc != 0)
        fail_msg("task failed: %s", task_err);
    luaL_unref(l->L, LUA_REGISTRYINDEX, l->task.co_ref);
}

static void lfx_check(lfx_t *l, const char *expr, const char *want)
{
    lua_State *L = l->L;
    char code[512];
    snprintf(code, sizeof code, "return tostring(%s)", expr);
    assert_int_equal(luaL_dostring(L, code), 0);
    assert_string_equal(lua_tostring(L, -1), want);
    lua_pop(L, 1);
}

static void test_lua_get_returns_status_headers_body(void **state)
{
    lfx_t *l = *state;
    lfx_start(l, "R, E = sg.http.request{url = BASE .. '/hello'}");
    assert_int_equal(task_rc, LUA_YIELD);
    lfx_finish(l);
    lfx_check(l, "E", "nil");
    lfx_check(l, "R.status", "200");
    lfx_check(l, "R.body", "hello world");
    lfx_check(l, "R.headers['content-type']", "text/plain");
    lfx_check(l, "R.headers['content-length']", "11");
}

static void test_lua_post_echo_and_404(void **state)
{
    lfx_t *l = *state;
    lfx_start(l, "R = sg.http.request{method = 'POST', url = BASE .. '/echo',"
                 " headers = {['content-type'] = 'application/json'},"
                 " body = '{\"a\":1}', timeout = 5}\n"
                 "N = sg.http.request{url = BASE .. '/missing'}");
    lfx_finish(l);
    lfx_check(l, "R.status", "201");
    lfx_check(l, "R.body", "{\"a\":1}");
    lfx_check(l, "N.status", "404");
    lfx_check(l, "N.body", "nope");
    assert_non_null(strcasestr(l->f->srv.last_req, "GET /missing HTTP/1.1"));
}

static void test_lua_failures_return_nil_and_reason(void **state)
{
    lfx_t *l = *state;
    char code[512];
    snprintf(code, sizeof code,
             "A, AE = sg.http.request{url = 'http://127.0.0.1:%d/'}\n"
             "B, BE = sg.http.request{url = BASE .. '/hang', timeout = 0.2}\n"
             "C, CE = sg.http.request{url = BASE .. '/big', max_body = 1000}\n"
             "D, DE = sg.http.request{url = 'https://127.0.0.1/'}",
             free_port());
    lfx_start(l, code);
    lfx_finish(l);
    lfx_check(l, "AE", "connection refused");
    lfx_check(l, "BE", "timeout");
    lfx_check(l, "CE", "too big");
    lfx_check(l, "DE", "https is not supported yet");
    lfx_check(l, "A or B or C or D", "nil");
}

static void test_lua_streaming_sse_gives_5_events_in_order(void **state)
{
    lfx_t *l = *state;
    lfx_start(l,
              "local sse = require 'sse'\n"
              "local p = sse.new()\n"
              "EV, PIECES = {}, 0\n"
              "R, E = sg.http.request{url = BASE .. '/sse', on_chunk ="
              "  function(piece, res)\n"
              "    assert(res.status == 200)\n"
              "    PIECES = PIECES + 1\n"
              "    for _, ev in ipairs(p:feed(piece)) do EV[#EV + 1] = ev end\n"
              "  end}");
    lfx_finish(l);
    lfx_check(l, "E", "nil");
    lfx_check(l, "R.status", "200");
    lfx_check(l, "R.body", "nil");
    lfx_check(l, "R.headers['content-type']", "text/event-stream");
    lfx_check(l, "#EV", "5");
    lfx_check(l, "PIECES >= 5", "true");
    lfx_check(l, "EV[1].event .. EV[1].data", "delta{\"n\":1}");
    lfx_check(l, "EV[3].event .. EV[3].data .. EV[3].id", "message{\"n\":3}3");
    lfx_check(l, "EV[5].data", "{\"n\":5}");
}

static void test_lua_on_chunk_error_cancels_and_propagates(void **state)
{
    lfx_t *l = *state;
    lfx_start(l, "sg.http.request{url = BASE .. '/sse', on_chunk ="
                 " function() error('boom') end}");
    uv_ref((uv_handle_t *)&l->f->watchdog);
    while (task_rc == LUA_YIELD)
        uv_run(&l->f->loop, UV_RUN_ONCE);
    uv_unref((uv_handle_t *)&l->f->watchdog);
    assert_int_equal(task_rc, LUA_ERRRUN);
    assert_non_null(strstr(task_err, "boom"));
    assert_int_equal(sg_http_client_pending(l->f->c), 0);
    luaL_unref(l->L, LUA_REGISTRYINDEX, l->task.co_ref);
}

static void test_lua_misuse_raises(void **state)
{
    lfx_t *l = *state;
    static const struct {
        const char *code, *msg;
    } cases[] = {
        {"sg.http.request()",
         "bad argument #1 to 'request' (table expected, got nil)"},
        {"sg.http.request{}", "bad argument #1 to 'request' (url is required)"},
        {"sg.http.request{url = 'http://example.com/'}",
         "bad argument #1 to 'request' (url host must be an IPv4 address or "
         "localhost (names would need a blocking DNS lookup))"},
        {"sg.http.request{url = BASE, method = 'FETCH'}",
         "bad argument #1 to 'request' (method must be one of GET, POST, PUT, "
         "PATCH, DELETE, HEAD, OPTIONS)"},
        {"sg.http.request{url = BASE, timeout = 0}",
         "bad argument #1 to 'request' (timeout must be a number of seconds "
         "> 0)"},
        {"sg.http.request{url = BASE, headers = {a = 1}}",
         "bad argument #1 to 'request' (headers must map strings to "
         "strings)"},
        {"sg.http.request{url = BASE, on_chunk = 1}",
         "bad argument #1 to 'request' (on_chunk must be a function)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        task_err[0] = '\0';
        lfx_start(l, cases[i].code);
        assert_int_equal(task_rc, LUA_ERRRUN);
        /* Raised at the caller's line: [string "..."]:1: <msg> */
        const char *at = strstr(task_err, "]:1: ");
        assert_non_null(at);
        assert_string_equal(at + 5, cases[i].msg);
        luaL_unref(l->L, LUA_REGISTRYINDEX, l->task.co_ref);
    }
    /* Outside a hook coroutine (load time). */
    assert_int_not_equal(
        luaL_dostring(l->L, "sg.http.request{url = BASE}"), 0);
    assert_string_equal(lua_tostring(l->L, -1),
                        "[string \"sg.http.request{url = BASE}\"]:1: "
                        "sg.http.request: not in a hook coroutine");
    lua_pop(l->L, 1);
    assert_int_equal(sg_http_client_pending(l->f->c), 0);
}

static void test_lua_client_close_resumes_with_closed(void **state)
{
    lfx_t *l = *state;
    lfx_start(l, "R, E = sg.http.request{url = BASE .. '/hang'}\n"
                 "R2, E2 = sg.http.request{url = BASE .. '/hello'}");
    assert_int_equal(task_rc, LUA_YIELD);
    sg_http_client_close(l->f->c);
    assert_int_equal(task_rc, 0);
    lfx_finish(l);
    lfx_check(l, "E", "closed");
    lfx_check(l, "E2", "closed");
}

static void test_lua_abandoned_task_is_never_resumed(void **state)
{
    lfx_t *l = *state;
    lfx_start(l, "DONE = false\n"
                 "sg.http.request{url = BASE .. '/sse', on_chunk = "
                 "function() end}\nDONE = true");
    assert_int_equal(task_rc, LUA_YIELD);
    /* What task_abandon does: detach the op, drop the thread. */
    assert_non_null(l->task.op);
    l->task.op->task = NULL;
    l->task.op = NULL;
    luaL_unref(l->L, LUA_REGISTRYINDEX, l->task.co_ref);
    lua_gc(l->L, LUA_GCCOLLECT, 0);
    /* The handle's __gc cancelled the request. */
    assert_int_equal(sg_http_client_pending(l->f->c), 0);
    uint64_t until = uv_hrtime() + 400 * 1000000ull;
    while (uv_hrtime() < until) {
        uv_run(&l->f->loop, UV_RUN_NOWAIT);
        uv_sleep(5);
    }
    lfx_check(l, "DONE", "false");
}

static void test_lua_abandoned_waiter_survives_the_response(void **state)
{
    lfx_t *l = *state;
    lfx_start(l, "R = sg.http.request{url = BASE .. '/hello'}");
    assert_int_equal(task_rc, LUA_YIELD);
    l->task.op->task = NULL; /* abandoned, thread still referenced */
    l->task.op = NULL;
    int accepted = 0;
    while (sg_http_client_pending(l->f->c) > 0 && accepted++ < 1000)
        uv_run(&l->f->loop, UV_RUN_ONCE);
    assert_int_equal(task_rc, LUA_YIELD); /* never resumed */
    lfx_check(l, "R", "nil");
    luaL_unref(l->L, LUA_REGISTRYINDEX, l->task.co_ref);
    lua_gc(l->L, LUA_GCCOLLECT, 0);
}

static void test_lua_without_client_is_not_ready(void **state)
{
    lfx_t *l = *state;
    sg_script_set_http_client(&host_s, NULL);
    lfx_start(l, "R, E = sg.http.request{url = BASE}");
    lfx_finish(l);
    lfx_check(l, "E", "not ready");
    sg_script_set_http_client(&host_s, l->f->c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_checks_say_what_is_wrong),
        cmocka_unit_test_setup_teardown(
            test_bad_method_header_timeout_are_refused, fx_setup,
            fx_teardown),
        cmocka_unit_test_setup_teardown(test_get_200_with_body_and_headers,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(
            test_post_body_is_echoed_with_our_headers, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_large_post_body_is_sent_whole,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_404_status_is_passed_through,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(
            test_timeout_when_the_server_never_answers, fx_setup,
            fx_teardown),
        cmocka_unit_test_setup_teardown(test_max_body_exceeded_is_too_big,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(
            test_large_body_within_max_arrives_whole, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sse_stream_arrives_in_order,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_eof_delimited_body_completes,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_body_cut_short_is_closed,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(
            test_close_completes_pending_with_closed_once, fx_setup,
            fx_teardown),
        cmocka_unit_test_setup_teardown(
            test_server_hanging_up_before_answering_is_closed, fx_setup,
            fx_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_calls_nothing_more,
                                        fx_setup, fx_teardown),
        cmocka_unit_test(
            test_websocket_asking_for_the_client_protocol_is_refused),
#define LT(t) cmocka_unit_test_setup_teardown(t, lfx_setup, lfx_teardown)
        LT(test_lua_get_returns_status_headers_body),
        LT(test_lua_post_echo_and_404),
        LT(test_lua_failures_return_nil_and_reason),
        LT(test_lua_streaming_sse_gives_5_events_in_order),
        LT(test_lua_on_chunk_error_cancels_and_propagates),
        LT(test_lua_misuse_raises),
        LT(test_lua_client_close_resumes_with_closed),
        LT(test_lua_abandoned_task_is_never_resumed),
        LT(test_lua_abandoned_waiter_survives_the_response),
        LT(test_lua_without_client_is_not_ready),
#undef LT
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
