"""Recovery: compat `reconnect` (defect 11), simultaneous recoveries
(defect 24), a network cut with the unchanged frontend (defect 26),
native resume on connect (`since`/`epoch`) and on an open socket
(`resume`), lingering sessions in Redis mode, and epoch changes after
stream.recovery_ttl (PROTOCOL.md §2-§3, docs/protocol.md).

Producers as in test_streams.py: FakeAI in Redis mode, the demo upstream
(POST /api/chat) in embedded mode."""

import asyncio
import uuid

import pytest

import sgtest
from sgtest import FakeAI, assert_silent, await_until, check_socket, \
    msg_frames, open_session, recv_json, recv_until, run, words_text

from conftest import REPO

MODES = ["embedded", "redis"]
ANSWER0 = sgtest.demo_answer(0, REPO)


def new_sid():
    return "rc-" + uuid.uuid4().hex[:10]


def is_final(f):
    return f.get("type") == "message" and f["data"]["is_complete"] is True


def is_type(t):
    return lambda f: f.get("type") == t


def at_offset(n):
    return lambda f: f.get("type") == "message" and f["offset"] >= n


def post_chat(s, sid, text="hello"):
    r = s.http("POST", "/api/chat",
               {"session_id": sid, "message": text, "user_id": "u1"})
    assert r.status == 200, f"POST /api/chat answered {r!r}"


def appended(s):
    return s.metric("stream_ingest_messages_total", result="appended")


async def subscribed(ai):
    await await_until(ai.subscribed, timeout=3,
                      what=f"SUBSCRIBE chat:stream:{ai.sid}")


def send(ws, obj):
    import json
    return ws.send(json.dumps(obj))


# ------------------------------------------------------------ defect 11


@pytest.mark.parametrize("mode", MODES)
def test_compat_reconnect_mid_answer_sends_the_latest_content_and_recovered_with_the_chunks_missed(  # noqa: E501
        make_server, mode):
    s = make_server(mode, {"demo": {"words_per_second": 20}})
    sid, mid = new_sid(), str(uuid.uuid4())
    chunks, contents = words_text(5)

    async def body():
        ws, _ = await open_session(s.port, sid)
        if mode == "redis":
            ai = FakeAI(s.redis, sid)
            await subscribed(ai)
            for ch, co in zip(chunks, contents):
                ai.partial(mid, co, ch)
            seen = await recv_until(ws, at_offset(5))
        else:
            post_chat(s, sid)
            seen = await recv_until(ws, at_offset(3))
        m = msg_frames(seen)[-1]["data"]["message_id"]
        await send(ws, {"type": "reconnect", "messageId": m,
                        "lastChunkIndex": 1})
        frames = await recv_until(ws, is_type("recovery_status"))
        status = frames[-1]
        reply = frames[-2]
        assert reply["type"] == "message" and \
            reply["data"]["message_id"] == m, frames
        assert reply["data"]["is_complete"] is False
        assert status == {"type": "recovery_status", "status": "recovered",
                          "chunksRecovered": reply["index"] - 1}
        live = msg_frames(seen + frames[:-2])
        if mode == "redis":
            assert (reply["offset"], reply["index"]) == (5, 4)
            assert reply["data"]["content"] == contents[-1]
            assert status["chunksRecovered"] == 3
            ai.final(mid, contents[-1])
            ai.close()
        else:
            # the newest state: what the socket last saw live
            assert reply["data"]["content"] == live[-1]["data"]["content"]
            assert reply["index"] == live[-1]["index"]
            r = s.http("POST", "/api/cancel",
                       {"session_id": sid, "message_id": m})
            assert r.json()["status"] == "cancelled"
        rest = await recv_until(ws, is_final)
        check_socket(live + rest, contiguous=False)
        await ws.close()

    run(body(), 20)


