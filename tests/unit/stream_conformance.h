/* The stream conformance suite: one set of tests of the broker stream ops
 * (sg_broker_stream_append/_read, on_chunk; stream.h APPEND RULES) written
 * against broker.h only, run for every engine.
 *
 * The including test file provides an sc_fixture_t (how to open a ready
 * broker on its loop, close it, check key TTLs, take the engine down), sets
 * `sc_fx` before running, and adds SC_CONFORMANCE_TESTS(setup, teardown) to
 * its cmocka test array. Include it after broker.h and cmocka.h. */
#ifndef SG_TEST_STREAM_CONFORMANCE_H
#define SG_TEST_STREAM_CONFORMANCE_H

#include <stdio.h>
#include <string.h>

#include "broker.h"
#include "error.h"

typedef struct sc_fixture {
    const char *engine;
    uv_loop_t *loop;
    /* Initialises the loop, creates a broker with `cfg` (stream fields set
     * by the test; connection fields are the fixture's) and `h`, and runs
     * the loop until it is ready. */
    sg_broker_t *(*open)(sg_config_t *cfg, const sg_broker_handlers_t *h);
    /* Closes the broker, runs the loop until it is freed, closes the loop
     * (asserting nothing leaked). */
    void (*close)(sg_broker_t *b);
    /* Asserts that all stream state of `sid` expires within (0, ttl] s and
     * that it is made of `nkeys` keys (Redis) or one stream (memory). */
    void (*check_ttls)(sg_broker_t *b, const char *sid, int ttl, int nkeys);
    /* Makes the broker not ready; NULL when the engine is always ready. */
    void (*go_down)(sg_broker_t *b);
    /* 1 when the log is trimmed to exactly log_max_len (Redis trims with
     * MAXLEN ~, whole stream nodes at a time). */
    int exact_trim;
} sc_fixture_t;

static const sc_fixture_t *sc_fx;

#define SC_MAX 160
#define SC_TEXT 512
#define SC_TS 1767225600000LL

typedef struct sc_chunk {
    uint64_t offset;
    char epoch[32];
    char sid[64];
    char mid[64];
    char uid[64];       /* "" when NULL */
    int has_uid;
    char role[16];
    int has_content;
    char content[SC_TEXT];
    size_t content_len;
    int has_delta;
    char delta[SC_TEXT];
    size_t delta_len;
    uint32_t index;
    int64_t ts;
    int64_t done_at;
    int complete;
    int reset;
} sc_chunk_t;

typedef struct sc_rec {
    int subscribed;
    int chunks;
    sc_chunk_t chunk[SC_MAX];
    int appends;
    int append_status[SC_MAX];
    uint64_t append_offset[SC_MAX];
    /* the last read */
    int reads;
    int read_status;
    char epoch[32];
    uint64_t last;
    uint64_t first;
    int range_ok;
    size_t nlog;
    sc_chunk_t log[SC_MAX];
    size_t nsnaps;
    sc_chunk_t snap[8];
    size_t nhistory;
    char history[4][64];
} sc_rec_t;

static sc_rec_t sc_rec;
static uv_timer_t sc_ticker;

/* ---- recording ---------------------------------------------------------- */

static void sc_copy(sc_chunk_t *d, const sg_chunk_t *c)
{
    memset(d, 0, sizeof(*d));
    assert_true(c->content_len < SC_TEXT && c->delta_len < SC_TEXT);
    d->offset = c->offset;
    snprintf(d->epoch, sizeof(d->epoch), "%s", c->epoch);
    snprintf(d->sid, sizeof(d->sid), "%s", c->session_id);
    snprintf(d->mid, sizeof(d->mid), "%s", c->message_id);
    d->has_uid = c->user_id != NULL;
    snprintf(d->uid, sizeof(d->uid), "%s", d->has_uid ? c->user_id : "");
    snprintf(d->role, sizeof(d->role), "%s", c->role);
    d->has_content = c->content != NULL;
    if (d->has_content)
        memcpy(d->content, c->content, c->content_len);
    d->content_len = c->content_len;
    d->has_delta = c->delta != NULL;
    if (d->has_delta)
        memcpy(d->delta, c->delta, c->delta_len);
    d->delta_len = c->delta_len;
    d->index = c->index;
    d->ts = c->timestamp;
    d->done_at = c->done_at;
    d->complete = c->is_complete;
    d->reset = c->reset;
}

