"""Plugins against the real binary (docs/plugins.md): presence adds a frame
type, rate-limiting closes a flooding socket and answers 429 on /api/chat
(in Redis mode two nodes share one limit), redact masks a live answer, and
a bad plugin config fails `streamgate -t` naming plugin, field and value.
"""

import asyncio
import subprocess
import time
import uuid

import pytest

import sgtest
from conftest import REPO, base_config, lua_value, server_env
from sgtest import check_offsets, expect_close, msg_frames, open_session, \
    recv_json, recv_until, run


def sid():
    return "plug-" + uuid.uuid4().hex[:10]


def plugins(**entries):
    """{"plugins": {name: {"enabled": True, "config": cfg}}}; names use
    underscores for dashes."""
    return {"plugins": {name.replace("_", "-"): {"enabled": True,
                                                 "config": cfg}
                        for name, cfg in entries.items()}}


def lua(v, indent=""):
    """conftest.lua_value plus lists (Lua arrays)."""
    if isinstance(v, list):
        inner = indent + "  "
        return "{\n" + "\n".join(f"{inner}{lua(x, inner)},"
                                   for x in v) + "\n" + indent + "}"
    if isinstance(v, dict):
        inner = indent + "  "
        return "{\n" + "\n".join(f'{inner}["{k}"] = {lua(x, inner)},'
                                   for k, x in v.items()) + "\n" + indent + "}"
    return lua_value(v)


def start_with(server, cfg):
    """A started server whose config may hold lists (conftest's writer
    renders dicts and scalars only)."""
    s = server(start=False)
    s.cfg.update(cfg)
    with open(s.config_path, "w") as f:
        f.write("return " + lua(s.cfg) + "\n")
    return s.start()


def write_lua_config(path, cfg):
    with open(path, "w") as f:
        f.write("return " + lua(cfg) + "\n")


def post_chat(s, session, user="u1", message="hello"):
    return s.http("POST", "/api/chat", {"session_id": session,
                                        "message": message,
                                        "user_id": user})


# ------------------------------------------------------------ presence

def test_presence_frame_lists_the_session_users_sorted(server):
    s = server(config=plugins(presence={"broadcast": False}))
    session = sid()

    async def body():
        b, _ = await open_session(s.port, session, user_id="bob")
        a, _ = await open_session(s.port, session, user_id="alice")
        a2, _ = await open_session(s.port, session, user_id="alice")
        other, _ = await open_session(s.port, sid(), user_id="carol")
        await a.send('{"type":"presence"}')
        assert await recv_json(a) == {"type": "presence",
                                      "session_id": session,
                                      "users": ["alice", "bob"],
                                      "count": 2}
        await b.close()
        await a2.close()
        await asyncio.sleep(0.2)
        await a.send('{"type":"presence"}')
        assert await recv_json(a) == {"type": "presence",
                                      "session_id": session,
                                      "users": ["alice"], "count": 1}
        for ws in (a, other):
            await ws.close()
    run(body())


def test_presence_broadcasts_joins_and_leaves_to_bound_sockets(server):
    s = server(config=plugins(presence={"broadcast": True}))
    session = sid()

    async def body():
        a, _ = await open_session(s.port, session, user_id="alice")
        await sgtest.ping_ok(a)            # binds alice's socket
        b, _ = await open_session(s.port, session, user_id="bob")
        assert await recv_json(a) == {"type": "presence", "event": "join",
                                      "session_id": session,
                                      "user_id": "bob"}
        await b.close()
        assert await recv_json(a) == {"type": "presence", "event": "leave",
                                      "session_id": session,
                                      "user_id": "bob"}
        await a.close()
    run(body())


def test_without_the_plugin_presence_is_an_unknown_type(server):
    s = server()

    async def body():
        ws, _ = await open_session(s.port, sid())
        await ws.send('{"type":"presence"}')
        f = await recv_json(ws)
        assert f["error"] == "Unknown message type: presence", f
        await ws.close()
    run(body())


# ------------------------------------------------------------ rate limit

def test_frames_over_the_limit_get_an_error_frame_and_close_1008(server):
    s = server(config=plugins(rate_limiting={"frames_per_second": 3}))

    async def body():
        ws, _ = await open_session(s.port, sid())
        for _ in range(4):
            await ws.send('{"type":"ping"}')
        frames = [await recv_json(ws) for _ in range(4)]
        assert frames[:3] == [{"type": "pong"}] * 3, frames
        err = frames[3]
        assert err["type"] == "error" and \
            err["error"] == "Rate limit exceeded", err
        assert err["detail"] == "more than 3 frames in 1 s", err
        assert err["retry_after"] == 1, err
        code, reason = await expect_close(ws)
        assert (code, reason) == (1008, "rate limited")
    run(body())


def test_frames_within_the_limit_keep_the_socket_open(server):
    s = server(config=plugins(rate_limiting={"frames_per_second": 20}))

    async def body():
        ws, _ = await open_session(s.port, sid())
        for _ in range(10):
            await sgtest.ping_ok(ws)
        await ws.close()
    run(body())


def test_chat_over_the_limit_answers_429_with_retry_after(server):
    s = server(config=plugins(rate_limiting={"chat_per_minute": 2}))
    session = sid()
    assert post_chat(s, session).status == 200
    assert post_chat(s, session).status == 200
    r = post_chat(s, session)
    assert r.status == 429, r
    assert r.json() == {"error": "Too many requests",
                        "detail": "more than 2 chat requests per minute"}
    assert 1 <= int(r.headers["retry-after"]) <= 60, r.headers
    assert post_chat(s, session, user="u2").status == 200


