/* Our hiredis 0.14 <-> libuv adapter: one uv_poll per async context plus a
 * connect timeout (hiredis 0.14 has none).
 *
 * Why not <hiredis/adapters/libuv.h>: its poll callback returns on any
 * status != 0, and libuv reports a failed non-blocking connect as a poll
 * error (EBADF after POLLERR), so a connect to a closed port never called
 * back and the context hung (deps.md §2). Here a poll error is handed to
 * hiredis, which then reports it through onConnect(REDIS_ERR) or a
 * disconnect.
 *
 * Freeing rules for async contexts (hiredis 0.14 async.c), which every user
 * of this adapter must follow:
 *   - redisAsyncFree is safe from the top of the loop (a uv timer, idle or
 *     poll callback of your own) and from reply callbacks (hiredis sees
 *     REDIS_IN_CALLBACK and frees after the callback returns).
 *   - It is NOT safe from the connect callback (hiredis keeps using the
 *     context after onConnect returns: use-after-free) nor from the
 *     disconnect callback (the context is already being freed: double
 *     free). Defer such frees to a loop callback, e.g. a 0 ms uv_timer.
 *   - The connect timeout below fires from a uv_timer callback, so it frees
 *     the context directly and safely. */
#ifndef SG_REDIS_UV_H
#define SG_REDIS_UV_H

#include <stdint.h>
#include <uv.h>
#include <hiredis/async.h>

/* errstr of a context failed by the connect timeout. */
#define SG_REDIS_UV_TIMEOUT_TEXT "connect timeout"

/* Attaches `ac` (fresh from redisAsyncConnect, without error, not yet
 * attached) to `loop`. Call it before redisAsyncSetConnectCallback, which
 * arms the first write event.
 *
 * If `connect_timeout_ms` > 0 and the connection is not established in
 * time, the context fails exactly like a refused connect: ac->err is
 * REDIS_ERR_IO, ac->errstr is SG_REDIS_UV_TIMEOUT_TEXT, onConnect(ac,
 * REDIS_ERR) is called (from a timer callback), then the context is freed
 * by the adapter (pending callbacks get a NULL reply, as usual).
 *
 * Returns 0; SG_EINVAL when `ac` has an error or is already attached;
 * SG_ENOMEM; SG_EIO when libuv rejects the fd. On error nothing is
 * attached and `ac` stays the caller's to redisAsyncFree. Never calls back
 * synchronously. The adapter's memory is freed in its handles' close
 * callbacks after hiredis calls ev.cleanup. */
int sg_redis_uv_attach(redisAsyncContext *ac, uv_loop_t *loop,
                       uint64_t connect_timeout_ms);

#endif
