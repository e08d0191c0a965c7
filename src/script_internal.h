/* Internals shared by the LuaJIT host (script.c) and the sg.* API families
 * (script_api_*.c): the host struct, the per-coroutine task and the
 * suspend/resume protocol the yielding primitives follow. Not part of any
 * public header. */
#ifndef SG_SCRIPT_INTERNAL_H
#define SG_SCRIPT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <lua.h>
#include <lauxlib.h>

#include "script.h"

/* What a task is. */
typedef enum {
    SG__TASK_CONNECT,
    SG__TASK_MESSAGE,
    SG__TASK_DISCONNECT,
    SG__TASK_HTTP,
    SG__TASK_TIMER,
    SG__TASK_CHUNK,
} sg__task_kind_t;

/* What a suspended task waits for. */
typedef enum {
    SG__WAIT_NONE = 0,
    SG__WAIT_SLEEP,
    SG__WAIT_BROKER,
} sg__wait_t;

typedef struct sg__script_timer sg__script_timer_t;
typedef struct sg__script_op sg__script_op_t;

/* One running or suspended hook coroutine. The thread is anchored in the
 * registry (`co_ref`) until the task is freed. */
struct sg_script_task {
    sg_script_t *s;
    lua_State *co;
    int co_ref;
    sg__task_kind_t kind;
    sg__wait_t wait;
    sg__script_timer_t *timer;   /* set while waiting in sg.sleep */
    sg__script_op_t *op;         /* set while waiting on the broker */
    uint64_t conn_id;            /* SG__TASK_MESSAGE: for the error frame */
    sg_script_http_done_cb done; /* SG__TASK_HTTP; NULL once detached */
    void *done_ctx;
    const char *hook;            /* hook name, for log lines */
    int stopped;                 /* the budget hook stopped it (stop_msg) */
    char stop_msg[256];          /* "file:line: on_message exceeded ..." */
    sg_script_task_t *prev, *next;
};

/* A uv timer owned by the host: either sg.sleep (task != NULL) or an
 * sg.timer callback (fn_ref != LUA_NOREF: a registry table {fn, n, ...}).
 * Freed in its close callback, never earlier. */
struct sg__script_timer {
    uv_timer_t handle;
    sg_script_t *s;
    sg_script_task_t *task;
    int fn_ref;
    sg__script_timer_t *prev, *next;
};

/* A pending broker operation. It outlives the task when the task is
 * abandoned (sg_script_free): then `task` is NULL and the broker's eventual
 * completion (SG_ECANCELED at the latest when the broker closes) only frees
 * the op. This is what keeps late broker callbacks off freed memory. */
struct sg__script_op {
    sg_script_task_t *task;
};

/* One Lua state ("version") and everything that lives in it. The public
 * handle (`root`) is an sg_script_t too, without a state of its own: it
 * points at the live state, which new hook calls use, and keeps the older
 * states that still have tasks or timers (hot reload, script.c). Every
 * state copies loop, cfg, broker, metrics and host from the root, so the
 * sg.* families use whatever sg__script_from() returns. */
struct sg_script {
    uv_loop_t *loop;
    const sg_config_t *cfg;
    sg_broker_t *broker;
    sg_metrics_t *metrics;
    sg_script_host_t host;
    lua_State *L;            /* NULL on the root */
    int hook_refs[5]; /* on_connect, on_message, on_disconnect, on_http,
                         on_chunk (script.c HOOK_*) */
    int encode_ref;          /* cjson.safe.encode */
    /* Finished coroutines kept for reuse: a frame's hook then costs no
     * lua_newthread and no registry churn (script.c task_new/recycle). */
    lua_State *spare_co[32];
    int spare_ref[32];
    int nspare;
    int conns_ref;           /* registry table: conn id -> conn table */
    int decode_ref;          /* cjson.safe.decode */
    sg_script_task_t *tasks; /* every live task */
    sg__script_timer_t *timers;
    sg_script_task_t *current; /* the task being resumed, or NULL */
    size_t pending;
    uint64_t runs;
    uint64_t errors;

