"""Redis mode with a fake Python AI service: the test itself publishes to
chat:stream:{sid} and RPUSHes chat:history:{sid} exactly as the original
service does (original-system.md §4.2), and watches the frames."""

import asyncio
import json
import uuid

import pytest

import sgtest
from sgtest import assert_silent, open_session, py_msg, recv_until, run, \
    stream_msgs

WORDS = ["Xin", "chào,", "đây", "là", "câu", "trả", "lời", "\"thử\"",
         "nghiệm", "😀"]


@pytest.fixture
def rserver(server, redis):
    s = server(config={"redis": {"url": redis.url}})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    s.redis = redis
    return s


def sid():
    return "ai-" + uuid.uuid4().hex[:10]


async def subscribed(c, session):
    await sgtest.await_until(lambda: c.numsub(f"chat:stream:{session}") >= 1,
                             timeout=3,
                             what=f"SUBSCRIBE chat:stream:{session}")


def answer_msgs(session, mid, words=WORDS, gap_style=True):
    """The partials and the final of one answer, alternating the pydantic
    and json.dumps styles, one with extra keys, one without `chunk`."""
    msgs, acc = [], ""
    for k, w in enumerate(words):
        piece = w + (" " if k < len(words) - 1 else "")
        acc += piece
        style = "pydantic" if k % 2 == 0 else "dumps"
        extra = {"model": "fake", "tokens": k} if k == 2 else None
        drop = ("chunk",) if k == 3 else ()
        msgs.append((acc, py_msg(mid, session, "assistant", acc, piece,
                                 False, style=style, extra=extra, drop=drop)))
    msgs.append((acc, py_msg(mid, session, "assistant", acc, None, True,
                             style="dumps" if gap_style else "pydantic")))
    return msgs


async def publish_all(c, session, payloads, gap=0.025):
    for p in payloads:
        c.publish(f"chat:stream:{session}", p)
        await asyncio.sleep(gap)


def is_final(f):
    return f.get("type") == "message" and f["data"]["is_complete"] is True


def test_published_answer_arrives_once_in_order_and_nothing_after_final(
        rserver):
    s, session, mid = rserver, sid(), str(uuid.uuid4())
    msgs = answer_msgs(session, mid)

    async def body():
        ws, _ = await open_session(s.port, session)
        with s.redis.client() as c:
            await subscribed(c, session)
            user = py_msg(str(uuid.uuid4()), session, "user", "câu hỏi?",
                          None, True)
            await publish_all(c, session, [user] + [p for _, p in msgs])
            frames = await recv_until(ws, is_final, timeout=10)
            await assert_silent(ws, 300)
        datas = stream_msgs(frames)
        assert len(frames) == len(datas), [f["type"] for f in frames]
        sgtest.check_stream(datas, message_id=mid)
        assert [d["content"] for d in datas] == [acc for acc, _ in msgs]
        assert datas[-1]["content"] == " ".join(WORDS)
        assert datas[2]["chunk"] == WORDS[2] + " "
        # the producer omitted it: chunk is the delta the stream computed
        assert datas[3]["chunk"] == WORDS[3] + " "
        # native fields: offsets 1, 2, 3, ... and indexes inside the message
        offsets = [f["offset"] for f in frames]
        assert offsets == list(range(offsets[0], offsets[0] + len(frames)))
        assert [f["index"] for f in frames] == list(range(len(frames)))
        await ws.close()
    run(body())


def test_timestamp_is_the_producers(rserver):
    s, session, mid = rserver, sid(), str(uuid.uuid4())

    async def body():
        ws, _ = await open_session(s.port, session)
        with s.redis.client() as c:
            await subscribed(c, session)
            c.publish(f"chat:stream:{session}",
                      py_msg(mid, session, "assistant", "done", None, True,
                             ts=1700000000123))
            frames = await recv_until(ws, is_final, timeout=5)
        assert frames[-1]["data"]["timestamp"] == 1700000000123
        await ws.close()
    run(body())


