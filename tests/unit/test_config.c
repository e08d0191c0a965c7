/* Unit tests for config.c: defaults, the shipped config/streamgate.lua, every
 * kind of file error with its exact message, environment overrides, redis
 * url parsing and the production secret rule. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../src/error.c"
#include "../../src/query.c"
#include "../../src/config.c"

#define KNOWN_TOP                                                              \
    "env, listen, port, node_id, upstream, redis, auth, limits, stream, "      \
    "http, lua, demo, log, admin, ai_service, plugins"

static const char *const all_env[] = {"PORT",
                                      "STREAMGATE_ENV",
                                      "STREAMGATE_DEV_MODE",
                                      "NODE_ID",
                                      "REDIS_URL",
                                      "REDIS_HOST",
                                      "REDIS_PORT",
                                      "REDIS_PASSWORD",
                                      "JWT_SECRET",
                                      "JWT_ALGORITHM",
                                      "LOG_LEVEL",
                                      "LOG_FORMAT",
                                      "STREAMGATE_LUA_PATH",
                                      "STREAMGATE_STATIC_DIR",
                                      "DEMO_WORDS_PER_SECOND",
                                      "CORS_ORIGINS",
                                      "AI_SERVICE_URL",
                                      NULL};

static char tmp_path[64];
static char err[512];

/* ---- helpers ---------------------------------------------------------- */

static int clear_env(void **state)
{
    int i;

    for (i = 0; all_env[i] != NULL; i++)
        unsetenv(all_env[i]);
    tmp_path[0] = '\0';
    err[0] = '\0';
    return 0;
}

static int cleanup(void **state)
{
    if (tmp_path[0] != '\0')
        unlink(tmp_path);
    return clear_env(state);
}

