/* The two-level script cache (cache.h): the L1 table (hash chains plus an
 * LRU list, both intrusive in the entry) and the L2 operations on Redis
 * through sg_broker_command.
 *
 * The cache is reference-counted: its owner holds one reference and every
 * pending L2 operation one more, so an L2 reply that arrives after the
 * owner let go (a script host freed mid-request) lands on live memory. */
#include "cache.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "error.h"

#define CACHE_PREFIX_LEN (sizeof(SG_CACHE_KEY_PREFIX) - 1)

typedef struct cache_entry {
    struct cache_entry *hnext;            /* hash chain */
    struct cache_entry *prev, *next;      /* LRU: head = most recent */
    uint32_t hash;
    uint64_t expires_ms;                  /* 0: never */
    uint64_t seq;                         /* the write that stored it */
    char *key;
    size_t klen;
    char *value;
    size_t vlen;
} cache_entry_t;

enum { CACHE_L1, CACHE_L2 };

struct sg_cache {
    int refs;
    sg_broker_t *broker;                  /* NULL: no L2 */
    sg_metric_t *hits;
    sg_metric_t *misses;
    cache_entry_t **buckets;
    size_t nbuckets;                      /* power of two */
    cache_entry_t *lru_head, *lru_tail;
    size_t count, max_entries;
    size_t bytes, max_bytes;
    uint64_t l1_max_ttl_ms;
    uint64_t seq;                         /* local sets and dels */
    uint64_t del_seq;                     /* seq of the last del */
};

typedef enum { CACHE_OP_GET, CACHE_OP_SET, CACHE_OP_DEL } cache_op_kind_t;

/* One L2 operation. A fetch sends GET and PTTL (refs 2). */
typedef struct cache_op {
    sg_cache_t *c;
    cache_op_kind_t kind;
    int refs;
    int status;
    uint64_t seq;         /* c->seq when started (set: its own write) */
    long long pttl;       /* fetch: -1 none */
    char *value;          /* fetch: copy of the GET reply */
    size_t vlen;
    char *key;
    size_t klen;
    sg_cache_get_cb get_cb;
    sg_cache_done_cb done_cb;
    void *arg;
} cache_op_t;

/* ---- helpers ----------------------------------------------------------- */

static uint64_t cache_now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* FNV-1a. */
static uint32_t cache_hash(const char *key, size_t klen)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < klen; i++) {
        h ^= (unsigned char)key[i];
        h *= 16777619u;
    }
    return h;
}

static char *cache_dup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void cache_count(sg_cache_t *c, int hit, int level)
{
    sg_metric_t *m = hit ? c->hits : c->misses;
    if (m != NULL)
        sg_metric_inc1(m, level == CACHE_L1 ? "L1" : "L2");
}

static sg_metric_t *cache_family(sg_metrics_t *reg, const char *name,
                                 const char *help)
{
    sg_metric_t *m = sg_metrics_find(reg, name);
    if (m == NULL)
        m = sg_metrics_register(reg, SG_METRIC_COUNTER, name, help, "level",
                                NULL, 0);
    return m;
}

/* ---- L1 ---------------------------------------------------------------- */

static cache_entry_t **cache_slot(sg_cache_t *c, const char *key,
                                  size_t klen, uint32_t hash)
{
    cache_entry_t **pp = &c->buckets[hash & (c->nbuckets - 1)];
    while (*pp != NULL) {
        cache_entry_t *e = *pp;
        if (e->hash == hash && e->klen == klen &&
            memcmp(e->key, key, klen) == 0)
            break;
        pp = &e->hnext;
    }
    return pp;
}

