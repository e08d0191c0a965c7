/* The script cache behind sg.cache: string values by string key in two
 * levels. L1 is in this process: bounded (entry count and bytes), LRU
 * eviction, a per-entry TTL checked lazily on access. L2 (Redis mode only)
 * is the Redis key `sg:cache:<key>`, shared by every node: get is
 * cache-aside (L1, else GET from Redis and fill L1), set is write-through
 * (L1, then SET), del removes both.
 *
 * In Redis mode an L1 entry lives at most `l1_max_ttl_ms` (and never
 * longer than the Redis key's remaining TTL), which bounds how long a node
 * may serve a value another node has since replaced. */
#ifndef SG_CACHE_H
#define SG_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "metrics.h"

#define SG_CACHE_KEY_PREFIX "sg:cache:"
#define SG_CACHE_DEFAULT_ENTRIES 10000
#define SG_CACHE_DEFAULT_BYTES (64u * 1024u * 1024u)
#define SG_CACHE_DEFAULT_L1_TTL_MS 5000

/* L2 read result: status 0 with the value (valid only during the call),
 * SG_ENOTFOUND on a miss, or a negative code (SG_EIO, SG_ETIMEOUT,
 * SG_ECANCELED, SG_EREMOTE for an error reply). */
typedef void (*sg_cache_get_cb)(void *arg, int status, const char *value,
                                size_t len);
/* L2 write result: 0 or a negative code. */
typedef void (*sg_cache_done_cb)(void *arg, int status);

typedef struct sg_cache sg_cache_t;

/* A cache; L2 is used when `broker` is a Redis broker (sg_broker_mode).
 * `metrics` may be NULL; otherwise cache_hits_total{level} and
 * cache_misses_total{level} are registered in it (or found, when already
 * there). `broker` and `metrics` must outlive the cache. 0 for a limit
 * means its default. NULL on no memory. */
sg_cache_t *sg_cache_new(sg_broker_t *broker, sg_metrics_t *metrics,
                         size_t max_entries, size_t max_bytes,
                         uint64_t l1_max_ttl_ms);
/* Releases the owner's reference. L2 operations still pending keep the
 * cache alive until they complete (the broker completes them with
 * SG_ECANCELED at the latest when it closes); their callbacks still run. */
void sg_cache_free(sg_cache_t *c);

/* 1 when L2 (Redis) is in use. */
int sg_cache_has_l2(const sg_cache_t *c);
/* Entries currently in L1 (expired ones not yet noticed included). */
size_t sg_cache_count(const sg_cache_t *c);

/* L1 only, synchronous: 0 with *value and *len (valid until the next call on
 * the cache), or SG_ENOTFOUND (absent or expired). Counts an L1 hit or
 * miss. */
int sg_cache_lookup(sg_cache_t *c, const char *key, size_t klen,
                    const char **value, size_t *len);
/* L2 read: GET (plus PTTL) from Redis; a value found fills L1 unless L1
 * got the key meanwhile or a del ran meanwhile. Counts an L2 hit or miss.
 * 0 when `cb` will be called (never synchronously); SG_ENOTSUP without L2,
 * or the broker's code (SG_ENOTREADY...), and then `cb` is not called. */
int sg_cache_fetch(sg_cache_t *c, const char *key, size_t klen,
                   sg_cache_get_cb cb, void *arg);
/* Stores a copy of `value` with a TTL (`ttl_ms` 0: none). Returns 0 when
 * done (no L2: `cb` is not called), 1 when the L2 write (SET ... PX) was
 * started and `cb` will be called, or a negative code with nothing
 * changed. When the L2 write fails, the L1 entry it wrote is dropped
 * again, so a failed set leaves no trace. */
int sg_cache_set(sg_cache_t *c, const char *key, size_t klen,
                 const char *value, size_t vlen, uint64_t ttl_ms,
                 sg_cache_done_cb cb, void *arg);
/* Removes the key from L1 and (DEL) from L2. Same results as set. */
int sg_cache_del(sg_cache_t *c, const char *key, size_t klen,
                 sg_cache_done_cb cb, void *arg);

#endif
