/* The compat ChatMessage (chatmsg.h, docs/protocol.md-2): lenient parsing of
 * what producers publish and the JSON frames built from it.
 *
 * One function (chatmsg_view) decides what a message is; parsing copies
 * from that view into an sg_chatmsg_t, and the history frame builds its
 * normalized objects straight from the view without copying the strings.
 * Output is compact JSON with UTF-8 kept raw; text that is not valid UTF-8
 * (from a script, say) is repaired with U+FFFD rather than dropped. */
#include "chatmsg.h"
#include "stream.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "error.h"

#define CHATMSG_DUMP_FLAGS JSON_COMPACT
#define CHATMSG_LOAD_FLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL)

/* Borrowed references into a decoded message; NULL for an absent or
 * non-string optional field. */
typedef struct chatmsg_view {
    json_t *message_id;
    json_t *session_id;
    json_t *user_id;
    json_t *role;
    json_t *content;
    json_t *chunk;
    int64_t timestamp;
    int is_complete;
} chatmsg_view_t;

/* ------------------------------------------------------------- helpers */

static void chatmsg_err(char *err, size_t errlen, const char *fmt,
                        const char *arg)
{
    if (err == NULL || errlen == 0)
        return;
    snprintf(err, errlen, fmt, arg);
    /* jansson quotes the offending input; keep the reason loggable. */
    for (char *p = err; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
}

static json_t *chatmsg_string_or_null(json_t *v)
{
    return json_is_string(v) ? v : NULL;
}

/* epoch ms: an integer, or a real with no fraction (some producers emit
 * 1.7e12); anything else is 0, as for an absent timestamp. */
/* Epoch ms, or 0 (absent: the stream stamps it) when it is not an
 * integer in [0, 2^53]: larger values do not survive a trip through Lua
 * numbers (the Redis append script), which poisoned the session. */
#define CHATMSG_MAX_TS 9007199254740992.0

static int64_t chatmsg_timestamp(json_t *v)
{
    double d;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        return i >= 0 && i <= (json_int_t)CHATMSG_MAX_TS ? (int64_t)i : 0;
    }
    if (json_is_real(v))
        d = json_real_value(v);
    else
        return 0;
    if (!isfinite(d) || d != trunc(d) || d < 0 || d > CHATMSG_MAX_TS)
        return 0;
    return (int64_t)d;
}

static int chatmsg_view(json_t *root, chatmsg_view_t *v, char *err,
                        size_t errlen)
{
    static const char *const required[] = {"message_id", "role", "content"};
    if (!json_is_object(root)) {
        chatmsg_err(err, errlen, "%s", "not a JSON object");
        return SG_EPARSE;
    }
    for (size_t i = 0; i < 3; i++) {
        if (!json_is_string(json_object_get(root, required[i]))) {
            chatmsg_err(err, errlen, "missing string field %s", required[i]);
            return SG_EPARSE;
        }
    }
    v->message_id = json_object_get(root, "message_id");
    v->role = json_object_get(root, "role");
    v->content = json_object_get(root, "content");
    v->session_id = chatmsg_string_or_null(json_object_get(root, "session_id"));
    v->user_id = chatmsg_string_or_null(json_object_get(root, "user_id"));
    v->chunk = chatmsg_string_or_null(json_object_get(root, "chunk"));
    v->timestamp = chatmsg_timestamp(json_object_get(root, "timestamp"));
    json_t *done = json_object_get(root, "is_complete");
    v->is_complete = json_is_boolean(done) ? json_is_true(done) : -1;
    return 0;
}

static json_t *chatmsg_load(const char *json, size_t len, char *err,
                            size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, CHATMSG_LOAD_FLAGS, &jerr);
    if (root == NULL)
        chatmsg_err(err, errlen, "invalid JSON: %s", jerr.text);
    return root;
}

/* Copies a JSON string (which may hold NULs) into a NUL-terminated heap
 * string; NULL view gives NULL. 0 or SG_ENOMEM. */
static int chatmsg_copy(json_t *s, char **out, size_t *outlen)
{
    *out = NULL;
    if (outlen != NULL)
        *outlen = 0;
    if (s == NULL)
        return 0;
    size_t n = json_string_length(s);
    *out = malloc(n + 1);
    if (*out == NULL)
        return SG_ENOMEM;
    memcpy(*out, json_string_value(s), n);
    (*out)[n] = '\0';
    if (outlen != NULL)
        *outlen = n;
    return 0;
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs,
 * no surrogates, nothing above U+10FFFF), or 0. */
static size_t chatmsg_utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* A JSON string for `n` bytes of `s`, each ill-formed byte replaced by
 * U+FFFD; NULL `s` gives null. NULL only on no memory. */
