/* Leveled logging to stderr (log.h). One write(2) per line so lines from
 * several worker processes sharing stderr do not interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>

#include "error.h"

static sg_log_level_t log_level = SG_LOG_INFO;
static int log_json = 0;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int sg_log_parse_level(const char *name, sg_log_level_t *out)
{
    if (name == NULL)
        return SG_EINVAL;
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (sg_log_level_t)i;
            return 0;
        }
    }
    if (strcasecmp(name, "warning") == 0) {
        *out = SG_LOG_WARN;
        return 0;
    }
    return SG_EINVAL;
}

void sg_log_set_level(sg_log_level_t level)
{
    log_level = level;
}

void sg_log_set_json(int on)
{
    log_json = on;
}

int sg_log_enabled(sg_log_level_t level)
{
    return level >= log_level;
}

static size_t log_timestamp(char *out, size_t outlen)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(out + n, outlen - n, ".%03dZ",
                          (int)(tv.tv_usec / 1000));
    return n;
}

/* Appends `s` JSON-escaped; returns the new length (bounded by cap). */
static size_t log_json_escape(char *out, size_t n, size_t cap, const char *s)
{
    for (; *s != '\0' && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    return n;
}

void sg_log(sg_log_level_t level, const char *module, const char *fmt, ...)
{
    if (level < log_level)
        return;
    int saved_errno = errno;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    char ts[40];
    log_timestamp(ts, sizeof(ts));
    char line[4096];
    size_t n;
    if (log_json) {
        n = (size_t)snprintf(line, sizeof(line),
                             "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"",
                             ts, level_names[level]);
        n = log_json_escape(line, n, sizeof(line) - 4, module);
        n += (size_t)snprintf(line + n, sizeof(line) - n, "\",\"msg\":\"");
        n = log_json_escape(line, n, sizeof(line) - 4, msg);
        n += (size_t)snprintf(line + n, sizeof(line) - n, "\"}\n");
    } else {
        n = (size_t)snprintf(line, sizeof(line), "%s %-5s [%s] %s\n", ts,
                             level_names[level], module, msg);
    }
    if (n >= sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
    errno = saved_errno;
}