    /* Hot reload (script.c). */
    sg_script_t *root;       /* the public handle; root->root == root */
    unsigned version;        /* 1 for the first state, +1 per reload */
    sg_script_t *live;       /* root only: the state new hooks run in */
    sg_script_t *retired;    /* root only: old states still in use */
    sg_script_t *next;       /* link in root->retired */
    uv_timer_t *reaper;      /* root only: closes empty retired states */
    uint64_t reloads;        /* root only: successful reloads */
    uint64_t reload_failures;

    /* Budgets (script.c): time per resume and memory per state. */
    uint64_t deadline;       /* uv_hrtime() limit of the running resume */
    size_t mem_used;         /* bytes, counted by the allocator */
    size_t mem_limit;        /* bytes; 0 = none */
    int mem_enforce;         /* refuse growth past the limit (in a resume) */
    int mem_over;            /* a growth was refused */
    int own_alloc;           /* the state uses script.c's allocator */
};

/* The host owning `L` (any thread of its state). */
sg_script_t *sg__script_from(lua_State *L);

/* The task whose coroutine is `L` if a yielding primitive may suspend it
 * now; otherwise raises "<api> is not available ..." (load time, a nested
 * coroutine, or on_connect, which must not yield). */
sg_script_task_t *sg__script_check_yieldable(lua_State *L, const char *api);

/* Marks `task` as suspended on `wait`; the caller then returns
 * lua_yield(L, 0). */
void sg__script_suspend(sg_script_task_t *task, sg__wait_t wait);

/* Resumes a suspended task with the `nres` values on top of its coroutine
 * stack (pushed by the completion callback). May free the task. */
void sg__script_resume(sg_script_task_t *task, int nres);

/* Starts a task running the function on top of the main stack with the
 * `nargs` values above it (both popped). */
void sg__script_spawn(sg_script_t *s, sg__task_kind_t kind, const char *hook,
                      int nargs);

/* Timer helpers for sg.sleep and sg.timer: a started timer in the host's
 * list, or NULL on failure. */
sg__script_timer_t *sg__script_timer_start(sg_script_t *s, double seconds,
                                           uv_timer_cb cb);
/* Stops, unlinks and closes `t` (freed by the close callback). */
void sg__script_timer_close(sg__script_timer_t *t);

/* ISO-8601 UTC with milliseconds; `out` holds at least 32 bytes. */
void sg__script_iso_now(char *out, size_t outlen);

/* Pushes `conn_or_id` (a conn table with an integer `id` or a number) as a
 * connection id; raises a "bad argument" error otherwise. */
uint64_t sg__script_check_conn(lua_State *L, int arg);

/* The op protocol of the yielding primitives (STYLE.md §5): op_new makes
 * the op for the running task (NULL on no memory); op_wait yields after a
 * started operation (rc 0) or frees the op and returns nil, err; op_done,
 * called first by the completion, frees the op and returns its task, or
 * NULL when the task was abandoned (then the completion must do nothing
 * else). */
sg__script_op_t *sg__script_op_new(sg_script_task_t *task);
int sg__script_op_wait(lua_State *L, sg_script_task_t *task,
                       sg__script_op_t *op, int rc);
sg_script_task_t *sg__script_op_done(void *arg);

/* Runtime-failure convention of every sg.* function: pushes nil and the
 * error text ("closed" for SG_ECANCELED) and returns 2. */
int sg__script_push_error(lua_State *L, int rc);
/* rc == 0: pushes true, returns 1; otherwise sg__script_push_error. */
int sg__script_push_result(lua_State *L, int rc);

/* JSON-encodes the value at `idx` with cjson.safe. Returns a string on the
 * stack top (1) or nil, err (2 values). */
int sg__script_encode(lua_State *L, int idx);

#endif
