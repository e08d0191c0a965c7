/* Metrics registry and Prometheus text exposition 0.0.4 (metrics.h).
 *
 * A registry owns families in registration order; a family owns its children
 * (one per label-value tuple) in creation order, so output is stable. Updates
 * run on every frame, so child lookup is a hash compare against a cached last
 * hit, then a linear walk over a short list. Rendering (text or JSON) happens
 * only on scrape and may allocate freely. Single-threaded: the whole core
 * runs on one loop. */
#include "metrics.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "error.h"
#include "log.h"

/* A label set with user-controlled values (a Lua script labelling by session
 * id, say) must not grow without bound: past this many children a family
 * drops new tuples and warns once. */
#define METRICS_MAX_CHILDREN 10000

static const double metrics_default_buckets[] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

typedef struct metrics_child {
    struct metrics_child *next;
    uint32_t hash;
    char *values[SG_METRICS_MAX_LABELS];
    double value;      /* counter, gauge */
    double sum;        /* histogram */
    uint64_t count;    /* histogram */
    uint64_t *buckets; /* histogram: per-bound counts, not cumulative */
} metrics_child_t;

struct sg_metric {
    struct sg_metric *next;
    sg_metric_type_t type;
    char *name;
    char *help;
    size_t nlabels;
    char *labels[SG_METRICS_MAX_LABELS];
    double *bounds; /* histogram upper bounds, ascending, +Inf implied */
    size_t nbounds;
    metrics_child_t *children;
    metrics_child_t *tail;
    metrics_child_t *last; /* cached last hit */
    size_t nchildren;
    int warned_clamp;
    int warned_negative;
    int warned_full;
};

struct sg_metrics {
    sg_metric_t *head;
    sg_metric_t *tail;
    sg_metrics_collect_cb collect;
    void *collect_arg;
};

/* Growable output buffer for rendering; `oom` latches the first failure. */
typedef struct metrics_sb {
    char *p;
    size_t len;
    size_t cap;
    int oom;
} metrics_sb_t;

static void metric_free(sg_metric_t *m);

/* ---------------------------------------------------------------- names */

static int metrics_valid_name(const char *s, int allow_colon)
{
    if (s == NULL || *s == '\0')
        return 0;
    for (const char *p = s; *p != '\0'; p++) {
        char c = *p;
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    c == '_' || (allow_colon && c == ':');
        int digit = c >= '0' && c <= '9';
        if (!alpha && !(digit && p != s))
            return 0;
    }
    return 1;
}

/* Splits "a,b" into m->labels. Label names follow the Prometheus rules:
 * no colon, no reserved "__" prefix, no "le" on histograms, no repeats. */
static int metrics_parse_labels(sg_metric_t *m, const char *labels)
{
    const char *p = *labels != '\0' ? labels : NULL; /* "" = no labels */
    while (p != NULL) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char *label = strndup(p, n);
        if (label == NULL)
            return SG_ENOMEM;
        int ok = metrics_valid_name(label, 0) && strncmp(label, "__", 2) &&
                 !(m->type == SG_METRIC_HISTOGRAM && !strcmp(label, "le"));
        for (size_t i = 0; ok && i < m->nlabels; i++)
            ok = strcmp(m->labels[i], label) != 0;
        if (!ok || m->nlabels == SG_METRICS_MAX_LABELS) {
            SG_WARN("metrics", "%s: bad label list '%s' (expected up to %d "
                    "distinct names matching [a-zA-Z_][a-zA-Z0-9_]*)",
                    m->name, labels, SG_METRICS_MAX_LABELS);
            free(label);
            return SG_EINVAL;
        }
        m->labels[m->nlabels++] = label;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

static int metrics_set_buckets(sg_metric_t *m, const double *buckets,
                               size_t n)
{
    if (buckets == NULL) {
        buckets = metrics_default_buckets;
        n = sizeof(metrics_default_buckets) / sizeof(double);
    }
    if (n > 0 && isinf(buckets[n - 1]) && buckets[n - 1] > 0)
        n--; /* an explicit +Inf is implied anyway */
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1])) {
            SG_WARN("metrics", "%s: bad bucket %zu (expected finite, "
                    "strictly ascending upper bounds)", m->name, i);
            return SG_EINVAL;
        }
    }
    m->bounds = malloc((n + 1) * sizeof(double));
    if (m->bounds == NULL)
        return SG_ENOMEM;
    if (n > 0)
        memcpy(m->bounds, buckets, n * sizeof(double));
    m->nbounds = n;
    return 0;
}

