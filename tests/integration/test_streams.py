"""Zero-loss streaming: the defects of the original system
(PROTOCOL.md §9, original-system.md §12-§13) as exact scenarios, and slow
consumers (PROTOCOL.md §3, docs/protocol.md "Slow consumers").

Producers: in Redis mode the test is the Python AI service (FakeAI:
partials PUBLISHed on chat:stream:{sid}, the final PUBLISHed and only then
RPUSHed to chat:history:{sid}); in embedded mode POST /api/chat with the
demo upstream. Every socket is checked with sgtest.check_socket: offsets
strictly increasing (+1 unless partials were coalesced), per message
content growing as a prefix chain and nothing after the final."""

import asyncio
import random
import time
import uuid

import pytest

import sgtest
from sgtest import FakeAI, assert_silent, await_until, check_socket, \
    msg_frames, open_session, recv_json, recv_until, run, words_text

from conftest import REPO

MODES = ["embedded", "redis"]
ANSWER0 = sgtest.demo_answer(0, REPO)      # "hello" picks answer 0
ANSWER4 = sgtest.demo_answer(4, REPO)      # "what ..." picks answer 4


def new_sid():
    return "st-" + uuid.uuid4().hex[:10]


def is_final(f):
    return f.get("type") == "message" and f["data"]["is_complete"] is True


def finals_in(frames):
    return [f for f in frames if is_final(f)]


def nfinals(n):
    seen = []

    def pred(f):
        if is_final(f):
            seen.append(f)
        return len(seen) >= n
    return pred


def post_chat(s, sid, text="hello"):
    r = s.http("POST", "/api/chat",
               {"session_id": sid, "message": text, "user_id": "u1"})
    assert r.status == 200, f"POST /api/chat answered {r!r}"
    return r.json()


def coalesced(s):
    return s.metric("stream_coalesced_frames_total")


def appended(s):
    return s.metric("stream_ingest_messages_total", result="appended")


async def wait_appended(s, n, what="appends"):
    await await_until(lambda: appended(s) >= n, timeout=5,
                      what=f"{n} {what} (stream_ingest_messages_total)")


async def subscribed(ai):
    await await_until(ai.subscribed, timeout=3,
                      what=f"SUBSCRIBE chat:stream:{ai.sid}")


# ------------------------------------------------------------ defect 1


@pytest.mark.parametrize("watcher_stays", [True, False],
                         ids=["watcher-stays", "watcher-left"])
def test_a_final_published_before_it_is_stored_reaches_a_client_connecting_in_between_exactly_once(  # noqa: E501
        make_server, watcher_stays):
    s = make_server("redis")
    sid, mid, uid = new_sid(), str(uuid.uuid4()), str(uuid.uuid4())
    ai = FakeAI(s.redis, sid)
    chunks, contents = words_text(5)

    async def body():
        a, _ = await open_session(s.port, sid)
        await subscribed(ai)
        ai.store(sgtest.py_msg(uid, sid, "user", "question?", None, True))
        for ch, co in zip(chunks, contents):
            ai.partial(mid, co, ch)
        await recv_until(a, lambda f: f.get("offset") == 5)
        if not watcher_stays:
            await a.close()       # the session lingers: an answer in flight
        final = ai.publish_final(mid, contents[-1])
        await wait_appended(s, 6)
        # B connects after the PUBLISH and before the RPUSH
        b, wb = await open_session(s.port, sid)
        assert wb["offset"] == 6, wb
        fb = await recv_until(b, is_final, timeout=5)
        ai.store(final)
        await assert_silent(b, 300)
        hist = [f for f in fb if f["type"] == "history"]
        assert len(hist) == 1 and [m["message_id"] for m in
                                   hist[0]["messages"]] == [uid], fb
        msgs = msg_frames(fb)
        assert len(msgs) == 1, f"expected only the final, got {msgs}"
        assert msgs[0]["data"]["content"] == contents[-1]
        assert msgs[0]["offset"] == 6 and msgs[0]["index"] == 5
        # C connects after the RPUSH: the final is in history, not repeated
        c, _ = await open_session(s.port, sid)
        hc = await recv_json(c)
        assert hc["type"] == "history", hc
        assert [(m["message_id"], m["is_complete"]) for m in
                hc["messages"]] == [(uid, True), (mid, True)], hc
        assert hc["messages"][1]["content"] == contents[-1]
        await assert_silent(c, 300)
        for w in (a, b, c):
            await w.close()

    run(body(), 20)
    ai.close()