def test_two_redis_nodes_share_one_chat_limit(server, redis):
    cfg = {**plugins(rate_limiting={"chat_per_minute": 3}),
           "redis": {"url": redis.url}}
    a = server(config=cfg)
    b = server(config=cfg)
    for n in (a, b):
        sgtest.wait_until(lambda: n.ready() == 200, timeout=10,
                          what="/readyz 200")
    session = sid()
    assert post_chat(a, session).status == 200
    assert post_chat(b, session).status == 200
    assert post_chat(a, session).status == 200
    if "sg.redis is not available" in a.log() + b.log():
        pytest.skip("this build has no sg.redis yet: limits are per node")
    r = post_chat(b, session)
    assert r.status == 429, r
    with redis.client() as c:
        assert c.cmd("ZCARD", "sg:rl:{c:u:u1}") == 3
        ttl = c.cmd("PTTL", "sg:rl:{c:u:u1}")
        assert 0 < ttl <= 60000, ttl


def test_two_redis_nodes_share_one_frame_limit(server, redis):
    cfg = {**plugins(rate_limiting={"frames_per_second": 4,
                                    "frames_burst": 4}),
           "redis": {"url": redis.url}}
    a = server(config=cfg)
    b = server(config=cfg)
    for n in (a, b):
        sgtest.wait_until(lambda: n.ready() == 200, timeout=10,
                          what="/readyz 200")

    async def body():
        session = sid()
        wa, _ = await open_session(a.port, session)
        wb, _ = await open_session(b.port, session)
        t0 = time.monotonic()
        for ws in (wa, wb, wa, wb):
            await sgtest.ping_ok(ws)
        if "sg.redis is not available" in a.log() + b.log():
            pytest.skip("this build has no sg.redis yet")
        await wa.send('{"type":"ping"}')
        err = await recv_json(wa)
        if time.monotonic() - t0 >= 1.0:
            pytest.skip("the machine was too slow to hit a 1 s window")
        assert err["error"] == "Rate limit exceeded", err
        assert await expect_close(wa) == (1008, "rate limited")
        await wb.close()
    run(body())


# ------------------------------------------------------------ redact

def test_redact_masks_a_live_answer_and_keeps_offsets_contiguous(server):
    s = start_with(server, plugins(redact={"patterns": ["streamgate"]}))
    session = sid()
    expected = sgtest.demo_answer(0, REPO)
    assert "streamgate" in expected

    async def body():
        ws, _ = await open_session(s.port, session)
        assert post_chat(s, session).status == 200
        frames = await recv_until(
            ws, lambda f: f.get("type") == "message" and
            f["data"]["is_complete"] is True, timeout=30)
        await ws.close()
        return frames
    frames = run(body())
    msgs = msg_frames(frames)
    assert len(msgs) >= 10, len(msgs)
    check_offsets(frames, contiguous=True)
    for f in msgs:
        assert "streamgate" not in f["data"]["content"], f
        assert "streamgate" not in (f["data"]["chunk"] or ""), f
    final = msgs[-1]["data"]
    assert final["content"] == expected.replace("streamgate", "[redacted]")
    assert any("[redacted]" in f["data"]["content"] for f in msgs[:-1])
    history = s.http("GET", f"/api/history/{session}").json()["messages"]
    assert history[0]["role"] == "user"


# ------------------------------------------------------------ config

@pytest.mark.parametrize("entry,expected", [
    ({"rate-limiting": {"enabled": True,
                        "config": {"frames_per_second": -1}}},
     "plugin 'rate-limiting': config.frames_per_second = -1: expected a "
     "number >= 1"),
    ({"redact": {"config": {"replacement": 5}}},
     "plugin 'redact': config.replacement = 5: expected a string of at "
     "most 256 bytes"),
    ({"presence": {"config": {"max_user": 5}}},
     "plugin 'presence': config.max_user = 5: unknown field"),
    ({"rate-limit": {"enabled": True}},
     "plugins.rate-limit: unknown plugin (available: presence, "
     "rate-limiting, redact)"),
])
def test_a_bad_plugin_config_fails_the_config_check(binary, tmp_path, entry,
                                                    expected):
    cfg = tmp_path / "bad.lua"
    write_lua_config(cfg, {**base_config(sgtest.free_port()),
                           "plugins": entry})
    r = subprocess.run([binary, "--config", str(cfg), "-t"],
                       capture_output=True, text=True, timeout=10,
                       env=server_env(), cwd=REPO)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert expected in r.stderr, r.stderr


def test_a_good_plugin_config_passes_the_config_check(binary, tmp_path):
    cfg = tmp_path / "good.lua"
    write_lua_config(cfg, {**base_config(sgtest.free_port()),
                           **plugins(rate_limiting={"frames_per_second": 5},
                                 redact={"patterns": ["%d%d%d%d"]},
                                 presence={"max_users": 10})})
    r = subprocess.run([binary, "--config", str(cfg), "-t"],
                       capture_output=True, text=True, timeout=10,
                       env=server_env(), cwd=REPO)
    assert r.returncode == 0, (r.stdout, r.stderr)