@pytest.mark.parametrize("mode", MODES)
def test_compat_reconnect_after_the_end_sends_the_final_once_and_completed(
        make_server, mode):
    s = make_server(mode, {"demo": {"words_per_second": 1000}})
    sid, mid = new_sid(), str(uuid.uuid4())
    chunks, contents = words_text(4)

    async def body():
        ws, _ = await open_session(s.port, sid)
        if mode == "redis":
            ai = FakeAI(s.redis, sid)
            await subscribed(ai)
            for ch, co in zip(chunks, contents):
                ai.partial(mid, co, ch)
            ai.final(mid, contents[-1])
            ai.close()
            want = contents[-1]
        else:
            post_chat(s, sid)
            want = ANSWER0
        done = await recv_until(ws, is_final)
        m = done[-1]["data"]["message_id"]
        await send(ws, {"type": "reconnect", "messageId": m,
                        "lastChunkIndex": 2})
        frames = await recv_until(ws, is_type("recovery_status"))
        assert [f["type"] for f in frames] == ["message", "recovery_status"]
        assert frames[0]["data"]["content"] == want
        assert frames[0]["data"]["is_complete"] is True
        assert frames[0]["data"]["message_id"] == m
        assert frames[1] == {"type": "recovery_status",
                             "status": "completed", "chunksRecovered": 0}
        await assert_silent(ws, 200)
        await ws.close()

    run(body(), 20)


def test_compat_reconnect_for_a_final_found_only_in_history_says_completed(
        make_server):
    s = make_server("redis")
    sid, mid = new_sid(), str(uuid.uuid4())

    async def body():
        ws, _ = await open_session(s.port, sid)
        ai = FakeAI(s.redis, sid)
        ai.store(sgtest.py_msg(mid, sid, "assistant", "stored text", None,
                               True))
        ai.close()
        await send(ws, {"type": "reconnect", "messageId": mid,
                        "lastChunkIndex": 0})
        frames = await recv_until(ws, is_type("recovery_status"))
        assert [f["type"] for f in frames] == ["message", "recovery_status"]
        assert frames[0]["data"]["content"] == "stored text"
        assert frames[0]["data"]["is_complete"] is True
        assert frames[1]["status"] == "completed"
        await ws.close()

    run(body(), 10)


@pytest.mark.parametrize("mode", MODES)
def test_compat_reconnect_for_an_unknown_id_says_not_found_or_expired_and_a_bad_one_fails(  # noqa: E501
        make_server, mode):
    s = make_server(mode)
    sid = new_sid()

    async def body():
        ws, _ = await open_session(s.port, sid)
        for last, status in ((-1, "not_found"), (None, "not_found"),
                             (0, "expired"), (7, "expired")):
            req = {"type": "reconnect", "messageId": "no-such-id"}
            if last is not None:
                req["lastChunkIndex"] = last
            await send(ws, req)
            assert await recv_json(ws) == {
                "type": "recovery_status", "status": status,
                "chunksRecovered": 0}, req
        for bad in ({"type": "reconnect"},
                    {"type": "reconnect", "messageId": ""},
                    {"type": "reconnect", "messageId": "x",
                     "lastChunkIndex": -2},
                    {"type": "reconnect", "messageId": "x",
                     "lastChunkIndex": "3"}):
            await send(ws, bad)
            e = await recv_json(ws)
            assert (e["type"], e["error"]) == ("error", "Recovery failed"), \
                (bad, e)
            assert sgtest.ISO_RE.match(e["timestamp"])
        await sgtest.ping_ok(ws)
        await ws.close()

    run(body(), 10)


# ------------------------------------------------------------ defect 24


@pytest.mark.parametrize("mode", MODES)
def test_two_simultaneous_recoveries_of_one_session_both_succeed(
        make_server, mode):
    s = make_server(mode, {"demo": {"words_per_second": 1000}})
    sid, mid = new_sid(), str(uuid.uuid4())
    chunks, contents = words_text(6)

    async def body():
        a, wa = await open_session(s.port, sid)
        b, _ = await open_session(s.port, sid)
        if mode == "redis":
            ai = FakeAI(s.redis, sid)
            await subscribed(ai)
            for ch, co in zip(chunks, contents):
                ai.partial(mid, co, ch)
            ai.final(mid, contents[-1])
            ai.close()
        else:
            post_chat(s, sid)
        fa = await recv_until(a, is_final)
        await recv_until(b, is_final)
        last = fa[-1]["offset"]
        m = fa[-1]["data"]["message_id"]
        epoch = wa["epoch"]
        # both resume at once, both reconnect at once
        await asyncio.gather(
            send(a, {"type": "resume", "since": 2, "epoch": epoch}),
            send(b, {"type": "resume", "since": 2, "epoch": epoch}))
        ra, rb = await asyncio.gather(recv_until(a, is_type("resumed")),
                                      recv_until(b, is_type("resumed")))
        for r in (ra, rb):
            assert r[-1] == {"type": "resumed", "recovered": True,
                             "from": 3, "to": last}, r
            assert [f["offset"] for f in msg_frames(r)] == [last]
            assert r[0]["data"]["is_complete"] is True
        await asyncio.gather(
            send(a, {"type": "reconnect", "messageId": m,
                     "lastChunkIndex": 1}),
            send(b, {"type": "reconnect", "messageId": m,
                     "lastChunkIndex": 1}))
        for r in await asyncio.gather(
                recv_until(a, is_type("recovery_status")),
                recv_until(b, is_type("recovery_status"))):
            assert r[-1]["status"] == "completed", r
        # and two connects with since at once
        url_q = {"since": 2, "epoch": epoch}
        (c, wc), (d, wd) = await asyncio.gather(
            open_session(s.port, sid, **url_q),
            open_session(s.port, sid, **url_q))
        for w, ws in ((wc, c), (wd, d)):
            assert w["recovered"] is True, w
            f = await recv_until(ws, is_final)
            assert [x["offset"] for x in msg_frames(f)] == [last]
        for ws in (a, b, c, d):
            await ws.close()

    run(body(), 20)