# ------------------------------------------------------------ defect 2


@pytest.mark.parametrize("mode", MODES)
def test_twenty_clients_connecting_at_random_moments_while_an_answer_streams_each_get_every_frame_and_the_exact_final(  # noqa: E501
        make_server, mode):
    s = make_server(mode, {"demo": {"words_per_second": 150}})
    sid = new_sid()
    rnd = random.Random(2)
    n = 300
    chunks, contents = words_text(n)
    mid = str(uuid.uuid4())
    expected = contents[-1] if mode == "redis" else ANSWER0
    c0 = coalesced(s)

    async def client(delay):
        await asyncio.sleep(delay)
        ws, _ = await open_session(s.port, sid)
        frames = await recv_until(ws, is_final, timeout=15)
        await assert_silent(ws, 100)
        await ws.close()
        return frames

    async def produce():
        if mode == "embedded":
            post_chat(s, sid)
            return
        ai = FakeAI(s.redis, sid)
        await subscribed(ai)
        for k, (ch, co) in enumerate(zip(chunks, contents)):
            ai.partial(mid, co, ch)
            if k % 3 == 0:
                await asyncio.sleep(0.005)
        ai.final(mid, contents[-1])
        ai.close()

    async def body():
        anchor, _ = await open_session(s.port, sid)
        tasks = [asyncio.ensure_future(client(rnd.uniform(0, 0.45)))
                 for _ in range(20)]
        await produce()
        results = [await recv_until(anchor, is_final, timeout=15)]
        results += await asyncio.gather(*tasks)
        await anchor.close()
        return results

    results = run(body(), 40)
    contiguous = coalesced(s) == c0
    for i, frames in enumerate(results):
        finals = check_socket(frames, contiguous=contiguous)
        assert len(finals) == 1, f"client {i}: {finals}"
        (final,) = finals.values()
        assert final["content"] == expected, f"client {i}"
    # the anchor was there from the start: it saw the last chunk of every
    # coalesced run, and every chunk when nothing was coalesced
    assert msg_frames(results[0])[-1]["offset"] == len(expected.split()) + 1
    if contiguous:
        assert len(msg_frames(results[0])) == len(expected.split()) + 1


# ------------------------------------------------------------ defect 3