/* Writes `text` to this test's temp .lua file (named in tmp_path). */
static const char *write_tmp(const char *text)
{
    FILE *f;

    if (tmp_path[0] == '\0') {
        int fd;

        snprintf(tmp_path, sizeof(tmp_path), "/tmp/sg_test_cfg_XXXXXX.lua");
        fd = mkstemps(tmp_path, 4);
        assert_true(fd >= 0);
        close(fd);
    }
    f = fopen(tmp_path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return tmp_path;
}

static int is_zeroed(const sg_config_t *cfg)
{
    static const sg_config_t zero;

    return memcmp(cfg, &zero, sizeof(zero)) == 0;
}

/* Loads `text` and expects failure with exactly `want`. */
static void expect_file_error(const char *text, const char *want)
{
    sg_config_t cfg;

    assert_int_equal(sg_config_load(&cfg, write_tmp(text), err, sizeof(err)),
                     SG_ECONFIG);
    assert_string_equal(err, want);
    assert_true(is_zeroed(&cfg));
}

/* Loads defaults (no file) and expects failure with exactly `want`. */
static void expect_env_error(const char *want)
{
    sg_config_t cfg;

    assert_int_equal(sg_config_load(&cfg, NULL, err, sizeof(err)), SG_ECONFIG);
    assert_string_equal(err, want);
    assert_true(is_zeroed(&cfg));
}

static void load_ok(sg_config_t *cfg, const char *path)
{
    int rc = sg_config_load(cfg, path, err, sizeof(err));

    if (rc != 0)
        fail_msg("load failed: %s", err);
}

static void assert_str_or_null(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        assert_ptr_equal(a, b);
    else
        assert_string_equal(a, b);
}

static void assert_same_config(const sg_config_t *a, const sg_config_t *b)
{
    assert_string_equal(a->env, b->env);
    assert_string_equal(a->listen, b->listen);
    assert_int_equal(a->port, b->port);
    assert_string_equal(a->node_id, b->node_id);
    assert_string_equal(a->upstream, b->upstream);
    assert_int_equal(a->redis.enabled, b->redis.enabled);
    assert_str_or_null(a->redis.url, b->redis.url);
    assert_str_or_null(a->redis.host, b->redis.host);
    assert_int_equal(a->redis.port, b->redis.port);
    assert_str_or_null(a->redis.password, b->redis.password);
    assert_str_or_null(a->redis.username, b->redis.username);
    assert_int_equal(a->redis.db, b->redis.db);
    assert_true(a->redis.connect_timeout == b->redis.connect_timeout);
    assert_true(a->redis.command_timeout == b->redis.command_timeout);
    assert_true(a->redis.reconnect_min_delay == b->redis.reconnect_min_delay);
    assert_true(a->redis.reconnect_max_delay == b->redis.reconnect_max_delay);
    assert_int_equal(a->auth.dev_mode, b->auth.dev_mode);
    assert_string_equal(a->auth.jwt_secret, b->auth.jwt_secret);
    assert_string_equal(a->auth.jwt_algorithm, b->auth.jwt_algorithm);
    assert_int_equal(a->auth.leeway, b->auth.leeway);
    assert_str_or_null(a->auth.issuer, b->auth.issuer);
    assert_str_or_null(a->auth.audience, b->auth.audience);
    assert_int_equal(a->auth.token_ttl, b->auth.token_ttl);
    assert_int_equal(a->limits.max_frame_bytes, b->limits.max_frame_bytes);
    assert_int_equal(a->limits.max_body_bytes, b->limits.max_body_bytes);
    assert_int_equal(a->limits.max_connections, b->limits.max_connections);
    assert_int_equal(a->stream.max_pending_chunks,
                     b->stream.max_pending_chunks);
    assert_int_equal(a->stream.max_pending_bytes, b->stream.max_pending_bytes);
    assert_int_equal(a->stream.history_ttl, b->stream.history_ttl);
    assert_int_equal(a->stream.recovery_ttl, b->stream.recovery_ttl);
    assert_int_equal(a->stream.log_max_len, b->stream.log_max_len);
    assert_int_equal(a->stream.max_message_bytes,
                     b->stream.max_message_bytes);
    assert_true(a->stream.linger == b->stream.linger);
    assert_string_equal(a->http.cors_origins, b->http.cors_origins);
    assert_string_equal(a->http.static_dir, b->http.static_dir);
    assert_string_equal(a->lua.path, b->lua.path);
    assert_true(a->demo.words_per_second == b->demo.words_per_second);
    assert_string_equal(a->ai_service.url, b->ai_service.url);
    assert_true(a->ai_service.timeout == b->ai_service.timeout);
    assert_string_equal(a->log.level, b->log.level);
    assert_string_equal(a->log.format, b->log.format);
}

/* ---- defaults and the shipped file ------------------------------------ */

static void test_defaults(void **state)
{
    sg_config_t cfg;
    char host[256], node[300];

    load_ok(&cfg, NULL);
    assert_string_equal(err, "");
    gethostname(host, sizeof(host));
    host[255] = '\0';
    snprintf(node, sizeof(node), "%s-%ld", host, (long)getpid());
    assert_null(cfg.config_path);
    assert_string_equal(cfg.env, "development");
    assert_string_equal(cfg.listen, "0.0.0.0");
    assert_int_equal(cfg.port, 8080);
    assert_string_equal(cfg.node_id, node);
    assert_string_equal(cfg.upstream, "demo");
    assert_int_equal(cfg.redis.enabled, 0);
    assert_null(cfg.redis.url);
    assert_null(cfg.redis.host);
    assert_int_equal(cfg.redis.port, 6379);
    assert_null(cfg.redis.password);
    assert_null(cfg.redis.username);
    assert_int_equal(cfg.redis.db, 0);
    assert_true(cfg.redis.connect_timeout == 2.0);
    assert_true(cfg.redis.command_timeout == 5.0);
    assert_true(cfg.redis.reconnect_min_delay == 0.1);
    assert_true(cfg.redis.reconnect_max_delay == 5.0);
    assert_int_equal(cfg.auth.dev_mode, 1);
    assert_string_equal(cfg.auth.jwt_secret, "streamgate-dev-secret-change-me");
    assert_string_equal(cfg.auth.jwt_algorithm, "HS256");
    assert_int_equal(cfg.auth.leeway, 30);
    assert_null(cfg.auth.issuer);
    assert_null(cfg.auth.audience);
    assert_int_equal(cfg.auth.token_ttl, 3600);
    assert_int_equal(cfg.limits.max_frame_bytes, 65536);
    assert_int_equal(cfg.limits.max_body_bytes, 1048576);
    assert_int_equal(cfg.limits.max_connections, 10000);
    assert_int_equal(cfg.stream.max_pending_chunks, 1000);
    assert_int_equal(cfg.stream.max_pending_bytes, 4194304);
    assert_int_equal(cfg.stream.history_ttl, 86400);
    assert_int_equal(cfg.stream.recovery_ttl, 600);
    assert_int_equal(cfg.stream.log_max_len, 10000);
    assert_int_equal(cfg.stream.max_message_bytes, 1048576);
    assert_true(cfg.stream.linger == 30.0);
    assert_string_equal(cfg.http.cors_origins, "*");
    assert_string_equal(cfg.http.static_dir, "public");
    assert_string_equal(cfg.lua.path, "lua");
    assert_true(cfg.demo.words_per_second == 30.0);
    assert_string_equal(cfg.ai_service.url, "http://127.0.0.1:8000");
    assert_true(cfg.ai_service.timeout == 30.0);
    assert_string_equal(cfg.log.level, "info");
    assert_string_equal(cfg.log.format, "text");
    sg_config_free(&cfg);
    assert_true(is_zeroed(&cfg));
    sg_config_free(&cfg); /* safe on a zeroed struct */
}

static void test_shipped_file_equals_defaults(void **state)
{
    const char *dir = getenv("SG_SOURCE_DIR");
    char path[512];
    sg_config_t def, file;

    snprintf(path, sizeof(path), "%s/config/streamgate.lua",
             dir ? dir : SG_SOURCE_DIR);
    load_ok(&def, NULL);
    load_ok(&file, path);
    assert_string_equal(file.config_path, path);
    assert_same_config(&def, &file);
    sg_config_free(&def);
    sg_config_free(&file);
}

static void test_file_values_applied(void **state)
{
    sg_config_t cfg;

    write_tmp("local t = { port = 9000, listen = '127.0.0.1',\n"
              "  auth = { dev_mode = true, issuer = 'iss', leeway = 0 },\n"
              "  stream = { max_pending_chunks = 1 },\n"
              "  demo = { words_per_second = 10000 },\n"
              "  log = { level = 'debug', format = 'json' },\n"
              "  redis = { reconnect_min_delay = 1,\n"
              "            reconnect_max_delay = 1 },\n"
              "  plugins = { rate_limit = { per_minute = 5 } } }\n"
              "t.node_id = 'n-' .. string.rep('x', 2)\n"
              "return t\n");
    load_ok(&cfg, tmp_path);
    assert_int_equal(cfg.port, 9000);
    assert_string_equal(cfg.listen, "127.0.0.1");
    assert_string_equal(cfg.auth.issuer, "iss");
    assert_int_equal(cfg.auth.leeway, 0);
    assert_int_equal(cfg.stream.max_pending_chunks, 1);
    assert_true(cfg.demo.words_per_second == 10000.0);
    assert_string_equal(cfg.log.level, "debug");
    assert_string_equal(cfg.log.format, "json");
    assert_string_equal(cfg.node_id, "n-xx");
    assert_int_equal(cfg.redis.enabled, 0);
    sg_config_free(&cfg);
}

static void test_empty_table_is_defaults(void **state)
{
    sg_config_t def, cfg;

    load_ok(&def, NULL);
    load_ok(&cfg, write_tmp("return {}\n"));
    assert_same_config(&def, &cfg);
    sg_config_free(&def);
    sg_config_free(&cfg);
}

/* ---- file errors ------------------------------------------------------ */

static void test_err_unknown_top_key(void **state)
{
    expect_file_error(
        "return { strem = {} }\n",
        "config: unknown key 'strem' (known top-level keys: " KNOWN_TOP ")");
}

static void test_err_unknown_nested_key(void **state)
{
    expect_file_error("return { stream = { max_pendng_chunks = 5 } }\n",
                      "config: unknown key 'stream.max_pendng_chunks' "
                      "(known stream keys: max_pending_chunks, "
                      "max_pending_bytes, history_ttl, recovery_ttl, "
                      "log_max_len, max_message_bytes, linger)");
    expect_file_error("return { log = { lvl = 'x' } }\n",
                      "config: unknown key 'log.lvl' (known log keys: "
                      "level, format)");
}

static void test_err_section_keys_not_top_level(void **state)
{
    /* "port" is a top-level key, not a stream key; "level" only in log. */
    expect_file_error(
        "return { level = 'info' }\n",
        "config: unknown key 'level' (known top-level keys: " KNOWN_TOP ")");
}

static void test_err_wrong_type(void **state)
{
    expect_file_error("return { port = '8080' }\n",
                      "config: port = '8080': expected an integer 1-65535");
    expect_file_error("return { auth = { dev_mode = 1 } }\n",
                      "config: auth.dev_mode = 1: expected a boolean");
    expect_file_error("return { listen = true }\n",
                      "config: listen = true: expected a non-empty string");
    expect_file_error("return { redis = 'redis://x' }\n",
                      "config: redis = 'redis://x': expected a table");
    expect_file_error("return { plugins = 5 }\n",
                      "config: plugins = 5: expected a table");
    expect_file_error("return { lua = { path = {} } }\n",
                      "config: lua.path = a table: expected a non-empty "
                      "string");
}

static void test_err_out_of_range(void **state)
{
    expect_file_error("return { stream = { max_pending_chunks = -5 } }\n",
                      "config: stream.max_pending_chunks = -5: expected an "
                      "integer >= 1");
    expect_file_error("return { port = 70000 }\n",
                      "config: port = 70000: expected an integer 1-65535");
    expect_file_error("return { port = 0 }\n",
                      "config: port = 0: expected an integer 1-65535");
    expect_file_error("return { stream = { history_ttl = 1.5 } }\n",
                      "config: stream.history_ttl = 1.5: expected an "
                      "integer >= 1");
    expect_file_error("return { limits = { max_connections = 1e12 } }\n",
                      "config: limits.max_connections = 1000000000000: "
                      "expected an integer 1-2147483647");
    expect_file_error("return { demo = { words_per_second = 0 } }\n",
                      "config: demo.words_per_second = 0: expected a number "
                      "> 0 and <= 10000");
    expect_file_error("return { demo = { words_per_second = 10001 } }\n",
                      "config: demo.words_per_second = 10001: expected a "
                      "number > 0 and <= 10000");
    expect_file_error("return { redis = { connect_timeout = 0/0 } }\n",
                      "config: redis.connect_timeout = nan: expected a "
                      "number > 0");
    expect_file_error("return { redis = { db = -1 } }\n",
                      "config: redis.db = -1: expected an integer >= 0");
}

static void test_err_choices(void **state)
{
    expect_file_error("return { log = { level = 'verbose' } }\n",
                      "config: log.level = 'verbose': expected one of debug, "
                      "info, warn, error");
    expect_file_error("return { log = { format = 'xml' } }\n",
                      "config: log.format = 'xml': expected one of text, "
                      "json");
    expect_file_error("return { upstream = 'openai' }\n",
                      "config: upstream = 'openai': expected one of demo, "
                      "ai_service");
    expect_file_error("return { auth = { jwt_algorithm = 'RS256' } }\n",
                      "config: auth.jwt_algorithm = 'RS256': expected one "
                      "of HS256, HS384, HS512");
    expect_file_error("return { env = 'prod' }\n",
                      "config: env = 'prod': expected one of development, "
                      "production");
}

static void test_err_empty_string_and_nul(void **state)
{
    expect_file_error("return { listen = '' }\n",
                      "config: listen = '': expected a non-empty string");
    expect_file_error("return { listen = 'a\\0b' }\n",
                      "config: listen = 'a': expected a non-empty string");
}

static void test_err_secret_not_echoed(void **state)
{
    expect_file_error("return { auth = { jwt_secret = '' } }\n",
                      "config: auth.jwt_secret = '***': expected a "
                      "non-empty string");
}

static void test_err_syntax_has_file_line(void **state)
{
    char want[256];

    write_tmp("return {\n  port = ,\n}\n");
    snprintf(want, sizeof(want), "config: %s:2: unexpected symbol near ','",
             tmp_path);
    expect_file_error("return {\n  port = ,\n}\n", want);
}

static void test_err_runtime_error_has_file_line(void **state)
{
    char want[256];
    const char *text = "local x = nil\nreturn { port = x.y }\n";

    write_tmp(text);
    snprintf(want, sizeof(want),
             "config: %s:2: attempt to index local "
             "'x' (a nil value)",
             tmp_path);
    expect_file_error(text, want);
}

static void test_err_file_not_found(void **state)
{
    sg_config_t cfg;

    assert_int_equal(
        sg_config_load(&cfg, "/nonexistent/sg.lua", err, sizeof(err)),
        SG_ECONFIG);
    assert_string_equal(err, "config: cannot open /nonexistent/sg.lua: No "
                             "such file or directory");
    assert_true(is_zeroed(&cfg));
}

static void test_err_not_a_table(void **state)
{
    char want[256];

    write_tmp("");
    snprintf(want, sizeof(want),
             "config: %s: must return a table, got "
             "number",
             tmp_path);
    expect_file_error("return 5\n", want);
    snprintf(want, sizeof(want), "config: %s: must return a table, got nil",
             tmp_path);
    expect_file_error("port = 5\n", want);
}

static void test_err_non_string_key(void **state)
{
    expect_file_error("return { 8080 }\n",
                      "config: key 1 in the top-level table: expected a "
                      "string key (name = value)");
    expect_file_error("return { log = { 'x' } }\n",
                      "config: key 1 in log: expected a string key "
                      "(name = value)");
}

static void test_err_sandbox_has_no_io(void **state)
{
    char want[256];
    const char *text = "return { listen = io.read() }\n";

    write_tmp(text);
    snprintf(want, sizeof(want),
             "config: %s:1: attempt to index global "
             "'io' (a nil value)",
             tmp_path);
    expect_file_error(text, want);
}

static void test_err_cross_field(void **state)
{
    expect_file_error("return { redis = { reconnect_min_delay = 2, "
                      "reconnect_max_delay = 1 } }\n",
                      "config: redis.reconnect_max_delay = 1: expected a "
                      "number >= redis.reconnect_min_delay (2)");
    expect_file_error("return { redis = { url = 'redis://a', "
                      "host = 'b' } }\n",
                      "config: redis.url and redis.host are both set: "
                      "expected only one of them");
}

/* ---- environment ------------------------------------------------------ */

static void test_env_beats_file(void **state)
{
    sg_config_t cfg;

    write_tmp("return { port = 8081, log = { level = 'debug' } }\n");
    setenv("PORT", "9090", 1);
    load_ok(&cfg, tmp_path);
    assert_int_equal(cfg.port, 9090);
    assert_string_equal(cfg.log.level, "debug");
    sg_config_free(&cfg);
}

static void test_env_overrides_every_var(void **state)
{
    sg_config_t cfg;

    setenv("NODE_ID", "node-7", 1);
    setenv("JWT_ALGORITHM", "HS512", 1);
    setenv("JWT_SECRET", "dev-secret", 1);
    setenv("LOG_LEVEL", "warn", 1);
    setenv("LOG_FORMAT", "json", 1);
    setenv("STREAMGATE_LUA_PATH", "/opt/lua", 1);
    setenv("STREAMGATE_STATIC_DIR", "/srv/www", 1);
    setenv("DEMO_WORDS_PER_SECOND", "12.5", 1);
    setenv("CORS_ORIGINS", "https://a.example", 1);
    setenv("STREAMGATE_DEV_MODE", "0", 1);
    setenv("JWT_SECRET", "0123456789abcdef0123456789abcdef", 1);
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.node_id, "node-7");
    assert_string_equal(cfg.auth.jwt_algorithm, "HS512");
    assert_string_equal(cfg.log.level, "warn");
    assert_string_equal(cfg.log.format, "json");
    assert_string_equal(cfg.lua.path, "/opt/lua");
    assert_string_equal(cfg.http.static_dir, "/srv/www");
    assert_true(cfg.demo.words_per_second == 12.5);
    assert_string_equal(cfg.http.cors_origins, "https://a.example");
    assert_int_equal(cfg.auth.dev_mode, 0);
    assert_string_equal(cfg.auth.jwt_secret,
                        "0123456789abcdef0123456789abcdef");
    sg_config_free(&cfg);
}

