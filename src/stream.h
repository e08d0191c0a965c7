/* Stream types shared by the broker engines and the stream coordinator.
 *
 * A session has one ordered stream of chunks. Every chunk gets the next
 * offset (1, 2, 3, ...; never reused) when it is appended to the session's
 * chunk log, before fan-out. The session also has an epoch: a random id
 * that changes when its log was lost (expired, Redis flushed), so a client
 * resuming from an offset can tell the offset no longer means anything.
 *
 * The log stores deltas. Beside it each message has a snapshot: its text so
 * far, last offset and last index. Full-mode readers get frames built from
 * snapshots (content is cumulative, so one frame is lossless); delta-mode
 * readers get the deltas.
 *
 * APPEND RULES (both engines implement exactly these; the Redis engine in
 * one server-side script so that order and exactly-once come from Redis):
 *   m = snapshot of message_id (may not exist)
 *   1. m exists and is complete                      -> duplicate
 *   2. msg is partial, m exists, len(content) <= m.len -> duplicate
 *      (content is cumulative: several nodes ingest the same producer
 *      message, and a late partial must never follow its final)
 *   3. otherwise accepted:
 *        index  = m ? m.index + 1 : 0
 *        reset  = m && content does not start with m.text
 *        delta  = (m && !reset) ? content[m.len:] : content
 *        offset = ++last_offset
 *      log entry {offset, message_id, index, delta, is_complete, timestamp,
 *      user_id, role, reset} appended (log bounded to log_max_len entries);
 *      snapshot updated {text = content, len, index, offset, is_complete,
 *      timestamp, user_id, role, done_at = now if complete};
 *      the chunk is delivered to every subscriber of the session (on every
 *      node) through sg_broker_handlers_t.on_chunk, in offset order;
 *      all of the session's keys get the TTL recovery_ttl.
 *   The epoch is created (random, 16 hex chars) by the first append or
 *   read of a session that has none.
 *   Snapshots of completed messages older than recovery_ttl are dropped. */
#ifndef SG_STREAM_H
#define SG_STREAM_H

#include <stddef.h>
#include <stdint.h>

#define SG_EPOCH_LEN 16

/* A chunk as delivered live, read from the log, or (delta == NULL) a
 * snapshot of a message. All pointers are owned by the producer of the
 * struct and valid only during the callback that hands it out. */
typedef struct sg_chunk {
    uint64_t offset;        /* log offset (snapshot: the message's last) */
    const char *epoch;
    const char *session_id;
    const char *message_id;
    const char *user_id;    /* may be NULL */
    const char *role;       /* "assistant" normally */
    const char *content;    /* cumulative text; NULL in log entries */
    size_t content_len;
    const char *delta;      /* new text; NULL in snapshots */
    size_t delta_len;
    uint32_t index;         /* 0-based position inside the message */
    int64_t timestamp;      /* producer epoch ms */
    int64_t done_at;        /* snapshots: ms when completed, else 0 */
    int is_complete;
    int reset;              /* content does not extend the previous text */
} sg_chunk_t;

/* Result of a stream read (sg_broker_stream_read). */
typedef struct sg_stream_state {
    const char *epoch;          /* never NULL on success */
    uint64_t last_offset;       /* 0: nothing appended yet */
    uint64_t first_offset;      /* oldest offset still in the log; 0: empty */
    /* Log entries with offset > since, oldest first (only when since was
     * given and range_ok). content is NULL: entries carry deltas. */
    const sg_chunk_t *log;
    size_t nlog;
    /* 1 when every offset in since+1..last_offset is still in the log (also
     * when since == last_offset); 0 when since was not given. */
    int range_ok;
    /* Snapshots: every in-flight message and every message completed within
     * recovery_ttl, ordered by offset. */
    const sg_chunk_t *snapshots;
    size_t nsnapshots;
    /* chat:history:{sid} raw entries, oldest first (when asked for). */
    const char *const *history;
    const size_t *history_lens;
    size_t nhistory;
} sg_stream_state_t;

/* No offset given: read snapshots (and history) only. */
#define SG_STREAM_NO_SINCE UINT64_MAX

#endif