static void cache_lru_unlink(sg_cache_t *c, cache_entry_t *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        c->lru_head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        c->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void cache_lru_push_front(sg_cache_t *c, cache_entry_t *e)
{
    e->prev = NULL;
    e->next = c->lru_head;
    if (c->lru_head != NULL)
        c->lru_head->prev = e;
    c->lru_head = e;
    if (c->lru_tail == NULL)
        c->lru_tail = e;
}

static void cache_entry_free(cache_entry_t *e)
{
    free(e->key);
    free(e->value);
    free(e);
}

/* Unlinks the entry at *pp from its chain and the LRU list; frees it. */
static void cache_remove_at(sg_cache_t *c, cache_entry_t **pp)
{
    cache_entry_t *e = *pp;
    *pp = e->hnext;
    cache_lru_unlink(c, e);
    c->count--;
    c->bytes -= e->klen + e->vlen;
    cache_entry_free(e);
}

static void cache_remove(sg_cache_t *c, cache_entry_t *e)
{
    cache_remove_at(c, cache_slot(c, e->key, e->klen, e->hash));
}

/* The live entry for `key` (expired entries are dropped here). */
static cache_entry_t *cache_find(sg_cache_t *c, const char *key, size_t klen)
{
    cache_entry_t **pp = cache_slot(c, key, klen, cache_hash(key, klen));
    cache_entry_t *e = *pp;
    if (e == NULL)
        return NULL;
    if (e->expires_ms != 0 && e->expires_ms <= cache_now_ms()) {
        cache_remove_at(c, pp);
        return NULL;
    }
    return e;
}

/* Evicts least recently used entries until `need` more bytes and one more
 * entry fit. */
static void cache_make_room(sg_cache_t *c, size_t need)
{
    while (c->lru_tail != NULL &&
           (c->count >= c->max_entries || c->bytes + need > c->max_bytes))
        cache_remove(c, c->lru_tail);
}

/* Inserts or replaces; 0, SG_ETOOBIG (larger than the whole L1) or
 * SG_ENOMEM. */
static int cache_put(sg_cache_t *c, const char *key, size_t klen,
                     const char *value, size_t vlen, uint64_t ttl_ms,
                     uint64_t seq)
{
    if (klen + vlen > c->max_bytes)
        return SG_ETOOBIG;
    char *v = cache_dup(value, vlen);
    if (v == NULL)
        return SG_ENOMEM;
    uint32_t hash = cache_hash(key, klen);
    cache_entry_t **pp = cache_slot(c, key, klen, hash);
    if (*pp != NULL)
        cache_remove_at(c, pp);
    cache_make_room(c, klen + vlen);
    cache_entry_t *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->key = cache_dup(key, klen)) == NULL) {
        free(e);
        free(v);
        return SG_ENOMEM;
    }
    e->klen = klen;
    e->value = v;
    e->vlen = vlen;
    e->hash = hash;
    e->seq = seq;
    e->expires_ms = ttl_ms > 0 ? cache_now_ms() + ttl_ms : 0;
    pp = cache_slot(c, key, klen, hash); /* eviction may have moved it */
    e->hnext = *pp;
    *pp = e;
    cache_lru_push_front(c, e);
    c->count++;
    c->bytes += klen + vlen;
    return 0;
}

/* The L1 lifetime of a value: bounded in Redis mode (other nodes may
 * replace the value in L2 at any time). */
static uint64_t cache_l1_ttl(const sg_cache_t *c, uint64_t ttl_ms)
{
    if (c->broker == NULL)
        return ttl_ms;
    if (ttl_ms == 0 || ttl_ms > c->l1_max_ttl_ms)
        return c->l1_max_ttl_ms;
    return ttl_ms;
}

/* ---- lifecycle --------------------------------------------------------- */

sg_cache_t *sg_cache_new(sg_broker_t *broker, sg_metrics_t *metrics,
                         size_t max_entries, size_t max_bytes,
                         uint64_t l1_max_ttl_ms)
{
    sg_cache_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->refs = 1;
    c->max_entries = max_entries > 0 ? max_entries : SG_CACHE_DEFAULT_ENTRIES;
    c->max_bytes = max_bytes > 0 ? max_bytes : SG_CACHE_DEFAULT_BYTES;
    c->l1_max_ttl_ms = l1_max_ttl_ms > 0 ? l1_max_ttl_ms
                                         : SG_CACHE_DEFAULT_L1_TTL_MS;
    if (broker != NULL && strcmp(sg_broker_mode(broker), "redis") == 0)
        c->broker = broker;
    c->nbuckets = 16;
    while (c->nbuckets < c->max_entries + c->max_entries / 3)
        c->nbuckets *= 2;
    c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    if (metrics != NULL) {
        c->hits = cache_family(metrics, "cache_hits_total",
                               "sg.cache lookups answered, by level");
        c->misses = cache_family(metrics, "cache_misses_total",
                                 "sg.cache lookups not answered, by level");
    }
    return c;
}