static void test_env_empty_counts_as_unset(void **state)
{
    sg_config_t cfg;

    setenv("PORT", "", 1);
    setenv("REDIS_URL", "", 1);
    load_ok(&cfg, NULL);
    assert_int_equal(cfg.port, 8080);
    assert_int_equal(cfg.redis.enabled, 0);
    sg_config_free(&cfg);
}

static void test_env_bad_port(void **state)
{
    setenv("PORT", "abc", 1);
    expect_env_error("env PORT = 'abc': expected an integer 1-65535");
    setenv("PORT", "0", 1);
    expect_env_error("env PORT = '0': expected an integer 1-65535");
    setenv("PORT", "65536", 1);
    expect_env_error("env PORT = '65536': expected an integer 1-65535");
    setenv("PORT", "80x", 1);
    expect_env_error("env PORT = '80x': expected an integer 1-65535");
    setenv("PORT", " 80", 1);
    expect_env_error("env PORT = ' 80': expected an integer 1-65535");
    setenv("PORT", "0x50", 1);
    expect_env_error("env PORT = '0x50': expected an integer 1-65535");
    setenv("PORT", "99999999999999999999", 1);
    expect_env_error("env PORT = '99999999999999999999': expected an "
                     "integer 1-65535");
}

static void test_env_bad_values(void **state)
{
    setenv("STREAMGATE_DEV_MODE", "yes", 1);
    expect_env_error("env STREAMGATE_DEV_MODE = 'yes': expected 0 or 1");
    unsetenv("STREAMGATE_DEV_MODE");
    setenv("LOG_LEVEL", "trace", 1);
    expect_env_error("env LOG_LEVEL = 'trace': expected one of debug, info, "
                     "warn, error");
    unsetenv("LOG_LEVEL");
    setenv("DEMO_WORDS_PER_SECOND", "fast", 1);
    expect_env_error("env DEMO_WORDS_PER_SECOND = 'fast': expected a number "
                     "> 0 and <= 10000");
    setenv("DEMO_WORDS_PER_SECOND", "0", 1);
    expect_env_error("env DEMO_WORDS_PER_SECOND = '0': expected a number "
                     "> 0 and <= 10000");
    unsetenv("DEMO_WORDS_PER_SECOND");
    setenv("STREAMGATE_ENV", "staging", 1);
    expect_env_error("env STREAMGATE_ENV = 'staging': expected one of "
                     "development, production");
    unsetenv("STREAMGATE_ENV");
    setenv("REDIS_PORT", "-1", 1);
    expect_env_error("env REDIS_PORT = '-1': expected an integer 1-65535");
}