static void sc_on_chunk(void *arg, const char *sid, const sg_chunk_t *c)
{
    sc_rec_t *r = arg;
    assert_true(r->chunks < SC_MAX);
    assert_string_equal(sid, c->session_id);
    sc_copy(&r->chunk[r->chunks++], c);
}

static void sc_on_subscribed(void *arg, const char *sid)
{
    ((sc_rec_t *)arg)->subscribed++;
}

static void sc_on_append(void *arg, int status, uint64_t offset)
{
    sc_rec_t *r = arg;
    assert_true(r->appends < SC_MAX);
    r->append_status[r->appends] = status;
    r->append_offset[r->appends++] = offset;
}

static void sc_on_read(void *arg, int status, const sg_stream_state_t *st)
{
    sc_rec_t *r = arg;
    r->reads++;
    r->read_status = status;
    if (status != 0) {
        assert_null(st);
        return;
    }
    assert_non_null(st->epoch);
    snprintf(r->epoch, sizeof(r->epoch), "%s", st->epoch);
    r->last = st->last_offset;
    r->first = st->first_offset;
    r->range_ok = st->range_ok;
    assert_true(st->nlog <= SC_MAX && st->nsnapshots <= 8);
    r->nlog = st->nlog;
    for (size_t i = 0; i < st->nlog; i++)
        sc_copy(&r->log[i], &st->log[i]);
    r->nsnaps = st->nsnapshots;
    for (size_t i = 0; i < st->nsnapshots; i++)
        sc_copy(&r->snap[i], &st->snapshots[i]);
    r->nhistory = st->nhistory;
    for (size_t i = 0; i < st->nhistory && i < 4; i++)
        snprintf(r->history[i], 64, "%.*s", (int)st->history_lens[i],
                 st->history[i]);
}

/* ---- harness ------------------------------------------------------------ */

static void sc_on_tick(uv_timer_t *t)
{
}

static void sc_default_cfg(sg_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->stream.history_ttl = 300;
    cfg->stream.recovery_ttl = 60;
    cfg->stream.log_max_len = 1000;
}

static sg_broker_handlers_t sc_handlers(sc_rec_t *r)
{
    sg_broker_handlers_t h = {NULL, sc_on_subscribed, NULL, r, sc_on_chunk};
    return h;
}

static sg_broker_t *sc_open_cfg(sg_config_t *cfg)
{
    memset(&sc_rec, 0, sizeof(sc_rec));
    sg_broker_handlers_t h = sc_handlers(&sc_rec);
    sg_broker_t *b = sc_fx->open(cfg, &h);
    assert_non_null(b);
    /* Keeps UV_RUN_ONCE from blocking forever in sc_run_until. */
    uv_timer_init(sc_fx->loop, &sc_ticker);
    uv_timer_start(&sc_ticker, sc_on_tick, 5, 5);
    return b;
}

static sg_broker_t *sc_open(void)
{
    sg_config_t cfg;
    sc_default_cfg(&cfg);
    return sc_open_cfg(&cfg);
}

static void sc_close(sg_broker_t *b)
{
    uv_close((uv_handle_t *)&sc_ticker, NULL);
    sc_fx->close(b);
}

static int sc_run_until(const int *counter, int want, uint64_t ms)
{
    uv_loop_t *loop = sc_fx->loop;
    uint64_t deadline = uv_now(loop) + ms;
    while (*counter < want && uv_now(loop) < deadline)
        uv_run(loop, UV_RUN_ONCE);
    return *counter >= want;
}

static void sc_run_for(uint64_t ms)
{
    int never = 0;
    sc_run_until(&never, 1, ms);
}

static sg_chatmsg_t sc_msg(const char *mid, const char *content,
                           int complete)
{
    sg_chatmsg_t m;
    memset(&m, 0, sizeof(m));
    m.message_id = (char *)mid;
    m.user_id = (char *)"u1";
    m.role = (char *)"assistant";
    m.content = (char *)content;
    m.content_len = strlen(content);
    m.timestamp = SC_TS + (int64_t)strlen(content);
    m.is_complete = complete;
    return m;
}

