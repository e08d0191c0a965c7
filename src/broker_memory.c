/* The in-process broker engine (broker.h) for embedded mode: the wanted set
 * of sessions, publish/subscribe and per-session history lists, all in
 * memory, with the same asynchronous contract as the Redis engine.
 *
 * Every operation becomes an event in one FIFO queue that a uv_idle drains
 * on the next loop iteration, so callbacks are never synchronous and run in
 * call order (a history_get sees every append issued before it, as with a
 * pipelined Redis connection). Events queued while draining wait for the
 * next iteration.
 *
 * Bounds: a history list keeps at most MEM_HISTORY_MAX entries; appending
 * to a full list drops the oldest entry (Redis has no such cap; at the
 * compat endpoint's rate 10000 chunks is far beyond one answer). Lists
 * expire history_ttl seconds after their last append: lazily on access and
 * by a sweep every MEM_SWEEP_MS.
 *
 * Streams (stream.h): per session an epoch, the last offset, a ring log of
 * at most log_max_len delta entries and one snapshot per message, decided
 * by the APPEND RULES when the append event runs (so the queue order is the
 * offset order). An accepted chunk is queued as an EV_CHUNK event, so
 * on_chunk reaches subscribers in offset order, never inside the append.
 * The whole stream state expires recovery_ttl seconds after its last
 * accepted append (or after the read that created its epoch), lazily on
 * access and by the sweep; the next append or read then starts a new
 * epoch. Snapshot timestamps (done_at) use the wall clock, expiry the
 * loop's monotonic clock. */
#include "broker.h"

#include <assert.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "map.h"

#define MEM_HISTORY_MAX 10000
#define MEM_SWEEP_MS 60000
#define MEM_SID_MAX 128

typedef enum {
    EV_SUBSCRIBED,
    EV_MESSAGE,
    EV_APPEND,
    EV_GET,
    EV_CLEAR,
    EV_STREAM_APPEND,
    EV_STREAM_READ,
    EV_CHUNK,
} ev_kind_t;

typedef struct mem_event {
    struct mem_event *next;
    ev_kind_t kind;
    sg_broker_done_cb done_cb;
    sg_broker_list_cb list_cb;
    sg_broker_append_cb append_cb;
    sg_broker_read_cb read_cb;
    void *arg;
    char *payload;
    size_t len;
    /* EV_STREAM_APPEND: the message (message_id, user_id, role, content,
     * timestamp, is_complete); EV_CHUNK: the chunk to deliver. Every
     * string is owned by the event. */
    sg_chunk_t chunk;
    uint64_t since;       /* EV_STREAM_READ */
    int with_history;
    char sid[]; /* NUL-terminated */
} mem_event_t;

typedef struct mem_sub {
    int confirmed; /* on_subscribed delivered since the last subscribe */
} mem_sub_t;

typedef struct mem_entry {
    char *data;
    size_t len;
} mem_entry_t;

/* A ring of entries, oldest at `head`. */
typedef struct mem_history {
    mem_entry_t *ring;
    size_t cap;
    size_t head;
    size_t count;
    uint64_t expires_at; /* uv_now() ms */
} mem_history_t;

/* A session's stream. Ring entries and snapshots are sg_chunk_t with
 * owned strings and epoch/session_id NULL (filled in when read). */
typedef struct mem_stream {
    char epoch[SG_EPOCH_LEN + 1];
    uint64_t seq;          /* last offset */
    sg_chunk_t *ring;      /* log, oldest at `head`, content NULL */
    size_t cap;
    size_t head;
    size_t count;
    sg_map_t *snaps;       /* message_id -> sg_chunk_t, delta NULL */
    uint64_t expires_at;   /* uv_now() ms */
} mem_stream_t;

typedef struct broker_memory {
    sg_broker_t base;
    uv_loop_t *loop;
    sg_broker_handlers_t h;
    uint64_t ttl_ms;
    uint64_t recovery_ms;
    size_t log_max_len;
    sg_map_t *subs;       /* sid -> mem_sub_t, the wanted set */
    sg_map_t *histories;  /* sid -> mem_history_t */
    sg_map_t *streams;    /* sid -> mem_stream_t */
    mem_event_t *head;    /* FIFO of events not yet run */
    mem_event_t *tail;
    uv_idle_t idle;       /* drains the queue while it is non-empty */
    uv_timer_t sweep;     /* expires history lists */
    int closing;
    int open_handles;
    sg_broker_closed_cb closed_cb;
    void *closed_arg;
} broker_memory_t;

