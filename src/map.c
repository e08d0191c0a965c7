/* String-keyed hash map with separate chaining (map.h). FNV-1a hashing,
 * power-of-two bucket count, doubled when entries exceed buckets. */
#include "map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define MAP_MIN_BUCKETS 16

typedef struct map_entry {
    struct map_entry *next;
    uint32_t hash;
    void *value;
    char key[];
} map_entry_t;

struct sg_map {
    map_entry_t **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
};

/* ---- helpers --------------------------------------------------------- */

static uint32_t map_hash(const char *key)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h;
}

static map_entry_t **map_slot(const sg_map_t *m, const char *key,
                              uint32_t hash)
{
    map_entry_t **slot = &m->buckets[hash & (m->nbuckets - 1)];
    while (*slot != NULL) {
        if ((*slot)->hash == hash && strcmp((*slot)->key, key) == 0)
            break;
        slot = &(*slot)->next;
    }
    return slot;
}

/* Doubles the bucket array; on no memory the map just stays denser. */
static void map_grow(sg_map_t *m)
{
    size_t n = m->nbuckets * 2;
    map_entry_t **nb = calloc(n, sizeof(*nb));
    if (nb == NULL)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        map_entry_t *e = m->buckets[i];
        while (e != NULL) {
            map_entry_t *next = e->next;
            e->next = nb[e->hash & (n - 1)];
            nb[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = nb;
    m->nbuckets = n;
}

/* ---- API ------------------------------------------------------------- */

sg_map_t *sg_map_new(void)
{
    sg_map_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->buckets = calloc(MAP_MIN_BUCKETS, sizeof(*m->buckets));
    if (m->buckets == NULL) {
        free(m);
        return NULL;
    }
    m->nbuckets = MAP_MIN_BUCKETS;
    return m;
}

void sg_map_free(sg_map_t *m, sg_map_free_cb free_value)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        map_entry_t *e = m->buckets[i];
        while (e != NULL) {
            map_entry_t *next = e->next;
            if (free_value != NULL)
                free_value(e->value);
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    free(m);
}

void *sg_map_get(const sg_map_t *m, const char *key)
{
    map_entry_t *e = *map_slot(m, key, map_hash(key));
    return e != NULL ? e->value : NULL;
}

int sg_map_put(sg_map_t *m, const char *key, void *value)
{
    uint32_t hash = map_hash(key);
    map_entry_t **slot = map_slot(m, key, hash);
    if (*slot != NULL) {
        (*slot)->value = value;
        return 0;
    }
    size_t klen = strlen(key);
    map_entry_t *e = malloc(sizeof(*e) + klen + 1);
    if (e == NULL)
        return SG_ENOMEM;
    memcpy(e->key, key, klen + 1);
    e->hash = hash;
    e->value = value;
    e->next = NULL;
    *slot = e;
    if (++m->count > m->nbuckets)
        map_grow(m);
    return 0;
}

void *sg_map_remove(sg_map_t *m, const char *key)
{
    map_entry_t **slot = map_slot(m, key, map_hash(key));
    map_entry_t *e = *slot;
    if (e == NULL)
        return NULL;
    void *value = e->value;
    *slot = e->next;
    free(e);
    m->count--;
    return value;
}

size_t sg_map_count(const sg_map_t *m)
{
    return m->count;
}

void sg_map_foreach(sg_map_t *m, sg_map_visit_cb fn, void *ctx)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        map_entry_t **slot = &m->buckets[i];
        while (*slot != NULL) {
            map_entry_t *e = *slot;
            if (fn(ctx, e->key, e->value)) {
                *slot = e->next;
                free(e);
                m->count--;
            } else {
                slot = &e->next;
            }
        }
    }
}