/* Appends and waits for the result; returns the offset (0: duplicate). */
static uint64_t sc_append(sg_broker_t *b, const char *sid, const char *mid,
                          const char *content, int complete)
{
    sg_chatmsg_t m = sc_msg(mid, content, complete);
    int before = sc_rec.appends;
    assert_int_equal(sg_broker_stream_append(b, sid, &m, sc_on_append,
                                             &sc_rec), 0);
    assert_int_equal(sc_rec.appends, before); /* never synchronous */
    assert_true(sc_run_until(&sc_rec.appends, before + 1, 5000));
    assert_int_equal(sc_rec.append_status[before], 0);
    return sc_rec.append_offset[before];
}

static void sc_read(sg_broker_t *b, const char *sid, uint64_t since,
                    int with_history)
{
    int before = sc_rec.reads;
    assert_int_equal(sg_broker_stream_read(b, sid, since, with_history,
                                           sc_on_read, &sc_rec), 0);
    assert_int_equal(sc_rec.reads, before);
    assert_true(sc_run_until(&sc_rec.reads, before + 1, 5000));
    assert_int_equal(sc_rec.read_status, 0);
}

static void sc_subscribe(sg_broker_t *b, const char *sid)
{
    int before = sc_rec.subscribed;
    assert_int_equal(sg_broker_subscribe(b, sid), 0);
    assert_true(sc_run_until(&sc_rec.subscribed, before + 1, 5000));
}

static void sc_assert_epoch(const char *e)
{
    assert_int_equal(strlen(e), SG_EPOCH_LEN);
    for (int i = 0; i < SG_EPOCH_LEN; i++)
        assert_non_null(strchr("0123456789abcdef", e[i]));
}

/* ---- append rules ------------------------------------------------------- */

static void sc_first_append_is_offset_1_index_0(void **state)
{
    sg_broker_t *b = sc_open();
    sc_subscribe(b, "s1");
    assert_int_equal(sc_append(b, "s1", "m1", "Hello ", 0), 1);
    assert_true(sc_run_until(&sc_rec.chunks, 1, 5000));
    sc_chunk_t *c = &sc_rec.chunk[0];
    assert_int_equal(c->offset, 1);
    assert_int_equal(c->index, 0);
    assert_string_equal(c->sid, "s1");
    assert_string_equal(c->mid, "m1");
    assert_string_equal(c->uid, "u1");
    assert_string_equal(c->role, "assistant");
    assert_true(c->has_content && c->has_delta);
    assert_string_equal(c->content, "Hello ");
    assert_string_equal(c->delta, "Hello ");
    assert_int_equal(c->delta_len, 6);
    assert_int_equal(c->ts, SC_TS + 6);
    assert_int_equal(c->complete, 0);
    assert_int_equal(c->reset, 0);
    assert_int_equal(c->done_at, 0);
    sc_assert_epoch(c->epoch);
    sc_close(b);
}

static void sc_cumulative_partials_get_word_deltas(void **state)
{
    static const char *const text[] = {"Hello ", "Hello big ",
                                       "Hello big world"};
    static const char *const delta[] = {"Hello ", "big ", "world"};
    sg_broker_t *b = sc_open();
    sc_subscribe(b, "s1");
    for (int i = 0; i < 3; i++)
        assert_int_equal(sc_append(b, "s1", "m1", text[i], 0),
                         (uint64_t)i + 1);
    assert_true(sc_run_until(&sc_rec.chunks, 3, 5000));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(sc_rec.chunk[i].offset, i + 1);
        assert_int_equal(sc_rec.chunk[i].index, i);
        assert_string_equal(sc_rec.chunk[i].delta, delta[i]);
        assert_string_equal(sc_rec.chunk[i].content, text[i]);
        assert_int_equal(sc_rec.chunk[i].reset, 0);
    }
    sc_close(b);
}

static void sc_same_message_three_times_is_logged_once(void **state)
{
    sg_broker_t *b = sc_open();
    sc_subscribe(b, "s1");
    sg_chatmsg_t m = sc_msg("m1", "Hi ", 0);
    /* Three nodes ingest the same producer message concurrently. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(sg_broker_stream_append(b, "s1", &m, sc_on_append,
                                                 &sc_rec), 0);
    assert_true(sc_run_until(&sc_rec.appends, 3, 5000));
    assert_int_equal(sc_rec.append_offset[0], 1);
    assert_int_equal(sc_rec.append_offset[1], 0);
    assert_int_equal(sc_rec.append_offset[2], 0);
    sc_read(b, "s1", 0, 0);
    assert_int_equal(sc_rec.last, 1);
    assert_int_equal(sc_rec.range_ok, 1);
    assert_int_equal(sc_rec.nlog, 1);
    assert_string_equal(sc_rec.log[0].delta, "Hi ");
    sc_run_for(50);
    assert_int_equal(sc_rec.chunks, 1);
    sc_close(b);
}

static void sc_older_partial_after_newer_is_duplicate(void **state)
{
    sg_broker_t *b = sc_open();
    assert_int_equal(sc_append(b, "s1", "m1", "a b ", 0), 1);
    assert_int_equal(sc_append(b, "s1", "m1", "a b c ", 0), 2);
    assert_int_equal(sc_append(b, "s1", "m1", "a b ", 0), 0);
    assert_int_equal(sc_append(b, "s1", "m1", "a b c ", 0), 0); /* equal */
    assert_int_equal(sc_append(b, "s1", "m1", "a b c d ", 0), 3);
    sc_close(b);
}

