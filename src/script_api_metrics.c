/* sg.metrics.counter/gauge/histogram: metric families defined by scripts
 * in the server's registry (metrics.h), rendered on /metrics with the
 * core's own. A family object ("sg.metric" userdata) has inc, dec, set,
 * observe and get methods, each checked against the family's type.
 *
 * Registering a name again with the same type and labels returns the same
 * family, so a reloaded script (a new Lua state) keeps its series. The
 * registry has no accessors for a family's type or labels, so this file
 * remembers what scripts registered (`lmetric_known`, process-wide, keyed
 * by registry and name); a name the core registered is refused. */
#include "script_api_metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "metrics.h"
#include "script_internal.h"

#define LMETRIC_MT "sg.metric"
#define LMETRIC_MAX_BUCKETS 64

static const char *const lmetric_type_names[] = {"counter", "gauge",
                                                 "histogram"};

/* One family a script registered. Entries live as long as the process
 * (they are few: one per distinct name). */
typedef struct lmetric_known {
    struct lmetric_known *next;
    const sg_metrics_t *reg;
    sg_metric_t *m;
    sg_metric_type_t type;
    char *name;
    char *labels; /* "a,b" or "" */
} lmetric_known_t;

static lmetric_known_t *lmetric_known;

typedef struct lmetric {
    sg_metric_t *m;
    sg_metric_type_t type;
    int nlabels;
    const char *name; /* owned by lmetric_known */
} lmetric_t;

/* ---- helpers ----------------------------------------------------------- */

static int lmetric_valid_name(const char *s, int allow_colon)
{
    if (*s == '\0')
        return 0;
    for (const char *p = s; *p != '\0'; p++) {
        char c = *p;
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    c == '_' || (allow_colon && c == ':');
        if (!alpha && !(c >= '0' && c <= '9' && p != s))
            return 0;
    }
    return 1;
}

/* Label names from argument `first` on (a table of strings, or strings),
 * joined as "a,b" on the stack top. Raises on a bad name. */
static int lmetric_labels(lua_State *L, int first, sg_metric_type_t type)
{
    int top = lua_gettop(L), n = 0;
    int from_table = lua_istable(L, first);
    int count = from_table ? (int)lua_objlen(L, first) : top - first + 1;
    luaL_Buffer b;

    if (count > SG_METRICS_MAX_LABELS)
        luaL_argerror(L, first, lua_pushfstring(L, "at most %d labels",
                                                SG_METRICS_MAX_LABELS));
    luaL_buffinit(L, &b);
    for (int i = 0; i < count; i++) {
        if (from_table)
            lua_rawgeti(L, first, i + 1);
        else
            lua_pushvalue(L, first + i);
        int arg = from_table ? first : first + i;
        const char *label = lua_tostring(L, -1);
        if (lua_type(L, -1) != LUA_TSTRING ||
            !lmetric_valid_name(label, 0) || strncmp(label, "__", 2) == 0 ||
            (type == SG_METRIC_HISTOGRAM && strcmp(label, "le") == 0))
            luaL_argerror(L, arg, "label names must match "
                          "[a-zA-Z_][a-zA-Z0-9_]* (not __*, not le)");
        lua_pop(L, 1);
        if (n++ > 0)
            luaL_addchar(&b, ',');
        luaL_addstring(&b, label);
    }
    luaL_pushresult(&b);
    return n;
}

/* Histogram buckets at `arg` (a table of ascending numbers, or nil for the
 * defaults) into `out`; returns the count, -1 for the defaults. */
static int lmetric_buckets(lua_State *L, int arg, double *out)
{
    if (lua_isnoneornil(L, arg))
        return -1;
    luaL_checktype(L, arg, LUA_TTABLE);
    int n = (int)lua_objlen(L, arg);
    luaL_argcheck(L, n >= 1 && n <= LMETRIC_MAX_BUCKETS, arg,
                  "expected 1..64 bucket bounds");
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, arg, i + 1);
        out[i] = lua_tonumber(L, -1);
        int ok = lua_type(L, -1) == LUA_TNUMBER && isfinite(out[i]) &&
                 (i == 0 || out[i] > out[i - 1]);
        lua_pop(L, 1);
        luaL_argcheck(L, ok, arg, "bucket bounds must be finite and "
                      "strictly ascending");
    }
    return n;
}

