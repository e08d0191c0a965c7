/* Configuration loading: built-in defaults, then the Lua config file (a
 * script evaluated in a fresh, minimal LuaJIT state that must return a
 * table), then environment overrides, then cross-field rules.
 *
 * Every settable key is one row of config_keys[]; the file walker, the
 * environment pass, the range checks and the error texts are all driven by
 * that table, so adding a key is one row plus its default. This file owns no
 * global state and never logs: errors go to the caller's buffer. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "error.h"
#include "query.h"

#define CONFIG_DEV_SECRET "streamgate-dev-secret-change-me"
#define CONFIG_MIN_SECRET_LEN 32
#define CONFIG_SHOWN_MAX 96
#define CONFIG_URL_FORM "redis://[[user]:password@]host[:port][/db]"
#define CONFIG_AI_URL_FORM "http://HOST[:port][/path], HOST an IPv4 literal " \
                           "or localhost"

/* ------------------------------------------------------------------------
 * Key table
 * ---------------------------------------------------------------------- */

typedef enum {
    CFG_STR,  /* char *, non-empty, optionally one of `choices` */
    CFG_INT,  /* int in [min, max] */
    CFG_SIZE, /* size_t in [min, max] */
    CFG_NUM,  /* double in [min, max] (or (min, max] with min_open) */
    CFG_BOOL, /* int 0/1: a Lua boolean, or "0"/"1" in the environment */
} cfg_type_t;

typedef struct {
    const char *key; /* "stream.max_pending_chunks" */
    cfg_type_t type;
    size_t offset; /* into sg_config_t */
    double min, max;
    int min_open;               /* 1: value must be > min */
    int max_shown;              /* 0: max is only the type's limit */
    const char *const *choices; /* NULL-terminated, for CFG_STR */
    const char *env;            /* overriding environment variable */
    int secret;                 /* never echo the value in messages */
} cfg_key_t;

static const char *const config_env_choices[] = {"development", "production",
                                                 NULL};
static const char *const config_alg_choices[] = {"HS256", "HS384", "HS512",
                                                 NULL};
static const char *const config_level_choices[] = {"debug", "info", "warn",
                                                   "error", NULL};
static const char *const config_format_choices[] = {"text", "json", NULL};
static const char *const config_upstream_choices[] = {"demo", "ai_service",
                                                      NULL};

/* Nested tables, in the order they are listed in messages. */
static const char *const config_sections[] = {
    "redis", "auth", "limits", "stream", "http", "lua", "demo", "log",
    "admin", "ai_service", NULL};

/* clang-format off */
#define OFF(field) offsetof(sg_config_t, field)
#define KSTR(k, f, ch, ev) {k, CFG_STR, OFF(f), 0, 0, 0, 0, ch, ev, 0}
#define KSECRET(k, f, ev) {k, CFG_STR, OFF(f), 0, 0, 0, 0, NULL, ev, 1}
#define KINT(k, f, lo, hi, shown, ev)                                          \
    {k, CFG_INT, OFF(f), lo, hi, 0, shown, NULL, ev, 0}
#define KSIZE(k, f, lo, ev) {k, CFG_SIZE, OFF(f), lo, 1e15, 0, 0, NULL, ev, 0}
#define KNUM(k, f, lo, open, hi, shown, ev)                                    \
    {k, CFG_NUM, OFF(f), lo, hi, open, shown, NULL, ev, 0}
#define KBOOL(k, f, ev) {k, CFG_BOOL, OFF(f), 0, 1, 0, 0, NULL, ev, 0}
/* clang-format on */