static void sc_partial_after_final_is_duplicate(void **state)
{
    sg_broker_t *b = sc_open();
    assert_int_equal(sc_append(b, "s1", "m1", "a ", 0), 1);
    assert_int_equal(sc_append(b, "s1", "m1", "a b", 1), 2);
    assert_int_equal(sc_append(b, "s1", "m1", "a b c ", 0), 0);
    assert_int_equal(sc_append(b, "s1", "m1", "a b c", 1), 0);
    sc_read(b, "s1", SG_STREAM_NO_SINCE, 0);
    assert_int_equal(sc_rec.last, 2);
    assert_int_equal(sc_rec.nsnaps, 1);
    assert_string_equal(sc_rec.snap[0].content, "a b");
    assert_int_equal(sc_rec.snap[0].complete, 1);
    sc_close(b);
}

static void sc_final_with_same_length_is_accepted(void **state)
{
    sg_broker_t *b = sc_open();
    sc_subscribe(b, "s1");
    assert_int_equal(sc_append(b, "s1", "m1", "a b", 0), 1);
    assert_int_equal(sc_append(b, "s1", "m1", "a b", 1), 2);
    assert_true(sc_run_until(&sc_rec.chunks, 2, 5000));
    sc_chunk_t *c = &sc_rec.chunk[1];
    assert_int_equal(c->offset, 2);
    assert_int_equal(c->index, 1);
    assert_int_equal(c->complete, 1);
    assert_true(c->has_delta);
    assert_int_equal(c->delta_len, 0);
    assert_string_equal(c->content, "a b");
    assert_int_equal(c->reset, 0);
    assert_true(c->done_at > SC_TS);
    sc_close(b);
}

static void sc_reset_when_content_does_not_extend(void **state)
{
    sg_broker_t *b = sc_open();
    sc_subscribe(b, "s1");
    assert_int_equal(sc_append(b, "s1", "m1", "Hello world ", 0), 1);
    assert_int_equal(sc_append(b, "s1", "m1", "Sorry, an error occurred ",
                               0), 2);
    assert_int_equal(sc_append(b, "s1", "m1", "Oops", 1), 3); /* shorter */
    assert_true(sc_run_until(&sc_rec.chunks, 3, 5000));
    assert_int_equal(sc_rec.chunk[1].reset, 1);
    assert_int_equal(sc_rec.chunk[1].index, 1);
    assert_string_equal(sc_rec.chunk[1].delta, "Sorry, an error occurred ");
    assert_string_equal(sc_rec.chunk[1].content,
                        "Sorry, an error occurred ");
    assert_int_equal(sc_rec.chunk[2].reset, 1);
    assert_int_equal(sc_rec.chunk[2].index, 2);
    assert_string_equal(sc_rec.chunk[2].delta, "Oops");
    sc_read(b, "s1", 0, 0);
    assert_int_equal(sc_rec.nlog, 3);
    assert_int_equal(sc_rec.log[1].reset, 1);
    assert_int_equal(sc_rec.log[0].reset, 0);
    assert_string_equal(sc_rec.snap[0].content, "Oops");
    sc_close(b);
}

