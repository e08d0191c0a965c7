/* The operator endpoints under /admin/: POST /admin/reload (hot reload of
 * the Lua scripts) and GET /admin/status. http.c routes every /admin/ path
 * here. Access: with admin.token (env ADMIN_TOKEN) configured, the request
 * must carry it as `X-Admin-Token: T` or `Authorization: Bearer T` (401
 * otherwise); without a token only loopback peers may use them, and any
 * other peer gets the same 404 as an unknown path. */
#ifndef SG_ADMIN_H
#define SG_ADMIN_H

#include "streamgate.h"

/* What http.c passes in; every string stays the caller's and may be
 * empty ("" when the header is absent), never NULL. */
typedef struct sg_admin_req {
    const char *method;        /* "GET", "POST", ... */
    const char *path;          /* "/admin/reload" */
    const char *token;         /* X-Admin-Token header */
    const char *authorization; /* Authorization header */
    const char *peer;          /* peer IP address, "127.0.0.1" */
} sg_admin_req_t;

/* Answers one admin request: *status gets the HTTP status and *body a
 * malloc'd JSON document (the caller frees it; NULL only on no memory).
 * Runs the reload synchronously (it does not call back into http.c). */
void sg_admin_handle(sg_server_t *srv, const sg_admin_req_t *req,
                     int *status, char **body);

#endif