def test_malformed_messages_are_dropped_counted_and_socket_survives(rserver):
    s, session, mid = rserver, sid(), str(uuid.uuid4())
    bad = [b"not json at all",
           b"[1,2,3]",
           b'"just a string"',
           json.dumps({"session_id": session, "role": "assistant",
                       "content": "no id", "is_complete": True}).encode(),
           json.dumps({"message_id": "m", "session_id": session,
                       "content": "no role", "is_complete": True}).encode(),
           b'{"message_id":"bad\xff\xfe","session_id":"' + session.encode() +
           b'","role":"assistant","content":"x\xc3","is_complete":true}']

    async def body():
        errs0 = sgtest.metric_sum(s.metrics(), "errors_total",
                                  component="ingest")
        ws, _ = await open_session(s.port, session)
        with s.redis.client() as c:
            await subscribed(c, session)
            await publish_all(c, session, bad)
            await assert_silent(ws, 300)
            await sgtest.ping_ok(ws)
            good = answer_msgs(session, mid, words=["ok", "fine"])
            await publish_all(c, session, [p for _, p in good])
            frames = await recv_until(ws, is_final, timeout=5)
        datas = stream_msgs(frames)
        sgtest.check_stream(datas, message_id=mid)
        assert [d["content"] for d in datas] == ["ok ", "ok fine",
                                                 "ok fine"]
        errs1 = sgtest.metric_sum(s.metrics(), "errors_total",
                                  component="ingest")
        assert errs1 - errs0 == len(bad), \
            f"errors_total{{component=ingest}} moved {errs0} -> {errs1}, " \
            f"expected +{len(bad)}"
        await ws.close()
    run(body())


def test_history_frame_comes_from_the_redis_list_oldest_first(rserver):
    s, session = rserver, sid()
    entries = [
        py_msg("u-1", session, "user", "first question", None, True),
        py_msg("a-1", session, "assistant", "first answer", None, True,
               style="dumps"),
        # the race scripts' user message: no chunk, no is_complete
        py_msg("u-2", session, "user", "second question", None,
               drop=("chunk", "is_complete"), extra={"x": 1}),
    ]
    with s.redis.client() as c:
        c.cmd("RPUSH", f"chat:history:{session}", *entries)

    async def body():
        ws, _ = await open_session(s.port, session)
        h = await sgtest.recv_json(ws)
        assert h["type"] == "history", h
        assert [(m["message_id"], m["role"], m["content"])
                for m in h["messages"]] == [
            ("u-1", "user", "first question"),
            ("a-1", "assistant", "first answer"),
            ("u-2", "user", "second question")]
        await ws.close()
    run(body())
    r = s.http("GET", f"/api/history/{session}")
    assert r.json()["count"] == 3


def test_two_sessions_are_isolated(rserver):
    s, a, b = rserver, sid(), sid()

    async def body():
        wa, _ = await open_session(s.port, a)
        wb, _ = await open_session(s.port, b)
        with s.redis.client() as c:
            await subscribed(c, a)
            await subscribed(c, b)
            mid = str(uuid.uuid4())
            await publish_all(c, a, [p for _, p in answer_msgs(a, mid)])
            frames = await recv_until(wa, is_final, timeout=5)
            assert {f["data"]["message_id"] for f in frames} == {mid}
            await assert_silent(wb, 300)
        await wa.close()
        await wb.close()
    run(body())


def test_two_interleaved_answers_each_end_with_their_own_final(rserver):
    s, session = rserver, sid()
    m1, m2 = str(uuid.uuid4()), str(uuid.uuid4())
    one = [p for _, p in answer_msgs(session, m1, words=["a", "b", "c"])]
    two = [p for _, p in answer_msgs(session, m2, words=["x", "y", "z"])]
    mixed = [p for pair in zip(one, two) for p in pair]

    async def body():
        ws, _ = await open_session(s.port, session)
        with s.redis.client() as c:
            await subscribed(c, session)
            await publish_all(c, session, mixed)
            finals = set()

            def done(f):
                if is_final(f):
                    finals.add(f["data"]["message_id"])
                return finals == {m1, m2}
            frames = await recv_until(ws, done, timeout=5)
            await assert_silent(ws, 300)
        datas = stream_msgs(frames)
        for mid, text in ((m1, "a b c"), (m2, "x y z")):
            final = sgtest.check_stream(
                [d for d in datas if d["message_id"] == mid], mid)
            assert final["content"] == text
        await ws.close()
    run(body())


