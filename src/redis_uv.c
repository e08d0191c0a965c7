/* hiredis 0.14 <-> libuv adapter with poll-error handling and a connect
 * timeout (redis_uv.h). Owns one uv_poll and one uv_timer per context; the
 * struct holding them is freed by the second close callback. */
#include "redis_uv.h"

#include <stdio.h>
#include <stdlib.h>

#include <hiredis/hiredis.h>

#include "error.h"

typedef struct redis_uv {
    redisAsyncContext *ac; /* NULL once hiredis called cleanup */
    uv_poll_t poll;
    uv_timer_t timer;
    int events;            /* UV_READABLE | UV_WRITABLE wanted by hiredis */
    int open_handles;      /* freed when this drops to 0 */
} redis_uv_t;

static void redis_uv_on_poll(uv_poll_t *handle, int status, int events);

/* ---- event hooks called by hiredis ------------------------------------ */

static void redis_uv_update(redis_uv_t *p)
{
    if (p->events != 0)
        uv_poll_start(&p->poll, p->events, redis_uv_on_poll);
    else
        uv_poll_stop(&p->poll);
}

static void redis_uv_add_read(void *privdata)
{
    redis_uv_t *p = privdata;
    p->events |= UV_READABLE;
    redis_uv_update(p);
}

static void redis_uv_del_read(void *privdata)
{
    redis_uv_t *p = privdata;
    p->events &= ~UV_READABLE;
    redis_uv_update(p);
}

static void redis_uv_add_write(void *privdata)
{
    redis_uv_t *p = privdata;
    p->events |= UV_WRITABLE;
    redis_uv_update(p);
}

static void redis_uv_del_write(void *privdata)
{
    redis_uv_t *p = privdata;
    p->events &= ~UV_WRITABLE;
    redis_uv_update(p);
}

static void redis_uv_on_close(uv_handle_t *handle)
{
    redis_uv_t *p = handle->data;
    if (--p->open_handles == 0)
        free(p);
}

/* hiredis is freeing the context: from now on p->ac must not be used. */
static void redis_uv_cleanup(void *privdata)
{
    redis_uv_t *p = privdata;
    p->ac = NULL;
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->poll, redis_uv_on_close);
    uv_close((uv_handle_t *)&p->timer, redis_uv_on_close);
}

/* ---- loop callbacks ---------------------------------------------------- */

static void redis_uv_on_poll(uv_poll_t *handle, int status, int events)
{
    redis_uv_t *p = handle->data;

    if (p->ac == NULL)
        return;
    if (status < 0) {
        /* libuv stopped the watcher and reports POLLERR as a status. Let
         * hiredis look at the socket: while connecting, HandleWrite runs
         * its connect check (SO_ERROR) and calls onConnect(REDIS_ERR);
         * once connected, read(2) returns the error and hiredis
         * disconnects. If the context survives, re-arm the watcher. */
        if (p->ac->c.flags & REDIS_CONNECTED)
            redisAsyncHandleRead(p->ac);
        else
            redisAsyncHandleWrite(p->ac);
        if (p->ac != NULL)
            redis_uv_update(p);
        return;
    }
    if (events & UV_WRITABLE)
        redisAsyncHandleWrite(p->ac);
    if (p->ac != NULL && (events & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    if (p->ac != NULL && (p->ac->c.flags & REDIS_CONNECTED))
        uv_timer_stop(&p->timer);
}

/* Fails a connect that took too long, the way hiredis fails a refused one.
 * This runs at the top of the loop, outside every hiredis function, so
 * REDIS_IN_CALLBACK is clear and redisAsyncFree frees right here. */
static void redis_uv_on_timeout(uv_timer_t *timer)
{
    redis_uv_t *p = timer->data;
    redisAsyncContext *ac = p->ac;

    if (ac == NULL || (ac->c.flags & REDIS_CONNECTED))
        return;
    ac->c.err = REDIS_ERR_IO;
    snprintf(ac->c.errstr, sizeof(ac->c.errstr), "%s",
             SG_REDIS_UV_TIMEOUT_TEXT);
    ac->err = ac->c.err;
    ac->errstr = ac->c.errstr;
    if (ac->onConnect != NULL)
        ac->onConnect(ac, REDIS_ERR);
    redisAsyncFree(ac);
}

/* ---- API --------------------------------------------------------------- */

int sg_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop,
                       uint64_t connect_timeout_ms)
{
    if (ac->err != 0 || ac->ev.data != NULL)
        return SG_EINVAL;
    redis_uv_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return SG_ENOMEM;
    if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
        free(p);
        return SG_EIO;
    }
    uv_timer_init(loop, &p->timer);
    p->poll.data = p;
    p->timer.data = p;
    p->open_handles = 2;
    p->ac = ac;
    if (connect_timeout_ms > 0)
        uv_timer_start(&p->timer, redis_uv_on_timeout, connect_timeout_ms, 0);

    ac->ev.data = p;
    ac->ev.addRead = redis_uv_add_read;
    ac->ev.delRead = redis_uv_del_read;
    ac->ev.addWrite = redis_uv_add_write;
    ac->ev.delWrite = redis_uv_del_write;
    ac->ev.cleanup = redis_uv_cleanup;
    return 0;
}