/* ------------------------------------------------------------- children */

static uint32_t metrics_hash(const char *const *values, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p;
             p++)
            h = (h ^ *p) * 16777619u;
        h = (h ^ 0xffu) * 16777619u; /* separator: ("ab","") != ("a","b") */
    }
    return h;
}

static int metrics_child_is(const metrics_child_t *c, uint32_t hash,
                            const char *const *values, size_t n)
{
    if (c->hash != hash)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(c->values[i], values[i]) != 0)
            return 0;
    return 1;
}

static void metrics_child_free(metrics_child_t *c, size_t nlabels)
{
    for (size_t i = 0; i < nlabels; i++)
        free(c->values[i]);
    free(c->buckets);
    free(c);
}

static metrics_child_t *metrics_child_new(sg_metric_t *m, uint32_t hash,
                                          const char *const *values)
{
    metrics_child_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->hash = hash;
    for (size_t i = 0; i < m->nlabels; i++) {
        c->values[i] = strdup(values[i]);
        if (c->values[i] == NULL)
            goto fail;
    }
    if (m->type == SG_METRIC_HISTOGRAM) {
        c->buckets = calloc(m->nbounds + 1, sizeof(uint64_t));
        if (c->buckets == NULL)
            goto fail;
    }
    if (m->tail != NULL)
        m->tail->next = c;
    else
        m->children = c;
    m->tail = c;
    m->nchildren++;
    return c;
fail:
    metrics_child_free(c, m->nlabels);
    return NULL;
}

/* Finds the child for `values`; with `create`, makes it on first use.
 * NULL when absent (or on no memory / the cardinality cap). */
static metrics_child_t *metrics_child(sg_metric_t *m,
                                      const char *const *values, int create)
{
    assert(m != NULL);
    assert(m->nlabels == 0 || values != NULL);
    for (size_t i = 0; i < m->nlabels; i++)
        assert(values[i] != NULL);
    uint32_t hash = metrics_hash(values, m->nlabels);
    if (m->last != NULL && metrics_child_is(m->last, hash, values, m->nlabels))
        return m->last;
    for (metrics_child_t *c = m->children; c != NULL; c = c->next) {
        if (metrics_child_is(c, hash, values, m->nlabels))
            return m->last = c;
    }
    if (!create)
        return NULL;
    if (m->nchildren >= METRICS_MAX_CHILDREN) {
        if (!m->warned_full)
            SG_WARN("metrics", "%s: more than %d label sets, dropping new "
                    "ones", m->name, METRICS_MAX_CHILDREN);
        m->warned_full = 1;
        return NULL;
    }
    metrics_child_t *c = metrics_child_new(m, hash, values);
    return c != NULL ? (m->last = c) : NULL;
}

/* ------------------------------------------------------------ lifecycle */

sg_metrics_t *sg_metrics_new(void)
{
    return calloc(1, sizeof(sg_metrics_t));
}

void sg_metrics_free(sg_metrics_t *reg)
{
    if (reg == NULL)
        return;
    sg_metric_t *m = reg->head;
    while (m != NULL) {
        sg_metric_t *next = m->next;
        metric_free(m);
        m = next;
    }
    free(reg);
}

void sg_metrics_set_collect_cb(sg_metrics_t *reg, sg_metrics_collect_cb cb,
                               void *arg)
{
    reg->collect = cb;
    reg->collect_arg = arg;
}

static void metric_free(sg_metric_t *m)
{
    metrics_child_t *c = m->children;
    while (c != NULL) {
        metrics_child_t *next = c->next;
        metrics_child_free(c, m->nlabels);
        c = next;
    }
    for (size_t i = 0; i < m->nlabels; i++)
        free(m->labels[i]);
    free(m->bounds);
    free(m->name);
    free(m->help);
    free(m);
}