# ------------------------------------------------------------ defect 26


# redis-linger0: the final reaches streamgate only through chat:history
# (nobody was subscribed); the repaired final must not be sent twice.
@pytest.mark.parametrize("mode", MODES + ["redis-linger0"])
def test_after_a_network_cut_mid_answer_the_unchanged_frontend_ends_with_the_full_final_exactly_once(  # noqa: E501
        make_server, mode):
    linger = {}
    if mode == "redis-linger0":
        # nobody ingests while the client is away: the final reaches
        # streamgate only through chat:history
        mode, linger = "redis", {"stream": {"linger": 0}}
    s = make_server(mode, {"demo": {"words_per_second": 40}, **linger})
    sid, mid = new_sid(), str(uuid.uuid4())
    n = 60
    chunks, contents = words_text(n)

    async def produce_rest(ai, start):
        for ch, co in zip(chunks[start:], contents[start:]):
            ai.partial(mid, co, ch)
            await asyncio.sleep(0.025)
        ai.final(mid, contents[-1])

    async def body():
        ws, _ = await open_session(s.port, sid)
        task = None
        if mode == "redis":
            ai = FakeAI(s.redis, sid)
            await subscribed(ai)
            ai.store(sgtest.py_msg(str(uuid.uuid4()), sid, "user", "q?",
                                   None, True))
            for ch, co in zip(chunks[:5], contents[:5]):
                ai.partial(mid, co, ch)
            await recv_until(ws, at_offset(5))
            task = asyncio.ensure_future(produce_rest(ai, 5))
            want = contents[-1]
        else:
            post_chat(s, sid)
            await recv_until(ws, at_offset(5))
            want = ANSWER0
        await ws.close()                  # the network cut
        # the answer continues and ends while the client is away
        if task:
            await task
            ai.close()
        await await_until(
            lambda: any(m["role"] == "assistant" for m in s.http(
                "GET", f"/api/history/{sid}").json()["messages"]),
            timeout=5, what="the final in history")
        await asyncio.sleep(0.2)
        ws, welcome = await open_session(s.port, sid)   # no since
        assert "recovered" not in welcome
        frames = await recv_until(ws, lambda f: True, timeout=3)
        try:
            while True:
                frames.append(await recv_json(ws, 0.5))
        except AssertionError:
            pass
        hist = [m for f in frames if f["type"] == "history"
                for m in f["messages"] if m["role"] == "assistant"]
        msgs = msg_frames(frames)
        finals = [m for m in hist if m["is_complete"]] + \
            [f["data"] for f in msgs if f["data"]["is_complete"]]
        assert [d["content"] for d in finals] == [want], \
            f"final must come exactly once (history or catch-up): " \
            f"history {hist}, message frames {msgs}"
        assert [f["data"]["is_complete"] for f in msgs][-1:] in ([], [True])
        check_socket(frames, contiguous=False)
        await ws.close()

    run(body(), 15)


# ------------------------------------------------- resume on connect