@pytest.mark.parametrize("mode", MODES)
def test_a_reload_mid_answer_shows_the_latest_partial_at_once_before_the_next_word(  # noqa: E501
        make_server, mode):
    s = make_server(mode, {"demo": {"words_per_second": 2}})
    sid = new_sid()
    chunks, contents = words_text(6)
    mid = str(uuid.uuid4())

    async def body():
        a, _ = await open_session(s.port, sid)
        if mode == "redis":
            ai = FakeAI(s.redis, sid)
            await subscribed(ai)
            for ch, co in zip(chunks[:3], contents[:3]):
                ai.partial(mid, co, ch)
            fa = await recv_until(a, lambda f: f.get("offset") == 3)
        else:
            post_chat(s, sid)
            fa = await recv_until(a, lambda f: f.get("offset") == 2,
                                  timeout=5)
        latest = msg_frames(fa)[-1]
        t0 = time.monotonic()
        b, wb = await open_session(s.port, sid)
        fb = await recv_until(b, lambda f: f.get("type") == "message",
                              timeout=2)
        took = time.monotonic() - t0
        first = fb[-1]
        assert first["data"]["content"] == latest["data"]["content"], \
            (first, latest)
        assert (first["offset"], first["index"]) == \
            (latest["offset"], latest["index"])
        assert first["data"]["is_complete"] is False
        assert wb["offset"] == latest["offset"]
        assert took < 0.4, f"catch-up took {took:.3f}s (a word is 0.5s)"
        # the answer then ends the same way for both
        if mode == "redis":
            for ch, co in zip(chunks[3:], contents[3:]):
                ai.partial(mid, co, ch)
            ai.final(mid, contents[-1])
            ai.close()
            want = contents[-1]
        else:
            amid = latest["data"]["message_id"]
            r = s.http("POST", "/api/cancel",
                       {"session_id": sid, "message_id": amid})
            assert r.json()["status"] == "cancelled", r
            want = None
        fa += await recv_until(a, is_final, timeout=5)
        fb += await recv_until(b, is_final, timeout=5)
        (fin_a,) = check_socket(fa, contiguous=False).values()
        (fin_b,) = check_socket(fb, contiguous=False).values()
        assert fin_a == fin_b
        if want is not None:
            assert fin_a["content"] == want
        else:
            assert fin_a["content"].endswith("\n\n[Cancelled]"), fin_a
        await a.close()
        await b.close()

    run(body(), 20)


# ------------------------------------------------------------ defect 6


@pytest.mark.parametrize("mode", MODES)
def test_three_sockets_get_each_chunk_of_a_long_answer_exactly_once(
        make_server, mode):
    """Two full-mode sockets (coalescing may merge queued partials: then
    offsets still increase) and one delta-mode socket (nothing may be
    merged: every offset exactly once)."""
    s = make_server(mode, {"demo": {"words_per_second": 200}})
    sid, mid = new_sid(), str(uuid.uuid4())
    n = 200 if mode == "redis" else len(ANSWER0.split())
    chunks, contents = words_text(n)
    c0 = coalesced(s)

    async def body():
        socks = [(await open_session(s.port, sid, **q))[0]
                 for q in ({}, {}, {"mode": "delta"})]
        if mode == "redis":
            ai = FakeAI(s.redis, sid)
            await subscribed(ai)
            for k, (ch, co) in enumerate(zip(chunks, contents)):
                ai.partial(mid, co, ch)
                if k % 10 == 0:
                    await asyncio.sleep(0.002)
            ai.final(mid, contents[-1])
            ai.close()
        else:
            post_chat(s, sid)
        out = [await recv_until(w, is_final, timeout=10) for w in socks]
        for w in socks:
            await assert_silent(w, 200)
            await w.close()
        return out

    results = run(body(), 30)
    contiguous = coalesced(s) == c0
    want = contents[-1] if mode == "redis" else ANSWER0
    for i, frames in enumerate(results):
        delta = i == 2
        fin = check_socket(frames, contiguous=contiguous or delta,
                           delta=delta)
        assert fin[msg_frames(frames)[-1]["data"]["message_id"]][
            "content"] == want
        offs = [f["offset"] for f in msg_frames(frames)]
        assert offs[-1] == n + 1
        if contiguous or delta:
            assert offs == list(range(1, n + 2)), offs
            assert [f["index"] for f in msg_frames(frames)] == \
                list(range(n + 1))


# ------------------------------------------------------------ defect 7