/* ---- redis ------------------------------------------------------------ */

static void test_env_redis_host_port(void **state)
{
    sg_config_t cfg;

    setenv("REDIS_HOST", "cache.local", 1);
    setenv("REDIS_PORT", "6380", 1);
    setenv("REDIS_PASSWORD", "pw", 1);
    load_ok(&cfg, NULL);
    assert_int_equal(cfg.redis.enabled, 1);
    assert_null(cfg.redis.url);
    assert_string_equal(cfg.redis.host, "cache.local");
    assert_int_equal(cfg.redis.port, 6380);
    assert_string_equal(cfg.redis.password, "pw");
    sg_config_free(&cfg);
}

static void test_env_redis_url(void **state)
{
    sg_config_t cfg;

    setenv("REDIS_URL", "redis://bob:s3cret@10.0.0.5:6390/3", 1);
    load_ok(&cfg, NULL);
    assert_int_equal(cfg.redis.enabled, 1);
    assert_string_equal(cfg.redis.url, "redis://bob:s3cret@10.0.0.5:6390/3");
    assert_string_equal(cfg.redis.host, "10.0.0.5");
    assert_int_equal(cfg.redis.port, 6390);
    assert_string_equal(cfg.redis.username, "bob");
    assert_string_equal(cfg.redis.password, "s3cret");
    assert_int_equal(cfg.redis.db, 3);
    sg_config_free(&cfg);
}

