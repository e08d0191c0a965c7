/* sg.http.request: the HTTP client (http_client.c) seen from Lua. The
 * public function is a small Lua wrapper (HTTP_WRAPPER below) around C
 * primitives: `start` checks the options and starts the request, `wait`
 * yields until the next body piece (streaming) or the end, `head` builds
 * the {status, headers} table and `cancel` drops the request. The loop
 * lives in Lua so that on_chunk runs as ordinary code of the hook's
 * coroutine and may itself yield (sg.sleep, sg.redis, ...).
 *
 * Lifetimes: a request's state (http_lreq_t) has two owners, the Lua
 * handle (released by __gc) and the C request (released by its done
 * callback), and is freed by the last one. While a coroutine waits, its
 * task->op points at lr->op: if the task is abandoned (script freed or
 * reloaded, hook failed) task_abandon clears op.task and nothing is ever
 * resumed; the handle's __gc later cancels the connection. */
#include "script_api_http.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "error.h"
#include "script_internal.h"

#define HTTP_REQ_MT "sg.http.req"
#define HTTP_DEFAULT_TIMEOUT 30.0
#define HTTP_DEFAULT_MAX_BODY (1024 * 1024)
#define HTTP_MAX_REQ_HEADERS 64

typedef struct http_lreq {
    sg__script_op_t op;          /* first: task->op while a task waits */
    sg_http_client_req_t *req;   /* NULL once finished or cancelled */
    int refs;                    /* Lua handle + C request */
    int streaming;
    size_t max_body;
    int status;                  /* 0 until the head arrived */
    char **headers;              /* name, value, ... (lowercase names) */
    size_t nheaders;
    char *buf;                   /* the body, or the unread pieces */
    size_t len, cap;
    int done;
    int err;                     /* 0 or SG_E* */
    const char *reason;          /* static text for nil, reason */
} http_lreq_t;

typedef struct http_handle {
    http_lreq_t *lr;
} http_handle_t;

/* ---------------------------------------------------------------------
 * Client binding: (loop, host data) -> client
 * ------------------------------------------------------------------- */

typedef struct http_binding {
    uv_loop_t *loop;
    void *host_data;
    sg_http_client_t *client;
    struct http_binding *next;
} http_binding_t;

static http_binding_t *http_bindings;
static pthread_mutex_t http_bindings_lock = PTHREAD_MUTEX_INITIALIZER;

void sg_script_set_http_client(sg_script_t *s, sg_http_client_t *c)
{
    http_binding_t **pp, *b;

    pthread_mutex_lock(&http_bindings_lock);
    for (pp = &http_bindings; (b = *pp) != NULL; pp = &b->next)
        if (b->loop == s->loop && b->host_data == s->host.data)
            break;
    if (b != NULL && c == NULL) {
        *pp = b->next;
        free(b);
    } else if (b != NULL) {
        b->client = c;
    } else if (c != NULL && (b = calloc(1, sizeof *b)) != NULL) {
        b->loop = s->loop;
        b->host_data = s->host.data;
        b->client = c;
        b->next = http_bindings;
        http_bindings = b;
    }
    pthread_mutex_unlock(&http_bindings_lock);
}

static sg_http_client_t *http_client_of(const sg_script_t *s)
{
    sg_http_client_t *c = NULL;

    pthread_mutex_lock(&http_bindings_lock);
    for (http_binding_t *b = http_bindings; b != NULL; b = b->next)
        if (b->loop == s->loop && b->host_data == s->host.data)
            c = b->client;
    pthread_mutex_unlock(&http_bindings_lock);
    return c;
}

/* ---------------------------------------------------------------------
 * Request state
 * ------------------------------------------------------------------- */

static void lreq_unref(http_lreq_t *lr)
{
    if (--lr->refs > 0)
        return;
    for (size_t i = 0; i < lr->nheaders; i++)
        free(lr->headers[i]);
    free(lr->headers);
    free(lr->buf);
    free(lr);
}

static void lreq_fail(http_lreq_t *lr, int err, const char *reason)
{
    lr->done = 1;
    lr->err = err;
    lr->reason = reason;
}

