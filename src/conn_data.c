/* Per-connection data for scripts (sg.data): a small key -> typed value
 * store owned by the connection in C, so it survives a hot reload of the
 * Lua state. Bounded per connection (keys and value size). */
#include "server_internal.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "map.h"

#define CONN_DATA_MAX_KEYS 64
#define CONN_DATA_MAX_VALUE 65536

typedef struct conn_value {
    int type;
    size_t len;
    char bytes[]; /* len bytes + NUL */
} conn_value_t;

int sg__conn_data_set(sg_conn_t *c, const char *key, int type,
                      const char *value, size_t len)
{
    if (value == NULL) {
        if (c->data != NULL)
            free(sg_map_remove(c->data, key));
        return 0;
    }
    if (len > CONN_DATA_MAX_VALUE)
        return SG_ETOOBIG;
    if (c->data == NULL && (c->data = sg_map_new()) == NULL)
        return SG_ENOMEM;
    conn_value_t *old = sg_map_get(c->data, key);
    if (old == NULL && sg_map_count(c->data) >= CONN_DATA_MAX_KEYS)
        return SG_ETOOBIG;
    conn_value_t *v = malloc(sizeof(*v) + len + 1);
    if (v == NULL)
        return SG_ENOMEM;
    v->type = type;
    v->len = len;
    memcpy(v->bytes, value, len);
    v->bytes[len] = '\0';
    if (sg_map_put(c->data, key, v) != 0) {
        free(v);
        return SG_ENOMEM;
    }
    free(old);
    return 0;
}

int sg__conn_data_get(const sg_conn_t *c, const char *key, int *type,
                      const char **value, size_t *len)
{
    conn_value_t *v = c->data ? sg_map_get(c->data, key) : NULL;
    if (v == NULL)
        return SG_ENOTFOUND;
    *type = v->type;
    *value = v->bytes;
    *len = v->len;
    return 0;
}

void sg__conn_data_free(sg_conn_t *c)
{
    if (c->data != NULL)
        sg_map_free(c->data, free);
    c->data = NULL;
}