static void test_env_redis_password_and_port_beat_url(void **state)
{
    sg_config_t cfg;

    setenv("REDIS_URL", "redis://:fromurl@h:6390", 1);
    setenv("REDIS_PASSWORD", "fromenv", 1);
    setenv("REDIS_PORT", "7000", 1);
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.redis.password, "fromenv");
    assert_int_equal(cfg.redis.port, 7000);
    assert_null(cfg.redis.username);
    sg_config_free(&cfg);
}

static void test_env_redis_url_replaces_file_host(void **state)
{
    sg_config_t cfg;

    write_tmp("return { redis = { host = 'filehost', port = 1234 } }\n");
    setenv("REDIS_URL", "redis://urlhost", 1);
    load_ok(&cfg, tmp_path);
    assert_string_equal(cfg.redis.host, "urlhost");
    assert_int_equal(cfg.redis.port, 6379);
    sg_config_free(&cfg);
}

static void test_env_redis_host_replaces_file_url(void **state)
{
    sg_config_t cfg;

    write_tmp("return { redis = { url = 'redis://fileurl:1111' } }\n");
    setenv("REDIS_HOST", "envhost", 1);
    load_ok(&cfg, tmp_path);
    assert_null(cfg.redis.url);
    assert_string_equal(cfg.redis.host, "envhost");
    assert_int_equal(cfg.redis.port, 6379);
    sg_config_free(&cfg);
}