/* Drops the C request (no callback follows) and its reference. */
static void lreq_cancel(http_lreq_t *lr, int err, const char *reason)
{
    if (lr->req == NULL)
        return;
    sg_http_client_cancel(lr->req);
    lr->req = NULL;
    lreq_fail(lr, err, reason);
    lreq_unref(lr);
}

static void push_head(lua_State *L, const http_lreq_t *lr)
{
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, lr->status);
    lua_setfield(L, -2, "status");
    lua_createtable(L, 0, (int)(lr->nheaders / 2));
    for (size_t i = 0; i + 1 < lr->nheaders; i += 2) {
        lua_pushstring(L, lr->headers[i + 1]);
        lua_setfield(L, -2, lr->headers[i]);
    }
    lua_setfield(L, -2, "headers");
}

/* The one retval function of wait: pushes "data", piece | "done", res |
 * nil, reason and returns 2, or returns -1 when there is nothing yet.
 * Pending pieces are delivered before the end (also a failed one). */
static int push_result(lua_State *L, http_lreq_t *lr)
{
    if (lr->streaming && lr->len > 0) {
        lua_pushliteral(L, "data");
        lua_pushlstring(L, lr->buf, lr->len);
        lr->len = 0;
        return 2;
    }
    if (!lr->done)
        return -1;
    if (lr->err != 0) {
        lua_pushnil(L);
        lua_pushstring(L, lr->reason);
        return 2;
    }
    lua_pushliteral(L, "done");
    push_head(L, lr);
    if (!lr->streaming) {
        lua_pushlstring(L, lr->buf ? lr->buf : "", lr->len);
        lua_setfield(L, -2, "body");
    }
    return 2;
}

/* Resumes the coroutine waiting on `lr`, if any (and still alive). */
static void lreq_wake(http_lreq_t *lr)
{
    sg_script_task_t *task = lr->op.task;

    if (task == NULL)
        return;
    int n = push_result(task->co, lr);
    if (n < 0)
        return;
    lr->op.task = NULL;
    task->op = NULL;
    sg__script_resume(task, n);
}

/* ---------------------------------------------------------------------
 * Client callbacks
 * ------------------------------------------------------------------- */

static void on_head(void *arg, int status, const char *const *headers)
{
    http_lreq_t *lr = arg;
    size_t n = 0;

    lr->status = status;
    while (headers[n] != NULL && headers[n + 1] != NULL)
        n += 2;
    lr->headers = calloc(n + 1, sizeof *lr->headers);
    if (lr->headers == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        if ((lr->headers[i] = strdup(headers[i])) == NULL)
            break;
        lr->nheaders = i + 1;
    }
    lr->nheaders &= ~(size_t)1;
}

static void on_data(void *arg, const char *data, size_t len)
{
    http_lreq_t *lr = arg;

    /* Non-streaming, the client enforces max_body on the total; streaming,
     * it bounds what on_chunk has not consumed yet. */
    if (lr->streaming && lr->len + len > lr->max_body) {
        lr->len = 0;
        lreq_cancel(lr, SG_ETOOBIG, "too big");
        lreq_wake(lr);
        return;
    }
    if (lr->len + len > lr->cap) {
        size_t cap = lr->cap ? lr->cap : 4096;
        while (cap < lr->len + len)
            cap *= 2;
        char *nb = realloc(lr->buf, cap);
        if (nb == NULL) {
            lreq_cancel(lr, SG_ENOMEM, "no memory");
            lreq_wake(lr);
            return;
        }
        lr->buf = nb;
        lr->cap = cap;
    }
    memcpy(lr->buf + lr->len, data, len);
    lr->len += len;
    if (lr->streaming)
        lreq_wake(lr);
}

static void on_done(void *arg, int status, const char *reason)
{
    http_lreq_t *lr = arg;

    lr->req = NULL;
    lr->done = 1;
    if (status != 0)
        lreq_fail(lr, status, reason);
    /* Wake first: the C reference keeps `lr` alive through the resume
     * even if the handle is collected meanwhile. */
    lreq_wake(lr);
    lreq_unref(lr);
}

/* ---------------------------------------------------------------------
 * Primitives
 * ------------------------------------------------------------------- */