@pytest.mark.parametrize("delta", [False, True], ids=["full", "delta"])
@pytest.mark.parametrize("mode", MODES)
def test_resume_on_connect_replays_exactly_the_offsets_after_since_then_goes_live(  # noqa: E501
        make_server, mode, delta):
    s = make_server(mode, {"demo": {"words_per_second": 100}})
    sid = new_sid()
    m1, m2 = str(uuid.uuid4()), str(uuid.uuid4())
    c1, t1 = words_text(12, "a")
    c2, t2 = words_text(6, "b")
    q = {"mode": "delta"} if delta else {}

    async def body():
        a, wa = await open_session(s.port, sid, **q)
        epoch = wa["epoch"]
        assert isinstance(epoch, str) and len(epoch) == 16, wa
        if mode == "redis":
            anchor, _ = await open_session(s.port, sid)
            ai = FakeAI(s.redis, sid)
            await subscribed(ai)
            for ch, co in zip(c1[:5], t1[:5]):
                ai.partial(m1, co, ch)
            seen = await recv_until(a, at_offset(5))
        else:
            post_chat(s, sid)
            seen = await recv_until(a, at_offset(5))
        await a.close()
        k = msg_frames(seen)[-1]["offset"]
        if mode == "redis":
            # more of m1, and a second answer, while the client is away
            for ch, co in zip(c1[5:9], t1[5:9]):
                ai.partial(m1, co, ch)
            for ch, co in zip(c2[:3], t2[:3]):
                ai.partial(m2, co, ch)
            await await_until(lambda: appended(s) >= 12, timeout=5)
        else:
            await asyncio.sleep(0.15)
        b, wb = await open_session(s.port, sid, since=k, epoch=epoch, **q)
        assert wb["recovered"] is True and wb["epoch"] == epoch, wb
        last = wb["offset"]
        assert last > k
        if mode == "redis":
            assert last == 12
            replay = await recv_until(b, at_offset(12))
            await assert_silent(b, 200)
            if delta:
                assert [f["offset"] for f in msg_frames(replay)] == \
                    list(range(k + 1, 13))
                assert [f["data"]["chunk"] for f in msg_frames(replay)] == \
                    c1[5:9] + c2[:3]
            else:
                assert [(f["offset"], f["data"]["message_id"],
                         f["data"]["content"], f["index"])
                        for f in msg_frames(replay)] == \
                    [(9, m1, t1[8], 8), (12, m2, t2[2], 2)]
            # then live
            for ch, co in zip(c1[9:], t1[9:]):
                ai.partial(m1, co, ch)
            ai.final(m1, t1[-1])
            for ch, co in zip(c2[3:], t2[3:]):
                ai.partial(m2, co, ch)
            ai.final(m2, t2[-1])
            ai.close()
            rest = await recv_until(b, is_final)
            rest += await recv_until(b, is_final)
            live = msg_frames(rest)
            assert live[0]["offset"] == 13 if delta else \
                live[0]["offset"] >= 13     # full: partials may merge
            # the client's view across the reconnect
            check_socket(msg_frames(seen) + replay + rest, contiguous=delta,
                         delta=delta)
            if delta:
                # every delta of m1 exactly once over both sockets
                before = [f for f in msg_frames(seen)]
                text = "".join(f["data"]["chunk"] for f in
                               before + msg_frames(replay + rest)
                               if f["data"]["message_id"] == m1)
                assert text == t1[-1]
            finals = {f["data"]["message_id"]: f["data"]["content"]
                      for f in live if f["data"]["is_complete"]}
            assert finals == {m1: t1[-1], m2: t2[-1]}
            await anchor.close()
        else:
            frames = await recv_until(b, is_final, timeout=5)
            await assert_silent(b, 200)
            assert not [f for f in frames if f["type"] == "history"]
            offs = [f["offset"] for f in msg_frames(frames)]
            assert offs[0] > k and offs[-1] >= last
            check_socket(msg_frames(seen) + frames, contiguous=delta,
                         delta=delta)
            if delta:
                assert offs[0] == k + 1
                text = "".join(f["data"]["chunk"] for f in
                               msg_frames(seen) + msg_frames(frames))
                assert text == ANSWER0 == msg_frames(frames)[-1][
                    "data"]["content"]
            else:
                # one frame for the message touched after k, then live
                # (the replayed frame may be merged with a newer one)
                assert k < offs[0], (k, offs, last)
                assert msg_frames(frames)[-1]["data"]["content"] == ANSWER0
        await b.close()

    run(body(), 20)