/* Label-less families get their single child at registration so that they
 * render a 0 sample before the first update (dashboards need the series). */
sg_metric_t *sg_metrics_register(sg_metrics_t *reg, sg_metric_type_t type,
                                 const char *name, const char *help,
                                 const char *labels, const double *buckets,
                                 size_t nbuckets)
{
    assert(reg != NULL);
    if (!metrics_valid_name(name, 1)) {
        SG_WARN("metrics", "bad metric name '%s' (expected "
                "[a-zA-Z_:][a-zA-Z0-9_:]*)", name ? name : "(null)");
        return NULL;
    }
    if (sg_metrics_find(reg, name) != NULL) {
        SG_WARN("metrics", "metric '%s' already registered", name);
        return NULL;
    }
    sg_metric_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->type = type;
    m->name = strdup(name);
    m->help = strdup(help ? help : "");
    if (m->name == NULL || m->help == NULL)
        goto fail;
    if (labels != NULL && metrics_parse_labels(m, labels) != 0)
        goto fail;
    if (type == SG_METRIC_HISTOGRAM &&
        metrics_set_buckets(m, buckets, nbuckets) != 0)
        goto fail;
    if (m->nlabels == 0 && metrics_child(m, NULL, 1) == NULL)
        goto fail;
    if (reg->tail != NULL)
        reg->tail->next = m;
    else
        reg->head = m;
    reg->tail = m;
    return m;
fail:
    metric_free(m);
    return NULL;
}