static void sc_interleaved_messages_share_offsets(void **state)
{
    sg_broker_t *b = sc_open();
    sc_subscribe(b, "s1");
    assert_int_equal(sc_append(b, "s1", "m1", "a ", 0), 1);
    assert_int_equal(sc_append(b, "s1", "m2", "x ", 0), 2);
    assert_int_equal(sc_append(b, "s1", "m1", "a b ", 0), 3);
    assert_int_equal(sc_append(b, "s1", "m2", "x y", 1), 4);
    assert_int_equal(sc_append(b, "s1", "m1", "a b c", 1), 5);
    assert_true(sc_run_until(&sc_rec.chunks, 5, 5000));
    static const char *const mid[] = {"m1", "m2", "m1", "m2", "m1"};
    static const uint32_t idx[] = {0, 0, 1, 1, 2};
    static const char *const delta[] = {"a ", "x ", "b ", "y", "c"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(sc_rec.chunk[i].offset, i + 1);
        assert_string_equal(sc_rec.chunk[i].mid, mid[i]);
        assert_int_equal(sc_rec.chunk[i].index, idx[i]);
        assert_string_equal(sc_rec.chunk[i].delta, delta[i]);
    }
    sc_close(b);
}

/* ---- live delivery ------------------------------------------------------ */

static void sc_chunks_reach_only_subscribed_sessions_in_order(void **state)
{
    char text[64] = "";
    sg_broker_t *b = sc_open();
    sc_subscribe(b, "s1");
    for (int i = 0; i < 10; i++) {
        sg_chatmsg_t m;
        strcat(text, "w ");
        m = sc_msg("m1", text, i == 9);
        assert_int_equal(sg_broker_stream_append(b, "s1", &m, NULL, NULL),
                         0);
        m = sc_msg("m9", text, 0);
        assert_int_equal(sg_broker_stream_append(b, "s2", &m, NULL, NULL),
                         0);
    }
    assert_true(sc_run_until(&sc_rec.chunks, 10, 5000));
    sc_run_for(100);
    assert_int_equal(sc_rec.chunks, 10);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(sc_rec.chunk[i].offset, i + 1);
        assert_string_equal(sc_rec.chunk[i].sid, "s1");
        assert_string_equal(sc_rec.chunk[i].delta, "w ");
        assert_int_equal(sc_rec.chunk[i].content_len, 2 * (i + 1));
        assert_int_equal(sc_rec.chunk[i].complete, i == 9);
    }
    assert_int_equal(sc_rec.appends, 0); /* cb NULL is allowed */
    sc_close(b);
}

static void sc_no_chunks_after_unsubscribe(void **state)
{
    sg_broker_t *b = sc_open();
    sc_subscribe(b, "s1");
    assert_int_equal(sg_broker_unsubscribe(b, "s1"), 0);
    sc_run_for(50);
    assert_int_equal(sc_append(b, "s1", "m1", "a ", 0), 1);
    sc_run_for(100);
    assert_int_equal(sc_rec.chunks, 0);
    sc_close(b);
}

/* ---- reads -------------------------------------------------------------- */

static void sc_read_since_returns_exactly_the_entries_after(void **state)
{
    static const char *const text[] = {"a ", "a b ", "a b c ", "a b c d ",
                                       "a b c d e"};
    sg_broker_t *b = sc_open();
    for (int i = 0; i < 5; i++)
        assert_int_equal(sc_append(b, "s1", "m1", text[i], i == 4),
                         (uint64_t)i + 1);
    sc_read(b, "s1", 2, 0);
    assert_int_equal(sc_rec.last, 5);
    assert_int_equal(sc_rec.first, 1);
    assert_int_equal(sc_rec.range_ok, 1);
    assert_int_equal(sc_rec.nlog, 3);
    static const char *const delta[] = {"c ", "d ", "e"};
    for (int i = 0; i < 3; i++) {
        sc_chunk_t *c = &sc_rec.log[i];
        assert_int_equal(c->offset, i + 3);
        assert_int_equal(c->index, i + 2);
        assert_string_equal(c->delta, delta[i]);
        assert_int_equal(c->has_content, 0);
        assert_string_equal(c->mid, "m1");
        assert_string_equal(c->sid, "s1");
        assert_string_equal(c->uid, "u1");
        assert_string_equal(c->role, "assistant");
        assert_string_equal(c->epoch, sc_rec.epoch);
        assert_int_equal(c->ts, SC_TS + (int64_t)strlen(text[i + 2]));
        assert_int_equal(c->complete, i == 2);
    }
    sc_read(b, "s1", 5, 0);
    assert_int_equal(sc_rec.range_ok, 1);
    assert_int_equal(sc_rec.nlog, 0);
    sc_read(b, "s1", 9, 0); /* ahead of the log: offsets from elsewhere */
    assert_int_equal(sc_rec.range_ok, 0);
    assert_int_equal(sc_rec.nlog, 0);
    sc_read(b, "s1", SG_STREAM_NO_SINCE, 0);
    assert_int_equal(sc_rec.range_ok, 0);
    assert_int_equal(sc_rec.nlog, 0);
    sc_read(b, "empty", 0, 0);
    assert_int_equal(sc_rec.last, 0);
    assert_int_equal(sc_rec.first, 0);
    assert_int_equal(sc_rec.range_ok, 1); /* since == last == 0 */
    assert_int_equal(sc_rec.nsnaps, 0);
    sc_close(b);
}