static const cfg_key_t config_keys[] = {
    KSTR("env", env, config_env_choices, "STREAMGATE_ENV"),
    KSTR("listen", listen, NULL, NULL),
    KINT("port", port, 1, 65535, 1, "PORT"),
    KSTR("node_id", node_id, NULL, "NODE_ID"),
    KSTR("upstream", upstream, config_upstream_choices, NULL),

    KSTR("redis.url", redis.url, NULL, "REDIS_URL"),
    KSTR("redis.host", redis.host, NULL, "REDIS_HOST"),
    KINT("redis.port", redis.port, 1, 65535, 1, "REDIS_PORT"),
    KSECRET("redis.password", redis.password, "REDIS_PASSWORD"),
    KSTR("redis.username", redis.username, NULL, NULL),
    KINT("redis.db", redis.db, 0, INT_MAX, 0, NULL),
    KNUM("redis.connect_timeout", redis.connect_timeout, 0, 1, 1e9, 0, NULL),
    KNUM("redis.command_timeout", redis.command_timeout, 0, 1, 1e9, 0, NULL),
    KNUM("redis.reconnect_min_delay", redis.reconnect_min_delay, 0, 1, 1e9, 0,
         NULL),
    KNUM("redis.reconnect_max_delay", redis.reconnect_max_delay, 0, 1, 1e9, 0,
         NULL),

    KBOOL("auth.dev_mode", auth.dev_mode, "STREAMGATE_DEV_MODE"),
    KSECRET("auth.jwt_secret", auth.jwt_secret, "JWT_SECRET"),
    KSTR("auth.jwt_algorithm", auth.jwt_algorithm, config_alg_choices,
         "JWT_ALGORITHM"),
    KINT("auth.leeway", auth.leeway, 0, INT_MAX, 0, NULL),
    KSTR("auth.issuer", auth.issuer, NULL, NULL),
    KSTR("auth.audience", auth.audience, NULL, NULL),
    KINT("auth.token_ttl", auth.token_ttl, 1, INT_MAX, 0, NULL),

    KSIZE("limits.max_frame_bytes", limits.max_frame_bytes, 1, NULL),
    KSIZE("limits.max_body_bytes", limits.max_body_bytes, 1, NULL),
    KINT("limits.max_connections", limits.max_connections, 1, INT_MAX, 0, NULL),

    KINT("stream.max_pending_chunks", stream.max_pending_chunks, 1, INT_MAX, 0,
         NULL),
    KSIZE("stream.max_pending_bytes", stream.max_pending_bytes, 1, NULL),
    KINT("stream.history_ttl", stream.history_ttl, 1, INT_MAX, 0, NULL),
    KINT("stream.recovery_ttl", stream.recovery_ttl, 1, INT_MAX, 0, NULL),
    KINT("stream.log_max_len", stream.log_max_len, 1, INT_MAX, 0, NULL),
    KSIZE("stream.max_message_bytes", stream.max_message_bytes, 1, NULL),
    KNUM("stream.linger", stream.linger, 0, 0, 86400, 1, NULL),

    KSTR("http.cors_origins", http.cors_origins, NULL, "CORS_ORIGINS"),
    KSTR("http.static_dir", http.static_dir, NULL, "STREAMGATE_STATIC_DIR"),

    KSTR("lua.path", lua.path, NULL, "STREAMGATE_LUA_PATH"),
    KBOOL("lua.watch", lua.watch, "STREAMGATE_LUA_WATCH"),
    KBOOL("lua.fast_path", lua.fast_path, NULL),
    KNUM("lua.hook_timeout", lua.hook_timeout, 0, 0, 3600, 1, NULL),
    KINT("lua.memory_limit", lua.memory_limit, 0, 1048576, 1, NULL),

    KSECRET("admin.token", admin.token, "ADMIN_TOKEN"),

    KNUM("demo.words_per_second", demo.words_per_second, 0, 1, 10000, 1,
         "DEMO_WORDS_PER_SECOND"),

    KSTR("ai_service.url", ai_service.url, NULL, "AI_SERVICE_URL"),
    KNUM("ai_service.timeout", ai_service.timeout, 0, 1, 3600, 1, NULL),

    KSTR("log.level", log.level, config_level_choices, "LOG_LEVEL"),
    KSTR("log.format", log.format, config_format_choices, "LOG_FORMAT"),
};

#define CONFIG_NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/* Where a value came from: decides the message prefix and how it is shown. */
typedef struct {
    char *err;
    size_t errlen;
    const char *env; /* env var name, or NULL for the config file */
} cfg_ctx_t;

static int config_set_defaults(sg_config_t *cfg);
static int config_load_file(sg_config_t *cfg, const char *path, cfg_ctx_t *ctx);
static int config_apply_env(sg_config_t *cfg, cfg_ctx_t *ctx);
static int config_finish(sg_config_t *cfg, cfg_ctx_t *ctx);
static int config_parse_uint(const char *s, size_t len, long lo, long hi,
                             long *out);

/* ------------------------------------------------------------------------
 * API
 * ---------------------------------------------------------------------- */

int sg_config_load(sg_config_t *cfg, const char *path, char *err, size_t errlen)
{
    cfg_ctx_t ctx = {err, errlen, NULL};
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    if (errlen > 0)
        err[0] = '\0';
    rc = config_set_defaults(cfg);
    if (rc == 0 && path != NULL) {
        cfg->config_path = strdup(path);
        rc = cfg->config_path ? config_load_file(cfg, path, &ctx) : SG_ENOMEM;
    }
    if (rc == 0)
        rc = config_apply_env(cfg, &ctx);
    if (rc == 0)
        rc = config_finish(cfg, &ctx);
    if (rc != 0) {
        if (rc == SG_ENOMEM)
            snprintf(err, errlen, "config: out of memory");
        sg_config_free(cfg);
        return rc;
    }
    return 0;
}

void sg_config_free(sg_config_t *cfg)
{
    size_t i;

    for (i = 0; i < CONFIG_NKEYS; i++) {
        if (config_keys[i].type == CFG_STR) {
            char **slot = (char **)((char *)cfg + config_keys[i].offset);
            free(*slot);
        }
    }
    free(cfg->config_path);
    memset(cfg, 0, sizeof(*cfg));
}