@pytest.mark.parametrize("mode", MODES)
def test_a_partial_never_follows_its_final_when_they_are_published_back_to_back(  # noqa: E501
        make_server, mode):
    s = make_server(mode, {"demo": {"words_per_second": 300}})
    sid = new_sid()
    count = 100 if mode == "redis" else 10
    mids = [str(uuid.uuid4()) for _ in range(count)]
    c0 = coalesced(s)

    async def body():
        socks = [(await open_session(s.port, sid, **q))[0]
                 for q in ({}, {"mode": "delta"})]
        if mode == "redis":
            ai = FakeAI(s.redis, sid)
            await subscribed(ai)
            for i, mid in enumerate(mids):
                ai.partial(mid, f"a{i} ", f"a{i} ")
                ai.final(mid, f"a{i} b{i}")
                # a late duplicate of the partial (another node's copy)
                ai.partial(mid, f"a{i} ", f"a{i} ")
            ai.close()
        else:
            for _ in range(count):
                post_chat(s, sid)
        out = [await recv_until(w, nfinals(count), timeout=20,
                                max_frames=10000) for w in socks]
        for w in socks:
            await assert_silent(w, 300)
            await w.close()
        return out

    results = run(body(), 40)
    contiguous = coalesced(s) == c0
    for i, frames in enumerate(results):
        delta = i == 1          # the delta socket: nothing may be merged
        finals = check_socket(frames, contiguous=contiguous or delta,
                              delta=delta)
        assert len(finals) == count and all(finals.values()), finals
        if mode == "redis" and (contiguous or delta):
            assert [f["offset"] for f in msg_frames(frames)] == \
                list(range(1, 2 * count + 1))
        if mode == "redis":
            assert {m: d["content"] for m, d in finals.items()} == \
                {m: f"a{i} b{i}" for i, m in enumerate(mids)}
        else:
            assert {d["content"] for d in finals.values()} == {ANSWER0}


# ------------------------------------------------------------ defect 14


def test_messages_with_extra_fields_escapes_and_no_chunk_flow_with_offsets(
        make_server):
    s = make_server("redis")
    sid, mid = new_sid(), str(uuid.uuid4())
    words = ["Xin", "chào,", "đây", "là", "\"thử\"", "😀", "\\n", "ok"]
    pieces, acc, payloads = [], "", []
    for k, w in enumerate(words):
        piece = w + (" " if k < len(words) - 1 else "")
        acc += piece
        pieces.append(piece)
        payloads.append(sgtest.py_msg(
            mid, sid, "assistant", acc, piece, False,
            style="pydantic" if k % 2 else "dumps",
            extra={"model": "x", "usage": {"t": k}} if k == 1 else None,
            drop=("chunk",) if k == 2 else ()))
    payloads.append(sgtest.py_msg(mid, sid, "assistant", acc, None, True,
                                  style="dumps", drop=("chunk",),
                                  extra={"finish_reason": "stop"}))

    async def body():
        ws, _ = await open_session(s.port, sid)
        wd, _ = await open_session(s.port, sid, mode="delta")
        with s.redis.client() as c:
            await await_until(lambda: c.numsub(f"chat:stream:{sid}") >= 1)
            for p in payloads:
                c.publish(f"chat:stream:{sid}", p)
                await asyncio.sleep(0.01)       # no coalescing wanted
        frames = await recv_until(ws, is_final)
        dframes = await recv_until(wd, is_final)
        await assert_silent(ws, 200)
        await ws.close()
        await wd.close()
        return frames, dframes

    frames, dframes = run(body(), 15)
    for fs, delta in ((frames, False), (dframes, True)):
        (final,) = check_socket(fs, delta=delta).values()
        msgs = msg_frames(fs)
        assert [f["offset"] for f in msgs] == list(range(1, len(words) + 2))
        assert final["content"] == acc
        assert "model" not in msgs[1]["data"]
    assert [f["data"]["chunk"] for f in msg_frames(frames)] == \
        pieces + [None]
    assert [f["data"]["chunk"] for f in msg_frames(dframes)] == \
        pieces + [""]
    assert set(msg_frames(frames)[1]["data"]) == sgtest.CHATMSG_KEYS


# ------------------------------------------------------------ defect 15


