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
 * by a sweep every MEM_SWEEP_MS. */
#include "broker.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
} ev_kind_t;

typedef struct mem_event {
    struct mem_event *next;
    ev_kind_t kind;
    sg_broker_done_cb done_cb;
    sg_broker_list_cb list_cb;
    void *arg;
    char *payload;
    size_t len;
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

typedef struct broker_memory {
    sg_broker_t base;
    uv_loop_t *loop;
    sg_broker_handlers_t h;
    uint64_t ttl_ms;
    sg_map_t *subs;       /* sid -> mem_sub_t, the wanted set */
    sg_map_t *histories;  /* sid -> mem_history_t */
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

static void mem_on_sweep(uv_timer_t *timer)
{
    broker_memory_t *b = timer->data;
    sg_map_foreach(b->histories, mem_visit_expired, b);
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

static void mem_event_free(mem_event_t *ev)
{
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
    }
}

static void mem_cancel(mem_event_t *ev)
{
    if (ev->kind == EV_APPEND || ev->kind == EV_CLEAR)
        ev->done_cb(ev->arg, SG_ECANCELED);
    else if (ev->kind == EV_GET)
        ev->list_cb(ev->arg, SG_ECANCELED, NULL, NULL, 0);
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
    if (b->subs == NULL || b->histories == NULL) {
        sg_map_free(b->subs, NULL);
        sg_map_free(b->histories, NULL);
        free(b);
        return NULL;
    }
    b->base.vt = &broker_memory_vt;
    b->loop = loop;
    b->h = *handlers;
    b->ttl_ms = (uint64_t)(cfg->stream.history_ttl > 0
                               ? cfg->stream.history_ttl : 86400) * 1000;
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
};
