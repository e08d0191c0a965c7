"""Hot reload of the Lua scripts on the real binary (docs/hot-reload.md):
SIGHUP, POST /admin/reload and lua.watch swap the behaviour without
dropping a socket; a broken reload keeps the old scripts and answers 422
with file:line; the admin API's access rules; and a reload storm while
100 clients stream demo answers loses or repeats nothing."""

import asyncio
import os
import re
import shutil
import signal
import uuid

import pytest

import sgtest
from sgtest import check_socket, msg_frames, open_session, recv_json, \
    recv_until, run

from conftest import REPO

OLD_PONG = "local PONG = '{\"type\":\"pong\"}'"
NEW_PONG = "local PONG = '{\"type\":\"pong\",\"v\":2}'"


@pytest.fixture
def lua_dir(tmp_path):
    """A private copy of the repo's lua/ that a test may edit."""
    d = tmp_path / "lua"
    shutil.copytree(os.path.join(REPO, "lua"), d)
    return d


def edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def start(server, lua_dir, **config):
    cfg = {"lua": {"path": str(lua_dir)}}
    for k, v in config.items():
        cfg.setdefault(k, {}).update(v)
    return server(config=cfg)


async def ping(ws):
    await ws.send('{"type":"ping"}')
    return await recv_json(ws)


def reloads(s, result):
    return s.metric("lua_reloads_total", result=result)


def admin(s, method, path, token=None, bearer=None):
    headers = {}
    if token is not None:
        headers["X-Admin-Token"] = token
    if bearer is not None:
        headers["Authorization"] = "Bearer " + bearer
    return s.http(method, path, headers=headers)


# ----------------------------------------------------------- triggers

def test_sighup_reloads_and_the_open_socket_sees_the_new_scripts(
        server, lua_dir):
    s = start(server, lua_dir)

    async def body():
        ws, _ = await open_session(s.port, "reload-" + uuid.uuid4().hex[:8])
        assert await ping(ws) == {"type": "pong"}
        edit(lua_dir / "router.lua", OLD_PONG, NEW_PONG)
        s.proc.send_signal(signal.SIGHUP)
        await sgtest.await_until(
            lambda: reloads(s, "success") == 1, timeout=5,
            what="lua_reloads_total{result=success} == 1")
        assert await ping(ws) == {"type": "pong", "v": 2}
        await ws.close()
    run(body())
    assert "lua: reloaded (version 2)" in s.log()
    st = admin(s, "GET", "/admin/status").json()
    assert st["version"] == 2 and st["reloads"] == 1


def test_admin_reload_swaps_behaviour(server, lua_dir):
    s = start(server, lua_dir)
    edit(lua_dir / "router.lua", OLD_PONG, NEW_PONG)
    r = admin(s, "POST", "/admin/reload")
    assert r.status == 200, r
    assert r.json() == {"status": "reloaded", "version": 2}

    async def body():
        ws, _ = await open_session(s.port, "reload-" + uuid.uuid4().hex[:8])
        assert await ping(ws) == {"type": "pong", "v": 2}
        await ws.close()
    run(body())
    assert reloads(s, "success") == 1
    assert reloads(s, "failure") == 0


def test_broken_reload_keeps_the_old_scripts_and_answers_422(
        server, lua_dir):
    s = start(server, lua_dir)

    async def body():
        ws, _ = await open_session(s.port, "reload-" + uuid.uuid4().hex[:8])
        init = lua_dir / "init.lua"
        good = init.read_text()
        lines = good.split("\n")
        lines[2] = "local = broken"
        init.write_text("\n".join(lines))
        edit(lua_dir / "router.lua", OLD_PONG, NEW_PONG)
        r = admin(s, "POST", "/admin/reload")
        assert r.status == 422, r
        doc = r.json()
        assert doc["status"] == "failed"
        # Lua shortens long chunk names to ".../end/of/path"
        assert re.fullmatch(r"lua: \S*/lua/init\.lua:3: '<name>' expected "
                            r"near '='", doc["error"]), doc
        # the socket and the old scripts keep serving
        assert await ping(ws) == {"type": "pong"}
        init.write_text(good)
        r = admin(s, "POST", "/admin/reload")
        assert r.json() == {"status": "reloaded", "version": 2}, r
        assert await ping(ws) == {"type": "pong", "v": 2}
        await ws.close()
    run(body())
    assert reloads(s, "failure") == 1
    assert reloads(s, "success") == 1
    assert re.search(r"lua: reload failed, keeping version 1: lua: \S+"
                     r"/init.lua:3: ", s.log())


def test_file_watch_reloads_after_a_change(server, lua_dir):
    s = start(server, lua_dir, lua={"watch": True})
    assert "lua: watching" in s.log()
    edit(lua_dir / "router.lua", OLD_PONG, NEW_PONG)
    sgtest.wait_until(lambda: reloads(s, "success") >= 1, timeout=5,
                      what="a reload after the file change")

    async def body():
        ws, _ = await open_session(s.port, "watch-" + uuid.uuid4().hex[:8])
        assert await ping(ws) == {"type": "pong", "v": 2}
        await ws.close()
    run(body())
    # one edit, one reload (debounced), even though it fired many events
    sgtest.wait_until(lambda: True, timeout=0.5)
    assert reloads(s, "success") == 1