/* Misuse of sg.http.request. The Lua wrapper calls `start` under pcall and
 * re-raises at its caller's line, where lua_getinfo cannot name the
 * function, hence the fixed name. */
static int http_argerror(lua_State *L, const char *msg)
{
    return luaL_error(L, "bad argument #1 to 'request' (%s)", msg);
}

static http_lreq_t *check_lreq(lua_State *L)
{
    http_handle_t *h = luaL_checkudata(L, 1, HTTP_REQ_MT);
    if (h->lr == NULL)
        luaL_argerror(L, 1, "request already released");
    return h->lr;
}

/* Collects opts.headers into `out` (name, value, ..., NULL); the strings
 * stay on the stack with the table. */
static void opt_headers(lua_State *L, const char **out)
{
    size_t n = 0;

    lua_getfield(L, 1, "headers");
    if (lua_isnil(L, -1)) {
        out[0] = NULL;
        return;
    }
    if (!lua_istable(L, -1))
        http_argerror(L, "headers must be a table");
    int t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            http_argerror(L, "headers must map strings to strings");
        if (n >= 2 * HTTP_MAX_REQ_HEADERS)
            http_argerror(L, "too many headers (at most 64)");
        out[n++] = lua_tostring(L, -2);
        out[n++] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    out[n] = NULL;
}

static double opt_number(lua_State *L, const char *key, double def,
                         double min, const char *msg)
{
    lua_getfield(L, 1, key);
    double v = lua_isnil(L, -1) ? def : lua_tonumber(L, -1);
    if ((!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TNUMBER) || !(v >= min))
        http_argerror(L, msg);
    lua_pop(L, 1);
    return v;
}