static void cache_unref(sg_cache_t *c)
{
    if (--c->refs > 0)
        return;
    while (c->lru_head != NULL)
        cache_remove(c, c->lru_head);
    free(c->buckets);
    free(c);
}

void sg_cache_free(sg_cache_t *c)
{
    if (c != NULL)
        cache_unref(c);
}

int sg_cache_has_l2(const sg_cache_t *c)
{
    return c->broker != NULL;
}

size_t sg_cache_count(const sg_cache_t *c)
{
    return c->count;
}

/* ---- L1 API ------------------------------------------------------------ */

int sg_cache_lookup(sg_cache_t *c, const char *key, size_t klen,
                    const char **value, size_t *len)
{
    cache_entry_t *e = cache_find(c, key, klen);
    cache_count(c, e != NULL, CACHE_L1);
    if (e == NULL)
        return SG_ENOTFOUND;
    cache_lru_unlink(c, e);
    cache_lru_push_front(c, e);
    *value = e->value;
    *len = e->vlen;
    return 0;
}

/* ---- L2 ---------------------------------------------------------------- */

static cache_op_t *cache_op_new(sg_cache_t *c, cache_op_kind_t kind,
                                const char *key, size_t klen, void *arg)
{
    cache_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    op->key = malloc(CACHE_PREFIX_LEN + klen);
    if (op->key == NULL) {
        free(op);
        return NULL;
    }
    memcpy(op->key, SG_CACHE_KEY_PREFIX, CACHE_PREFIX_LEN);
    memcpy(op->key + CACHE_PREFIX_LEN, key, klen);
    op->klen = CACHE_PREFIX_LEN + klen;
    op->c = c;
    op->kind = kind;
    op->arg = arg;
    op->pttl = -1;
    return op;
}

static void cache_op_free(cache_op_t *op)
{
    free(op->key);
    free(op->value);
    free(op);
}

/* Sends one command for `op`; 0 or the broker's code. */
static int cache_op_send(cache_op_t *op, int argc, const char *const *argv,
                   const size_t *lens, sg_broker_reply_cb cb)
{
    int rc = sg_broker_command(op->c->broker, argc, argv, lens, cb, op);
    if (rc == 0)
        op->refs++;
    return rc;
}

static void cache_op_start(cache_op_t *op)
{
    op->c->refs++;
}

static void cache_op_finish_get(cache_op_t *op)
{
    sg_cache_t *c = op->c;
    int status = op->status;

    if (status == 0 && op->value == NULL)
        status = SG_ENOTFOUND;
    if (status == 0 || status == SG_ENOTFOUND)
        cache_count(c, status == 0, CACHE_L2);
    /* Fill L1 unless a local write since the GET makes the reply stale. */
    if (status == 0 && op->pttl != -2 && c->del_seq <= op->seq &&
        cache_find(c, op->key + CACHE_PREFIX_LEN,
                   op->klen - CACHE_PREFIX_LEN) == NULL) {
        uint64_t ttl = op->pttl > 0 ? (uint64_t)op->pttl : 0;
        cache_put(c, op->key + CACHE_PREFIX_LEN, op->klen - CACHE_PREFIX_LEN,
                  op->value, op->vlen, cache_l1_ttl(c, ttl), op->seq);
    }
    op->get_cb(op->arg, status, status == 0 ? op->value : NULL,
               status == 0 ? op->vlen : 0);
}

/* A failed write-through drops the L1 entry it wrote (if still there). */
static void cache_op_finish_write(cache_op_t *op)
{
    sg_cache_t *c = op->c;
    if (op->kind == CACHE_OP_SET && op->status != 0) {
        cache_entry_t *e = cache_find(c, op->key + CACHE_PREFIX_LEN,
                                      op->klen - CACHE_PREFIX_LEN);
        if (e != NULL && e->seq == op->seq)
            cache_remove(c, e);
    }
    op->done_cb(op->arg, op->status);
}