/* ------------------------------------------------------------------------
 * Messages
 * ---------------------------------------------------------------------- */

static int config_fail(cfg_ctx_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int config_fail(cfg_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (ctx->errlen > 0)
        vsnprintf(ctx->err, ctx->errlen, fmt, ap);
    va_end(ap);
    return SG_ECONFIG;
}

/* "config: port" or "env PORT", the subject of every value error. */
static void config_subject(const cfg_ctx_t *ctx, const cfg_key_t *k, char *out,
                           size_t outlen)
{
    if (ctx->env != NULL)
        snprintf(out, outlen, "env %s", ctx->env);
    else
        snprintf(out, outlen, "config: %s", k->key);
}

/* What an acceptable value looks like, e.g. "an integer >= 1". `over` asks
 * for the type's own upper limit to be shown too. */
static void config_expected(const cfg_ctx_t *ctx, const cfg_key_t *k, int over,
                            char *out, size_t outlen)
{
    size_t n;
    int i;

    switch (k->type) {
    case CFG_STR:
        if (k->choices == NULL) {
            snprintf(out, outlen, "a non-empty string");
            break;
        }
        n = (size_t)snprintf(out, outlen, "one of");
        for (i = 0; k->choices[i] != NULL && n < outlen; i++)
            n += (size_t)snprintf(out + n, outlen - n, "%s %s", i ? "," : "",
                                  k->choices[i]);
        break;
    case CFG_INT:
    case CFG_SIZE:
        if (k->max_shown || over)
            snprintf(out, outlen, "an integer %.0f-%.0f", k->min, k->max);
        else
            snprintf(out, outlen, "an integer >= %.0f", k->min);
        break;
    case CFG_NUM:
        n = (size_t)snprintf(out, outlen, "a number %s %g",
                             k->min_open ? ">" : ">=", k->min);
        if ((k->max_shown || over) && n < outlen)
            snprintf(out + n, outlen - n, " and <= %g", k->max);
        break;
    case CFG_BOOL:
        snprintf(out, outlen, "%s", ctx->env ? "0 or 1" : "a boolean");
        break;
    }
}

/* Reports that the value `shown` of key `k` is not acceptable. */
static int config_bad_value(cfg_ctx_t *ctx, const cfg_key_t *k,
                            const char *shown, int over)
{
    char subject[96], expected[128];

    config_subject(ctx, k, subject, sizeof(subject));
    config_expected(ctx, k, over, expected, sizeof(expected));
    return config_fail(ctx, "%s = %s: expected %s", subject,
                       k->secret ? "'***'" : shown, expected);
}

/* Quotes a string for a message, cutting long ones. */
static void config_quote(const char *s, size_t len, char *out, size_t outlen)
{
    int cut = len > CONFIG_SHOWN_MAX;

    snprintf(out, outlen, "'%.*s%s'", (int)(cut ? CONFIG_SHOWN_MAX : len), s,
             cut ? "..." : "");
}

/* ------------------------------------------------------------------------
 * Storing validated values
 * ---------------------------------------------------------------------- */

static void *config_slot(sg_config_t *cfg, const cfg_key_t *k)
{
    return (char *)cfg + k->offset;
}

static int config_store_string(sg_config_t *cfg, const cfg_key_t *k,
                               const char *s, size_t len, cfg_ctx_t *ctx)
{
    char **slot = config_slot(cfg, k);
    char shown[CONFIG_SHOWN_MAX + 8];
    char *copy;
    int i, ok = len > 0 && strlen(s) == len;

    for (i = 0; ok && k->choices != NULL && k->choices[i] != NULL; i++)
        if (strcmp(s, k->choices[i]) == 0)
            break;
    if (ok && k->choices != NULL && k->choices[i] == NULL)
        ok = 0;
    if (!ok) {
        config_quote(s, len, shown, sizeof(shown));
        return config_bad_value(ctx, k, shown, 0);
    }
    copy = strdup(s);
    if (copy == NULL)
        return SG_ENOMEM;
    free(*slot);
    *slot = copy;
    return 0;
}

/* `shown` is how the value appears in a message (the raw text for env). */
static int config_store_number(sg_config_t *cfg, const cfg_key_t *k, double d,
                               const char *shown, cfg_ctx_t *ctx)
{
    int integral = k->type == CFG_INT || k->type == CFG_SIZE;
    int low = k->min_open ? !(d > k->min) : !(d >= k->min);

    if (!isfinite(d) || (integral && d != floor(d)) || low)
        return config_bad_value(ctx, k, shown, 0);
    if (d > k->max)
        return config_bad_value(ctx, k, shown, 1);
    if (k->type == CFG_INT)
        *(int *)config_slot(cfg, k) = (int)d;
    else if (k->type == CFG_SIZE)
        *(size_t *)config_slot(cfg, k) = (size_t)d;
    else
        *(double *)config_slot(cfg, k) = d;
    return 0;
}

/* ------------------------------------------------------------------------
 * Defaults
 * ---------------------------------------------------------------------- */

static int config_default_node_id(sg_config_t *cfg)
{
    char host[256], id[300];

    if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "streamgate");
    host[sizeof(host) - 1] = '\0';
    snprintf(id, sizeof(id), "%s-%ld", host, (long)getpid());
    cfg->node_id = strdup(id);
    return cfg->node_id ? 0 : SG_ENOMEM;
}