static void sc_read_since_older_than_log_is_not_ok(void **state)
{
    char text[300] = "";
    sg_config_t cfg;
    sc_default_cfg(&cfg);
    cfg.stream.log_max_len = 5;
    sg_broker_t *b = sc_open_cfg(&cfg);
    for (int i = 0; i < 120; i++) {
        sg_chatmsg_t m;
        strcat(text, "w ");
        m = sc_msg("m1", text, 0);
        assert_int_equal(sg_broker_stream_append(b, "s1", &m, sc_on_append,
                                                 &sc_rec), 0);
    }
    assert_true(sc_run_until(&sc_rec.appends, 120, 10000));
    assert_int_equal(sc_rec.append_offset[119], 120);
    sc_read(b, "s1", 1, 0);
    uint64_t first = sc_rec.first;
    assert_int_equal(sc_rec.last, 120);
    assert_int_equal(sc_rec.range_ok, 0);
    assert_int_equal(sc_rec.nlog, 0);
    assert_true(first > 2 && first <= 116); /* at least 5 kept */
    if (sc_fx->exact_trim)
        assert_int_equal(first, 116);
    sc_read(b, "s1", first - 1, 0);
    assert_int_equal(sc_rec.range_ok, 1);
    assert_int_equal(sc_rec.nlog, 120 - first + 1);
    assert_int_equal(sc_rec.log[0].offset, first);
    assert_int_equal(sc_rec.log[sc_rec.nlog - 1].offset, 120);
    sc_read(b, "s1", first - 2, 0);
    assert_int_equal(sc_rec.range_ok, 0);
    /* The snapshot still has the whole text. */
    assert_int_equal(sc_rec.nsnaps, 1);
    assert_int_equal(sc_rec.snap[0].content_len, 240);
    assert_int_equal(sc_rec.snap[0].index, 119);
    sc_close(b);
}

static void sc_read_returns_snapshots_ordered_by_offset(void **state)
{
    sg_broker_t *b = sc_open();
    assert_int_equal(sc_append(b, "s1", "m2", "x ", 0), 1);
    assert_int_equal(sc_append(b, "s1", "m1", "a ", 0), 2);
    assert_int_equal(sc_append(b, "s1", "m2", "x y", 1), 3);
    assert_int_equal(sc_append(b, "s1", "m1", "a b ", 0), 4);
    sc_read(b, "s1", SG_STREAM_NO_SINCE, 0);
    assert_int_equal(sc_rec.last, 4);
    assert_int_equal(sc_rec.nlog, 0);
    assert_int_equal(sc_rec.nsnaps, 2);
    sc_chunk_t *s = &sc_rec.snap[0];
    assert_string_equal(s->mid, "m2");
    assert_int_equal(s->offset, 3);
    assert_int_equal(s->index, 1);
    assert_string_equal(s->content, "x y");
    assert_int_equal(s->has_delta, 0);
    assert_int_equal(s->complete, 1);
    assert_true(s->done_at > SC_TS);
    assert_int_equal(s->ts, SC_TS + 3);
    assert_string_equal(s->uid, "u1");
    assert_string_equal(s->sid, "s1");
    assert_string_equal(s->epoch, sc_rec.epoch);
    s = &sc_rec.snap[1];
    assert_string_equal(s->mid, "m1");
    assert_int_equal(s->offset, 4);
    assert_string_equal(s->content, "a b ");
    assert_int_equal(s->complete, 0);
    assert_int_equal(s->done_at, 0);
    assert_string_equal(s->role, "assistant");
    sc_close(b);
}