static void test_file_redis_url(void **state)
{
    sg_config_t cfg;

    load_ok(&cfg, write_tmp("return { redis = { url = 'redis://r:1/2' } }\n"));
    assert_int_equal(cfg.redis.enabled, 1);
    assert_string_equal(cfg.redis.host, "r");
    assert_int_equal(cfg.redis.port, 1);
    assert_int_equal(cfg.redis.db, 2);
    sg_config_free(&cfg);
}

static void test_redis_url_errors_mask_password(void **state)
{
    setenv("REDIS_URL", "redis://:hunter2@h:0", 1);
    expect_env_error("env REDIS_URL = 'redis://:***@h:0': bad port '0': "
                     "expected 1-65535");
    unsetenv("REDIS_URL");
    expect_file_error("return { redis = { url = 'http://u:pw@h' } }\n",
                      "config: redis.url = 'http://u:***@h': unsupported "
                      "scheme 'http': expected "
                      "redis://[[user]:password@]host[:port][/db]");
}

static void test_env_redis_url_and_host_conflict(void **state)
{
    setenv("REDIS_URL", "redis://a", 1);
    setenv("REDIS_HOST", "b", 1);
    expect_env_error("env REDIS_URL and REDIS_HOST are both set: expected "
                     "only one of them");
}

typedef struct {
    const char *url;
    int rc;
    const char *host, *user, *pass;
    int port, db;
    const char *err;
} url_case_t;