static int config_set_defaults(sg_config_t *cfg)
{
    cfg->env = strdup("development");
    cfg->listen = strdup("0.0.0.0");
    cfg->port = 8080;
    cfg->upstream = strdup("demo");
    cfg->redis.port = 6379;
    cfg->redis.connect_timeout = 2;
    cfg->redis.command_timeout = 5;
    cfg->redis.reconnect_min_delay = 0.1;
    cfg->redis.reconnect_max_delay = 5;
    cfg->auth.dev_mode = 1;
    cfg->auth.jwt_algorithm = strdup("HS256");
    cfg->auth.leeway = 30;
    cfg->auth.token_ttl = 3600;
    cfg->limits.max_frame_bytes = 65536;
    cfg->limits.max_body_bytes = 1024 * 1024;
    cfg->limits.max_connections = 10000;
    cfg->stream.max_pending_chunks = 1000;
    cfg->stream.max_pending_bytes = 4 * 1024 * 1024;
    cfg->stream.history_ttl = 86400;
    cfg->stream.recovery_ttl = 600;
    cfg->stream.log_max_len = 10000;
    cfg->stream.max_message_bytes = 1048576;
    cfg->stream.linger = 30;
    cfg->http.cors_origins = strdup("*");
    cfg->http.static_dir = strdup("public");
    cfg->lua.path = strdup("lua");
    cfg->lua.hook_timeout = 0.5;
    cfg->lua.memory_limit = 256;
    cfg->demo.words_per_second = 30;
    cfg->ai_service.url = strdup("http://127.0.0.1:8000");
    cfg->ai_service.timeout = 30;
    cfg->log.level = strdup("info");
    cfg->log.format = strdup("text");
    if (!cfg->env || !cfg->listen || !cfg->upstream ||
        !cfg->auth.jwt_algorithm || !cfg->http.cors_origins ||
        !cfg->http.static_dir || !cfg->lua.path || !cfg->log.level ||
        !cfg->log.format || !cfg->ai_service.url)
        return SG_ENOMEM;
    return config_default_node_id(cfg);
}

/* ------------------------------------------------------------------------
 * Config file
 * ---------------------------------------------------------------------- */

static const cfg_key_t *config_find_key(const char *dotted)
{
    size_t i;

    for (i = 0; i < CONFIG_NKEYS; i++)
        if (strcmp(config_keys[i].key, dotted) == 0)
            return &config_keys[i];
    return NULL;
}

static int config_is_section(const char *name)
{
    int i;

    for (i = 0; config_sections[i] != NULL; i++)
        if (strcmp(config_sections[i], name) == 0)
            return 1;
    return 0;
}

/* Lists the keys under `section` ("" for the top level) into `out`. */
static void config_known_keys(const char *section, char *out, size_t outlen)
{
    size_t i, n = 0, plen = strlen(section);
    int j;

    out[0] = '\0';
    for (i = 0; i < CONFIG_NKEYS && n < outlen; i++) {
        const char *k = config_keys[i].key;
        if (plen == 0 ? strchr(k, '.') != NULL
                      : strncmp(k, section, plen) != 0 || k[plen] != '.')
            continue;
        n += (size_t)snprintf(out + n, outlen - n, "%s%s", n ? ", " : "",
                              plen ? k + plen + 1 : k);
    }
    if (plen > 0)
        return;
    for (j = 0; config_sections[j] != NULL && n < outlen; j++)
        n += (size_t)snprintf(out + n, outlen - n, ", %s", config_sections[j]);
    if (n < outlen)
        snprintf(out + n, outlen - n, ", plugins");
}

/* How the Lua value at `idx` reads in a message: 5, 'text', true, a table. */
static void config_show_lua(lua_State *L, int idx, char *out, size_t outlen)
{
    size_t len;
    const char *s;

    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        /* NaN's sign, and so "-nan" vs "nan", varies: print it plainly. */
        if (isnan(lua_tonumber(L, idx)))
            snprintf(out, outlen, "nan");
        else
            snprintf(out, outlen, "%.14g", lua_tonumber(L, idx));
        break;
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        config_quote(s, len, out, outlen);
        break;
    case LUA_TBOOLEAN:
        snprintf(out, outlen, "%s", lua_toboolean(L, idx) ? "true" : "false");
        break;
    default:
        snprintf(out, outlen, "a %s", lua_typename(L, lua_type(L, idx)));
        break;
    }
}