@pytest.mark.parametrize("mode", MODES)
def test_every_frame_carries_the_producers_timestamp(make_server, mode):
    s = make_server(mode, {"demo": {"words_per_second": 500}})
    sid, mid = new_sid(), str(uuid.uuid4())
    chunks, contents = words_text(6)
    base = 1700000000123

    async def body():
        ws, _ = await open_session(s.port, sid)
        t0 = int(time.time() * 1000)
        if mode == "redis":
            ai = FakeAI(s.redis, sid)
            await subscribed(ai)
            for k, (ch, co) in enumerate(zip(chunks, contents)):
                ai.partial(mid, co, ch, ts=base + 7 * k)
            ai.final(mid, contents[-1], ts=base + 100)
            ai.close()
        else:
            post_chat(s, sid)
        frames = await recv_until(ws, is_final)
        t1 = int(time.time() * 1000)
        await ws.close()
        return frames, t0, t1

    frames, t0, t1 = run(body(), 15)
    check_socket(frames, contiguous=False)
    ts = [f["data"]["timestamp"] for f in msg_frames(frames)]
    if mode == "redis":
        # frame by frame (queued partials may have been merged)
        assert [(f["index"], f["data"]["timestamp"]) for f in
                msg_frames(frames)] == [
            (f["index"], base + 7 * f["index"] if f["index"] < 6
             else base + 100) for f in msg_frames(frames)]
        assert msg_frames(frames)[-1]["data"]["timestamp"] == base + 100
    else:
        assert ts == sorted(ts) and t0 - 5 <= ts[0] and ts[-1] <= t1 + 5, \
            (t0, ts, t1)
        hist = s.http("GET", f"/api/history/{sid}").json()["messages"]
        assert [m["role"] for m in hist] == ["user", "assistant"]
        assert hist[1]["timestamp"] == ts[-1]
        assert hist[0]["timestamp"] <= ts[0]


# ------------------------------------------------------------ defect 30


@pytest.mark.parametrize("mode", MODES)
def test_two_interleaved_answers_in_one_session_each_end_with_their_own_final(  # noqa: E501
        make_server, mode):
    s = make_server(mode, {"demo": {"words_per_second": 100}})
    sid = new_sid()
    ma, mb = str(uuid.uuid4()), str(uuid.uuid4())
    ca, ta = words_text(10, "a")
    cb, tb = words_text(15, "b")

    c0 = coalesced(s)

    async def body():
        ws, _ = await open_session(s.port, sid)
        wd, _ = await open_session(s.port, sid, mode="delta")
        if mode == "redis":
            ai = FakeAI(s.redis, sid)
            await subscribed(ai)
            for k in range(15):
                if k < 10:
                    ai.partial(ma, ta[k], ca[k])
                if k == 10:
                    ai.final(ma, ta[-1])
                ai.partial(mb, tb[k], cb[k])
            ai.final(mb, tb[-1])
            ai.close()
        else:
            post_chat(s, sid, "hello")
            post_chat(s, sid, "what is this")
        frames = await recv_until(ws, nfinals(2), timeout=10)
        dframes = await recv_until(wd, nfinals(2), timeout=10)
        await assert_silent(ws, 300)
        await ws.close()
        await wd.close()
        return frames, dframes

    frames, dframes = run(body(), 20)
    contiguous = coalesced(s) == c0
    finals = check_socket(frames, contiguous=contiguous)
    dfinals = check_socket(dframes, delta=True)
    assert {m: d["content"] for m, d in dfinals.items()} == \
        {m: d["content"] for m, d in finals.items()}
    if contiguous:
        assert [f["offset"] for f in msg_frames(frames)] == \
            [f["offset"] for f in msg_frames(dframes)]
    msgs = msg_frames(dframes)  # the delta socket got every chunk
    assert [f["offset"] for f in msgs] == list(range(1, len(msgs) + 1))
    if mode == "redis":
        assert {m: d["content"] for m, d in finals.items()} == \
            {ma: ta[-1], mb: tb[-1]}
        sizes = {ma: 11, mb: 16}
    else:
        assert sorted(d["content"] for d in finals.values()) == \
            sorted([ANSWER0, ANSWER4])
        sizes = {m: len(d["content"].split()) + 1 for m, d in finals.items()}
    for m, size in sizes.items():
        assert [f["index"] for f in msgs if f["data"]["message_id"] == m] \
            == list(range(size)), m
    # interleaved indeed: the first final comes after a frame of the other
    first_final = next(i for i, f in enumerate(msgs) if is_final(f))
    other = msgs[first_final]["data"]["message_id"]
    assert any(f["data"]["message_id"] != other for f in
               msgs[:first_final])


