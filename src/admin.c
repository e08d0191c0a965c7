/* /admin/reload and /admin/status: access control (token or loopback) and
 * the JSON answers. The reload itself is reload.c's sg_reload_now. */
#include "admin.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "reload.h"
#include "server_internal.h"

static int admin_allowed(const sg_server_t *srv, const sg_admin_req_t *req,
                         int *status);
static char *admin_error(int status, const char *error, const char *detail);
static char *admin_dump(json_t *o);

/* ---------------------------------------------------------------------
 * API
 * ------------------------------------------------------------------- */

static char *admin_reload(sg_server_t *srv, int *status)
{
    char err[1024];

    if (sg_reload_now(srv, "admin", err, sizeof err) != 0) {
        *status = 422;
        return admin_dump(json_pack("{s:s, s:s}", "status", "failed",
                                    "error", err));
    }
    *status = 200;
    return admin_dump(json_pack("{s:s, s:I}", "status", "reloaded", "version",
                                (json_int_t)sg_script_version(srv->script)));
}

static char *admin_status(sg_server_t *srv, int *status)
{
    uint64_t failures = 0;
    uint64_t reloads = sg_script_reloads(srv->script, &failures);
    json_t *o = json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:f}", "node",
        srv->cfg->node_id, "version",
        (json_int_t)sg_script_version(srv->script), "reloads",
        (json_int_t)reloads, "reload_failures", (json_int_t)failures,
        "lua_states", (json_int_t)sg_script_states(srv->script),
        "pending_coroutines", (json_int_t)sg_script_pending(srv->script),
        "connections", (json_int_t)srv->nconns, "sessions",
        (json_int_t)sg__sessions_count(srv->sessions), "mode",
        sg_broker_mode(srv->broker), "uptime",
        (double)(sg__now_ms() - srv->started_ms) / 1000.0);
    *status = 200;
    return admin_dump(o);
}

void sg_admin_handle(sg_server_t *srv, const sg_admin_req_t *req,
                     int *status, char **body)
{
    int is_get = strcmp(req->method, "GET") == 0 ||
                 strcmp(req->method, "HEAD") == 0;
    int is_post = strcmp(req->method, "POST") == 0;

    if (!admin_allowed(srv, req, status)) {
        *body = *status == 401
                    ? admin_error(401, "Unauthorized", "admin token required")
                    : admin_error(404, "Not found", req->path);
        return;
    }
    if (srv->script == NULL) {
        *status = 503;
        *body = admin_error(503, "Service unavailable", "server is stopping");
    } else if (strcmp(req->path, "/admin/reload") == 0 && is_post) {
        *body = admin_reload(srv, status);
    } else if (strcmp(req->path, "/admin/status") == 0 && is_get) {
        *body = admin_status(srv, status);
    } else if (strcmp(req->path, "/admin/reload") == 0 ||
               strcmp(req->path, "/admin/status") == 0) {
        *status = 405;
        *body = admin_error(405, "Method not allowed",
                            strcmp(req->path, "/admin/reload") == 0
                                ? "use POST" : "use GET");
    } else {
        *status = 404;
        *body = admin_error(404, "Not found", req->path);
    }
}

/* ---------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------- */

/* Serializes and releases `o` (NULL stays NULL). */
static char *admin_dump(json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6))
                   : NULL;
    json_decref(o);
    return text;
}

static char *admin_error(int status, const char *error, const char *detail)
{
    return admin_dump(json_pack("{s:s, s:s}", "error", error, "detail",
                                detail));
}

/* Compares without an early exit, so the time taken does not tell how
 * many leading bytes of a guess were right. */
static int admin_token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;

    for (size_t i = 0; i < lb; i++)
        d |= (unsigned char)(a[i < la ? i : 0] ^ b[i]);
    return d == 0 && la > 0;
}

static int admin_is_loopback(const char *peer)
{
    return strncmp(peer, "127.", 4) == 0 || strcmp(peer, "::1") == 0 ||
           strncmp(peer, "::ffff:127.", 11) == 0;
}

/* 1 when the request may use the admin API; else *status is 401 (token
 * configured, missing or wrong) or 404 (no token, not loopback). */
static int admin_allowed(const sg_server_t *srv, const sg_admin_req_t *req,
                         int *status)
{
    const char *want = srv->cfg->admin.token;

    if (want == NULL || want[0] == '\0') {
        *status = 404;
        return admin_is_loopback(req->peer);
    }
    *status = 401;
    if (admin_token_equal(req->token, want))
        return 1;
    if (strncasecmp(req->authorization, "Bearer ", 7) == 0)
        return admin_token_equal(req->authorization + 7, want);
    return 0;
}