static const char *opt_string(lua_State *L, const char *key, const char *def,
                              size_t *len, const char *msg)
{
    lua_getfield(L, 1, key);
    if (lua_isnil(L, -1)) {
        if (len != NULL)
            *len = def ? strlen(def) : 0;
        return def;
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        http_argerror(L, msg);
    return lua_tolstring(L, -1, len);
}

/* start(opts) -> handle | nil, err. Misuse raises "bad argument #1 to
 * 'request' (...)". */
static int http_start(lua_State *L)
{
    const char *hdrs[2 * HTTP_MAX_REQ_HEADERS + 1];
    char err[256];
    sg_http_client_opts_t o;

    if (!lua_istable(L, 1)) {
        lua_pushfstring(L, "table expected, got %s", luaL_typename(L, 1));
        http_argerror(L, lua_tostring(L, -1));
    }
    o.method = opt_string(L, "method", "GET", NULL,
                          "method must be a string");
    o.url = opt_string(L, "url", NULL, NULL, "url must be a string");
    if (o.url == NULL)
        http_argerror(L, "url is required");
    o.body = opt_string(L, "body", NULL, &o.body_len,
                        "body must be a string or nil");
    o.timeout = opt_number(L, "timeout", HTTP_DEFAULT_TIMEOUT, 0.001,
                           "timeout must be a number of seconds > 0");
    double max_body = opt_number(L, "max_body", HTTP_DEFAULT_MAX_BODY, 1,
                                 "max_body must be a number >= 1");
    lua_getfield(L, 1, "on_chunk");
    int streaming = !lua_isnil(L, -1);
    if (streaming && !lua_isfunction(L, -1))
        http_argerror(L, "on_chunk must be a function");
    opt_headers(L, hdrs);
    o.headers = hdrs;
    o.max_body = streaming ? 0 : (size_t)max_body;
    sg_script_task_t *task = sg__script_check_yieldable(L, "sg.http.request");
    sg_http_client_t *c = http_client_of(task->s);
    if (c == NULL)
        return sg__script_push_error(L, SG_ENOTREADY);

    http_handle_t *h = lua_newuserdata(L, sizeof *h);
    h->lr = NULL; /* closed until the request started */
    luaL_getmetatable(L, HTTP_REQ_MT);
    lua_setmetatable(L, -2);
    http_lreq_t *lr = calloc(1, sizeof *lr);
    if (lr == NULL)
        return sg__script_push_error(L, SG_ENOMEM);
    lr->streaming = streaming;
    lr->max_body = (size_t)max_body;
    sg_http_client_handlers_t hd = {on_head, on_data, on_done, lr};
    int rc = sg_http_client_request(c, &o, &hd, &lr->req, err, sizeof err);
    if (rc != 0) {
        free(lr);
        if (rc == SG_EINVAL)
            http_argerror(L, err);
        lua_pushnil(L);
        lua_pushstring(L, rc == SG_ENOTSUP ? err : rc == SG_ECLOSED
                                                       ? "closed"
                                                       : sg_strerror(rc));
        return 2;
    }
    lr->refs = 2;
    h->lr = lr;
    return 1;
}

/* wait(h) -> "data", piece | "done", res | nil, err; yields when nothing
 * is there yet. */
static int http_wait(lua_State *L)
{
    http_lreq_t *lr = check_lreq(L);
    sg_script_task_t *task = sg__script_check_yieldable(L, "sg.http.request");

    int n = push_result(L, lr);
    if (n >= 0)
        return n;
    if (lr->op.task != NULL)
        return sg__script_push_error(L, SG_EBUSY);
    lr->op.task = task;
    task->op = &lr->op;
    sg__script_suspend(task, SG__WAIT_BROKER);
    return lua_yield(L, 0);
}

/* head(h) -> {status = n, headers = {...}} */
static int http_head(lua_State *L)
{
    push_head(L, check_lreq(L));
    return 1;
}

/* cancel(h): the hook gave up (on_chunk raised). */
static int http_cancel(lua_State *L)
{
    lreq_cancel(check_lreq(L), SG_ECANCELED, "closed");
    return 0;
}

static int http_gc(lua_State *L)
{
    http_handle_t *h = luaL_checkudata(L, 1, HTTP_REQ_MT);
    http_lreq_t *lr = h->lr;

    if (lr == NULL)
        return 0;
    h->lr = NULL;
    lr->op.task = NULL;
    lreq_cancel(lr, SG_ECANCELED, "closed");
    lreq_unref(lr);
    return 0;
}

/* ---------------------------------------------------------------------
 * The public wrapper
 * ------------------------------------------------------------------- */

/* A misuse raised by `start` is re-raised at the caller's line (level 2)
 * without the wrapper's own position. A failing on_chunk cancels the
 * request before the error propagates, so the connection does not
 * outlive the hook. */
static const char HTTP_WRAPPER[] =
    "local start, wait, head, cancel = ...\n"
    "local pcall, error, gsub = pcall, error, string.gsub\n"
    "return function(opts)\n"
    "    local ok, h, err = pcall(start, opts)\n"
    "    if not ok then\n"
    "        error((gsub(tostring(h), '^sg%.http:%d+: ', '')), 2)\n"
    "    end\n"
    "    if not h then\n"
    "        return nil, err\n"
    "    end\n"
    "    local on_chunk, res = opts.on_chunk, nil\n"
    "    while true do\n"
    "        local kind, v = wait(h)\n"
    "        if kind == 'data' then\n"
    "            res = res or head(h)\n"
    "            local ok, e = pcall(on_chunk, v, res)\n"
    "            if not ok then\n"
    "                cancel(h)\n"
    "                error(e, 0)\n"
    "            end\n"
    "        elseif kind == 'done' then\n"
    "            return v\n"
    "        else\n"
    "            return nil, v\n"
    "        end\n"
    "    end\n"
    "end\n";

void sg_script_api_http_open(lua_State *L)
{
    luaL_newmetatable(L, HTTP_REQ_MT);
    lua_pushcfunction(L, http_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "sg.http.req");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);

    lua_createtable(L, 0, 1);
    if (luaL_loadbuffer(L, HTTP_WRAPPER, sizeof HTTP_WRAPPER - 1,
                        "=sg.http") != 0)
        lua_error(L);
    lua_pushcfunction(L, http_start);
    lua_pushcfunction(L, http_wait);
    lua_pushcfunction(L, http_head);
    lua_pushcfunction(L, http_cancel);
    lua_call(L, 4, 1);
    lua_setfield(L, -2, "request");
    lua_setfield(L, -2, "http");
}