# ----------------------------------------------------------- admin access

def test_admin_without_token_is_open_to_loopback_only(server, lua_dir):
    s = start(server, lua_dir)
    r = admin(s, "GET", "/admin/status")
    assert r.status == 200, r
    st = r.json()
    assert set(st) >= {"node", "version", "reloads", "pending_coroutines",
                       "connections", "sessions", "mode", "uptime"}, st
    assert st["version"] == 1 and st["reloads"] == 0
    assert st["mode"] == "embedded"
    assert st["node"] == s.cfg.get("node_id", st["node"])
    assert isinstance(st["uptime"], (int, float)) and st["uptime"] >= 0
    assert admin(s, "GET", "/admin/nope").status == 404
    r = admin(s, "GET", "/admin/reload")
    assert r.status == 405 and r.json()["detail"] == "use POST"


def test_admin_token_is_required_when_configured(server, lua_dir):
    s = start(server, lua_dir, admin={"token": "s3cret-admin"})
    for kw in ({}, {"token": "wrong"}, {"bearer": "wrong"},
               {"token": "s3cret-admin-x"}, {"token": ""}):
        r = admin(s, "POST", "/admin/reload", **kw)
        assert r.status == 401, (kw, r)
        assert r.json()["error"] == "Unauthorized"
    assert admin(s, "GET", "/admin/status").status == 401
    r = admin(s, "POST", "/admin/reload", token="s3cret-admin")
    assert r.status == 200 and r.json()["version"] == 2, r
    r = admin(s, "POST", "/admin/reload", bearer="s3cret-admin")
    assert r.status == 200 and r.json()["version"] == 3, r
    r = admin(s, "GET", "/admin/status", bearer="s3cret-admin")
    assert r.status == 200 and r.json()["reloads"] == 2


def test_admin_token_from_the_environment(server, lua_dir):
    s = server(config={"lua": {"path": str(lua_dir)}},
               env={"ADMIN_TOKEN": "env-token"})
    assert admin(s, "GET", "/admin/status").status == 401
    assert admin(s, "GET", "/admin/status", token="env-token").status == 200


# ----------------------------------------------------------- under load

SESSIONS = 20
CLIENTS_PER_SESSION = 5
RELOADS = 5


def test_reloads_under_streaming_load_lose_nothing(server, lua_dir):
    """100 sockets on 20 sessions follow demo answers (50 words/s) while
    the scripts are reloaded 5 times: every socket stays open, gets the
    exact final once, and its offsets never repeat or skip."""
    s = start(server, lua_dir, demo={"words_per_second": 50},
              limits={"max_connections": 1000})
    answer = sgtest.demo_answer(1, REPO)  # "streaming" picks answer 1
    sids = ["load-%02d-%s" % (i, uuid.uuid4().hex[:6])
            for i in range(SESSIONS)]

    async def client(sid):
        ws, _ = await open_session(s.port, sid)
        return ws

    async def follow(ws):
        frames = await recv_until(
            ws, lambda f: f.get("type") == "message" and
            f["data"].get("is_complete") is True and
            f["data"].get("role") == "assistant", timeout=60)
        return frames

    states = []

    async def reloader():
        versions = []
        loop = asyncio.get_running_loop()
        for _ in range(RELOADS):
            await asyncio.sleep(0.2)
            r = await loop.run_in_executor(None, admin, s, "POST",
                                           "/admin/reload")
            assert r.status == 200, r
            versions.append(r.json()["version"])
            st = await loop.run_in_executor(None, admin, s, "GET",
                                            "/admin/status")
            states.append(st.json()["lua_states"])
        return versions

    async def body():
        sockets = await asyncio.gather(
            *[client(sid) for sid in sids for _ in range(CLIENTS_PER_SESSION)])
        followers = [asyncio.ensure_future(follow(ws)) for ws in sockets]
        loop = asyncio.get_running_loop()
        storm = asyncio.ensure_future(reloader())
        for sid in sids:
            r = await loop.run_in_executor(
                None, lambda sid=sid: s.http(
                    "POST", "/api/chat",
                    {"session_id": sid, "message": "Tell me about streaming",
                     "user_id": "u1"}))
            assert r.status == 200, r
        versions = await storm
        results = await asyncio.gather(*followers)
        for ws, frames in zip(sockets, results):
            finals = check_socket(frames, contiguous=False)
            assert list(finals.values())[-1]["content"] == answer
            offs = [f["offset"] for f in msg_frames(frames)]
            assert len(offs) == len(set(offs)), "duplicate offsets"
            assert ws.close_code is None, "socket closed during reloads"
            await ping(ws)  # still served after the storm
        await asyncio.gather(*[ws.close() for ws in sockets])
        return versions
    versions = run(body(), timeout=120)
    assert versions == [2, 3, 4, 5, 6]
    # answers in flight kept old states alive: the reloads hit mid-stream
    assert max(states) > 1, states
    assert reloads(s, "success") == RELOADS
    st = admin(s, "GET", "/admin/status").json()
    assert st["version"] == 6
    # old states close once their in-flight answers finished
    sgtest.wait_until(
        lambda: admin(s, "GET", "/admin/status").json()["lua_states"] == 1,
        timeout=10, what="old Lua states closed")
    assert sgtest.log_error_lines(s) == []