# ------------------------------------------------------ slow consumers


def slow_pieces(n, size):
    """n words of about `size` bytes each, as cumulative contents."""
    chunks = [f"w{k}-" + "x" * size + " " for k in range(n)]
    contents, acc = [], ""
    for c in chunks:
        acc += c
        contents.append(acc)
    return chunks, contents


def publish_paced(redis_proc, sid, mid, chunks, contents, every=5,
                  pause=0.001):
    """FakeAI answer from a worker thread (so the test's readers keep
    reading): a short pause every `every` chunks, then the final."""
    ai = FakeAI(redis_proc, sid)
    try:
        for k, (ch, co) in enumerate(zip(chunks, contents)):
            ai.partial(mid, co, ch)
            if k % every == 0:
                time.sleep(pause)
        ai.final(mid, contents[-1])
        return time.monotonic()
    finally:
        ai.close()


def publish_many(redis_proc, sid, mids, size):
    """FakeAI answers from a worker thread: per message id one partial of
    `size` bytes and its final (the volume a slow socket must absorb grows
    linearly, unlike one long cumulative answer)."""
    ai = FakeAI(redis_proc, sid)
    try:
        for i, mid in enumerate(mids):
            text = f"m{i}-" + "y" * size
            ai.partial(mid, text, text)
            ai.final(mid, text)
            time.sleep(0.003)
        return time.monotonic()
    finally:
        ai.close()


def check_rss(s, rss0):
    """Server RSS stays within +50 MB (skipped under ASan, whose
    quarantine keeps freed memory resident)."""
    with open(f"/proc/{s.proc.pid}/maps") as f:
        if "libasan" in f.read():
            return
    rss1 = sgtest.rss_kb(s.proc.pid)
    assert rss1 - rss0 < 50 * 1024, f"RSS grew {rss0} -> {rss1} KiB"


def test_a_client_that_never_reads_is_coalesced_in_full_mode_and_the_others_are_unaffected(  # noqa: E501
        make_server):
    s = make_server("redis", {"stream": {"max_pending_chunks": 50}})
    sid, mid = new_sid(), str(uuid.uuid4())
    n = 300
    chunks, contents = slow_pieces(n, 100)
    co0 = coalesced(s)
    rss0 = sgtest.rss_kb(s.proc.pid)

    async def body():
        fast, _ = await open_session(s.port, sid)
        path = sgtest.ws_url(s.port, session_id=sid, user_id="u2",
                             token="dev-token")
        slow = sgtest.RawWs(s.port, path.split(str(s.port), 1)[1],
                            rcvbuf=2048)
        await subscribed(FakeAI(s.redis, sid))
        producer = asyncio.get_running_loop().run_in_executor(
            None, publish_paced, s.redis, sid, mid, chunks, contents, 2)
        got = await recv_until(fast, is_final, timeout=20,
                               max_frames=n + 10)
        t_got = time.monotonic()
        t_final = await producer
        await fast.close()
        return got, slow, t_got - t_final

    got, slow, lag = run(body(), 60)
    try:
        # the reader that keeps up gets the exact final promptly (its own
        # queued partials may be merged too: offsets still increase)
        fin = check_socket(got, contiguous=False)
        assert fin[mid]["content"] == contents[-1]
        assert msg_frames(got)[-1]["offset"] == n + 1
        assert lag < 1.0, f"fast reader got the final {lag:.2f}s late"
        check_rss(s, rss0)
        # the stalled one catches up: old partials, then the merged rest
        frames = slow.read_all(is_final, timeout=10)
        assert slow.close_code is None and not slow.eof, \
            f"closed {slow.close_code}: a merged queue stays in its limits"
        fin = check_socket(frames, contiguous=False)
        assert fin[mid]["content"] == contents[-1]
        assert len(msg_frames(frames)) < n + 1
        assert coalesced(s) > co0
    finally:
        slow.close()


