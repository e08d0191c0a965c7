/* Leveled logging to stderr, as text lines or JSON lines.
 *
 * Text:  2026-12-03T17:20:00.123Z INFO  [ws] client connected sid=abc
 * JSON:  {"ts":"...","level":"info","module":"ws","msg":"client connected sid=abc"}
 */
#ifndef SG_LOG_H
#define SG_LOG_H

typedef enum {
    SG_LOG_DEBUG = 0,
    SG_LOG_INFO,
    SG_LOG_WARN,
    SG_LOG_ERROR,
} sg_log_level_t;

/* Parses "debug", "info", "warn"/"warning", "error". 0 or SG_EINVAL. */
int sg_log_parse_level(const char *name, sg_log_level_t *out);
void sg_log_set_level(sg_log_level_t level);
/* 1: JSON lines; 0: text (default). */
void sg_log_set_json(int on);
int sg_log_enabled(sg_log_level_t level);

void sg_log(sg_log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define SG_DEBUG(mod, ...) sg_log(SG_LOG_DEBUG, mod, __VA_ARGS__)
#define SG_INFO(mod, ...) sg_log(SG_LOG_INFO, mod, __VA_ARGS__)
#define SG_WARN(mod, ...) sg_log(SG_LOG_WARN, mod, __VA_ARGS__)
#define SG_ERROR(mod, ...) sg_log(SG_LOG_ERROR, mod, __VA_ARGS__)

#endif