def test_subscription_is_ref_counted_per_session(rserver):
    s, session = rserver, sid()
    chan = f"chat:stream:{session}"

    async def body():
        with s.redis.client() as c:
            w1, _ = await open_session(s.port, session)
            w2, _ = await open_session(s.port, session)
            await subscribed(c, session)
            assert c.numsub(chan) == 1
            await w1.close()
            await sgtest.ping_ok(w2)
            await asyncio.sleep(0.2)
            assert c.numsub(chan) == 1, "unsubscribed while a socket remains"
            await w2.close()
            await sgtest.await_until(lambda: c.numsub(chan) == 0, timeout=2,
                                     what="UNSUBSCRIBE after last close")
            assert not [ch for ch in c.channels() if session in ch], \
                c.channels()
    run(body())


def test_connect_disconnect_cycles_leak_no_subscriptions(rserver):
    s = rserver
    sids = [sid() for _ in range(5)]

    async def cycle(session):
        ws, _ = await open_session(s.port, session)
        await ws.close()

    async def body():
        with s.redis.client() as c:
            baseline = c.channels()
            for batch in range(20):                      # 20 x 10 = 200
                await asyncio.gather(*(cycle(sids[(batch + i) % 5])
                                       for i in range(10)))

            def clean():
                return all(c.numsub(f"chat:stream:{x}") == 0 for x in sids) \
                    and c.channels() == baseline
            await sgtest.await_until(clean, timeout=2,
                                     what="subscriptions back to baseline")
    run(body(), timeout=120)
    sgtest.wait_until(lambda: s.metric("websocket_active_connections") == 0,
                      timeout=2, what="active gauge 0")
    assert s.metric("websocket_connections_total") >= 200


async def frames_for(ws, ms):
    """Every JSON frame that arrives within `ms` milliseconds."""
    out = []
    deadline = asyncio.get_running_loop().time() + ms / 1000.0
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return out
        try:
            out.append(await sgtest.recv_json(ws, left))
        except AssertionError:
            return out


@pytest.mark.catchup
def test_client_joining_mid_answer_catches_up_and_ends_with_the_final(
        rserver):
    s, session, mid = rserver, sid(), str(uuid.uuid4())
    msgs = answer_msgs(session, mid, words=["w1", "w2", "w3", "w4", "w5"])

    async def body():
        wa, _ = await open_session(s.port, session)
        with s.redis.client() as c:
            await subscribed(c, session)
            await publish_all(c, session, [p for _, p in msgs[:3]])
            await recv_until(wa, lambda f: f.get("type") == "message" and
                             f["data"]["content"] == msgs[2][0], timeout=5)
            wb, _ = await open_session(s.port, session)
            early = await frames_for(wb, 300)
            caught = stream_msgs(early)
            assert caught and caught[-1]["content"] == msgs[2][0], \
                f"no catch-up of the in-flight answer: {early!r}"
            await publish_all(c, session, [p for _, p in msgs[3:]])
            rest = await recv_until(wb, is_final, timeout=5)
            await assert_silent(wb, 300)
        datas = caught + stream_msgs(rest)
        final = sgtest.check_stream(datas, mid)
        assert final["content"] == "w1 w2 w3 w4 w5"
        await wa.close()
        await wb.close()
    run(body())


@pytest.mark.catchup
def test_final_published_before_it_is_stored_reaches_a_joining_client_once(
        rserver):
    """Defect 1: the AI service PUBLISHes the final, then RPUSHes it. A
    client connecting in between must still end with exactly one final."""
    s, session, mid = rserver, sid(), str(uuid.uuid4())
    msgs = answer_msgs(session, mid, words=["p", "q", "r"])
    final_payload = msgs[-1][1]

    async def body():
        wa, _ = await open_session(s.port, session)
        with s.redis.client() as c:
            await subscribed(c, session)
            await publish_all(c, session, [p for _, p in msgs])
            await recv_until(wa, is_final, timeout=5)
            wb, _ = await open_session(s.port, session)
            c.cmd("RPUSH", f"chat:history:{session}", final_payload)
            got = await frames_for(wb, 500)
        finals = [f["data"] for f in got if f.get("type") == "message" and
                  f["data"]["message_id"] == mid]
        in_history = [m for f in got if f.get("type") == "history"
                      for m in f["messages"] if m["message_id"] == mid]
        assert [d["is_complete"] for d in finals] in ([], [True]), finals
        seen = finals + in_history
        assert seen, f"the joining client never saw the final: {got!r}"
        assert all(d["content"] == "p q r" and d["is_complete"] is True
                   for d in seen), seen
        await wa.close()
        await wb.close()
    run(body())