static void sc_epoch_is_stable_across_reads_and_appends(void **state)
{
    char epoch[32];
    sg_broker_t *b = sc_open();
    sc_subscribe(b, "s1");
    sc_read(b, "s1", SG_STREAM_NO_SINCE, 0); /* creates the epoch */
    sc_assert_epoch(sc_rec.epoch);
    snprintf(epoch, sizeof(epoch), "%s", sc_rec.epoch);
    assert_int_equal(sc_append(b, "s1", "m1", "a ", 0), 1);
    assert_int_equal(sc_append(b, "s1", "m1", "a b", 1), 2);
    assert_true(sc_run_until(&sc_rec.chunks, 2, 5000));
    assert_string_equal(sc_rec.chunk[0].epoch, epoch);
    assert_string_equal(sc_rec.chunk[1].epoch, epoch);
    sc_read(b, "s1", 0, 0);
    assert_string_equal(sc_rec.epoch, epoch);
    sc_read(b, "other", SG_STREAM_NO_SINCE, 0);
    sc_assert_epoch(sc_rec.epoch);
    assert_string_not_equal(sc_rec.epoch, epoch);
    sc_close(b);
}

static void sc_epoch_changes_after_the_state_expires(void **state)
{
    char epoch[32];
    sg_config_t cfg;
    sc_default_cfg(&cfg);
    cfg.stream.recovery_ttl = 1;
    sg_broker_t *b = sc_open_cfg(&cfg);
    assert_int_equal(sc_append(b, "s1", "m1", "a ", 0), 1);
    assert_int_equal(sc_append(b, "s1", "m1", "a b ", 0), 2);
    sc_read(b, "s1", SG_STREAM_NO_SINCE, 0);
    snprintf(epoch, sizeof(epoch), "%s", sc_rec.epoch);
    assert_int_equal(sc_rec.nsnaps, 1);
    sc_run_for(1200);
    sc_read(b, "s1", 1, 0);
    sc_assert_epoch(sc_rec.epoch);
    assert_string_not_equal(sc_rec.epoch, epoch);
    assert_int_equal(sc_rec.last, 0);
    assert_int_equal(sc_rec.range_ok, 0); /* since 1 > last 0 */
    assert_int_equal(sc_rec.nsnaps, 0);
    snprintf(epoch, sizeof(epoch), "%s", sc_rec.epoch);
    assert_int_equal(sc_append(b, "s1", "m1", "a b c ", 0), 1);
    sc_read(b, "s1", SG_STREAM_NO_SINCE, 0);
    assert_string_equal(sc_rec.epoch, epoch);
    assert_int_equal(sc_rec.snap[0].index, 0); /* a new message to us */
    sc_close(b);
}

static void sc_on_done(void *arg, int status)
{
    assert_int_equal(status, 0);
    (*(int *)arg)++;
}

