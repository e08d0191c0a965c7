"""The built-in demo upstream end to end: POST /api/chat, streamed message
frames, history, REST history, CORS (PROTOCOL.md §1, §2, §4). Runs in
embedded mode and Redis mode; clients cannot tell them apart."""

import asyncio
import time
import uuid

import pytest

import sgtest
from sgtest import assert_silent, open_session, recv_until, run, \
    stream_msgs

QUESTION = "Tell me about streaming"


def sid():
    return "demo-" + uuid.uuid4().hex[:10]


def post_chat(s, session, message=QUESTION, user="u1"):
    r = s.http("POST", "/api/chat", {"session_id": session,
                                     "message": message, "user_id": user})
    assert r.status == 200, r
    return r.json()


async def collect_answer(ws, timeout=30):
    """Frames up to the first final. A socket whose connect sequence was
    still running when the question was posted may legitimately get a
    `history` frame holding the just-stored question: allowed once, before
    any message frame, with user messages only; it is dropped here."""
    frames = await recv_until(
        ws, lambda f: f.get("type") == "message" and
        f["data"].get("is_complete") is True, timeout=timeout)
    if frames and frames[0].get("type") == "history":
        roles = {m["role"] for m in frames[0]["messages"]}
        assert roles == {"user"}, f"unexpected early history {frames[0]!r}"
        frames = frames[1:]
    return frames


def test_post_chat_streams_a_cumulative_answer_with_one_final(mode_server):
    s = mode_server
    session = sid()

    async def body():
        ws, _ = await open_session(s.port, session)
        t0 = int(time.time() * 1000)
        reply = post_chat(s, session)
        assert reply["status"] == "streaming"
        assert reply["session_id"] == session
        assert isinstance(reply["message_id"], str) and reply["message_id"]
        assert isinstance(reply["message"], str)
        frames = await collect_answer(ws)
        await assert_silent(ws, 300)
        assert [f["type"] for f in frames] == ["message"] * len(frames), \
            [f["type"] for f in frames]
        datas = stream_msgs(frames)
        final = sgtest.check_stream(datas)
        assert len(datas) >= 3, f"expected a streamed answer, got {datas}"
        assert final["message_id"] != reply["message_id"], \
            "the answer must not reuse the user message id"
        assert final["chunk"] is None
        partial_chunks = [d["chunk"] for d in datas[:-1]]
        assert all(isinstance(c, str) for c in partial_chunks), datas[:3]
        # Each partial's chunk is its newest delta. (Their concatenation
        # equals the final only when no frame was coalesced away for a
        # slow reader: in full mode content is authoritative, D-019.)
        for d in datas[:-1]:
            assert d["content"].endswith(d["chunk"]), d
        offsets = [f["offset"] for f in frames]
        if offsets == list(range(offsets[0], offsets[0] + len(frames))):
            assert "".join(partial_chunks) == final["content"]
        for d in datas:
            assert d["session_id"] == session
            assert isinstance(d["timestamp"], int)
            assert t0 - 5000 <= d["timestamp"] <= int(time.time() * 1000) + \
                5000, f"timestamp not epoch ms of now: {d['timestamp']}"
        await ws.close()
        return reply, final
    reply, final = run(body())

    # history: REST and a new socket both hold [question, final answer]
    def hist():
        r = s.http("GET", f"/api/history/{session}")
        assert r.status == 200, r
        return r.json()
    h = sgtest.wait_until(lambda: hist()["count"] == 2 and hist(),
                          timeout=3, what="history count 2")
    assert h["session_id"] == session
    user_m, ans_m = h["messages"]
    assert (user_m["role"], user_m["content"], user_m["message_id"]) == \
        ("user", QUESTION, reply["message_id"])
    assert (ans_m["role"], ans_m["content"], ans_m["message_id"],
            ans_m["is_complete"]) == \
        ("assistant", final["content"], final["message_id"], True)

    async def reconnect():
        ws, _ = await open_session(s.port, session)
        f = await sgtest.recv_json(ws)
        assert f["type"] == "history", f
        msgs = f["messages"]
        assert [(m["role"], m["content"]) for m in msgs] == \
            [("user", QUESTION), ("assistant", final["content"])]
        for m in msgs:
            assert sgtest.CHATMSG_KEYS <= set(m), m
        await ws.close()
    run(reconnect())