/* Stores the Lua value at the top of the stack into key `k`. */
static int config_set_lua(sg_config_t *cfg, const cfg_key_t *k, lua_State *L,
                          cfg_ctx_t *ctx)
{
    char shown[CONFIG_SHOWN_MAX + 8];
    int t = lua_type(L, -1);
    size_t len;
    const char *s;

    config_show_lua(L, -1, shown, sizeof(shown));
    switch (k->type) {
    case CFG_STR:
        if (t != LUA_TSTRING)
            return config_bad_value(ctx, k, shown, 0);
        s = lua_tolstring(L, -1, &len);
        return config_store_string(cfg, k, s, len, ctx);
    case CFG_BOOL:
        if (t != LUA_TBOOLEAN)
            return config_bad_value(ctx, k, shown, 0);
        *(int *)config_slot(cfg, k) = lua_toboolean(L, -1);
        return 0;
    default:
        if (t != LUA_TNUMBER)
            return config_bad_value(ctx, k, shown, 0);
        return config_store_number(cfg, k, lua_tonumber(L, -1), shown, ctx);
    }
}

static int config_unknown_key(cfg_ctx_t *ctx, const char *section,
                              const char *name)
{
    char known[512];

    config_known_keys(section, known, sizeof(known));
    if (section[0] == '\0')
        return config_fail(ctx,
                           "config: unknown key '%s' (known top-level "
                           "keys: %s)",
                           name, known);
    return config_fail(ctx, "config: unknown key '%s.%s' (known %s keys: %s)",
                       section, name, section, known);
}

/* Walks the table at the top of the stack. `section` is "" for the top
 * level. Keys are checked with lua_type before lua_tostring: converting a
 * number key in place would break lua_next. */
static int config_walk(sg_config_t *cfg, lua_State *L, const char *section,
                       cfg_ctx_t *ctx)
{
    char dotted[128], shown[CONFIG_SHOWN_MAX + 8];
    int rc = 0;

    lua_pushnil(L);
    while (rc == 0 && lua_next(L, -2) != 0) {
        const char *name;
        const cfg_key_t *k;

        if (lua_type(L, -2) != LUA_TSTRING) {
            config_show_lua(L, -2, shown, sizeof(shown));
            rc = config_fail(ctx,
                             "config: key %s in %s: expected a string "
                             "key (name = value)",
                             shown,
                             section[0] ? section : "the top-level table");
            lua_pop(L, 1);
            continue; /* rc ends the loop; the key is popped below */
        }
        name = lua_tostring(L, -2);
        snprintf(dotted, sizeof(dotted), "%s%s%s", section,
                 section[0] ? "." : "", name);
        if (section[0] == '\0' &&
            (config_is_section(name) || strcmp(name, "plugins") == 0)) {
            if (!lua_istable(L, -1)) {
                config_show_lua(L, -1, shown, sizeof(shown));
                rc = config_fail(ctx, "config: %s = %s: expected a table", name,
                                 shown);
            } else if (strcmp(name, "plugins") != 0) {
                rc = config_walk(cfg, L, name, ctx);
            }
        } else if ((k = config_find_key(dotted)) != NULL) {
            rc = config_set_lua(cfg, k, L, ctx);
        } else {
            rc = config_unknown_key(ctx, section, name);
        }
        lua_pop(L, 1);
    }
    if (rc != 0)
        lua_pop(L, 1); /* the key lua_next left */
    return rc;
}

/* Opens only the libraries a config script needs. LuaJIT wants luaopen_*
 * called through lua_call, not directly. */
static void config_open_libs(lua_State *L)
{
    static const luaL_Reg libs[] = {
        {"", luaopen_base},
        {LUA_TABLIBNAME, luaopen_table},
        {LUA_STRLIBNAME, luaopen_string},
        {LUA_MATHLIBNAME, luaopen_math},
        {LUA_OSLIBNAME, luaopen_os},
    };
    size_t i;

    for (i = 0; i < sizeof(libs) / sizeof(libs[0]); i++) {
        lua_pushcfunction(L, libs[i].func);
        lua_pushstring(L, libs[i].name);
        lua_call(L, 1, 0);
    }
}

/* Runs the script and leaves its single result on the stack. */
static int config_run_file(lua_State *L, const char *path, cfg_ctx_t *ctx)
{
    int rc = luaL_loadfile(L, path);

    if (rc == 0)
        rc = lua_pcall(L, 0, 1, 0);
    if (rc == LUA_ERRMEM)
        return SG_ENOMEM;
    if (rc != 0)
        return config_fail(ctx, "config: %s",
                           lua_isstring(L, -1) ? lua_tostring(L, -1)
                                               : "error object is not a "
                                                 "string");
    if (!lua_istable(L, -1))
        return config_fail(ctx, "config: %s: must return a table, got %s", path,
                           lua_typename(L, lua_type(L, -1)));
    return 0;
}