sg_metric_t *sg_metrics_find(sg_metrics_t *reg, const char *name)
{
    for (sg_metric_t *m = reg->head; m != NULL; m = m->next)
        if (strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

/* -------------------------------------------------------------- updates */

/* Gauges clamp at zero: a negative value is a bookkeeping bug elsewhere
 * (defect 18 of the original), so say it once per family, not per frame. */
static double metrics_clamp(sg_metric_t *m, double v)
{
    if (m->type != SG_METRIC_GAUGE || !(v < 0))
        return v;
    if (!m->warned_clamp)
        SG_WARN("metrics", "gauge %s would go negative (%g), clamped to 0",
                m->name, v);
    m->warned_clamp = 1;
    return 0;
}

void sg_metric_add(sg_metric_t *m, const char *const *values, double delta)
{
    assert(m != NULL && m->type != SG_METRIC_HISTOGRAM);
    if (m->type == SG_METRIC_COUNTER && delta < 0) {
        if (!m->warned_negative)
            SG_WARN("metrics", "counter %s: negative increment %g ignored",
                    m->name, delta);
        m->warned_negative = 1;
        return;
    }
    metrics_child_t *c = metrics_child(m, values, 1);
    if (c != NULL)
        c->value = metrics_clamp(m, c->value + delta);
}

void sg_metric_set(sg_metric_t *m, const char *const *values, double value)
{
    assert(m != NULL && m->type != SG_METRIC_HISTOGRAM);
    metrics_child_t *c = metrics_child(m, values, 1);
    if (c != NULL)
        c->value = metrics_clamp(m, value);
}

void sg_metric_observe(sg_metric_t *m, const char *const *values, double v)
{
    assert(m != NULL && m->type == SG_METRIC_HISTOGRAM);
    metrics_child_t *c = metrics_child(m, values, 1);
    if (c == NULL)
        return;
    size_t i = 0;
    while (i < m->nbounds && !(v <= m->bounds[i]))
        i++;
    c->buckets[i]++; /* i == nbounds: only in +Inf */
    c->count++;
    c->sum += v;
}

/* For a histogram child this is its observation count. */
double sg_metric_get(sg_metric_t *m, const char *const *values)
{
    assert(m != NULL);
    metrics_child_t *c = metrics_child(m, values, 0);
    if (c == NULL)
        return 0;
    return m->type == SG_METRIC_HISTOGRAM ? (double)c->count : c->value;
}

void sg_metric_inc(sg_metric_t *m)
{
    sg_metric_add(m, NULL, 1);
}

void sg_metric_inc1(sg_metric_t *m, const char *value)
{
    const char *values[1] = {value};
    sg_metric_add(m, values, 1);
}

/* ------------------------------------------------------- text rendering */

static void sb_put(metrics_sb_t *sb, const char *s, size_t n)
{
    if (sb->oom)
        return;
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 4096;
        while (cap < sb->len + n + 1)
            cap *= 2;
        char *p = realloc(sb->p, cap);
        if (p == NULL) {
            sb->oom = 1;
            return;
        }
        sb->p = p;
        sb->cap = cap;
    }
    memcpy(sb->p + sb->len, s, n);
    sb->len += n;
    sb->p[sb->len] = '\0';
}

static void sb_puts(metrics_sb_t *sb, const char *s)
{
    sb_put(sb, s, strlen(s));
}

/* Integral values print as integers ("3", not "3.0"); others with the
 * fewest significant digits that read back as the same double. */
static void metrics_fmt_value(char *out, size_t outlen, double v)
{
    if (isnan(v)) {
        snprintf(out, outlen, "NaN");
    } else if (isinf(v)) {
        snprintf(out, outlen, v > 0 ? "+Inf" : "-Inf");
    } else if (v == trunc(v) && fabs(v) < 1e15) {
        snprintf(out, outlen, "%lld", (long long)v);
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(out, outlen, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                break;
        }
    }
}

/* Label values escape \ " and newline; HELP text escapes \ and newline. */
static void metrics_put_escaped(metrics_sb_t *sb, const char *s, int quote)
{
    const char *run = s;
    for (; *s != '\0'; s++) {
        const char *esc = *s == '\\'              ? "\\\\"
                          : *s == '\n'            ? "\\n"
                          : (quote && *s == '"')  ? "\\\""
                                                  : NULL;
        if (esc == NULL)
            continue;
        sb_put(sb, run, (size_t)(s - run));
        sb_puts(sb, esc);
        run = s + 1;
    }
    sb_put(sb, run, (size_t)(s - run));
}

static void metrics_put_sample(metrics_sb_t *sb, const sg_metric_t *m,
                               const metrics_child_t *c, const char *suffix,
                               const char *le, double v)
{
    char num[64];
    sb_puts(sb, m->name);
    sb_puts(sb, suffix);
    if (m->nlabels > 0 || le != NULL) {
        sb_put(sb, "{", 1);
        for (size_t i = 0; i < m->nlabels; i++) {
            sb_puts(sb, i > 0 ? "," : "");
            sb_puts(sb, m->labels[i]);
            sb_put(sb, "=\"", 2);
            metrics_put_escaped(sb, c->values[i], 1);
            sb_put(sb, "\"", 1);
        }
        if (le != NULL) {
            sb_puts(sb, m->nlabels > 0 ? ",le=\"" : "le=\"");
            sb_puts(sb, le);
            sb_put(sb, "\"", 1);
        }
        sb_put(sb, "}", 1);
    }
    metrics_fmt_value(num, sizeof(num), v);
    sb_put(sb, " ", 1);
    sb_puts(sb, num);
    sb_put(sb, "\n", 1);
}

static void metrics_put_histogram(metrics_sb_t *sb, const sg_metric_t *m,
                                  const metrics_child_t *c)
{
    char le[64];
    uint64_t cumulative = 0;
    for (size_t i = 0; i < m->nbounds; i++) {
        cumulative += c->buckets[i];
        metrics_fmt_value(le, sizeof(le), m->bounds[i]);
        metrics_put_sample(sb, m, c, "_bucket", le, (double)cumulative);
    }
    metrics_put_sample(sb, m, c, "_bucket", "+Inf", (double)c->count);
    metrics_put_sample(sb, m, c, "_sum", NULL, c->sum);
    metrics_put_sample(sb, m, c, "_count", NULL, (double)c->count);
}

static const char *metrics_type_name(sg_metric_type_t type)
{
    switch (type) {
    case SG_METRIC_COUNTER:
        return "counter";
    case SG_METRIC_GAUGE:
        return "gauge";
    case SG_METRIC_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

static void metrics_put_family(metrics_sb_t *sb, const sg_metric_t *m)
{
    sb_puts(sb, "# HELP ");
    sb_puts(sb, m->name);
    sb_put(sb, " ", 1);
    metrics_put_escaped(sb, m->help, 0);
    sb_puts(sb, "\n# TYPE ");
    sb_puts(sb, m->name);
    sb_put(sb, " ", 1);
    sb_puts(sb, metrics_type_name(m->type));
    sb_put(sb, "\n", 1);
    for (const metrics_child_t *c = m->children; c != NULL; c = c->next) {
        if (m->type == SG_METRIC_HISTOGRAM)
            metrics_put_histogram(sb, m, c);
        else
            metrics_put_sample(sb, m, c, "", NULL, c->value);
    }
}

int sg_metrics_render(sg_metrics_t *reg, char **out, size_t *len)
{
    metrics_sb_t sb = {0};
    if (reg->collect != NULL)
        reg->collect(reg, reg->collect_arg);
    sb_put(&sb, "", 0); /* an empty registry still yields "" */
    for (const sg_metric_t *m = reg->head; m != NULL; m = m->next)
        metrics_put_family(&sb, m);
    if (sb.oom) {
        free(sb.p);
        return SG_ENOMEM;
    }
    *out = sb.p;
    if (len != NULL)
        *len = sb.len;
    return 0;
}

/* ------------------------------------------------------- JSON rendering */

/* Integral values as JSON integers; NaN and infinities (not JSON) as null. */
static json_t *metrics_json_number(double v)
{
    if (!isfinite(v))
        return json_null();
    if (v == trunc(v) && fabs(v) < 9007199254740992.0)
        return json_integer((json_int_t)v);
    return json_real(v);
}

static json_t *metrics_json_measurement(const sg_metric_t *m,
                                        const metrics_child_t *c)
{
    json_t *labels = json_object();
    for (size_t i = 0; i < m->nlabels; i++) {
        json_t *v = json_string(c->values[i]);
        json_object_set_new(labels, m->labels[i], v ? v : json_null());
    }
    if (m->type != SG_METRIC_HISTOGRAM)
        return json_pack("{s:o,s:o}", "labels", labels, "value",
                         metrics_json_number(c->value));
    return json_pack("{s:o,s:I,s:o}", "labels", labels, "count",
                     (json_int_t)c->count, "sum", metrics_json_number(c->sum));
}

static json_t *metrics_json_family(const sg_metric_t *m)
{
    json_t *list = json_array();
    for (const metrics_child_t *c = m->children; c != NULL; c = c->next)
        json_array_append_new(list, metrics_json_measurement(m, c));
    return json_pack("{s:s,s:s,s:s,s:o}", "name", m->name, "type",
                     metrics_type_name(m->type), "help", m->help,
                     "measurements", list);
}

static json_t *metrics_json_names(const sg_metrics_t *reg)
{
    json_t *names = json_array();
    for (const sg_metric_t *m = reg->head; m != NULL; m = m->next)
        json_array_append_new(names, json_string(m->name));
    return json_pack("{s:o}", "names", names);
}

/* Measurements are {"labels":{..},"value":v} for counters and gauges and
 * {"labels":{..},"count":n,"sum":s} for histograms. Label values that are
 * not valid UTF-8 cannot be JSON strings and come out as null. */
int sg_metrics_render_json(sg_metrics_t *reg, const char *name, char **out,
                           size_t *len)
{
    json_t *doc;
    if (reg->collect != NULL)
        reg->collect(reg, reg->collect_arg);
    if (name == NULL) {
        doc = metrics_json_names(reg);
    } else {
        sg_metric_t *m = sg_metrics_find(reg, name);
        if (m == NULL)
            return SG_ENOTFOUND;
        doc = metrics_json_family(m);
    }
    char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (s == NULL)
        return SG_ENOMEM;
    *out = s;
    if (len != NULL)
        *len = strlen(s);
    return 0;
}