static const sg_broker_vtable_t broker_memory_vt;

static void mem_on_idle(uv_idle_t *idle);

/* ---- history lists ----------------------------------------------------- */

static void mem_history_free(void *value)
{
    mem_history_t *hl = value;
    if (hl == NULL)
        return;
    for (size_t i = 0; i < hl->count; i++)
        free(hl->ring[(hl->head + i) % hl->cap].data);
    free(hl->ring);
    free(hl);
}

/* The live list of `sid`, or NULL; an expired list is deleted first. */
static mem_history_t *mem_history_find(broker_memory_t *b, const char *sid)
{
    mem_history_t *hl = sg_map_get(b->histories, sid);
    if (hl != NULL && uv_now(b->loop) >= hl->expires_at) {
        mem_history_free(sg_map_remove(b->histories, sid));
        hl = NULL;
    }
    return hl;
}

static int mem_history_grow(mem_history_t *hl)
{
    size_t cap = hl->cap == 0 ? 16 : hl->cap * 2;
    if (cap > MEM_HISTORY_MAX)
        cap = MEM_HISTORY_MAX;
    mem_entry_t *ring = malloc(cap * sizeof(*ring));
    if (ring == NULL)
        return SG_ENOMEM;
    for (size_t i = 0; i < hl->count; i++)
        ring[i] = hl->ring[(hl->head + i) % hl->cap];
    free(hl->ring);
    hl->ring = ring;
    hl->cap = cap;
    hl->head = 0;
    return 0;
}

/* Takes ownership of `data` on success (0); SG_ENOMEM leaves it the
 * caller's. */
static int mem_history_push(broker_memory_t *b, const char *sid, char *data,
                            size_t len)
{
    mem_history_t *hl = mem_history_find(b, sid);
    if (hl == NULL) {
        hl = calloc(1, sizeof(*hl));
        if (hl == NULL || sg_map_put(b->histories, sid, hl) != 0) {
            free(hl);
            return SG_ENOMEM;
        }
    }
    if (hl->count == hl->cap && hl->cap < MEM_HISTORY_MAX &&
        mem_history_grow(hl) != 0)
        return SG_ENOMEM;
    if (hl->count == MEM_HISTORY_MAX) {
        free(hl->ring[hl->head].data);
        hl->head = (hl->head + 1) % hl->cap;
        hl->count--;
    }
    hl->ring[(hl->head + hl->count) % hl->cap] = (mem_entry_t){data, len};
    hl->count++;
    hl->expires_at = uv_now(b->loop) + b->ttl_ms;
    return 0;
}

static int mem_visit_expired(void *ctx, const char *sid, void *value)
{
    broker_memory_t *b = ctx;
    mem_history_t *hl = value;
    if (uv_now(b->loop) < hl->expires_at)
        return 0;
    mem_history_free(hl);
    return 1;
}

static int mem_visit_expired_stream(void *ctx, const char *sid,
                                    void *value);

static void mem_on_sweep(uv_timer_t *timer)
{
    broker_memory_t *b = timer->data;
    sg_map_foreach(b->histories, mem_visit_expired, b);
    sg_map_foreach(b->streams, mem_visit_expired_stream, b);
}

/* ---- events ------------------------------------------------------------ */

static mem_event_t *mem_event_new(ev_kind_t kind, const char *sid,
                                  const char *payload, size_t len)
{
    size_t sidlen = strlen(sid);
    mem_event_t *ev = calloc(1, sizeof(*ev) + sidlen + 1);
    if (ev == NULL)
        return NULL;
    ev->kind = kind;
    memcpy(ev->sid, sid, sidlen + 1);
    if (payload != NULL) {
        ev->payload = malloc(len > 0 ? len : 1);
        if (ev->payload == NULL) {
            free(ev);
            return NULL;
        }
        memcpy(ev->payload, payload, len);
        ev->len = len;
    }
    return ev;
}

static void mem_chunk_clear(sg_chunk_t *c);