static void test_parse_redis_url(void **state)
{
    static const url_case_t cases[] = {
        {"redis://localhost", 0, "localhost", NULL, NULL, 6379, 0, NULL},
        {"redis://h:6380", 0, "h", NULL, NULL, 6380, 0, NULL},
        {"redis://:pw@h:6380", 0, "h", NULL, "pw", 6380, 0, NULL},
        {"redis://u:pw@h", 0, "h", "u", "pw", 6379, 0, NULL},
        {"redis://u:@h", 0, "h", "u", NULL, 6379, 0, NULL},
        {"redis://u:p%40ss@h", 0, "h", "u", "p@ss", 6379, 0, NULL},
        {"redis://:a@b@h", 0, "h", NULL, "a@b", 6379, 0, NULL},
        {"redis://h/5", 0, "h", NULL, NULL, 6379, 5, NULL},
        {"redis://h:1/15", 0, "h", NULL, NULL, 1, 15, NULL},
        {"redis://h/", 0, "h", NULL, NULL, 6379, 0, NULL},
        {"redis://[::1]:7000/1", 0, "::1", NULL, NULL, 7000, 1, NULL},
        {"redis://[::1]", 0, "::1", NULL, NULL, 6379, 0, NULL},
        {"http://h", SG_EINVAL, 0, 0, 0, 0, 0,
         "unsupported scheme 'http': expected "
         "redis://[[user]:password@]host[:port][/db]"},
        {"rediss://h", SG_EINVAL, 0, 0, 0, 0, 0,
         "unsupported scheme 'rediss': expected "
         "redis://[[user]:password@]host[:port][/db]"},
        {"localhost:6379", SG_EINVAL, 0, 0, 0, 0, 0,
         "expected redis://[[user]:password@]host[:port][/db]"},
        {"redis://", SG_EINVAL, 0, 0, 0, 0, 0, "empty host"},
        {"redis://:pw@:6379", SG_EINVAL, 0, 0, 0, 0, 0, "empty host"},
        {"redis:///0", SG_EINVAL, 0, 0, 0, 0, 0, "empty host"},
        {"redis://h:0", SG_EINVAL, 0, 0, 0, 0, 0,
         "bad port '0': expected 1-65535"},
        {"redis://h:70000", SG_EINVAL, 0, 0, 0, 0, 0,
         "bad port '70000': expected 1-65535"},
        {"redis://h:abc", SG_EINVAL, 0, 0, 0, 0, 0,
         "bad port 'abc': expected 1-65535"},
        {"redis://h:", SG_EINVAL, 0, 0, 0, 0, 0,
         "bad port '': expected 1-65535"},
        {"redis://h/x", SG_EINVAL, 0, 0, 0, 0, 0,
         "bad db 'x': expected an integer >= 0"},
        {"redis://h/-1", SG_EINVAL, 0, 0, 0, 0, 0,
         "bad db '-1': expected an integer >= 0"},
        {"redis://pw@h", SG_EINVAL, 0, 0, 0, 0, 0,
         "expected [user]:password@ before the host (the ':' is missing)"},
        {"redis://u:%zz@h", SG_EINVAL, 0, 0, 0, 0, 0,
         "bad %-escape in the user or password"},
        {"redis://[::1", SG_EINVAL, 0, 0, 0, 0, 0,
         "unterminated '[' in the host"},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const url_case_t *c = &cases[i];
        char *host, *user, *pass, e[256] = "";
        int port, db;
        int rc = sg_config_parse_redis_url(c->url, &host, &port, &user, &pass,
                                           &db, e, sizeof(e));

        print_message("url %s\n", c->url);
        assert_int_equal(rc, c->rc);
        if (rc != 0) {
            assert_string_equal(e, c->err);
            assert_null(host);
            assert_null(user);
            assert_null(pass);
            continue;
        }
        assert_string_equal(host, c->host);
        assert_str_or_null(user, c->user);
        assert_str_or_null(pass, c->pass);
        assert_int_equal(port, c->port);
        assert_int_equal(db, c->db);
        free(host);
        free(user);
        free(pass);
    }
}

/* ---- production and dev mode ------------------------------------------ */

#define PROD_ERR                                                               \
    "auth.jwt_secret: required in production (set JWT_SECRET, >= 32 bytes)"

static void test_production_requires_secret(void **state)
{
    setenv("STREAMGATE_ENV", "production", 1);
    expect_env_error(PROD_ERR);
    setenv("JWT_SECRET", "0123456789abcdef0123456789abcde", 1); /* 31 */
    expect_env_error(PROD_ERR);
}

static void test_production_with_secret(void **state)
{
    sg_config_t cfg;

    setenv("STREAMGATE_ENV", "production", 1);
    setenv("JWT_SECRET", "0123456789abcdef0123456789abcdef", 1);
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.env, "production");
    assert_int_equal(cfg.auth.dev_mode, 0);
    assert_string_equal(cfg.auth.jwt_secret,
                        "0123456789abcdef0123456789abcdef");
    sg_config_free(&cfg);
}

static void test_production_ignores_file_dev_mode(void **state)
{
    write_tmp("return { env = 'production', auth = { dev_mode = true } }\n");
    expect_file_error("return { env = 'production', "
                      "auth = { dev_mode = true } }\n",
                      PROD_ERR);
}

static void test_production_dev_mode_forced_by_env(void **state)
{
    sg_config_t cfg;

    setenv("STREAMGATE_ENV", "production", 1);
    setenv("STREAMGATE_DEV_MODE", "1", 1);
    load_ok(&cfg, NULL);
    assert_int_equal(cfg.auth.dev_mode, 1);
    assert_string_equal(cfg.auth.jwt_secret, "streamgate-dev-secret-change-me");
    sg_config_free(&cfg);
}

static void test_dev_mode_off_outside_production(void **state)
{
    setenv("STREAMGATE_DEV_MODE", "0", 1);
    expect_env_error(PROD_ERR);
}

static void test_dev_mode_keeps_given_secret(void **state)
{
    sg_config_t cfg;

    setenv("JWT_SECRET", "short", 1);
    load_ok(&cfg, NULL);
    assert_int_equal(cfg.auth.dev_mode, 1);
    assert_string_equal(cfg.auth.jwt_secret, "short");
    sg_config_free(&cfg);
}

/* ---- ai_service ------------------------------------------------------- */

static void test_ai_service_keys(void **state)
{
    sg_config_t cfg;

    write_tmp("return { upstream = 'ai_service',\n"
              "  ai_service = { url = 'http://localhost:81/ai',\n"
              "                 timeout = 1.5 } }\n");
    load_ok(&cfg, tmp_path);
    assert_string_equal(cfg.upstream, "ai_service");
    assert_string_equal(cfg.ai_service.url, "http://localhost:81/ai");
    assert_true(cfg.ai_service.timeout == 1.5);
    sg_config_free(&cfg);

    setenv("AI_SERVICE_URL", "http://10.0.0.7:8000", 1);
    load_ok(&cfg, tmp_path);
    assert_string_equal(cfg.ai_service.url, "http://10.0.0.7:8000");
    sg_config_free(&cfg);
}

