/* The compat ChatMessage (docs/protocol.md): lenient parsing of what producers
 * publish, and the frames streamgate builds from it.
 *
 * Parsing is lenient (unknown keys ignored, chunk/is_complete/timestamp
 * optional, \uXXXX or raw UTF-8) but a message that is not a JSON object or
 * lacks string message_id/role/content is rejected with a reason. */
#ifndef SG_CHATMSG_H
#define SG_CHATMSG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct sg_chunk;

typedef struct sg_chatmsg {
    char *message_id;   /* required */
    char *session_id;   /* NULL when absent */
    char *user_id;      /* NULL when absent */
    char *role;         /* required: "user" | "assistant" (others kept) */
    char *content;      /* required; may contain NUL (see content_len) */
    size_t content_len;
    char *chunk;        /* NULL when null or absent */
    size_t chunk_len;
    int64_t timestamp;  /* epoch ms; 0 when absent */
    int is_complete;    /* 1 true, 0 false, -1 absent or null */
} sg_chatmsg_t;

/* Parses `len` bytes of JSON into `out` (all strings malloc'd). Returns 0 or
 * SG_EPARSE with a short reason in `err` ("not a JSON object", "missing
 * string field message_id", "invalid JSON: ..."). `out` is zeroed on error. */
int sg_chatmsg_parse(const char *json, size_t len, sg_chatmsg_t *out,
                     char *err, size_t errlen);
void sg_chatmsg_clear(sg_chatmsg_t *msg);

/* The ChatMessage object as JSON, always with all eight keys (nulls for
 * absent chunk/session_id/user_id/is_complete, as the Java server did).
 * Returns a malloc'd NUL-terminated string and its length, or NULL. */
char *sg_chatmsg_to_json(const sg_chatmsg_t *msg, size_t *len);

/* {"type":"message","data":<ChatMessage>} as a shared buffer; NULL on OOM. */
sg_buf_t *sg_chatmsg_message_frame(const sg_chatmsg_t *msg);

/* {"type":"history","messages":[...]} from raw stored JSON entries, oldest
 * first. Entries that do not parse are skipped and counted in *skipped
 * (may be NULL). Returns NULL on OOM; never NULL for zero entries. */
sg_buf_t *sg_chatmsg_history_frame(const char *const *items,
                                   const size_t *lens, size_t n,
                                   size_t *skipped);

/* Current time as ISO-8601 UTC with milliseconds: "2026-12-03T17:20:00.123Z".
 * `out` must hold at least 32 bytes. */
void sg_chatmsg_iso_now(char *out, size_t outlen);

/* Native fields of a welcome frame (docs/protocol.md, §3). */
typedef struct sg_welcome_info {
    const char *node_id;  /* NULL: no "node" key */
    const char *epoch;    /* NULL: no "epoch"/"offset" keys */
    uint64_t offset;      /* the session's last offset */
    int recovered;        /* -1: no "recovered" key; 0/1: false/true */
} sg_welcome_info_t;

/* {"type":"welcome","sessionId":..,"timestamp":ISO,"node":..,"epoch":..,
 *  "offset":N,"recovered":bool}; `info` may be NULL. */
sg_buf_t *sg_chatmsg_welcome_frame(const char *session_id,
                                   const sg_welcome_info_t *info);

/* A `message` frame for a stream chunk or snapshot (stream.h):
 * {"type":"message","data":<ChatMessage>,"offset":N,"index":I}.
 * Full mode: data.content is the cumulative text and data.chunk the delta
 * (null on finals and on snapshots). Delta mode: data.chunk is the delta
 * (a snapshot's whole text when it has no delta) and data.content appears
 * only on the final. NULL on no memory. */
sg_buf_t *sg_chatmsg_chunk_frame(const struct sg_chunk *c, int delta_mode);
/* {"type":"error","error":<text>,"timestamp":ISO}; text is JSON-escaped. */
sg_buf_t *sg_chatmsg_error_frame(const char *text);

#endif