def test_delete_history_clears_it(mode_server):
    s = mode_server
    session = sid()

    async def body():
        ws, _ = await open_session(s.port, session)
        post_chat(s, session)
        await collect_answer(ws)
        await ws.close()
    run(body())
    sgtest.wait_until(
        lambda: s.http("GET", f"/api/history/{session}").json()["count"] == 2,
        timeout=3, what="history count 2")
    r = s.http("DELETE", f"/api/history/{session}")
    assert r.status == 200, r
    assert r.json() == {"status": "success",
                        "message": f"History cleared for session {session}"}
    h = s.http("GET", f"/api/history/{session}").json()
    assert h == {"session_id": session, "messages": [], "count": 0}


def test_history_of_unknown_session_is_empty(mode_server):
    r = mode_server.http("GET", "/api/history/never-used-session")
    assert r.status == 200, r
    assert r.json() == {"session_id": "never-used-session", "messages": [],
                        "count": 0}


@pytest.mark.parametrize("payload", [
    {"session_id": "s", "message": "", "user_id": "u"},
    {"session_id": "s", "message": "   ", "user_id": "u"},
    b"{not json",
    b"[1,2,3]",
])
def test_post_chat_rejects_bad_input_with_400_json(server, payload):
    s = server()
    if isinstance(payload, bytes):
        r = s.http("POST", "/api/chat", payload,
                   {"Content-Type": "application/json"})
    else:
        r = s.http("POST", "/api/chat", payload)
    assert r.status == 400, r
    assert "error" in r.json(), r


def test_cors_preflight_is_answered_204(server):
    s = server()
    r = s.http("OPTIONS", "/api/chat", headers={
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-custom"})
    assert r.status == 204, r
    assert r.headers.get("access-control-allow-origin") == "*", r.headers
    assert "POST" in r.headers.get("access-control-allow-methods", ""), \
        r.headers
    allowed = r.headers.get("access-control-allow-headers", "").lower()
    assert "content-type" in allowed and "x-custom" in allowed, r.headers


def test_cors_header_on_api_responses(server):
    s = server()
    r = s.http("POST", "/api/chat",
               {"session_id": sid(), "message": "hi", "user_id": "u"},
               {"Origin": "http://localhost:3000"})
    assert r.status == 200, r
    assert r.headers.get("access-control-allow-origin") == "*", r.headers


def test_unknown_path_is_404_json(server):
    s = server()
    r = s.http("GET", "/no/such/path")
    assert r.status == 404, r
    assert "error" in r.json(), r


def test_root_serves_the_demo_page(server):
    s = server()
    r = s.http("GET", "/")
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("text/html"), \
        r.headers
    assert b"<html" in r.body.lower(), r.body[:200]


def test_two_sessions_are_isolated(mode_server):
    s = mode_server
    a, b = sid(), sid()

    async def body():
        wa, _ = await open_session(s.port, a)
        wb, _ = await open_session(s.port, b)
        post_chat(s, a)
        frames = await collect_answer(wa)
        assert all(f["data"]["session_id"] == a for f in frames)
        await assert_silent(wb, 300)
        await wa.close()
        await wb.close()
    run(body())


def test_three_sockets_on_one_session_each_get_every_frame_once(mode_server):
    s = mode_server
    session = sid()

    async def body():
        socks = [(await open_session(s.port, session))[0] for _ in range(3)]
        post_chat(s, session)
        results = await asyncio.gather(*(collect_answer(w) for w in socks))
        for w in socks:
            await assert_silent(w, 300)
        seqs = []
        for frames in results:
            datas = stream_msgs(frames)
            sgtest.check_stream(datas)
            keys = [(d["message_id"], d["content"], d["is_complete"])
                    for d in datas]
            assert len(keys) == len(set(keys)), "duplicate frame"
            seqs.append(keys)
        assert seqs[0] == seqs[1] == seqs[2]
        for w in socks:
            await w.close()
    run(body())


def test_user_messages_are_not_forwarded_live(mode_server):
    s = mode_server
    session = sid()

    async def body():
        ws, _ = await open_session(s.port, session)
        post_chat(s, session)
        frames = await collect_answer(ws)
        assert {f["type"] for f in frames} == {"message"}, frames[:5]
        roles = {f["data"]["role"] for f in frames}
        assert roles == {"assistant"}, roles
        await ws.close()
    run(body())
