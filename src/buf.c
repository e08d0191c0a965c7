/* Reference-counted payload buffers (see buf.h). Single-threaded: the whole
 * core runs on one loop, so the count needs no atomics. */
#include "buf.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

sg_buf_t *sg_buf_new(const void *data, size_t len)
{
    sg_buf_t *b = malloc(sizeof(*b) + SG_BUF_HEADROOM + len + 1);
    if (b == NULL)
        return NULL;
    b->refs = 1;
    b->len = len;
    if (len > 0)
        memcpy(b->mem + SG_BUF_HEADROOM, data, len);
    b->mem[SG_BUF_HEADROOM + len] = '\0';
    return b;
}

sg_buf_t *sg_buf_ref(sg_buf_t *b)
{
    assert(b->refs > 0);
    b->refs++;
    return b;
}

void sg_buf_unref(sg_buf_t *b)
{
    if (b == NULL)
        return;
    assert(b->refs > 0);
    if (--b->refs == 0)
        free(b);
}