@pytest.mark.parametrize("mode", MODES)
def test_resume_with_a_wrong_epoch_is_not_recovered_and_gets_history_and_catch_up(  # noqa: E501
        make_server, mode):
    s = make_server(mode, {"demo": {"words_per_second": 1000}})
    sid = new_sid()

    async def body():
        a, wa = await open_session(s.port, sid)
        post_chat(s, sid)
        done = await recv_until(a, is_final)
        await await_until(lambda: len(s.http(
            "GET", f"/api/history/{sid}").json()["messages"]) == 2)
        b, wb = await open_session(s.port, sid, since=3,
                                   epoch="0123456789abcdef")
        assert wb["recovered"] is False and wb["epoch"] == wa["epoch"], wb
        h = await recv_json(b)
        assert h["type"] == "history"
        assert [m["role"] for m in h["messages"]] == ["user", "assistant"]
        assert h["messages"][1]["content"] == ANSWER0
        await assert_silent(b, 300)  # the final is in history: no repeat
        # a since past the end is not recovered either
        c, wc = await open_session(s.port, sid, since=done[-1]["offset"] + 5,
                                   epoch=wa["epoch"])
        assert wc["recovered"] is False, wc
        assert (await recv_json(c))["type"] == "history"
        socks = [a, b, c]
        if mode == "redis":
            # an answer in flight comes as catch-up after the history
            mid, last = str(uuid.uuid4()), done[-1]["offset"]
            ai = FakeAI(s.redis, sid)
            ai.partial(mid, "x0 ", "x0 ")
            ai.partial(mid, "x0 x1 ", "x1 ")
            ai.close()
            await recv_until(a, at_offset(last + 2))
            d, wd = await open_session(s.port, sid, since=1, epoch="nope")
            socks.append(d)
            assert wd["recovered"] is False, wd
            assert (await recv_json(d))["type"] == "history"
            f = await recv_json(d)
            assert (f["type"], f["offset"], f["data"]["content"],
                    f["data"]["is_complete"]) == \
                ("message", last + 2, "x0 x1 ", False), f
            await assert_silent(d, 200)
        for ws in socks:
            await ws.close()

    run(body(), 15)


def test_resume_from_an_offset_older_than_the_log_is_not_recovered(
        make_server):
    s = make_server("embedded", {"demo": {"words_per_second": 1000},
                                 "stream": {"log_max_len": 5}})
    sid = new_sid()

    async def body():
        a, wa = await open_session(s.port, sid)
        post_chat(s, sid)
        done = await recv_until(a, is_final)
        last = done[-1]["offset"]
        b, wb = await open_session(s.port, sid, since=3, epoch=wa["epoch"])
        assert wb["recovered"] is False and wb["offset"] == last, wb
        assert (await recv_json(b))["type"] == "history"
        # the last few offsets are still in the log: recovered
        c, wc = await open_session(s.port, sid, since=last - 2,
                                   epoch=wa["epoch"])
        assert wc["recovered"] is True, wc
        f = await recv_until(c, is_final)
        assert [x["offset"] for x in msg_frames(f)] == [last]
        for ws in (a, b, c):
            await ws.close()

    run(body(), 15)


# ------------------------------------------------ resume on an open socket


@pytest.mark.parametrize("mode", MODES)
def test_a_resume_frame_replays_after_since_and_answers_resumed(
        make_server, mode):
    s = make_server(mode, {"demo": {"words_per_second": 1000}})
    sid = new_sid()

    async def body():
        ws, w = await open_session(s.port, sid, mode="delta")
        post_chat(s, sid)
        done = await recv_until(ws, is_final)
        last = done[-1]["offset"]
        await send(ws, {"type": "resume", "since": last - 3,
                        "epoch": w["epoch"]})
        r = await recv_until(ws, is_type("resumed"))
        assert r[-1] == {"type": "resumed", "recovered": True,
                         "from": last - 2, "to": last}
        assert [f["offset"] for f in msg_frames(r)] == \
            [last - 2, last - 1, last]
        assert [f["data"]["chunk"] for f in msg_frames(r)] == \
            [f["data"]["chunk"] for f in msg_frames(done)[-3:]]
        # nothing to replay
        await send(ws, {"type": "resume", "since": last,
                        "epoch": w["epoch"]})
        assert await recv_json(ws) == {"type": "resumed", "recovered": True,
                                       "from": last + 1, "to": last}
        # wrong epoch: not recovered, nothing replayed
        await send(ws, {"type": "resume", "since": 1, "epoch": "x"})
        assert await recv_json(ws) == {"type": "resumed",
                                       "recovered": False, "from": 2,
                                       "to": last}
        for bad in (-1, "3", 1.5, None):
            await send(ws, {"type": "resume", "since": bad,
                            "epoch": w["epoch"]})
            e = await recv_json(ws)
            assert (e["type"], e["error"]) == (
                "error",
                "Invalid resume: since must be a non-negative integer"), e
        await send(ws, {"type": "resume", "since": 1, "epoch": 5})
        e = await recv_json(ws)
        assert e["error"] == "Invalid resume: epoch must be a string", e
        await sgtest.ping_ok(ws)
        await ws.close()

    run(body(), 15)


