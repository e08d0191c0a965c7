/* The streamgate binary: command line, exit codes, and the run loop.
 *
 *   streamgate [--config FILE] [--port N] [-t] [--version] [--help]
 *
 * Exit codes: 0 normal stop (SIGTERM/SIGINT) or successful -t; 1 runtime
 * failure (cannot listen, scripts fail to load); 2 usage or config error. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "streamgate.h"
#include "config.h"
#include "log.h"

int sg_server_check_scripts(const sg_config_t *cfg, char *err, size_t errlen);

static void usage(FILE *out)
{
    fprintf(out,
            "usage: streamgate [--config FILE] [--port N] [-t] [--version] "
            "[--help]\n"
            "\n"
            "  -c, --config FILE  Lua config file (default: built-in defaults"
            " + env)\n"
            "  -p, --port N       listen port (overrides config and $PORT)\n"
            "  -t, --test         check the config and Lua scripts, then "
            "exit\n"
            "  -v, --version      print the version and exit\n"
            "  -h, --help         print this help and exit\n"
            "\n"
            "Environment: PORT, REDIS_URL (redis://[:password@]host:port[/db]"
            " enables Redis mode),\n"
            "JWT_SECRET, STREAMGATE_ENV=production, NODE_ID, LOG_LEVEL; see "
            "docs/configuration.md.\n");
}

static int parse_port(const char *s, int *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < 1 || v > 65535)
        return -1;
    *out = (int)v;
    return 0;
}

static void apply_logging(const sg_config_t *cfg)
{
    sg_log_level_t level;
    if (sg_log_parse_level(cfg->log.level, &level) == 0)
        sg_log_set_level(level);
    sg_log_set_json(cfg->log.format && strcmp(cfg->log.format, "json") == 0);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"port", required_argument, NULL, 'p'},
        {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = getenv("STREAMGATE_CONFIG");
    int port = 0, test_only = 0, ch;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":c:p:tvh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 'p':
            if (parse_port(optarg, &port) != 0) {
                fprintf(stderr, "streamgate: --port '%s': expected an "
                                "integer 1-65535\n", optarg);
                return 2;
            }
            break;
        case 't':
            test_only = 1;
            break;
        case 'v':
            printf("streamgate %s\n", sg_version());
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            fprintf(stderr, "streamgate: option '%s' needs a value\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        default:
            fprintf(stderr, "streamgate: unknown option '%s'\n",
                    argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "streamgate: unexpected argument '%s'\n",
                argv[optind]);
        usage(stderr);
        return 2;
    }
    if (config_path != NULL && config_path[0] == '\0')
        config_path = NULL;

    char err[512];
    sg_config_t *cfg = sg_config_open(config_path, err, sizeof(err));
    if (cfg == NULL) {
        fprintf(stderr, "streamgate: %s\n", err);
        return 2;
    }
    if (port != 0)
        sg_config_set_port(cfg, port);
    apply_logging(cfg);

    if (test_only) {
        int rc = sg_server_check_scripts(cfg, err, sizeof(err));
        if (rc != 0)
            fprintf(stderr, "streamgate: %s\n", err);
        else
            printf("streamgate: configuration %s is OK\n",
                   config_path ? config_path : "(built-in defaults)");
        sg_config_close(cfg);
        return rc != 0 ? 2 : 0;
    }

    signal(SIGPIPE, SIG_IGN);
    if (cfg->auth.dev_mode)
        sg_log(SG_LOG_WARN, "main", "auth dev mode is ON: 'dev-token' is "
                                    "accepted for any user (set "
                                    "STREAMGATE_ENV=production to disable)");
    sg_server_t *srv = sg_server_new(NULL, cfg, err, sizeof(err));
    if (srv == NULL) {
        sg_log(SG_LOG_ERROR, "main", "%s", err);
        sg_config_close(cfg);
        return 1;
    }
    sg_server_run(srv);
    sg_server_free(srv);
    sg_log(SG_LOG_INFO, "main", "stopped");
    sg_config_close(cfg);
    return 0;
}
