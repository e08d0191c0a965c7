/* Configuration: built-in defaults, then the Lua config file (a script that
 * returns a table), then environment overrides, then validation.
 *
 * Every error names the key, the value and what was expected, e.g.
 *   config: stream.max_pending_chunks = -5: expected an integer >= 1
 * Unknown keys are errors too (they are almost always typos). */
#ifndef SG_CONFIG_H
#define SG_CONFIG_H

#include <stddef.h>

typedef struct sg_config {
    char *config_path;   /* file loaded, or NULL for built-in defaults */
    char *env;           /* "development" | "production" (STREAMGATE_ENV) */
    char *listen;        /* listen address, default "0.0.0.0" */
    int port;            /* 1..65535, default 8080; env PORT */
    char *node_id;       /* default "<hostname>-<pid>"; env NODE_ID */

    struct {
        int enabled;           /* 1 when a url/host was configured */
        char *url;             /* redis://[:password@]host:port[/db]; env REDIS_URL */
        char *host;            /* parsed from url, or env REDIS_HOST */
        int port;              /* default 6379; env REDIS_PORT */
        char *password;        /* env REDIS_PASSWORD; NULL = none */
        char *username;        /* ACL user from the url; NULL = default */
        int db;                /* 0..  */
        double connect_timeout;     /* seconds, default 2 */
        double command_timeout;     /* seconds, default 5 */
        double reconnect_min_delay; /* seconds, default 0.1 */
        double reconnect_max_delay; /* seconds, default 5 */
    } redis;

    struct {
        int dev_mode;          /* default 1; 0 when env is "production" */
        char *jwt_secret;      /* env JWT_SECRET */
        char *jwt_algorithm;   /* "HS256" (default) | "HS384" | "HS512" */
        int leeway;            /* seconds of clock skew allowed, default 30 */
        char *issuer;          /* NULL = not checked */
        char *audience;        /* NULL = not checked */
        int token_ttl;         /* seconds for /api/auth/token, default 3600 */
    } auth;

    struct {
        size_t max_frame_bytes;  /* inbound WS message cap, default 65536 */
        size_t max_body_bytes;   /* HTTP request body cap, default 1 MiB */
        int max_connections;     /* default 10000 */
    } limits;

    struct {
        int max_pending_chunks;  /* per-connection send queue, default 1000 */
        size_t max_pending_bytes;/* per-connection queued bytes, default 4 MiB */
        int history_ttl;         /* seconds, default 86400 */
        int recovery_ttl;        /* seconds the chunk log, offsets and
                                    snapshots live after the last chunk;
                                    default 600 */
        int log_max_len;         /* chunk log entries kept per session,
                                    default 10000 */
        size_t max_message_bytes;/* largest producer message (and user
                                    question) accepted, default 1 MiB */
        double linger;           /* seconds a session with an answer in
                                    flight stays subscribed after its last
                                    connection left, default 30 */
    } stream;

    struct {
        char *cors_origins;   /* default "*" */
        char *static_dir;     /* default "public" */
    } http;

    struct {
        char *path;           /* Lua script directory, default "lua" */
        int watch;            /* reload when a file in it changes, default 0 */
        int fast_path;        /* answer exact ping / heartbeat frames in C,
                                 without Lua (plugins do not see them);
                                 default 0 */
        double hook_timeout;  /* seconds one hook resume may run; 0 = no
                                 budget (and the JIT stays on), default 0.5 */
        int memory_limit;     /* MiB per Lua state; 0 = none, default 256 */
    } lua;

    struct {
        char *token;          /* token of the /admin/ routes; env ADMIN_TOKEN; NULL
                                 = loopback peers only */
    } admin;

    char *upstream;           /* "demo" (default) | "ai_service" */

    struct {
        char *url;       /* base url of the Python AI service, default
                            "http://127.0.0.1:8000"; env AI_SERVICE_URL.
                            With upstream "ai_service" it must be
                            http://HOST[:port][/path], HOST an IPv4
                            literal or localhost */
        double timeout;  /* seconds per proxied request, default 30 */
    } ai_service;

    struct {
        double words_per_second; /* default 30 */
    } demo;

    struct {
        char *level;          /* "debug" | "info" (default) | "warn" | "error" */
        char *format;         /* "text" (default) | "json" */
    } log;
} sg_config_t;

/* Fills `cfg` from defaults, the file at `path` (NULL: defaults only), and the
 * environment; then validates. Returns 0, or SG_ECONFIG with a one-line
 * message in `err` naming the key. On error `cfg` is freed and zeroed. */
int sg_config_load(sg_config_t *cfg, const char *path, char *err,
                   size_t errlen);
/* Frees every string of `cfg`; safe on a zeroed struct. */
void sg_config_free(sg_config_t *cfg);

/* Parses redis://[[user]:password@]host[:port][/db]. Outputs are malloc'd
 * (password/username NULL when absent). 0 or SG_EINVAL with `err`. */
int sg_config_parse_redis_url(const char *url, char **host, int *port,
                              char **username, char **password, int *db,
                              char *err, size_t errlen);

#endif
