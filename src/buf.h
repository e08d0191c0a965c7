/* Reference-counted immutable payloads.
 *
 * A frame is built once per chunk and every connection queue that holds it
 * owns one reference, so fan-out to N sockets costs N pointer pushes, not N
 * copies. Each buffer reserves SG_BUF_HEADROOM bytes before the payload for
 * the WebSocket header lws writes in place (LWS_PRE). */
#ifndef SG_BUF_H
#define SG_BUF_H

#include <stddef.h>
#include <stdint.h>

#define SG_BUF_HEADROOM 32

typedef struct sg_buf {
    uint32_t refs;  /* private */
    size_t len;     /* read-only: payload length */
    unsigned char mem[]; /* private: headroom + payload + NUL */
} sg_buf_t;

/* Copies `len` bytes of `data` into a new buffer with one reference and a
 * terminating NUL after the payload. Returns NULL on allocation failure. */
sg_buf_t *sg_buf_new(const void *data, size_t len);
/* Takes ownership of nothing: returns `b` with one more reference. */
sg_buf_t *sg_buf_ref(sg_buf_t *b);
/* Drops one reference; frees the buffer with the last one. NULL is a no-op. */
void sg_buf_unref(sg_buf_t *b);

static inline unsigned char *sg_buf_data(sg_buf_t *b)
{
    return b->mem + SG_BUF_HEADROOM;
}

#endif
