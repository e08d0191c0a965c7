/* Hot-reload triggers: SIGHUP, the optional watch of the Lua directory
 * (lua.watch) and the shared sg_reload_now() that the admin endpoint uses
 * too. libuv cannot watch a tree recursively on Linux (inotify), so the
 * directory and its subdirectories (down to SG_RELOAD_DEPTH levels, as
 * they exist at start) each get a uv_fs_event; any event restarts a
 * 200 ms debounce timer, whose expiry reloads once. */
#include "reload.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "log.h"
#include "server_internal.h"

#define SG_RELOAD_DEBOUNCE_MS 200
#define SG_RELOAD_DEPTH 3
#define SG_RELOAD_MAX_WATCHES 64

struct sg_reload {
    sg_server_t *srv;
    uv_signal_t sighup;
    uv_timer_t debounce;
    uv_fs_event_t *watches[SG_RELOAD_MAX_WATCHES];
    int nwatches;
    int open_handles; /* freed when the last close callback ran */
};

static void reload_watch_tree(sg_reload_t *r, const char *dir, int depth);
static void reload_on_sighup(uv_signal_t *h, int signum);

/* ---------------------------------------------------------------------
 * API
 * ------------------------------------------------------------------- */

int sg_reload_now(sg_server_t *srv, const char *why, char *err,
                  size_t errlen)
{
    sg_metric_t *m = sg_metrics_find(srv->metrics, "lua_reloads_total");

    if (srv->script == NULL) {
        snprintf(err, errlen, "the script host is stopped");
        return SG_ECLOSED;
    }
    SG_INFO("script", "lua: reloading (%s)", why);
    int rc = sg_script_reload(srv->script, err, errlen);
    if (m != NULL)
        sg_metric_inc1(m, rc == 0 ? "success" : "failure");
    return rc;
}

sg_reload_t *sg_reload_start(sg_server_t *srv)
{
    sg_reload_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->srv = srv;
    uv_signal_init(srv->loop, &r->sighup);
    r->sighup.data = r;
    uv_timer_init(srv->loop, &r->debounce);
    r->debounce.data = r;
    r->open_handles = 2;
    uv_signal_start(&r->sighup, reload_on_sighup, SIGHUP);
    if (srv->cfg->lua.watch) {
        const char *dir = srv->cfg->lua.path ? srv->cfg->lua.path : "lua";
        reload_watch_tree(r, dir, 0);
        SG_INFO("script", "lua: watching %s (%d directories) for changes",
                dir, r->nwatches);
    }
    return r;
}

static void reload_closed_cb(uv_handle_t *h)
{
    sg_reload_t *r = h->data;

    if (h->type == UV_FS_EVENT)
        free(h);
    if (--r->open_handles == 0)
        free(r);
}

void sg_reload_close(sg_reload_t *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < r->nwatches; i++)
        uv_close((uv_handle_t *)r->watches[i], reload_closed_cb);
    uv_close((uv_handle_t *)&r->sighup, reload_closed_cb);
    uv_close((uv_handle_t *)&r->debounce, reload_closed_cb);
}

/* ---------------------------------------------------------------------
 * Callbacks
 * ------------------------------------------------------------------- */

static void reload_on_sighup(uv_signal_t *h, int signum)
{
    sg_reload_t *r = h->data;
    char err[1024];

    sg_reload_now(r->srv, "SIGHUP", err, sizeof err);
}

static void reload_on_debounce(uv_timer_t *t)
{
    sg_reload_t *r = t->data;
    char err[1024];

    sg_reload_now(r->srv, "file change", err, sizeof err);
}

static void reload_on_fs_event(uv_fs_event_t *h, const char *name,
                               int events, int status)
{
    sg_reload_t *r = h->data;

    if (status < 0) {
        SG_WARN("script", "lua: watch error: %s", uv_strerror(status));
        return;
    }
    /* Editors write a file in several steps (temp file, rename, chmod):
     * reload once they are done. */
    uv_timer_start(&r->debounce, reload_on_debounce, SG_RELOAD_DEBOUNCE_MS,
                   0);
}

/* ---------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------- */

static void reload_watch_dir(sg_reload_t *r, const char *dir)
{
    if (r->nwatches == SG_RELOAD_MAX_WATCHES) {
        SG_WARN("script", "lua: not watching %s: more than %d directories",
                dir, SG_RELOAD_MAX_WATCHES);
        return;
    }
    uv_fs_event_t *w = malloc(sizeof *w);
    if (w == NULL)
        return;
    uv_fs_event_init(r->srv->loop, w);
    w->data = r;
    int rc = uv_fs_event_start(w, reload_on_fs_event, dir, 0);
    r->watches[r->nwatches++] = w;
    r->open_handles++;
    if (rc != 0)
        SG_WARN("script", "lua: cannot watch %s: %s", dir, uv_strerror(rc));
}

static void reload_watch_tree(sg_reload_t *r, const char *dir, int depth)
{
    char sub[4096];
    struct stat st;
    struct dirent *e;

    reload_watch_dir(r, dir);
    if (depth + 1 >= SG_RELOAD_DEPTH)
        return;
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
        if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode))
            reload_watch_tree(r, sub, depth + 1);
    }
    closedir(d);
}