static json_t *chatmsg_jstr(const char *s, size_t n)
{
    if (s == NULL)
        return json_null();
    json_t *j = json_stringn(s, n);
    if (j != NULL)
        return j;
    char *fixed = malloc(n * 3 + 1);
    if (fixed == NULL)
        return NULL;
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = chatmsg_utf8_len(p + i, n - i);
        if (k == 0) {
            memcpy(fixed + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(fixed + o, p + i, k);
            o += k;
            i += k;
        }
    }
    j = json_stringn(fixed, o);
    free(fixed);
    return j;
}

static json_t *chatmsg_cstr(const char *s)
{
    return chatmsg_jstr(s, s ? strlen(s) : 0);
}

static json_t *chatmsg_ref_or_null(json_t *v)
{
    return v != NULL ? json_incref(v) : json_null();
}

/* The eight keys in the Java server's order; steals all six references. */
static json_t *chatmsg_pack(json_t *mid, json_t *sid, json_t *uid,
                            json_t *role, json_t *content, json_t *chunk,
                            int64_t ts, int complete)
{
    json_t *done = complete < 0 ? json_null() : json_boolean(complete);
    return json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:I,s:o}", "message_id", mid,
                     "session_id", sid, "user_id", uid, "role", role,
                     "content", content, "chunk", chunk, "timestamp",
                     (json_int_t)ts, "is_complete", done);
}

static json_t *chatmsg_object(const sg_chatmsg_t *m)
{
    return chatmsg_pack(chatmsg_cstr(m->message_id),
                        chatmsg_cstr(m->session_id), chatmsg_cstr(m->user_id),
                        chatmsg_cstr(m->role),
                        chatmsg_jstr(m->content, m->content_len),
                        chatmsg_jstr(m->chunk, m->chunk_len), m->timestamp,
                        m->is_complete);
}

static json_t *chatmsg_view_object(const chatmsg_view_t *v)
{
    return chatmsg_pack(json_incref(v->message_id),
                        chatmsg_ref_or_null(v->session_id),
                        chatmsg_ref_or_null(v->user_id),
                        json_incref(v->role), json_incref(v->content),
                        chatmsg_ref_or_null(v->chunk), v->timestamp,
                        v->is_complete);
}

/* Serializes `doc` (reference stolen) into a new shared buffer. Small
 * frames are dumped on the stack; buf.h has no "allocate, then fill"
 * constructor, so one copy into the buffer remains. */
static sg_buf_t *chatmsg_buf(json_t *doc)
{
    char stack[4096];
    sg_buf_t *b = NULL;
    if (doc == NULL)
        return NULL;
    size_t n = json_dumpb(doc, stack, sizeof(stack), CHATMSG_DUMP_FLAGS);
    if (n > 0 && n <= sizeof(stack)) {
        b = sg_buf_new(stack, n);
    } else if (n > 0) {
        char *heap = json_dumps(doc, CHATMSG_DUMP_FLAGS);
        if (heap != NULL)
            b = sg_buf_new(heap, strlen(heap));
        free(heap);
    }
    json_decref(doc);
    return b;
}

static void chatmsg_iso_format(time_t sec, long ms, char *out,
                               size_t outlen)
{
    struct tm tm;
    char date[24];
    gmtime_r(&sec, &tm);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, outlen, "%s.%03ldZ", date, ms);
}

/* ------------------------------------------------------------------ API */

int sg_chatmsg_parse(const char *json, size_t len, sg_chatmsg_t *out,
                     char *err, size_t errlen)
{
    chatmsg_view_t v;
    memset(out, 0, sizeof(*out));
    json_t *root = chatmsg_load(json, len, err, errlen);
    if (root == NULL)
        return SG_EPARSE;
    int rc = chatmsg_view(root, &v, err, errlen);
    if (rc == 0) {
        out->timestamp = v.timestamp;
        out->is_complete = v.is_complete;
        if (chatmsg_copy(v.message_id, &out->message_id, NULL) ||
            chatmsg_copy(v.session_id, &out->session_id, NULL) ||
            chatmsg_copy(v.user_id, &out->user_id, NULL) ||
            chatmsg_copy(v.role, &out->role, NULL) ||
            chatmsg_copy(v.content, &out->content, &out->content_len) ||
            chatmsg_copy(v.chunk, &out->chunk, &out->chunk_len)) {
            chatmsg_err(err, errlen, "%s", "no memory");
            sg_chatmsg_clear(out);
            rc = SG_ENOMEM;
        }
    }
    json_decref(root);
    return rc;
}

void sg_chatmsg_clear(sg_chatmsg_t *msg)
{
    if (msg == NULL)
        return;
    free(msg->message_id);
    free(msg->session_id);
    free(msg->user_id);
    free(msg->role);
    free(msg->content);
    free(msg->chunk);
    memset(msg, 0, sizeof(*msg));
}

