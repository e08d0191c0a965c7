/* Metrics registry (counters, gauges, histograms with labels) and the
 * Prometheus text exposition format 0.0.4.
 *
 * Families are registered once at start-up; children (one per label-value
 * tuple) are created on first use. Gauges never go below zero: a decrement
 * that would is clamped and logged once, because a negative connection count
 * (defect 18 of the original) is always a bookkeeping bug. */
#ifndef SG_METRICS_H
#define SG_METRICS_H

#include <stddef.h>

#define SG_METRICS_MAX_LABELS 4

typedef enum {
    SG_METRIC_COUNTER,
    SG_METRIC_GAUGE,
    SG_METRIC_HISTOGRAM,
} sg_metric_type_t;

typedef struct sg_metrics sg_metrics_t;
typedef struct sg_metric sg_metric_t;

/* Called at the start of every render, e.g. to refresh process gauges. */
typedef void (*sg_metrics_collect_cb)(sg_metrics_t *reg, void *arg);

sg_metrics_t *sg_metrics_new(void);
void sg_metrics_free(sg_metrics_t *reg);
void sg_metrics_set_collect_cb(sg_metrics_t *reg, sg_metrics_collect_cb cb,
                               void *arg);

/* Registers a family. `labels` is a comma-separated list of label names
 * ("type,component") or NULL. `buckets` (ascending upper bounds, +Inf
 * implied) is for histograms only; NULL gives the default Prometheus
 * buckets. Returns the family (owned by `reg`) or NULL on a bad name, a
 * duplicate name or no memory. */
sg_metric_t *sg_metrics_register(sg_metrics_t *reg, sg_metric_type_t type,
                                 const char *name, const char *help,
                                 const char *labels, const double *buckets,
                                 size_t nbuckets);
/* Looks up a family by name; NULL when absent. */
sg_metric_t *sg_metrics_find(sg_metrics_t *reg, const char *name);

/* `values` holds one string per label of the family (NULL when it has
 * none). Label values are escaped on output, so any text is safe. */
void sg_metric_add(sg_metric_t *m, const char *const *values, double delta);
void sg_metric_set(sg_metric_t *m, const char *const *values, double value);
void sg_metric_observe(sg_metric_t *m, const char *const *values, double v);
/* Current value of a counter/gauge child (0 when it does not exist yet). */
double sg_metric_get(sg_metric_t *m, const char *const *values);

/* Conveniences for the common zero- and one-label cases. */
void sg_metric_inc(sg_metric_t *m);
void sg_metric_inc1(sg_metric_t *m, const char *value);

/* Renders every family in registration order. *out is malloc'd (caller
 * frees). 0 or SG_ENOMEM. */
int sg_metrics_render(sg_metrics_t *reg, char **out, size_t *len);
/* JSON: {"names":[...]} for /actuator/metrics, or for one family
 * {"name":..,"type":..,"help":..,"measurements":[{"labels":{..},"value":..}]}.
 * `name` NULL lists names. SG_ENOTFOUND for an unknown name. */
int sg_metrics_render_json(sg_metrics_t *reg, const char *name, char **out,
                           size_t *len);

#endif