static lmetric_known_t *lmetric_lookup(const sg_metrics_t *reg,
                                       const char *name)
{
    for (lmetric_known_t *k = lmetric_known; k != NULL; k = k->next)
        if (k->reg == reg && strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

static lmetric_known_t *lmetric_remember(lua_State *L, sg_metrics_t *reg,
                                         sg_metric_t *m,
                                         sg_metric_type_t type,
                                         const char *name,
                                         const char *labels)
{
    lmetric_known_t *k = lmetric_lookup(reg, name);
    if (k == NULL) {
        k = calloc(1, sizeof(*k));
        if (k == NULL)
            luaL_error(L, "sg.metrics: no memory");
        k->next = lmetric_known;
        lmetric_known = k;
    }
    free(k->name);
    free(k->labels);
    k->name = strdup(name);
    k->labels = strdup(labels);
    if (k->name == NULL || k->labels == NULL)
        luaL_error(L, "sg.metrics: no memory");
    k->reg = reg;
    k->m = m;
    k->type = type;
    return k;
}

static void lmetric_push(lua_State *L, const lmetric_known_t *k, int n)
{
    lmetric_t *o = lua_newuserdata(L, sizeof *o);
    o->m = k->m;
    o->type = k->type;
    o->nlabels = n;
    o->name = k->name;
    luaL_getmetatable(L, LMETRIC_MT);
    lua_setmetatable(L, -2);
}

/* ---- registration ------------------------------------------------------ */

/* An existing family `m` named `name`: the same object if a script made
 * it with the same type and labels, else raises. */
static int lmetric_reuse(lua_State *L, sg_metrics_t *reg, sg_metric_t *m,
                         sg_metric_type_t type, const char *name,
                         const char *labels, int n)
{
    lmetric_known_t *k = lmetric_lookup(reg, name);
    if (k == NULL || k->m != m)
        return luaL_error(L, "sg.metrics: metric '%s' is already "
                          "registered by the server", name);
    if (k->type != type || strcmp(k->labels, labels) != 0)
        return luaL_error(L, "sg.metrics: metric '%s' is already "
                          "registered as a %s with labels (%s); cannot "
                          "register it as a %s with labels (%s)", name,
                          lmetric_type_names[k->type], k->labels,
                          lmetric_type_names[type], labels);
    lmetric_push(L, k, n);
    return 1;
}

static int lmetric_register(lua_State *L, sg_metric_type_t type)
{
    sg_script_t *s = sg__script_from(L);
    const char *name = luaL_checkstring(L, 1);
    const char *help = luaL_checkstring(L, 2);
    double buckets[LMETRIC_MAX_BUCKETS];
    int nb = -1, first = 3;

    luaL_argcheck(L, lmetric_valid_name(name, 1), 1,
                  "metric names must match [a-zA-Z_:][a-zA-Z0-9_:]*");
    if (type == SG_METRIC_HISTOGRAM) {
        nb = lmetric_buckets(L, 3, buckets);
        first = 4;
    }
    int n = lmetric_labels(L, first, type);
    const char *labels = lua_tostring(L, -1);
    if (s->metrics == NULL)
        return luaL_error(L, "sg.metrics: no metrics registry");
    sg_metric_t *m = sg_metrics_find(s->metrics, name);
    if (m != NULL)
        return lmetric_reuse(L, s->metrics, m, type, name, labels, n);
    m = sg_metrics_register(s->metrics, type, name, help,
                            n > 0 ? labels : NULL, nb > 0 ? buckets : NULL,
                            nb > 0 ? (size_t)nb : 0);
    if (m == NULL)
        return luaL_error(L, "sg.metrics: cannot register '%s' (no memory)",
                          name);
    lmetric_push(L, lmetric_remember(L, s->metrics, m, type, name, labels),
                 n);
    return 1;
}

static int lmetric_counter(lua_State *L)
{
    return lmetric_register(L, SG_METRIC_COUNTER);
}

static int lmetric_gauge(lua_State *L)
{
    return lmetric_register(L, SG_METRIC_GAUGE);
}

static int lmetric_histogram(lua_State *L)
{
    return lmetric_register(L, SG_METRIC_HISTOGRAM);
}

/* ---- methods ----------------------------------------------------------- */

/* The family at 1 if its type is allowed by `mask` (1 << type). */
static lmetric_t *lmetric_check(lua_State *L, int mask, const char *what)
{
    lmetric_t *o = luaL_checkudata(L, 1, LMETRIC_MT);
    if (!(mask & (1 << o->type)))
        luaL_error(L, "sg.metrics: %s is a %s: %s is for %s", o->name,
                   lmetric_type_names[o->type], lua_tostring(L,
                   lua_upvalueindex(1)), what);
    return o;
}

/* Label values from `first` to the top: exactly nlabels of them. */
static void lmetric_values(lua_State *L, lmetric_t *o, int first,
                           const char **values)
{
    int got = lua_gettop(L) - first + 1;
    if (got != o->nlabels)
        luaL_error(L, "sg.metrics: %s expects %d label value(s), got %d",
                   o->name, o->nlabels, got < 0 ? 0 : got);
    for (int i = 0; i < got; i++)
        values[i] = luaL_checkstring(L, first + i);
}

/* Methods taking an optional (inc/dec) or required (set/observe) number
 * before the label values. */
static double lmetric_amount(lua_State *L, lmetric_t *o, int optional,
                             int *first)
{
    int extra = lua_gettop(L) - 1 - o->nlabels;
    if (optional && extra <= 0) { /* too few: lmetric_values says so */
        *first = 2;
        return 1;
    }
    *first = 3;
    double v = luaL_checknumber(L, 2);
    luaL_argcheck(L, isfinite(v), 2, "expected a finite number");
    return v;
}

static int lmetric_inc(lua_State *L)
{
    lmetric_t *o = lmetric_check(L, 3, "counters and gauges");
    const char *values[SG_METRICS_MAX_LABELS];
    int first;
    double n = lmetric_amount(L, o, 1, &first);

    if (o->type == SG_METRIC_COUNTER)
        luaL_argcheck(L, n >= 0, 2, "counter increments must be >= 0");
    lmetric_values(L, o, first, values);
    sg_metric_add(o->m, values, n);
    return 0;
}

static int lmetric_dec(lua_State *L)
{
    lmetric_t *o = lmetric_check(L, 1 << SG_METRIC_GAUGE, "gauges");
    const char *values[SG_METRICS_MAX_LABELS];
    int first;
    double n = lmetric_amount(L, o, 1, &first);

    lmetric_values(L, o, first, values);
    sg_metric_add(o->m, values, -n);
    return 0;
}

static int lmetric_set(lua_State *L)
{
    lmetric_t *o = lmetric_check(L, 1 << SG_METRIC_GAUGE, "gauges");
    const char *values[SG_METRICS_MAX_LABELS];
    int first;
    double v = lmetric_amount(L, o, 0, &first);

    lmetric_values(L, o, first, values);
    sg_metric_set(o->m, values, v);
    return 0;
}

static int lmetric_observe(lua_State *L)
{
    lmetric_t *o = lmetric_check(L, 1 << SG_METRIC_HISTOGRAM, "histograms");
    const char *values[SG_METRICS_MAX_LABELS];
    int first;
    double v = lmetric_amount(L, o, 0, &first);

    lmetric_values(L, o, first, values);
    sg_metric_observe(o->m, values, v);
    return 0;
}

/* Current value (a histogram: its observation count). */
static int lmetric_get(lua_State *L)
{
    lmetric_t *o = lmetric_check(L, 7, "every family");
    const char *values[SG_METRICS_MAX_LABELS];

    lmetric_values(L, o, 2, values);
    lua_pushnumber(L, sg_metric_get(o->m, values));
    return 1;
}

static int lmetric_tostring(lua_State *L)
{
    lmetric_t *o = luaL_checkudata(L, 1, LMETRIC_MT);
    lua_pushfstring(L, "sg.metric %s (%s)", o->name,
                    lmetric_type_names[o->type]);
    return 1;
}

static const luaL_Reg lmetric_methods[] = {
    {"inc", lmetric_inc},
    {"dec", lmetric_dec},
    {"set", lmetric_set},
    {"observe", lmetric_observe},
    {"get", lmetric_get},
    {NULL, NULL},
};

static const luaL_Reg lmetric_funcs[] = {
    {"counter", lmetric_counter},
    {"gauge", lmetric_gauge},
    {"histogram", lmetric_histogram},
    {NULL, NULL},
};

void sg_script_api_metrics_open(lua_State *L)
{
    luaL_newmetatable(L, LMETRIC_MT);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, lmetric_tostring);
    lua_setfield(L, -2, "__tostring");
    for (const luaL_Reg *r = lmetric_methods; r->name != NULL; r++) {
        lua_pushstring(L, r->name); /* upvalue: the name, for errors */
        lua_pushcclosure(L, r->func, 1);
        lua_setfield(L, -2, r->name);
    }
    lua_pop(L, 1);
    lua_createtable(L, 0, 3);
    for (const luaL_Reg *r = lmetric_funcs; r->name != NULL; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name);
    }
    lua_setfield(L, -2, "metrics");
}
