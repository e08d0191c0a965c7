/* Asynchronous HTTP/1.1 client on the server's libwebsockets context (and
 * so on its libuv loop). Plain http:// to IPv4 literals and "localhost"
 * only: lws 4.1.6 is built without async DNS and would resolve names with a
 * blocking getaddrinfo on the loop thread. Each request has one deadline
 * (connect + response) kept with a uv timer. The response body arrives as
 * de-chunked pieces; splitting it into SSE events is the caller's job.
 *
 * The client is a protocol on the server's vhost: add
 * SG_HTTP_CLIENT_PROTOCOL_ENTRY to the vhost's protocol list, create the
 * client after the vhost, close it before lws_context_destroy and free it
 * after the last user (the script host) is gone. */
#ifndef SG_HTTP_CLIENT_H
#define SG_HTTP_CLIENT_H

#include <stddef.h>
#include <uv.h>
#include <libwebsockets.h>

/* Name of the lws protocol client connections are bound to. */
#define SG_HTTP_CLIENT_PROTOCOL "sg-http-client"

/* Limits. */
#define SG_HTTP_CLIENT_MAX_HEADERS 64   /* response headers kept */
#define SG_HTTP_CLIENT_MAX_URL 2048

/* Called once when the response head arrived: the status and a
 * NULL-terminated name, value, ... list with lowercase names (only the
 * headers lws 4.1 parses: the standard ones). Valid during the call. */
typedef void (*sg_http_client_head_cb)(void *arg, int status,
                                       const char *const *headers);
/* A piece of the (de-chunked) response body, valid during the call. */
typedef void (*sg_http_client_data_cb)(void *arg, const char *data,
                                       size_t len);
/* Called exactly once, never synchronously from sg_http_client_request()
 * and never after sg_http_client_cancel(): status 0 when the whole body
 * arrived, else SG_ETIMEOUT "timeout", SG_EIO "connection refused" (no
 * TCP connection) / "connection failed" (lws could not start one) /
 * "closed" (the server hung up before the whole response),
 * SG_ETOOBIG "too big" (max_body), SG_ECANCELED "closed" (client closed).
 * `reason` is a short stable lowercase text for scripts. */
typedef void (*sg_http_client_done_cb)(void *arg, int status,
                                       const char *reason);

typedef struct sg_http_client sg_http_client_t;
typedef struct sg_http_client_req sg_http_client_req_t;

typedef struct sg_http_client_handlers {
    sg_http_client_head_cb head; /* may be NULL */
    sg_http_client_data_cb data; /* may be NULL */
    sg_http_client_done_cb done; /* required */
    void *arg;
} sg_http_client_handlers_t;

/* One request. Every pointer stays the caller's; the request copies what
 * it keeps. */
typedef struct sg_http_client_opts {
    const char *method;          /* "GET", "POST", ... (uppercase) */
    const char *url;             /* http://host[:port][/path[?query]] */
    const char *const *headers;  /* name, value, ..., NULL (may be NULL) */
    const char *body;            /* may be NULL */
    size_t body_len;
    double timeout;              /* seconds for the whole exchange, > 0 */
    size_t max_body;             /* 0: unlimited; else SG_ETOOBIG beyond */
} sg_http_client_opts_t;

/* The lws protocol callback for SG_HTTP_CLIENT_PROTOCOL. It also refuses
 * WebSocket clients that ask for this name as their subprotocol. */
int sg_http_client_callback(struct lws *wsi, enum lws_callback_reasons reason,
                            void *user, void *in, size_t len);

#define SG_HTTP_CLIENT_PROTOCOL_ENTRY                                         \
    {SG_HTTP_CLIENT_PROTOCOL, sg_http_client_callback, 0, 0, 0, NULL, 0}

/* Creates the client for `vhost` of `lws` (the vhost's protocol list must
 * contain SG_HTTP_CLIENT_PROTOCOL_ENTRY) on `loop`, and records it in the
 * vhost's per-protocol data so sg_http_client_from_vhost() finds it. All
 * three stay the caller's. NULL on allocation failure or when the vhost
 * lacks the protocol. */
sg_http_client_t *sg_http_client_new(uv_loop_t *loop, struct lws_context *lws,
                                     struct lws_vhost *vhost);
/* The client created for `vhost`, or NULL (none, or vhost NULL). */
sg_http_client_t *sg_http_client_from_vhost(struct lws_vhost *vhost);
/* Completes every pending request with SG_ECANCELED "closed" (their done
 * callbacks run synchronously, from here) and makes later requests fail
 * with SG_ECLOSED. Idempotent; NULL is a no-op. Call it before
 * lws_context_destroy. */
void sg_http_client_close(sg_http_client_t *c);
/* Closes (see above) and releases the client; the memory goes when the
 * last request's handles are closed (run the loop). NULL is a no-op. */
void sg_http_client_free(sg_http_client_t *c);

/* Checks a URL without starting anything: 0; SG_ENOTSUP for https://
 * ("https is not supported yet"); SG_EINVAL with what was wrong and what was
 * expected in `err`. */
int sg_http_client_check_url(const char *url, char *err, size_t errlen);

/* Starts a request. 0 with *out set (a handle for sg_http_client_cancel,
 * valid until done runs), or: SG_EINVAL (bad method, URL or header; `err`
 * says what), SG_ENOTSUP (https), SG_ECLOSED (client closed), SG_ENOMEM.
 * On failure no callback is ever called. Callbacks run from the loop. */
int sg_http_client_request(sg_http_client_t *c,
                           const sg_http_client_opts_t *opts,
                           const sg_http_client_handlers_t *h,
                           sg_http_client_req_t **out, char *err,
                           size_t errlen);
/* Abandons a request whose done has not run yet: no callback is called any
 * more and the connection is dropped. Safe from inside its own callbacks. */
void sg_http_client_cancel(sg_http_client_req_t *r);

/* Requests started and not finished yet (tests, status). */
size_t sg_http_client_pending(const sg_http_client_t *c);

#endif