static int config_load_file(sg_config_t *cfg, const char *path, cfg_ctx_t *ctx)
{
    lua_State *L = luaL_newstate();
    int rc;

    if (L == NULL)
        return SG_ENOMEM;
    config_open_libs(L);
    rc = config_run_file(L, path, ctx);
    if (rc == 0)
        rc = config_walk(cfg, L, "", ctx);
    lua_close(L);
    if (rc == 0 && cfg->redis.url != NULL && cfg->redis.host != NULL)
        rc = config_fail(ctx, "config: redis.url and redis.host are both "
                              "set: expected only one of them");
    return rc;
}

/* ------------------------------------------------------------------------
 * Environment
 * ---------------------------------------------------------------------- */

/* getenv, but an empty variable counts as unset (compose files often
 * declare VAR= to mean "not configured"). */
static const char *config_getenv(const char *name)
{
    const char *v = getenv(name);

    return v != NULL && v[0] != '\0' ? v : NULL;
}

/* Parses a number from env text: base-10 integers for integer keys (so "0x10"
 * or "1e3" are rejected), strtod for the rest. */
static int config_parse_env_number(const cfg_key_t *k, const char *v,
                                   double *out)
{
    char *end;

    errno = 0;
    if (k->type == CFG_NUM) {
        *out = strtod(v, &end);
    } else {
        long long n = strtoll(v, &end, 10);
        *out = (double)n;
        if (errno == ERANGE)
            *out = n < 0 ? -INFINITY : INFINITY;
        errno = 0;
    }
    return end != v && *end == '\0' && errno == 0 &&
           !isspace((unsigned char)*v);
}