# ------------------------------------------------------------ linger


@pytest.mark.parametrize("linger", [30, 0])
def test_a_session_whose_only_client_left_mid_answer_is_resumed_without_a_hole(  # noqa: E501
        make_server, linger):
    s = make_server("redis", {"stream": {"linger": linger}})
    sid, mid = new_sid(), str(uuid.uuid4())
    chunks, contents = words_text(20)

    async def body():
        ws, w = await open_session(s.port, sid)
        ai = FakeAI(s.redis, sid)
        await subscribed(ai)
        for ch, co in zip(chunks[:5], contents[:5]):
            ai.partial(mid, co, ch)
        seen = await recv_until(ws, at_offset(5))
        await ws.close()
        if linger == 0:
            await await_until(lambda: not ai.subscribed(), timeout=3,
                              what="UNSUBSCRIBE with linger 0")
        else:
            await asyncio.sleep(0.3)
            assert ai.subscribed(), "the session must linger"
        for ch, co in zip(chunks[5:10], contents[5:10]):
            ai.partial(mid, co, ch)
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0 - 0.1)
        b, wb = await open_session(s.port, sid, since=5, epoch=w["epoch"])
        assert wb["recovered"] is True, wb
        if linger:
            # the node kept ingesting: offsets 6..10 are in the log
            assert wb["offset"] == 10
            replay = await recv_until(b, at_offset(10))
            assert [(f["offset"], f["data"]["content"]) for f in
                    msg_frames(replay)] == [(10, contents[9])]
        else:
            # nothing was ingested while unsubscribed (documented: linger
            # keeps the session subscribed); content is cumulative, so the
            # next live chunk repairs the text
            assert wb["offset"] == 5
            replay = []
        await subscribed(ai)
        for ch, co in zip(chunks[10:], contents[10:]):
            ai.partial(mid, co, ch)
        ai.final(mid, contents[-1])
        ai.close()
        rest = await recv_until(b, is_final)
        (fin,) = check_socket(msg_frames(seen) + replay + rest,
                              contiguous=False).values()
        assert fin["content"] == contents[-1]
        # live continues right after (full mode may merge queued partials)
        assert msg_frames(rest)[0]["offset"] >= (11 if linger else 6)
        await b.close()

    run(body(), 15)


# ------------------------------------------------------- epoch / expiry


@pytest.mark.parametrize("mode", MODES)
def test_after_recovery_ttl_the_epoch_changes_and_an_old_resume_is_not_recovered(  # noqa: E501
        make_server, mode):
    s = make_server(mode, {"demo": {"words_per_second": 1000},
                           "stream": {"recovery_ttl": 2, "linger": 0}})
    sid = new_sid()

    async def body():
        ws, w = await open_session(s.port, sid)
        post_chat(s, sid)
        done = await recv_until(ws, is_final)
        await ws.close()
        if mode == "redis":
            with s.redis.client() as c:
                keys = [k.decode() for k in c.cmd("KEYS", "sg:*")]
                assert keys, "no sg:* keys"
                ttls = {k: c.cmd("TTL", k) for k in keys}
                assert all(0 < t <= 2 for t in ttls.values()), ttls
                hist_ttl = c.cmd("TTL", f"chat:history:{sid}")
                assert 86000 < hist_ttl <= 86400, hist_ttl
        await asyncio.sleep(3.0)
        if mode == "redis":
            with s.redis.client() as c:
                assert c.cmd("KEYS", "sg:*") == [], "sg keys outlived TTL"
        b, wb = await open_session(s.port, sid, since=done[-1]["offset"],
                                   epoch=w["epoch"])
        assert wb["recovered"] is False, wb
        assert wb["epoch"] != w["epoch"] and len(wb["epoch"]) == 16, wb
        assert wb["offset"] == 0, wb
        h = await recv_json(b)
        assert h["type"] == "history" and \
            h["messages"][-1]["content"] == ANSWER0
        await assert_silent(b, 300)
        await b.close()

    run(body(), 15)