static void test_ai_service_errors(void **state)
{
    expect_file_error("return { ai_service = { timeout = 0 } }\n",
                      "config: ai_service.timeout = 0: expected a number "
                      "> 0 and <= 3600");
    expect_file_error("return { ai_service = { tmeout = 1 } }\n",
                      "config: unknown key 'ai_service.tmeout' (known "
                      "ai_service keys: url, timeout)");
    expect_file_error("return { upstream = 'ai_service',\n"
                      "  ai_service = { url = 'http://python-ai:8000' } }\n",
                      "config: ai_service.url = 'http://python-ai:8000': "
                      "host 'python-ai' is not an IPv4 literal or localhost "
                      "(host names are not resolved): expected "
                      "http://HOST[:port][/path], HOST an IPv4 literal or "
                      "localhost");
    expect_file_error("return { upstream = 'ai_service',\n"
                      "  ai_service = { url = 'https://127.0.0.1' } }\n",
                      "config: ai_service.url = 'https://127.0.0.1': https "
                      "is not supported: expected http://HOST[:port][/path], "
                      "HOST an IPv4 literal or localhost");
    expect_file_error("return { upstream = 'ai_service',\n"
                      "  ai_service = { url = 'http://127.0.0.1:99999' } }\n",
                      "config: ai_service.url = 'http://127.0.0.1:99999': "
                      "bad port '99999': expected 1-65535: expected "
                      "http://HOST[:port][/path], HOST an IPv4 literal or "
                      "localhost");
    expect_file_error("return { upstream = 'ai_service',\n"
                      "  ai_service = { url = 'http://1.2.3.4/a?b' } }\n",
                      "config: ai_service.url = 'http://1.2.3.4/a?b': the "
                      "path must not hold '?', '#' or spaces: expected "
                      "http://HOST[:port][/path], HOST an IPv4 literal or "
                      "localhost");
}

/* A host name is only an error for the upstream that uses the url; the
 * environment is named when the value came from it. */
static void test_ai_service_url_checked_only_when_used(void **state)
{
    sg_config_t cfg;

    setenv("AI_SERVICE_URL", "http://python-ai:8000", 1);
    load_ok(&cfg, NULL);
    assert_string_equal(cfg.ai_service.url, "http://python-ai:8000");
    sg_config_free(&cfg);
    expect_file_error("return { upstream = 'ai_service' }\n",
                      "env AI_SERVICE_URL = 'http://python-ai:8000': host "
                      "'python-ai' is not an IPv4 literal or localhost (host "
                      "names are not resolved): expected "
                      "http://HOST[:port][/path], HOST an IPv4 literal or "
                      "localhost");
}

static void test_small_err_buffer(void **state)
{
    sg_config_t cfg;
    char small[8];

    setenv("PORT", "abc", 1);
    assert_int_equal(sg_config_load(&cfg, NULL, small, sizeof(small)),
                     SG_ECONFIG);
    assert_string_equal(small, "env POR");
}

#define T(f) cmocka_unit_test_setup_teardown(f, clear_env, cleanup)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_shipped_file_equals_defaults),
        T(test_file_values_applied),
        T(test_empty_table_is_defaults),
        T(test_err_unknown_top_key),
        T(test_err_unknown_nested_key),
        T(test_err_section_keys_not_top_level),
        T(test_err_wrong_type),
        T(test_err_out_of_range),
        T(test_err_choices),
        T(test_err_empty_string_and_nul),
        T(test_err_secret_not_echoed),
        T(test_err_syntax_has_file_line),
        T(test_err_runtime_error_has_file_line),
        T(test_err_file_not_found),
        T(test_err_not_a_table),
        T(test_err_non_string_key),
        T(test_err_sandbox_has_no_io),
        T(test_err_cross_field),
        T(test_env_beats_file),
        T(test_env_overrides_every_var),
        T(test_env_empty_counts_as_unset),
        T(test_env_bad_port),
        T(test_env_bad_values),
        T(test_env_redis_host_port),
        T(test_env_redis_url),
        T(test_env_redis_password_and_port_beat_url),
        T(test_env_redis_url_replaces_file_host),
        T(test_env_redis_host_replaces_file_url),
        T(test_file_redis_url),
        T(test_redis_url_errors_mask_password),
        T(test_env_redis_url_and_host_conflict),
        T(test_parse_redis_url),
        T(test_production_requires_secret),
        T(test_production_with_secret),
        T(test_production_ignores_file_dev_mode),
        T(test_production_dev_mode_forced_by_env),
        T(test_dev_mode_off_outside_production),
        T(test_dev_mode_keeps_given_secret),
        T(test_ai_service_keys),
        T(test_ai_service_errors),
        T(test_ai_service_url_checked_only_when_used),
        T(test_small_err_buffer),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