static void sc_history_is_included_when_asked(void **state)
{
    int done = 0;
    sg_broker_t *b = sc_open();
    assert_int_equal(sg_broker_history_append(b, "s1", "{\"h\":1}", 7,
                                              sc_on_done, &done), 0);
    assert_int_equal(sg_broker_history_append(b, "s1", "{\"h\":2}", 7,
                                              sc_on_done, &done), 0);
    assert_true(sc_run_until(&done, 2, 5000));
    assert_int_equal(sc_append(b, "s1", "m1", "a ", 0), 1);
    sc_read(b, "s1", SG_STREAM_NO_SINCE, 1);
    assert_int_equal(sc_rec.nhistory, 2);
    assert_string_equal(sc_rec.history[0], "{\"h\":1}");
    assert_string_equal(sc_rec.history[1], "{\"h\":2}");
    assert_int_equal(sc_rec.nsnaps, 1);
    sc_read(b, "s1", SG_STREAM_NO_SINCE, 0);
    assert_int_equal(sc_rec.nhistory, 0);
    sc_close(b);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void sc_every_key_has_a_ttl(void **state)
{
    sg_broker_t *b = sc_open();
    assert_int_equal(sc_append(b, "s1", "m1", "a ", 0), 1);
    assert_int_equal(sc_append(b, "s1", "m2", "x ", 0), 2);
    assert_int_equal(sc_append(b, "s1", "m1", "a b", 1), 3);
    sc_read(b, "s1", 0, 1);
    /* seq, epoch, log, msgs, done (index of finals), text:m1, text:m2 */
    sc_fx->check_ttls(b, "s1", 60, 7);
    sc_read(b, "readonly", SG_STREAM_NO_SINCE, 1);
    sc_fx->check_ttls(b, "readonly", 60, 1); /* the epoch alone */
    sc_close(b);
}

static void sc_not_ready_is_refused(void **state)
{
    if (sc_fx->go_down == NULL) {
        print_message("%s engine is always ready: skipped\n", sc_fx->engine);
        skip();
    }
    sg_broker_t *b = sc_open();
    sc_fx->go_down(b);
    sg_chatmsg_t m = sc_msg("m1", "a ", 0);
    assert_int_equal(sg_broker_stream_append(b, "s1", &m, sc_on_append,
                                             &sc_rec), SG_ENOTREADY);
    assert_int_equal(sg_broker_stream_read(b, "s1", 0, 0, sc_on_read,
                                           &sc_rec), SG_ENOTREADY);
    sc_run_for(50);
    assert_int_equal(sc_rec.appends, 0);
    assert_int_equal(sc_rec.reads, 0);
    sc_close(b);
}

static void sc_close_cancels_pending_stream_ops(void **state)
{
    sg_broker_t *b = sc_open();
    sg_chatmsg_t m = sc_msg("m1", "a ", 0);
    assert_int_equal(sg_broker_stream_append(b, "s1", &m, sc_on_append,
                                             &sc_rec), 0);
    assert_int_equal(sg_broker_stream_read(b, "s1", 0, 1, sc_on_read,
                                           &sc_rec), 0);
    assert_int_equal(sg_broker_stream_append(b, "s1", &m, NULL, NULL), 0);
    sc_close(b);
    assert_int_equal(sc_rec.appends, 1);
    assert_int_equal(sc_rec.append_status[0], SG_ECANCELED);
    assert_int_equal(sc_rec.append_offset[0], 0);
    assert_int_equal(sc_rec.reads, 1);
    assert_int_equal(sc_rec.read_status, SG_ECANCELED);
}

static void sc_invalid_arguments_are_refused(void **state)
{
    sg_broker_t *b = sc_open();
    sg_chatmsg_t m = sc_msg("m1", "a ", 0);
    assert_int_equal(sg_broker_stream_append(b, "", &m, NULL, NULL),
                     SG_EINVAL);
    m.message_id = NULL;
    assert_int_equal(sg_broker_stream_append(b, "s1", &m, NULL, NULL),
                     SG_EINVAL);
    assert_int_equal(sg_broker_stream_read(b, NULL, 0, 0, sc_on_read,
                                           &sc_rec), SG_EINVAL);
    sc_run_for(20);
    assert_int_equal(sc_rec.reads, 0);
    sc_close(b);
}

#define SC_T(fn, setup, teardown)                                              \
    cmocka_unit_test_setup_teardown(fn, setup, teardown)

/* The suite, for the includer's CMUnitTest array. */
#define SC_CONFORMANCE_TESTS(setup, teardown)                                  \
    SC_T(sc_first_append_is_offset_1_index_0, setup, teardown),                \
    SC_T(sc_cumulative_partials_get_word_deltas, setup, teardown),             \
    SC_T(sc_same_message_three_times_is_logged_once, setup, teardown),         \
    SC_T(sc_older_partial_after_newer_is_duplicate, setup, teardown),          \
    SC_T(sc_partial_after_final_is_duplicate, setup, teardown),                \
    SC_T(sc_final_with_same_length_is_accepted, setup, teardown),              \
    SC_T(sc_reset_when_content_does_not_extend, setup, teardown),              \
    SC_T(sc_interleaved_messages_share_offsets, setup, teardown),              \
    SC_T(sc_chunks_reach_only_subscribed_sessions_in_order, setup, teardown),  \
    SC_T(sc_no_chunks_after_unsubscribe, setup, teardown),                     \
    SC_T(sc_read_since_returns_exactly_the_entries_after, setup, teardown),    \
    SC_T(sc_read_since_older_than_log_is_not_ok, setup, teardown),             \
    SC_T(sc_read_returns_snapshots_ordered_by_offset, setup, teardown),        \
    SC_T(sc_epoch_is_stable_across_reads_and_appends, setup, teardown),        \
    SC_T(sc_epoch_changes_after_the_state_expires, setup, teardown),           \
    SC_T(sc_history_is_included_when_asked, setup, teardown),          \
    SC_T(sc_every_key_has_a_ttl, setup, teardown),                             \
    SC_T(sc_not_ready_is_refused, setup, teardown),                            \
    SC_T(sc_close_cancels_pending_stream_ops, setup, teardown),                \
    SC_T(sc_invalid_arguments_are_refused, setup, teardown)

#endif