static int config_set_env(sg_config_t *cfg, const cfg_key_t *k, const char *v,
                          cfg_ctx_t *ctx)
{
    char shown[CONFIG_SHOWN_MAX + 8];
    double d;

    config_quote(v, strlen(v), shown, sizeof(shown));
    switch (k->type) {
    case CFG_STR:
        return config_store_string(cfg, k, v, strlen(v), ctx);
    case CFG_BOOL:
        if (strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
            return config_bad_value(ctx, k, shown, 0);
        *(int *)config_slot(cfg, k) = v[0] == '1';
        return 0;
    default:
        if (!config_parse_env_number(k, v, &d))
            return config_bad_value(ctx, k, shown, 0);
        return config_store_number(cfg, k, d, shown, ctx);
    }
}

/* REDIS_URL and REDIS_HOST each replace whatever server the file named. */
static int config_apply_redis_env(sg_config_t *cfg, cfg_ctx_t *ctx)
{
    const char *url = config_getenv("REDIS_URL");
    const char *host = config_getenv("REDIS_HOST");

    if (url != NULL && host != NULL)
        return config_fail(ctx, "env REDIS_URL and REDIS_HOST are both set: "
                                "expected only one of them");
    if (url != NULL) {
        free(cfg->redis.host);
        cfg->redis.host = NULL;
    } else if (host != NULL) {
        free(cfg->redis.url);
        cfg->redis.url = NULL;
    }
    return 0;
}

static int config_apply_env(sg_config_t *cfg, cfg_ctx_t *ctx)
{
    size_t i;
    int rc = config_apply_redis_env(cfg, ctx);

    for (i = 0; rc == 0 && i < CONFIG_NKEYS; i++) {
        const cfg_key_t *k = &config_keys[i];
        const char *v = k->env ? config_getenv(k->env) : NULL;

        if (v == NULL)
            continue;
        ctx->env = k->env;
        rc = config_set_env(cfg, k, v, ctx);
        ctx->env = NULL;
    }
    return rc;
}

/* ------------------------------------------------------------------------
 * Cross-field rules
 * ---------------------------------------------------------------------- */

/* Copies `url` with any password replaced by ***, for messages. */
static void config_mask_url(const char *url, char *out, size_t outlen)
{
    const char *auth = strstr(url, "://");
    const char *at = strrchr(url, '@');
    const char *colon;

    auth = auth ? auth + 3 : url;
    colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (at == NULL || at < auth || colon == NULL) {
        snprintf(out, outlen, "%s", url);
        return;
    }
    snprintf(out, outlen, "%.*s***%s", (int)(colon + 1 - url), url, at);
}

/* Splits redis.url into its parts. The url's password gives way to
 * REDIS_PASSWORD and its port to REDIS_PORT: the environment wins. */
static int config_resolve_redis_url(sg_config_t *cfg, cfg_ctx_t *ctx)
{
    char why[160], masked[256];
    char *host, *user, *pass;
    int port, db;
    const char *envv = config_getenv("REDIS_URL");

    if (sg_config_parse_redis_url(cfg->redis.url, &host, &port, &user, &pass,
                                  &db, why, sizeof(why)) != 0) {
        config_mask_url(cfg->redis.url, masked, sizeof(masked));
        return config_fail(ctx, "%s%s = '%s': %s", envv ? "env " : "config: ",
                           envv ? "REDIS_URL" : "redis.url", masked, why);
    }
    free(cfg->redis.host);
    cfg->redis.host = host;
    free(cfg->redis.username);
    cfg->redis.username = user;
    cfg->redis.db = db;
    if (config_getenv("REDIS_PORT") == NULL)
        cfg->redis.port = port;
    if (config_getenv("REDIS_PASSWORD") == NULL) {
        free(cfg->redis.password);
        cfg->redis.password = pass;
    } else {
        free(pass);
    }
    return 0;
}

/* Production turns dev mode off unless STREAMGATE_DEV_MODE=1 insists, and
 * then requires a real secret. Dev mode falls back to a documented one. */
static int config_resolve_auth(sg_config_t *cfg, cfg_ctx_t *ctx)
{
    const char *dev = config_getenv("STREAMGATE_DEV_MODE");

    if (strcmp(cfg->env, "production") == 0 &&
        (dev == NULL || strcmp(dev, "1") != 0))
        cfg->auth.dev_mode = 0;
    if (cfg->auth.dev_mode) {
        if (cfg->auth.jwt_secret == NULL)
            cfg->auth.jwt_secret = strdup(CONFIG_DEV_SECRET);
        return cfg->auth.jwt_secret ? 0 : SG_ENOMEM;
    }
    if (cfg->auth.jwt_secret == NULL ||
        strlen(cfg->auth.jwt_secret) < CONFIG_MIN_SECRET_LEN)
        return config_fail(ctx,
                           "auth.jwt_secret: required in production "
                           "(set JWT_SECRET, >= %d bytes)",
                           CONFIG_MIN_SECRET_LEN);
    return 0;
}

/* Checks an ai_service url: http://HOST[:port][/path] where HOST is an
 * IPv4 literal or localhost (sg.http.request never resolves names). 0, or
 * -1 with the reason in `why`. */
static int config_check_ai_url(const char *url, char *why, size_t whylen)
{
    const char *host = url + 7, *hend, *path;
    char name[64];
    struct in_addr addr;
    long port;

    if (strncmp(url, "http://", 7) != 0) {
        snprintf(why, whylen, "%s",
                 strncmp(url, "https://", 8) == 0
                     ? "https is not supported"
                     : "expected the scheme http://");
        return -1;
    }
    path = host + strcspn(host, "/");
    hend = memchr(host, ':', (size_t)(path - host));
    if (hend == NULL)
        hend = path;
    snprintf(name, sizeof(name), "%.*s", (int)(hend - host), host);
    if ((size_t)(hend - host) >= sizeof(name) ||
        (strcmp(name, "localhost") != 0 &&
         inet_pton(AF_INET, name, &addr) != 1)) {
        snprintf(why, whylen,
                 "host '%.*s' is not an IPv4 literal or localhost (host "
                 "names are not resolved)",
                 (int)(hend - host), host);
        return -1;
    }
    if (hend < path &&
        !config_parse_uint(hend + 1, (size_t)(path - hend - 1), 1, 65535,
                           &port)) {
        snprintf(why, whylen, "bad port '%.*s': expected 1-65535",
                 (int)(path - hend - 1), hend + 1);
        return -1;
    }
    if (strpbrk(path, "?# \t\r\n") != NULL) {
        snprintf(why, whylen, "the path must not hold '?', '#' or spaces");
        return -1;
    }
    return 0;
}

/* Only the ai_service upstream uses ai_service.url, so only then is it
 * checked (a compose file may set AI_SERVICE_URL for everyone). */
static int config_resolve_ai_service(sg_config_t *cfg, cfg_ctx_t *ctx)
{
    char why[160];
    int env = config_getenv("AI_SERVICE_URL") != NULL;

    if (strcmp(cfg->upstream, "ai_service") != 0 ||
        config_check_ai_url(cfg->ai_service.url, why, sizeof(why)) == 0)
        return 0;
    return config_fail(ctx, "%s = '%.*s': %s: expected %s",
                       env ? "env AI_SERVICE_URL" : "config: ai_service.url",
                       CONFIG_SHOWN_MAX, cfg->ai_service.url, why,
                       CONFIG_AI_URL_FORM);
}

static int config_finish(sg_config_t *cfg, cfg_ctx_t *ctx)
{
    int rc = 0;

    if (cfg->redis.url != NULL)
        rc = config_resolve_redis_url(cfg, ctx);
    if (rc != 0)
        return rc;
    cfg->redis.enabled = cfg->redis.host != NULL;
    if (cfg->redis.reconnect_max_delay < cfg->redis.reconnect_min_delay)
        return config_fail(ctx,
                           "config: redis.reconnect_max_delay = %g: "
                           "expected a number >= redis.reconnect_min_delay "
                           "(%g)",
                           cfg->redis.reconnect_max_delay,
                           cfg->redis.reconnect_min_delay);
    rc = config_resolve_ai_service(cfg, ctx);
    return rc != 0 ? rc : config_resolve_auth(cfg, ctx);
}

/* ------------------------------------------------------------------------
 * Redis URL
 * ---------------------------------------------------------------------- */

/* Parses all-digit `s` (len bytes) into [lo, hi]; 0 on anything else. */
static int config_parse_uint(const char *s, size_t len, long lo, long hi,
                             long *out)
{
    long v = 0;
    size_t i;

    if (len == 0 || len > 10)
        return 0;
    for (i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return v >= lo && v <= hi;
}

/* Splits "[user]:password" (percent-decoded) into its two halves. */
static int config_parse_userinfo(const char *s, size_t len, char **user,
                                 char **pass, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', len);
    size_t ulen;

    if (colon == NULL) {
        snprintf(err, errlen,
                 "expected [user]:password@ before the host "
                 "(the ':' is missing)");
        return SG_EINVAL;
    }
    ulen = (size_t)(colon - s);
    if ((ulen > 0 && sg_query_decode(s, ulen, user) != 0) ||
        (len - ulen - 1 > 0 &&
         sg_query_decode(colon + 1, len - ulen - 1, pass) != 0)) {
        snprintf(err, errlen, "bad %%-escape in the user or password");
        return SG_EINVAL;
    }
    return 0;
}

/* Parses "host[:port]" or "[v6addr][:port]" (len bytes at s). */
static int config_parse_hostport(const char *s, size_t len, char **host,
                                 int *port, char *err, size_t errlen)
{
    const char *end = s + len, *hbeg = s, *hend, *colon;
    long p = 6379;

    if (len > 0 && s[0] == '[') {
        hbeg = s + 1;
        hend = memchr(s, ']', len);
        if (hend == NULL) {
            snprintf(err, errlen, "unterminated '[' in the host");
            return SG_EINVAL;
        }
        colon = hend + 1 < end ? hend + 1 : NULL;
        if (colon != NULL && *colon != ':') {
            snprintf(err, errlen, "expected ':' after ']'");
            return SG_EINVAL;
        }
    } else {
        colon = memchr(s, ':', len);
        hend = colon ? colon : end;
    }
    if (hend == hbeg) {
        snprintf(err, errlen, "empty host");
        return SG_EINVAL;
    }
    if (colon != NULL &&
        !config_parse_uint(colon + 1, (size_t)(end - colon - 1), 1, 65535,
                           &p)) {
        snprintf(err, errlen, "bad port '%.*s': expected 1-65535",
                 (int)(end - colon - 1), colon + 1);
        return SG_EINVAL;
    }
    *host = strndup(hbeg, (size_t)(hend - hbeg));
    *port = (int)p;
    return *host ? 0 : SG_ENOMEM;
}

int sg_config_parse_redis_url(const char *url, char **host, int *port,
                              char **username, char **password, int *db,
                              char *err, size_t errlen)
{
    const char *p, *path, *at;
    long dbn = 0;
    int rc = 0;

    *host = *username = *password = NULL;
    *port = 6379;
    *db = 0;
    if (strncmp(url, "redis://", 8) != 0) {
        p = strstr(url, "://");
        if (p != NULL)
            snprintf(err, errlen, "unsupported scheme '%.*s': expected %s",
                     (int)(p - url), url, CONFIG_URL_FORM);
        else
            snprintf(err, errlen, "expected %s", CONFIG_URL_FORM);
        return SG_EINVAL;
    }
    p = url + 8;
    path = p + strcspn(p, "/");
    at = memrchr(p, '@', (size_t)(path - p));
    if (at != NULL) {
        rc = config_parse_userinfo(p, (size_t)(at - p), username, password, err,
                                   errlen);
        p = at + 1;
    }
    if (rc == 0)
        rc = config_parse_hostport(p, (size_t)(path - p), host, port, err,
                                   errlen);
    if (rc == 0 && *path == '/' && path[1] != '\0' &&
        !config_parse_uint(path + 1, strlen(path + 1), 0, INT_MAX, &dbn)) {
        snprintf(err, errlen, "bad db '%s': expected an integer >= 0",
                 path + 1);
        rc = SG_EINVAL;
    }
    if (rc != 0) {
        free(*host);
        free(*username);
        free(*password);
        *host = *username = *password = NULL;
        return rc == SG_ENOMEM ? rc : SG_EINVAL;
    }
    *db = (int)dbn;
    return 0;
}
