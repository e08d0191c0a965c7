/* A small string-keyed hash map (separate chaining, grows at load 1).
 *
 * Keys are copied into the map; values are opaque pointers that stay the
 * caller's. Used by the broker engines for sid -> per-session state. Not
 * thread-safe; one loop thread only. */
#ifndef SG_MAP_H
#define SG_MAP_H

#include <stddef.h>

/* Called for each entry by sg_map_foreach. Return 1 to remove the entry
 * (the map frees its key copy; the value stays the caller's), 0 to keep it.
 * The callback must not otherwise modify the map. */
typedef int (*sg_map_visit_cb)(void *ctx, const char *key, void *value);
/* Releases a value in sg_map_free. */
typedef void (*sg_map_free_cb)(void *value);

typedef struct sg_map sg_map_t;

/* Returns an empty map, or NULL on no memory. */
sg_map_t *sg_map_new(void);
/* Frees the map and its key copies; calls `free_value` (if not NULL) on
 * every value. NULL is a no-op. */
void sg_map_free(sg_map_t *m, sg_map_free_cb free_value);
/* The value stored under `key`, or NULL. */
void *sg_map_get(const sg_map_t *m, const char *key);
/* Stores `value` under `key`, replacing (not freeing) a previous value.
 * Returns 0, or SG_ENOMEM and then the map is unchanged. */
int sg_map_put(sg_map_t *m, const char *key, void *value);
/* Removes `key`; returns its value (now the caller's) or NULL. */
void *sg_map_remove(sg_map_t *m, const char *key);
size_t sg_map_count(const sg_map_t *m);
/* Visits every entry once, in no particular order (see sg_map_visit_cb). */
void sg_map_foreach(sg_map_t *m, sg_map_visit_cb fn, void *ctx);

#endif