static void mem_event_free(mem_event_t *ev)
{
    mem_chunk_clear(&ev->chunk);
    free(ev->payload);
    free(ev);
}

static void mem_enqueue(broker_memory_t *b, mem_event_t *ev)
{
    if (b->tail != NULL)
        b->tail->next = ev;
    else
        b->head = ev;
    b->tail = ev;
    uv_idle_start(&b->idle, mem_on_idle);
}

/* ---- streams ----------------------------------------------------------- */

static char *mem_dup(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (d != NULL) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

static void mem_chunk_clear(sg_chunk_t *c)
{
    free((char *)c->epoch);
    free((char *)c->session_id);
    free((char *)c->message_id);
    free((char *)c->user_id);
    free((char *)c->role);
    free((char *)c->content);
    free((char *)c->delta);
    memset(c, 0, sizeof(*c));
}

/* Deep copy of `src` into `dst` (NULL strings stay NULL). 0 or
 * SG_ENOMEM, and then `dst` holds nothing. */
static int mem_chunk_dup(sg_chunk_t *dst, const sg_chunk_t *src)
{
    *dst = *src;
    dst->epoch = dst->session_id = dst->message_id = NULL;
    dst->user_id = dst->role = dst->content = dst->delta = NULL;
#define MEM_DUP(f, n)                                                          \
    if (src->f != NULL && (dst->f = mem_dup(src->f, (n))) == NULL)             \
        goto fail;
    MEM_DUP(epoch, strlen(src->epoch))
    MEM_DUP(session_id, strlen(src->session_id))
    MEM_DUP(message_id, strlen(src->message_id))
    MEM_DUP(user_id, strlen(src->user_id))
    MEM_DUP(role, strlen(src->role))
    MEM_DUP(content, src->content_len)
    MEM_DUP(delta, src->delta_len)
#undef MEM_DUP
    return 0;
fail:
    mem_chunk_clear(dst);
    return SG_ENOMEM;
}

static void mem_snap_free(void *value)
{
    if (value != NULL)
        mem_chunk_clear(value);
    free(value);
}

static void mem_stream_free(void *value)
{
    mem_stream_t *st = value;
    if (st == NULL)
        return;
    for (size_t i = 0; i < st->count; i++)
        mem_chunk_clear(&st->ring[(st->head + i) % st->cap]);
    free(st->ring);
    sg_map_free(st->snaps, mem_snap_free);
    free(st);
}

static int64_t mem_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The live stream of `sid`, created (new epoch, TTL started) when absent
 * or expired; NULL on no memory. */
static mem_stream_t *mem_stream_get(broker_memory_t *b, const char *sid)
{
    mem_stream_t *st = sg_map_get(b->streams, sid);
    if (st != NULL && uv_now(b->loop) < st->expires_at)
        return st;
    mem_stream_free(sg_map_remove(b->streams, sid));
    st = calloc(1, sizeof(*st));
    if (st == NULL || (st->snaps = sg_map_new()) == NULL ||
        sg_map_put(b->streams, sid, st) != 0) {
        mem_stream_free(st);
        return NULL;
    }
    sg__broker_new_epoch(st->epoch);
    st->expires_at = uv_now(b->loop) + b->recovery_ms;
    return st;
}

/* Makes room for one more log entry: grows the ring up to log_max_len,
 * then drops the oldest entry. 0 or SG_ENOMEM. */
static int mem_log_reserve(broker_memory_t *b, mem_stream_t *st)
{
    if (st->count == b->log_max_len) {
        mem_chunk_clear(&st->ring[st->head]);
        st->head = (st->head + 1) % st->cap;
        st->count--;
        return 0;
    }
    if (st->count < st->cap)
        return 0;
    size_t cap = st->cap == 0 ? 16 : st->cap * 2;
    if (cap > b->log_max_len)
        cap = b->log_max_len;
    sg_chunk_t *ring = malloc(cap * sizeof(*ring));
    if (ring == NULL)
        return SG_ENOMEM;
    for (size_t i = 0; i < st->count; i++)
        ring[i] = st->ring[(st->head + i) % st->cap];
    free(st->ring);
    st->ring = ring;
    st->cap = cap;
    st->head = 0;
    return 0;
}

typedef struct mem_prune {
    int64_t horizon;  /* wall ms: completed before this are dropped */
    const char *keep; /* the message being appended */
} mem_prune_t;

static int mem_visit_prune(void *ctx, const char *mid, void *value)
{
    mem_prune_t *p = ctx;
    sg_chunk_t *s = value;
    if (!s->is_complete || s->done_at >= p->horizon ||
        strcmp(mid, p->keep) == 0)
        return 0;
    mem_snap_free(s);
    return 1;
}

/* Rule 3 of stream.h for an accepted message: index, reset, delta. */
static void mem_derive(const sg_chunk_t *m, sg_chunk_t *c)
{
    c->index = m != NULL ? m->index + 1 : 0;
    c->reset = m != NULL && (m->content_len > c->content_len ||
                             memcmp(c->content, m->content,
                                    m->content_len) != 0);
    if (m != NULL && !c->reset) {
        c->delta = c->content + m->content_len;
        c->delta_len = c->content_len - m->content_len;
    } else {
        c->delta = c->content;
        c->delta_len = c->content_len;
    }
}

/* Stores the accepted chunk `c`: snapshot, log entry, live event. Every
 * allocation happens before the stream changes, so SG_ENOMEM leaves it as
 * it was (except that a full log may have dropped its oldest entry). */
static int mem_stream_commit(broker_memory_t *b, mem_stream_t *st,
                             const sg_chunk_t *c)
{
    sg_chunk_t entry = *c, snap = *c, logged;
    entry.content = NULL;
    entry.epoch = entry.session_id = NULL;
    snap.delta = NULL;
    snap.epoch = snap.session_id = NULL;
    memset(&logged, 0, sizeof(logged));
    sg_chunk_t *old = sg_map_get(st->snaps, c->message_id);
    sg_chunk_t *s = calloc(1, sizeof(*s));
    mem_event_t *ev = mem_event_new(EV_CHUNK, c->session_id, NULL, 0);

    if (s == NULL || ev == NULL || mem_chunk_dup(s, &snap) != 0 ||
        mem_chunk_dup(&ev->chunk, c) != 0 ||
        mem_chunk_dup(&logged, &entry) != 0 ||
        mem_log_reserve(b, st) != 0 ||
        sg_map_put(st->snaps, c->message_id, s) != 0) {
        mem_snap_free(s);
        if (ev != NULL)
            mem_event_free(ev);
        mem_chunk_clear(&logged);
        return SG_ENOMEM;
    }
    mem_snap_free(old);
    st->ring[(st->head + st->count++) % st->cap] = logged;
    st->seq = c->offset;
    st->expires_at = uv_now(b->loop) + b->recovery_ms;
    mem_enqueue(b, ev);
    return 0;
}

/* The APPEND RULES of stream.h, run in queue order. */
static void mem_run_stream_append(broker_memory_t *b, mem_event_t *ev)
{
    const sg_chunk_t *in = &ev->chunk;
    uint64_t offset = 0;
    int rc = 0;
    mem_stream_t *st = mem_stream_get(b, ev->sid);

    if (st == NULL) {
        rc = SG_ENOMEM;
        goto done;
    }
    const sg_chunk_t *m = sg_map_get(st->snaps, in->message_id);
    if (m != NULL && (m->is_complete || (!in->is_complete &&
                                         in->content_len <= m->content_len)))
        goto done; /* rules 1-2: duplicate */
    sg_chunk_t c = *in;
    int64_t now = mem_wall_ms();
    mem_derive(m, &c);
    c.offset = st->seq + 1;
    c.epoch = st->epoch;
    c.session_id = ev->sid;
    if (c.timestamp <= 0)
        c.timestamp = now;
    c.done_at = c.is_complete ? now : 0;
    if (c.is_complete) {
        mem_prune_t p = {now - (int64_t)b->recovery_ms, c.message_id};
        sg_map_foreach(st->snaps, mem_visit_prune, &p);
    }
    rc = mem_stream_commit(b, st, &c);
    if (rc == 0)
        offset = c.offset;
done:
    if (ev->append_cb != NULL)
        ev->append_cb(ev->arg, rc, offset);
}

typedef struct mem_snaps {
    sg_chunk_t *out;
    size_t n;
    int64_t horizon;
    const char *epoch;
    const char *sid;
} mem_snaps_t;

static int mem_visit_snap(void *ctx, const char *mid, void *value)
{
    mem_snaps_t *ms = ctx;
    const sg_chunk_t *s = value;
    if (s->is_complete && s->done_at < ms->horizon)
        return 0;
    sg_chunk_t *c = &ms->out[ms->n++];
    *c = *s;
    c->epoch = ms->epoch;
    c->session_id = ms->sid;
    return 0;
}

static int mem_cmp_offset(const void *a, const void *b)
{
    uint64_t x = ((const sg_chunk_t *)a)->offset;
    uint64_t y = ((const sg_chunk_t *)b)->offset;
    return x < y ? -1 : x > y;
}

/* Fills st->log when `since` is given and the log holds every offset
 * since+1..last (the rule the Redis read script applies too). */
static void mem_read_log(const mem_stream_t *st, uint64_t since,
                         sg_chunk_t *log, sg_stream_state_t *out)
{
    uint64_t first = out->first_offset;
    if (since == SG_STREAM_NO_SINCE)
        return;
    if (since == st->seq) {
        out->range_ok = 1;
        return;
    }
    if (since > st->seq || first == 0 || first > since + 1)
        return;
    out->range_ok = 1;
    for (size_t i = (size_t)(since + 1 - first); i < st->count; i++) {
        sg_chunk_t *c = &log[out->nlog++];
        *c = st->ring[(st->head + i) % st->cap];
        c->epoch = out->epoch;
    }
    out->log = log;
}

static void mem_run_stream_read(broker_memory_t *b, mem_event_t *ev)
{
    sg_stream_state_t out;
    mem_stream_t *st = mem_stream_get(b, ev->sid);
    mem_history_t *hl = ev->with_history ? mem_history_find(b, ev->sid)
                                         : NULL;
    size_t nh = hl != NULL ? hl->count : 0;
    size_t ns = st != NULL ? sg_map_count(st->snaps) : 0;
    sg_chunk_t *log = st != NULL ? calloc(st->count + 1, sizeof(*log))
                                 : NULL;
    mem_snaps_t ms = {calloc(ns + 1, sizeof(sg_chunk_t)), 0,
                      mem_wall_ms() - (int64_t)b->recovery_ms, NULL,
                      ev->sid};
    const char **items = calloc(nh + 1, sizeof(*items));
    size_t *lens = calloc(nh + 1, sizeof(*lens));

    if (st == NULL || log == NULL || ms.out == NULL || items == NULL ||
        lens == NULL) {
        ev->read_cb(ev->arg, SG_ENOMEM, NULL);
        goto done;
    }
    memset(&out, 0, sizeof(out));
    out.epoch = ms.epoch = st->epoch;
    out.last_offset = st->seq;
    out.first_offset = st->count > 0 ? st->ring[st->head].offset : 0;
    mem_read_log(st, ev->since, log, &out);
    for (size_t i = 0; i < out.nlog; i++)
        log[i].session_id = ev->sid;
    sg_map_foreach(st->snaps, mem_visit_snap, &ms);
    qsort(ms.out, ms.n, sizeof(*ms.out), mem_cmp_offset);
    out.snapshots = ms.out;
    out.nsnapshots = ms.n;
    for (size_t i = 0; i < nh; i++) {
        mem_entry_t *e = &hl->ring[(hl->head + i) % hl->cap];
        items[i] = e->data;
        lens[i] = e->len;
    }
    out.history = items;
    out.history_lens = lens;
    out.nhistory = nh;
    ev->read_cb(ev->arg, 0, &out);
done:
    free(log);
    free(ms.out);
    free(items);
    free(lens);
}

static int mem_visit_expired_stream(void *ctx, const char *sid, void *value)
{
    broker_memory_t *b = ctx;
    mem_stream_t *st = value;
    if (uv_now(b->loop) < st->expires_at)
        return 0;
    mem_stream_free(st);
    return 1;
}

/* ---- running events ---------------------------------------------------- */

static void mem_run_get(broker_memory_t *b, mem_event_t *ev)
{
    mem_history_t *hl = mem_history_find(b, ev->sid);
    size_t n = hl != NULL ? hl->count : 0;
    const char **items = calloc(n + 1, sizeof(*items));
    size_t *lens = calloc(n + 1, sizeof(*lens));
    if (items == NULL || lens == NULL) {
        ev->list_cb(ev->arg, SG_ENOMEM, NULL, NULL, 0);
    } else {
        for (size_t i = 0; i < n; i++) {
            mem_entry_t *e = &hl->ring[(hl->head + i) % hl->cap];
            items[i] = e->data;
            lens[i] = e->len;
        }
        ev->list_cb(ev->arg, 0, items, lens, n);
    }
    free(items);
    free(lens);
}

/* Runs one event; user callbacks may re-enter the broker (even close). */
static void mem_run(broker_memory_t *b, mem_event_t *ev)
{
    mem_sub_t *sub;
    int rc;

    switch (ev->kind) {
    case EV_SUBSCRIBED:
        sub = sg_map_get(b->subs, ev->sid);
        if (sub == NULL || sub->confirmed)
            return;
        sub->confirmed = 1;
        if (b->h.on_subscribed != NULL)
            b->h.on_subscribed(b->h.arg, ev->sid);
        return;
    case EV_MESSAGE:
        sub = sg_map_get(b->subs, ev->sid);
        if (sub != NULL && sub->confirmed && b->h.on_message != NULL)
            b->h.on_message(b->h.arg, ev->sid, ev->payload, ev->len);
        return;
    case EV_APPEND:
        rc = mem_history_push(b, ev->sid, ev->payload, ev->len);
        if (rc == 0)
            ev->payload = NULL; /* now the list's */
        ev->done_cb(ev->arg, rc);
        return;
    case EV_GET:
        mem_run_get(b, ev);
        return;
    case EV_CLEAR:
        mem_history_free(sg_map_remove(b->histories, ev->sid));
        ev->done_cb(ev->arg, 0);
        return;
    case EV_STREAM_APPEND:
        mem_run_stream_append(b, ev);
        return;
    case EV_STREAM_READ:
        mem_run_stream_read(b, ev);
        return;
    case EV_CHUNK:
        sub = sg_map_get(b->subs, ev->sid);
        if (sub != NULL && sub->confirmed && b->h.on_chunk != NULL)
            b->h.on_chunk(b->h.arg, ev->sid, &ev->chunk);
        return;
    }
}

static void mem_cancel(mem_event_t *ev)
{
    if (ev->kind == EV_APPEND || ev->kind == EV_CLEAR)
        ev->done_cb(ev->arg, SG_ECANCELED);
    else if (ev->kind == EV_GET)
        ev->list_cb(ev->arg, SG_ECANCELED, NULL, NULL, 0);
    else if (ev->kind == EV_STREAM_APPEND && ev->append_cb != NULL)
        ev->append_cb(ev->arg, SG_ECANCELED, 0);
    else if (ev->kind == EV_STREAM_READ)
        ev->read_cb(ev->arg, SG_ECANCELED, NULL);
}

/* ---- lifecycle callbacks ----------------------------------------------- */

static void mem_on_closed(uv_handle_t *handle)
{
    broker_memory_t *b = handle->data;
    if (--b->open_handles > 0)
        return;
    sg_broker_closed_cb cb = b->closed_cb;
    void *arg = b->closed_arg;
    sg_map_free(b->subs, free);
    sg_map_free(b->histories, mem_history_free);
    sg_map_free(b->streams, mem_stream_free);
    free(b);
    if (cb != NULL)
        cb(arg);
}

/* Drains the events queued before this iteration. After close, pending
 * operations complete with SG_ECANCELED and the handles are closed. */
static void mem_on_idle(uv_idle_t *idle)
{
    broker_memory_t *b = idle->data;
    mem_event_t *ev = b->head;

    b->head = b->tail = NULL;
    while (ev != NULL) {
        mem_event_t *next = ev->next;
        if (b->closing)
            mem_cancel(ev);
        else
            mem_run(b, ev);
        mem_event_free(ev);
        ev = next;
    }
    if (b->closing) {
        /* Events queued by callbacks of this batch before close was called;
         * new ones are refused once closing. */
        while ((ev = b->head) != NULL) {
            b->head = ev->next;
            mem_cancel(ev);
            mem_event_free(ev);
        }
        b->tail = NULL;
        uv_close((uv_handle_t *)&b->idle, mem_on_closed);
        uv_close((uv_handle_t *)&b->sweep, mem_on_closed);
    } else if (b->head == NULL) {
        uv_idle_stop(&b->idle);
    }
}

/* ---- API --------------------------------------------------------------- */

static int mem_check(const broker_memory_t *b, const char *sid)
{
    if (b->closing)
        return SG_ECLOSED;
    if (sid == NULL || sid[0] == '\0' || strlen(sid) > MEM_SID_MAX)
        return SG_EINVAL;
    return 0;
}

/* Queues an event; 0 or SG_ENOMEM. */
static int mem_queue(broker_memory_t *b, ev_kind_t kind, const char *sid,
                     const char *payload, size_t len, sg_broker_done_cb done,
                     sg_broker_list_cb list, void *arg)
{
    mem_event_t *ev = mem_event_new(kind, sid, payload, len);
    if (ev == NULL)
        return SG_ENOMEM;
    ev->done_cb = done;
    ev->list_cb = list;
    ev->arg = arg;
    mem_enqueue(b, ev);
    return 0;
}

static int mem_subscribe(sg_broker_t *base, const char *sid)
{
    broker_memory_t *b = (broker_memory_t *)base;
    int rc = mem_check(b, sid);
    if (rc != 0)
        return rc;
    if (sg_map_get(b->subs, sid) != NULL)
        return 0;
    mem_sub_t *sub = calloc(1, sizeof(*sub));
    if (sub == NULL || sg_map_put(b->subs, sid, sub) != 0) {
        free(sub);
        return SG_ENOMEM;
    }
    rc = mem_queue(b, EV_SUBSCRIBED, sid, NULL, 0, NULL, NULL, NULL);
    if (rc != 0)
        free(sg_map_remove(b->subs, sid));
    return rc;
}

static int mem_unsubscribe(sg_broker_t *base, const char *sid)
{
    broker_memory_t *b = (broker_memory_t *)base;
    int rc = mem_check(b, sid);
    if (rc != 0)
        return rc;
    free(sg_map_remove(b->subs, sid));
    return 0;
}

static size_t mem_subscription_count(const sg_broker_t *base)
{
    return sg_map_count(((const broker_memory_t *)base)->subs);
}

static int mem_publish(sg_broker_t *base, const char *sid, const char *p,
                       size_t n)
{
    broker_memory_t *b = (broker_memory_t *)base;
    int rc = mem_check(b, sid);
    return rc != 0 ? rc : mem_queue(b, EV_MESSAGE, sid, p, n, NULL, NULL,
                                    NULL);
}

static int mem_history_append(sg_broker_t *base, const char *sid,
                              const char *p, size_t n, sg_broker_done_cb cb,
                              void *arg)
{
    broker_memory_t *b = (broker_memory_t *)base;
    int rc = mem_check(b, sid);
    return rc != 0 ? rc : mem_queue(b, EV_APPEND, sid, p, n, cb, NULL, arg);
}

static int mem_history_get(sg_broker_t *base, const char *sid,
                           sg_broker_list_cb cb, void *arg)
{
    broker_memory_t *b = (broker_memory_t *)base;
    int rc = mem_check(b, sid);
    return rc != 0 ? rc : mem_queue(b, EV_GET, sid, NULL, 0, NULL, cb, arg);
}

static int mem_history_clear(sg_broker_t *base, const char *sid,
                             sg_broker_done_cb cb, void *arg)
{
    broker_memory_t *b = (broker_memory_t *)base;
    int rc = mem_check(b, sid);
    return rc != 0 ? rc : mem_queue(b, EV_CLEAR, sid, NULL, 0, cb, NULL, arg);
}

static int mem_stream_append(sg_broker_t *base, const char *sid,
                             const sg_chatmsg_t *msg, sg_broker_append_cb cb,
                             void *arg)
{
    broker_memory_t *b = (broker_memory_t *)base;
    int rc = mem_check(b, sid);
    if (rc != 0)
        return rc;
    if (msg == NULL || msg->message_id == NULL || msg->role == NULL ||
        msg->content == NULL)
        return SG_EINVAL;
    mem_event_t *ev = mem_event_new(EV_STREAM_APPEND, sid, NULL, 0);
    if (ev == NULL)
        return SG_ENOMEM;
    sg_chunk_t in = {
        .message_id = msg->message_id,
        .user_id = msg->user_id,
        .role = msg->role,
        .content = msg->content,
        .content_len = msg->content_len,
        .timestamp = msg->timestamp,
        .is_complete = msg->is_complete == 1,
    };
    if (mem_chunk_dup(&ev->chunk, &in) != 0) {
        mem_event_free(ev);
        return SG_ENOMEM;
    }
    ev->append_cb = cb;
    ev->arg = arg;
    mem_enqueue(b, ev);
    return 0;
}

static int mem_stream_read(sg_broker_t *base, const char *sid,
                           uint64_t since, int with_history,
                           sg_broker_read_cb cb, void *arg)
{
    broker_memory_t *b = (broker_memory_t *)base;
    int rc = mem_check(b, sid);
    if (rc != 0)
        return rc;
    mem_event_t *ev = mem_event_new(EV_STREAM_READ, sid, NULL, 0);
    if (ev == NULL)
        return SG_ENOMEM;
    ev->read_cb = cb;
    ev->arg = arg;
    ev->since = since;
    ev->with_history = with_history;
    mem_enqueue(b, ev);
    return 0;
}

/* Raw Redis commands have no in-process equivalent. */
static int mem_command(sg_broker_t *base, int argc, const char *const *argv,
                       const size_t *lens, sg_broker_reply_cb cb, void *arg)
{
    return SG_ENOTSUP;
}

static int mem_is_ready(const sg_broker_t *base)
{
    return !((const broker_memory_t *)base)->closing;
}

static const char *mem_status_text(const sg_broker_t *base)
{
    return ((const broker_memory_t *)base)->closing ? "DOWN: closed" : "UP";
}

static void mem_close(sg_broker_t *base, sg_broker_closed_cb cb, void *arg)
{
    broker_memory_t *b = (broker_memory_t *)base;
    assert(!b->closing);
    b->closing = 1;
    b->closed_cb = cb;
    b->closed_arg = arg;
    uv_timer_stop(&b->sweep);
    /* The next drain cancels what is queued and closes the handles. */
    uv_idle_start(&b->idle, mem_on_idle);
}

sg_broker_t *sg_broker_memory_new(uv_loop_t *loop, const sg_config_t *cfg,
                                  const sg_broker_handlers_t *handlers)
{
    broker_memory_t *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return NULL;
    b->subs = sg_map_new();
    b->histories = sg_map_new();
    b->streams = sg_map_new();
    if (b->subs == NULL || b->histories == NULL || b->streams == NULL) {
        sg_map_free(b->subs, NULL);
        sg_map_free(b->histories, NULL);
        sg_map_free(b->streams, NULL);
        free(b);
        return NULL;
    }
    b->base.vt = &broker_memory_vt;
    b->loop = loop;
    b->h = *handlers;
    b->ttl_ms = (uint64_t)(cfg->stream.history_ttl > 0
                               ? cfg->stream.history_ttl : 86400) * 1000;
    b->recovery_ms = (uint64_t)(cfg->stream.recovery_ttl > 0
                                    ? cfg->stream.recovery_ttl : 600) * 1000;
    b->log_max_len = (size_t)(cfg->stream.log_max_len > 0
                                  ? cfg->stream.log_max_len : 10000);
    uv_idle_init(loop, &b->idle);
    uv_timer_init(loop, &b->sweep);
    b->idle.data = b;
    b->sweep.data = b;
    b->open_handles = 2;
    uv_timer_start(&b->sweep, mem_on_sweep, MEM_SWEEP_MS, MEM_SWEEP_MS);
    /* The sweep alone must not keep the loop alive. */
    uv_unref((uv_handle_t *)&b->sweep);
    return &b->base;
}

static const sg_broker_vtable_t broker_memory_vt = {
    .mode = "embedded",
    .is_ready = mem_is_ready,
    .status_text = mem_status_text,
    .subscribe = mem_subscribe,
    .unsubscribe = mem_unsubscribe,
    .subscription_count = mem_subscription_count,
    .publish = mem_publish,
    .history_append = mem_history_append,
    .history_get = mem_history_get,
    .history_clear = mem_history_clear,
    .close = mem_close,
    .stream_append = mem_stream_append,
    .stream_read = mem_stream_read,
    .command = mem_command,
};