def test_a_client_that_never_reads_in_delta_mode_is_closed_4008_and_the_others_get_every_frame(  # noqa: E501
        make_server):
    s = make_server("redis", {"stream": {"max_pending_chunks": 200}})
    sid = new_sid()
    count, size = 400, 10000
    mids = [str(uuid.uuid4()) for _ in range(count)]
    closes0 = s.metric("websocket_slow_consumer_closes_total")
    rss0 = sgtest.rss_kb(s.proc.pid)

    async def body():
        fast, _ = await open_session(s.port, sid, mode="delta")
        path = sgtest.ws_url(s.port, session_id=sid, user_id="u2",
                             token="dev-token", mode="delta")
        slow = sgtest.RawWs(s.port, path.split(str(s.port), 1)[1],
                            rcvbuf=2048)
        await subscribed(FakeAI(s.redis, sid))
        producer = asyncio.get_running_loop().run_in_executor(
            None, publish_many, s.redis, sid, mids, size)
        got = await recv_until(fast, nfinals(count), timeout=20,
                               max_frames=3 * count)
        t_got = time.monotonic()
        t_final = await producer
        await fast.close()
        return got, slow, t_got - t_final

    got, slow, lag = run(body(), 60)
    try:
        fin = check_socket(got, contiguous=True, delta=True)
        assert [fin[m]["content"] for m in mids] == \
            [f"m{i}-" + "y" * size for i in range(count)]
        assert [f["offset"] for f in msg_frames(got)] == \
            list(range(1, 2 * count + 1))
        assert lag < 1.0, f"fast reader got the last final {lag:.2f}s late"
        check_rss(s, rss0)
        sgtest.wait_until(
            lambda: s.metric("websocket_slow_consumer_closes_total") >
            closes0, timeout=5, what="websocket_slow_consumer_closes_total")
        frames = slow.read_all(lambda f: False, timeout=10)
        assert slow.close_code == 4008 or slow.eof, \
            f"slow delta reader not closed: {len(frames)} frames read, " \
            f"close code {slow.close_code}"
        assert len(msg_frames(frames)) < 2 * count
        check_socket(frames, contiguous=True, delta=True)
    finally:
        slow.close()


def test_a_reader_that_reads_slowly_ends_with_the_exact_final_through_coalesced_partials(  # noqa: E501
        make_server):
    s = make_server("redis", {"stream": {"max_pending_chunks": 50}})
    sid, mid = new_sid(), str(uuid.uuid4())
    n = 400
    chunks, contents = slow_pieces(n, 200)
    co0 = coalesced(s)

    async def body():
        url = s.ws(session_id=sid, user_id="u1", token="dev-token")
        ws = await sgtest.ws_connect(url, compression=None, max_queue=1,
                                     read_limit=4096)
        assert (await recv_json(ws))["type"] == "welcome"
        ai = FakeAI(s.redis, sid)
        await subscribed(ai)
        frames = []

        async def read():
            while True:
                f = await recv_json(ws, timeout=15)
                frames.append(f)
                if is_final(f):
                    return
                await asyncio.sleep(0.005)

        reader = asyncio.ensure_future(read())
        for ch, co in zip(chunks, contents):
            ai.partial(mid, co, ch)
        ai.final(mid, contents[-1])
        ai.close()
        await reader
        await assert_silent(ws, 200)
        await ws.close()
        return frames

    frames = run(body(), 40)
    fin = check_socket(frames, contiguous=False)
    assert fin[mid]["content"] == contents[-1]
    assert msg_frames(frames)[-1]["offset"] == n + 1
    assert coalesced(s) > co0, "a slow full-mode reader must be coalesced"
    assert len(msg_frames(frames)) < n + 1