static void cache_op_reply(void *arg, int status, const sg_reply_t *r)
{
    cache_op_t *op = arg;

    if (status == 0 && r->type == SG_REPLY_ERROR)
        status = SG_EREMOTE;
    if (status < 0) {
        if (op->status == 0)
            op->status = status;
    } else if (op->kind == CACHE_OP_GET && r->type == SG_REPLY_INTEGER) {
        op->pttl = r->integer; /* PTTL: ms, -1 no TTL, -2 gone */
    } else if (op->kind == CACHE_OP_GET && r->type == SG_REPLY_STRING) {
        op->value = cache_dup(r->str, r->len);
        op->vlen = r->len;
        if (op->value == NULL && op->status == 0)
            op->status = SG_ENOMEM;
    }
    if (--op->refs > 0)
        return;
    sg_cache_t *c = op->c;
    if (op->kind == CACHE_OP_GET)
        cache_op_finish_get(op);
    else
        cache_op_finish_write(op);
    cache_op_free(op);
    cache_unref(c);
}

int sg_cache_fetch(sg_cache_t *c, const char *key, size_t klen,
                   sg_cache_get_cb cb, void *arg)
{
    if (c->broker == NULL)
        return SG_ENOTSUP;
    cache_op_t *op = cache_op_new(c, CACHE_OP_GET, key, klen, arg);
    if (op == NULL)
        return SG_ENOMEM;
    op->get_cb = cb;
    op->seq = c->seq;
    const char *get[2] = {"GET", op->key};
    size_t get_lens[2] = {3, op->klen};
    int rc = cache_op_send(op, 2, get, get_lens, cache_op_reply);
    if (rc != 0) {
        cache_op_free(op);
        return rc;
    }
    /* Pipelined on the same connection; without it L1 just uses its cap. */
    const char *pttl[2] = {"PTTL", op->key};
    size_t pttl_lens[2] = {4, op->klen};
    cache_op_send(op, 2, pttl, pttl_lens, cache_op_reply);
    cache_op_start(op);
    return 0;
}

int sg_cache_set(sg_cache_t *c, const char *key, size_t klen,
                 const char *value, size_t vlen, uint64_t ttl_ms,
                 sg_cache_done_cb cb, void *arg)
{
    char px[24];
    uint64_t seq = c->seq + 1;
    cache_op_t *op = NULL;

    if (c->broker != NULL) {
        op = cache_op_new(c, CACHE_OP_SET, key, klen, arg);
        if (op == NULL)
            return SG_ENOMEM;
        op->done_cb = cb;
        op->seq = seq;
        snprintf(px, sizeof(px), "%llu", (unsigned long long)ttl_ms);
        const char *argv[5] = {"SET", op->key, value, "PX", px};
        size_t lens[5] = {3, op->klen, vlen, 2, strlen(px)};
        int rc = cache_op_send(op, ttl_ms > 0 ? 5 : 3, argv, lens,
                               cache_op_reply);
        if (rc != 0) {
            cache_op_free(op);
            return rc;
        }
        cache_op_start(op);
    }
    c->seq = seq;
    int rc = cache_put(c, key, klen, value, vlen, cache_l1_ttl(c, ttl_ms),
                       seq);
    if (rc == SG_ETOOBIG && op != NULL)
        rc = 0; /* too big for L1, but stored in L2 */
    if (rc != 0 && op == NULL)
        return rc;
    return op != NULL ? 1 : 0;
}

int sg_cache_del(sg_cache_t *c, const char *key, size_t klen,
                 sg_cache_done_cb cb, void *arg)
{
    cache_op_t *op = NULL;

    if (c->broker != NULL) {
        op = cache_op_new(c, CACHE_OP_DEL, key, klen, arg);
        if (op == NULL)
            return SG_ENOMEM;
        op->done_cb = cb;
        const char *argv[2] = {"DEL", op->key};
        size_t lens[2] = {3, op->klen};
        int rc = cache_op_send(op, 2, argv, lens, cache_op_reply);
        if (rc != 0) {
            cache_op_free(op);
            return rc;
        }
        cache_op_start(op);
    }
    c->del_seq = ++c->seq;
    cache_entry_t **pp = cache_slot(c, key, klen, cache_hash(key, klen));
    if (*pp != NULL)
        cache_remove_at(c, pp);
    return op != NULL ? 1 : 0;
}