char *sg_chatmsg_to_json(const sg_chatmsg_t *msg, size_t *len)
{
    json_t *obj = chatmsg_object(msg);
    char *s = obj != NULL ? json_dumps(obj, CHATMSG_DUMP_FLAGS) : NULL;
    json_decref(obj);
    /* NULs inside strings are escaped, so strlen is the full length. */
    if (s != NULL && len != NULL)
        *len = strlen(s);
    return s;
}

sg_buf_t *sg_chatmsg_message_frame(const sg_chatmsg_t *msg)
{
    json_t *data = chatmsg_object(msg);
    if (data == NULL)
        return NULL;
    return chatmsg_buf(json_pack("{s:s,s:o}", "type", "message", "data",
                                 data));
}

sg_buf_t *sg_chatmsg_history_frame(const char *const *items,
                                   const size_t *lens, size_t n,
                                   size_t *skipped)
{
    json_t *list = json_array();
    size_t bad = 0;
    if (list == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        chatmsg_view_t v;
        json_t *root = chatmsg_load(items[i], lens[i], NULL, 0);
        if (root == NULL || chatmsg_view(root, &v, NULL, 0) != 0) {
            bad++;
        } else if (json_array_append_new(list, chatmsg_view_object(&v))) {
            json_decref(root);
            json_decref(list);
            return NULL;
        }
        json_decref(root);
    }
    if (skipped != NULL)
        *skipped = bad;
    return chatmsg_buf(json_pack("{s:s,s:o}", "type", "history",
                                 "messages", list));
}

void sg_chatmsg_iso_now(char *out, size_t outlen)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    chatmsg_iso_format(ts.tv_sec, ts.tv_nsec / 1000000, out, outlen);
}

/* A NULL node_id leaves out "node" (the compat welcome has none). */
sg_buf_t *sg_chatmsg_welcome_frame(const char *session_id,
                                   const sg_welcome_info_t *info)
{
    char now[32];
    assert(session_id != NULL);
    sg_chatmsg_iso_now(now, sizeof(now));
    json_t *doc = json_pack("{s:s,s:o,s:s}", "type", "welcome", "sessionId",
                            chatmsg_cstr(session_id), "timestamp", now);
    if (doc == NULL || info == NULL)
        return chatmsg_buf(doc);
    int rc = 0;
    if (info->node_id != NULL)
        rc |= json_object_set_new(doc, "node", chatmsg_cstr(info->node_id));
    if (info->epoch != NULL) {
        rc |= json_object_set_new(doc, "epoch", chatmsg_cstr(info->epoch));
        rc |= json_object_set_new(doc, "offset",
                                  json_integer((json_int_t)info->offset));
    }
    if (info->recovered >= 0)
        rc |= json_object_set_new(doc, "recovered",
                                  json_boolean(info->recovered));
    if (rc != 0) {
        json_decref(doc);
        return NULL;
    }
    return chatmsg_buf(doc);
}

sg_buf_t *sg_chatmsg_chunk_frame(const sg_chunk_t *c, int delta_mode)
{
    json_t *content, *chunk;
    if (!delta_mode) {
        content = chatmsg_jstr(c->content ? c->content : "",
                               c->content ? c->content_len : 0);
        chunk = c->is_complete ? json_null()
                               : chatmsg_jstr(c->delta, c->delta_len);
    } else {
        /* A reset (the text does not extend the previous one: a redacted
         * rewrite, an error final) replaces the text: delta readers get
         * the whole new text in content, and "reset":true. */
        content = c->is_complete || c->reset
                      ? chatmsg_jstr(c->content ? c->content : "",
                                     c->content_len)
                      : NULL;
        chunk = c->delta != NULL ? chatmsg_jstr(c->delta, c->delta_len)
                                 : chatmsg_jstr(c->content, c->content_len);
    }
    json_t *data = chatmsg_pack(
        chatmsg_cstr(c->message_id), chatmsg_cstr(c->session_id),
        chatmsg_cstr(c->user_id), chatmsg_cstr(c->role ? c->role : "assistant"),
        content ? content : json_null(), chunk, c->timestamp, c->is_complete);
    if (data != NULL && content == NULL)
        json_object_del(data, "content");
    json_t *frame = json_pack("{s:s,s:o,s:I,s:I}", "type", "message",
                              "data", data, "offset", (json_int_t)c->offset,
                              "index", (json_int_t)c->index);
    if (frame != NULL && delta_mode && c->reset)
        json_object_set_new(frame, "reset", json_true());
    return chatmsg_buf(frame);
}

sg_buf_t *sg_chatmsg_error_frame(const char *text)
{
    char now[32];
    sg_chatmsg_iso_now(now, sizeof(now));
    return chatmsg_buf(json_pack("{s:s,s:o,s:s}", "type", "error", "error",
                                 chatmsg_cstr(text ? text : ""), "timestamp",
                                 now));
}
