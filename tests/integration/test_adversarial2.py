"""Adversarial round 2: reproducers for defects found while attacking the
newest parts (resume, multi-node Redis, plugins, hot reload, Lua budgets).

Every test here states OBSERVED (the defect) vs EXPECTED in its docstring
and asserts the EXPECTED behaviour, so it fails while the defect exists.
Run with the ASan binary:
  SG_BINARY=build-asan/streamgate /usr/bin/python3 -m pytest \
      tests/integration/test_adversarial2.py
"""

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pytest

import sgtest
from conftest import REPO, server_env
from sgtest import FakeAI, SocketCheck, open_session, recv_json, \
    recv_until, run
from test_plugins import lua, plugins, start_with


def sid(prefix="adv2"):
    return f"{prefix}-" + uuid.uuid4().hex[:10]


@pytest.fixture
def lua_dir(tmp_path):
    """A private copy of the repo's lua/ that a test may edit."""
    d = tmp_path / "lua"
    shutil.copytree(os.path.join(REPO, "lua"), d)
    return d


def admin_status(s):
    r = s.http("GET", "/admin/status")
    assert r.status == 200, r
    return r.json()


def reload(s):
    return s.http("POST", "/admin/reload")


async def drain(ws, secs):
    """Every JSON frame that arrives within `secs`."""
    out = []
    deadline = time.monotonic() + secs
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return out
        try:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        except asyncio.TimeoutError:
            return out
        except Exception:
            return out


def raw_upgrade(port, path, key=True, version="13"):
    """Sends an upgrade request by hand (optionally without the key or
    with another version) and returns the status line."""
    hdr = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Version: {version}\r\n")
    if key:
        hdr += ("Sec-WebSocket-Key: " +
                base64.b64encode(b"adversarial2-key").decode() + "\r\n")
    hdr += "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=3) as so:
        so.sendall(hdr.encode())
        try:
            data = so.recv(4096)
        except OSError:
            data = b""
    return data.split(b"\r\n", 1)[0]


# ============================================================ presence

def test_presence_counts_a_ghost_user_for_an_upgrade_that_fails_after_on_connect(
        server):
    """OBSERVED: an upgrade request that passes on_connect (auth + plugin
    chain) but that lws then rejects (here: no Sec-WebSocket-Key) never
    reaches ESTABLISHED, so on_disconnect never runs; presence counted the
    user in on_connect and lists it for ever ("ghost" user; in Redis mode
    the hash count is +1 and the refresh timer keeps it alive).
    EXPECTED: only users with an open connection are listed."""
    s = start_with(server, plugins(presence={}))
    room = sid("ghost")
    for i in range(3):
        raw_upgrade(s.port, f"/ws/chat?session_id={room}&user_id=ghost{i}"
                            "&token=dev-token", key=False)
    time.sleep(0.3)

    async def go():
        ws, _ = await open_session(s.port, room, user_id="alice")
        await ws.send('{"type":"presence"}')
        f = await recv_until(ws, lambda f: f.get("type") == "presence")
        await ws.close()
        return f[-1]

    ans = run(go())
    assert ans["users"] == ["alice"], \
        f"presence lists users that never connected: {ans}"


def test_presence_refresh_timer_keeps_every_retired_lua_state_alive(
        server, redis):
    """OBSERVED (Redis mode): presence's TTL refresh timer re-arms itself
    without checking sg.is_current(), and the retired state's `sessions`
    table never empties (hooks now run in the new state), so every hot
    reload while any user is connected leaks a whole Lua state for ever
    (/admin/status lua_states grows by one per reload; the old states keep
    sending EXPIREs). docs/hot-reload.md warns about exactly this pattern.
    EXPECTED: retired states are closed once their work is done
    (lua_states back to 1)."""
    s = start_with(server, {"redis": {"url": redis.url},
                            **plugins(presence={"ttl": 10})})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    room = sid("pres")

    async def go():
        socks = []
        for i in range(5):  # a user joins, then the scripts are reloaded
            ws, _ = await open_session(s.port, room, user_id=f"user{i}")
            socks.append(ws)
            await asyncio.sleep(0.2)
            assert reload(s).status == 200
        await asyncio.sleep(5)  # > ttl/3: old timers fired and re-armed
        st = admin_status(s)
        for ws in socks:
            await ws.close()
        return st

    st = run(go())
    assert st["lua_states"] == 1, \
        f"retired Lua states still alive after 5 s: {st}"


# ============================================================ redact

@pytest.mark.parametrize("pattern", ["x%", "x[a", "%f[%w]"])
def test_redact_rejects_patterns_that_fail_or_match_empty_on_real_text(
        binary, tmp_path, pattern):
    """OBSERVED: schema.lua validates a pattern with string.find("", p).
    Lua parses patterns lazily, so "x%" (ends with '%') and "x[a"
    (missing ']') pass on "" and raise on any text containing "x";
    "%f[%w]" does not match "" but matches the empty string before every
    word (inserting the replacement). `streamgate -t` exits 0 for all.
    EXPECTED: exit 2 naming config.patterns[1]."""
    from test_plugins import write_lua_config
    from conftest import base_config
    cfg = tmp_path / "redact.lua"
    write_lua_config(cfg, {**base_config(sgtest.free_port()),
                           **plugins(redact={"patterns": [pattern]})})
    r = subprocess.run([binary, "--config", str(cfg), "-t"],
                       capture_output=True, text=True, timeout=10,
                       env=server_env(), cwd=REPO)
    assert r.returncode == 2, \
        f"pattern {pattern!r} accepted by -t: rc={r.returncode} {r.stderr}"
    assert "config.patterns[1]" in r.stderr, r.stderr


# The fail-open case (a pattern raising at run time leaked e-mails) can no
# longer be configured: the schema now tries patterns on real text. The
# run-time guard (content withheld when masking raises) is covered by
# tests/lua/redact_spec.lua.


def test_redact_email_rule_is_quadratic_and_freezes_the_event_loop(
        server, redis):
    """OBSERVED: the e-mail pattern "[%w%.%%%+%-_]+@..." backtracks over
    every start position of a long run of word characters with no '@':
    O(n^2) inside ONE string.gsub C call, which the hook budget cannot
    interrupt. One producer chunk holding a 25 000-character word (a hash,
    a minified line, "repeat this string") blocks the whole node for
    seconds (40 000 chars: ~12 s; every later chunk of the same answer
    re-masks the cumulative content and blocks again): /healthz, every
    socket, every session stall.
    EXPECTED: masking is linear-ish; the node answers /healthz within 1 s
    while the chunk is processed."""
    s = start_with(server, {"redis": {"url": redis.url},
                            **plugins(redact={})})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    room = sid("redos")

    async def go():
        ws, _ = await open_session(s.port, room)
        ai = FakeAI(redis, room)
        await sgtest.await_until(ai.subscribed, what="subscribed")
        word = "a" * 25000
        ai.partial("m1", word, word)
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: s.http("GET", "/healthz"))
        except OSError:
            pass
        took = time.monotonic() - t0
        ai.close()
        await ws.close()
        return took

    took = run(go(), timeout=90)
    assert took < 1.0, f"/healthz took {took:.1f} s while redact masked " \
                       f"one 25 000-character chunk"


# ============================================================ join / resume

def test_a_join_read_refused_by_redis_never_welcomes_the_client(
        server, redis):
    """OBSERVED: when the join's stream read gets an error reply (here
    Redis is at maxmemory, so the read script's SET NX of the epoch is
    refused with OOM; also -BUSY, -LOADING, -READONLY, -MISCONF),
    stream_read_done() takes the "live again" branch: no welcome, no
    history, no catch-up, and nothing ever retries (the connection to
    Redis was not lost, so there is no resubscription). The unchanged
    frontend spins for ever even after Redis has memory again.
    EXPECTED: the client gets a welcome (or is closed so it reconnects)
    once Redis accepts the read again."""
    s = server(config={"redis": {"url": redis.url}})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    room = sid("oom")

    async def go():
        first, _ = await open_session(s.port, room)  # session subscribed
        with redis.client() as c:
            c.cmd("CONFIG", "SET", "maxmemory-policy", "noeviction")
            c.cmd("CONFIG", "SET", "maxmemory", "1")
        ws = await sgtest.ws_connect(s.ws(session_id=room, user_id="u2",
                                          token="dev-token"))
        early = await drain(ws, 1.0)
        with redis.client() as c:
            c.cmd("CONFIG", "SET", "maxmemory", "0")
        late = await drain(ws, 3.0)
        closed = ws.closed
        await ws.close()
        await first.close()
        return early, late, closed

    early, late, closed = run(go())
    frames = early + late
    assert closed or any(f.get("type") == "welcome" for f in frames), \
        f"no welcome 3 s after Redis accepts reads again; frames: {frames}"


def test_a_resume_whose_read_is_lost_with_redis_gets_no_reply(
        server, redis):
    """OBSERVED: a {"type":"resume"} frame whose stream read is in flight
    when the Redis connection dies (read fails with SG_EIO) is answered
    with nothing at all: stream_read_done() just goes live again; neither
    "resumed" nor an error frame is sent, before or after Redis is back.
    A client waiting for `resumed` (protocol.md: "replay after N, then
    resumed") waits for ever.
    EXPECTED: a `resumed` (recovered true/false) or an `error` frame."""
    s = server(config={"redis": {"url": redis.url}})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    room = sid("resdie")

    async def go():
        ws, welcome = await open_session(s.port, room)
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            await ws.send(json.dumps({"type": "resume", "since": 0,
                                      "epoch": welcome["epoch"]}))
            await asyncio.sleep(0.3)  # the read is queued on hiredis
        finally:
            redis.stop(kill=True)
        redis.start()
        await sgtest.await_until(lambda: s.ready() == 200, timeout=10,
                                 what="ready again")
        frames = await drain(ws, 3.0)
        await ws.send('{"type":"ping"}')
        frames += await drain(ws, 1.0)
        await ws.close()
        return frames

    frames = run(go())
    types = [f.get("type") for f in frames]
    assert "pong" in types, f"socket not served: {frames}"
    assert "resumed" in types or "error" in types, \
        f"the resume frame was never answered: {frames}"


def test_join_cost_is_snapshots_times_history_and_stalls_the_node(
        server, redis):
    """OBSERVED: a fresh join runs stream_catch_up(), which calls
    stream_history_has_final() for every snapshot, and that JSON-parses
    the WHOLE history each time: O(snapshots x history) parses on the
    event loop per join. A session that completed 1500 short answers
    within stream.recovery_ttl (all stored in history) costs ~2.25 M
    JSON parses per join: every connect (and every reload of the page)
    freezes the node for seconds.
    EXPECTED: a join costs O(snapshots + history); /healthz during a join
    answers within 0.5 s."""
    s = server(config={"redis": {"url": redis.url}})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    room = sid("quad")
    n = int(os.environ.get("ADV2_N", "1500"))

    async def go():
        ws, _ = await open_session(s.port, room)  # ingests the finals
        ai = FakeAI(redis, room)
        await sgtest.await_until(ai.subscribed, what="subscribed")
        for i in range(n):
            ai.final(f"m{i}", f"answer number {i}")
        await sgtest.await_until(
            lambda: s.metric("stream_ingest_messages_total",
                             result="appended") >= n,
            timeout=60, what="all finals appended")
        ai.close()
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        ws2 = await sgtest.ws_connect(s.ws(session_id=room, user_id="u2",
                                           token="dev-token"))
        await asyncio.sleep(0.05)
        h0 = time.monotonic()
        await loop.run_in_executor(None, lambda: sgtest.http_request(
            s.port, "GET", "/healthz", timeout=100))
        health = time.monotonic() - h0
        assert (await sgtest.recv_json(ws2, 100))["type"] == "welcome"
        join = time.monotonic() - t0
        await ws2.close()
        await ws.close()
        return health, join

    health, join = run(go(), timeout=120)
    assert health < 0.5 and join < 1.0, \
        f"one join of a session with {n} recent answers took {join:.1f} s " \
        f"and /healthz waited {health:.1f} s"


# ============================================================ Lua budgets

def evil_server(server, lua_dir, extra=None):
    """A server with the hostile plugin tests/integration/adv2_evil."""
    shutil.copytree(os.path.join(os.path.dirname(__file__), "adv2_evil"),
                    lua_dir / "plugins" / "evil")
    cfg = {"lua": {"path": str(lua_dir), "hook_timeout": 0.3,
                   "memory_limit": 64}, **plugins(evil={})}
    if extra:
        cfg.update(extra)
    return start_with(server, cfg)


@pytest.mark.parametrize("kind", ["spin", "pcall_spin", "alloc", "recurse",
                                  "err_table", "err_nil", "err_tostring"])
def test_held_up_budget_stops_hostile_hooks(server, lua_dir, kind):
    """HELD UP: loops, pcall loops, allocation bombs, infinite recursion
    and odd error objects in a hook are stopped; the socket gets an error
    frame and is served afterwards."""
    s = evil_server(server, lua_dir)

    async def go():
        ws, _ = await open_session(s.port, sid("evil"))
        await ws.send(json.dumps({"type": kind}))
        f = await recv_json(ws, 15)
        await ws.send('{"type":"ok"}')
        g = await recv_json(ws, 5)
        await ws.close()
        return f, g

    f, g = run(go(), timeout=40)
    assert f.get("type") == "error" and g == {"type": "ok"}, (f, g)


@pytest.mark.parametrize("kind", ["sort_spin", "gsub_spin"])
def test_budget_is_bypassed_by_pcall_inside_a_c_callback(server, lua_dir,
                                                         kind):
    """OBSERVED: the budget hook stops a task by lua_yield() from the count
    hook. Inside a Lua function called from C (a table.sort comparator, a
    string.gsub replacement function, a __tostring ...) LuaJIT cannot
    yield, so lua_yield raises "attempt to yield across C-call boundary" -
    an ordinary error that a pcall in the looping code catches. A loop of
    pcall(spin) inside a sort comparator therefore never stops: the event
    loop is wedged for good (every socket, /healthz, SIGTERM).
    EXPECTED: the hook is stopped after lua.hook_timeout like any other
    loop, and the node keeps serving."""
    s = evil_server(server, lua_dir)

    async def go():
        ws, _ = await open_session(s.port, sid("evil"))
        await ws.send(json.dumps({"type": kind}))
        await asyncio.sleep(2)
        try:
            r = await asyncio.get_running_loop().run_in_executor(
                None, lambda: sgtest.http_request(s.port, "GET", "/healthz",
                                                  timeout=3))
            return r.status
        except OSError as e:
            return repr(e)

    status = run(go(), timeout=30)
    assert status == 200, f"node wedged by a {kind} hook: /healthz -> " \
                          f"{status}"


# ============================================================ sg.http

class RawHttp:
    """A hostile HTTP server on a thread: each accepted connection reads
    the request head and then misbehaves according to the path."""

    def __init__(self):
        import threading
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def close(self):
        self.stop = True
        self.t.join(5)
        self.sock.close()

    def _loop(self):
        import threading
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(c,),
                             daemon=True).start()

    def _serve(self, c):
        deadline = time.monotonic() + 20
        try:
            c.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                d = c.recv(4096)
                if not d:
                    return
                data += d
            path = data.split(b" ")[1].decode()
            if path == "/trickle":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                while time.monotonic() < deadline and not self.stop:
                    c.sendall(b"x")
                    time.sleep(0.1)
            elif path == "/neverclose":
                c.sendall(b"HTTP/1.1 200 OK\r\n\r\nsome body")
                while time.monotonic() < deadline and not self.stop:
                    time.sleep(0.1)
            elif path == "/big":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
                          % (100 << 20))
                blob = b"z" * 65536
                for _ in range(1600):
                    if self.stop or time.monotonic() > deadline:
                        break
                    c.sendall(blob)
            elif path == "/bigchunked":
                c.sendall(b"HTTP/1.1 200 OK\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n")
                blob = b"10000\r\n" + b"q" * 65536 + b"\r\n"
                for _ in range(1600):
                    if self.stop or time.monotonic() > deadline:
                        break
                    c.sendall(blob)
            elif path == "/badchunk":
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
                          b"\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
                time.sleep(3)
            elif path == "/negchunk":
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
                          b"\r\n\r\nffffffffffffffff\r\nhello\r\n")
                time.sleep(3)
            elif path == "/headerflood":
                c.sendall(b"HTTP/1.1 200 OK\r\n")
                for i in range(20000):
                    c.sendall(b"X-H%d: %s\r\n" % (i, b"v" * 100))
                c.sendall(b"Content-Length: 2\r\n\r\nok")
                time.sleep(2)
            elif path == "/garbage":
                c.sendall(b"\x00\xff" * 5000)
                time.sleep(2)
        except OSError:
            pass
        finally:
            c.close()


@pytest.fixture
def rawhttp():
    h = RawHttp()
    yield h
    h.close()


@pytest.mark.parametrize("path,opts,want", [
    ("/trickle", {"timeout": 1.5}, "timeout"),
    ("/neverclose", {"timeout": 1.5}, "timeout"),
    ("/big", {"timeout": 10}, "too big"),
    ("/bigchunked", {"timeout": 10}, "too big"),
    ("/bigchunked", {"timeout": 10, "stream": True, "slow": True,
                     "max_body": 1 << 20}, "too big"),
    ("/badchunk", {"timeout": 2}, None),
    ("/negchunk", {"timeout": 2}, None),
    ("/headerflood", {"timeout": 5}, None),
    ("/garbage", {"timeout": 2}, None),
])
def test_held_up_sg_http_against_hostile_servers(server, lua_dir, rawhttp,
                                                 path, opts, want):
    """HELD UP (mostly): trickling, never-closing, 100 MB and malformed
    servers end in nil, err within the timeout; the node stays healthy."""
    s = evil_server(server, lua_dir)

    async def go():
        ws, _ = await open_session(s.port, sid("http"))
        await ws.send(json.dumps({"type": "http",
                                  "url": f"http://127.0.0.1:{rawhttp.port}"
                                         f"{path}", **opts}))
        t0 = time.monotonic()
        f = await recv_until(ws, lambda f: f.get("type") in ("http",
                                                             "error"),
                             timeout=20)
        took = time.monotonic() - t0
        await sgtest.ping_ok(ws)
        await ws.close()
        return f[-1], took

    f, took = run(go(), timeout=40)
    print(path, f, took)
    assert f.get("type") == "http", f
    if want is not None:
        assert f["ok"] is False and f["err"] == want, f
    else:
        assert f["ok"] is False or f["status"] in (200,), f
    assert took < opts["timeout"] + 2, (f, took)
    assert s.http("GET", "/healthz").status == 200


# ============================================================ Redis data loss

def test_delta_mode_after_redis_data_loss_repeats_text(server, redis):
    """OBSERVED: Redis loses the session's keys mid-answer (FLUSHALL, or a
    restart without persistence). The next partial is appended as a NEW
    message (index 0) whose delta is the whole cumulative content, under a
    new epoch with offsets restarting at 1. sg__session_set_epoch() resets
    the socket's last_offset to 0 and the chunk is delivered live: a
    delta-mode client, which builds the text by concatenating `chunk`s,
    now shows the first words twice; it is never told that the epoch
    changed (no frame carries it) and its socket is not closed.
    (Full-mode sockets see offsets jump back to 1 on the same socket.)
    EXPECTED (D-016): an unrecoverable gap in delta mode closes 4008 so
    the client resumes and learns recovered:false; or the deltas still
    concatenate to the final text."""
    s = server(config={"redis": {"url": redis.url}})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    room = sid("flush")
    chunks, contents = sgtest.words_text(10)

    async def go():
        ws, _ = await open_session(s.port, room, mode="delta")
        full, _ = await open_session(s.port, room, user_id="u2")
        ai = FakeAI(redis, room)
        await sgtest.await_until(ai.subscribed, what="subscribed")
        for k in range(5):
            ai.partial("m1", contents[k], chunks[k])
        await asyncio.sleep(0.5)
        ai.c.cmd("FLUSHALL")
        for k in range(5, 10):
            ai.partial("m1", contents[k], chunks[k])
        ai.final("m1", contents[-1])
        frames = await drain(ws, 2.0)
        ff = await drain(full, 1.0)
        code = ws.close_code
        ai.close()
        await ws.close()
        await full.close()
        return frames, ff, code

    frames, ff, code = run(go())
    msgs = [f for f in frames if f.get("type") == "message"]
    text = "".join(f["data"].get("chunk") or "" for f in msgs)
    final = [f["data"]["content"] for f in msgs if f["data"]["is_complete"]]
    full_offs = [f["offset"] for f in ff if f.get("type") == "message"]
    if code == 4008:
        return
    assert final and text == final[-1], \
        f"delta text {text!r} != final {final!r} (socket not closed; " \
        f"full-mode offsets on one socket: {full_offs})"


# ============================================================ reload storm

def test_held_up_reload_storm_with_broken_reloads_and_sighup(server,
                                                             lua_dir):
    """HELD UP: 100 admin reloads back to back (every 10th against a
    broken init.lua: 422) plus 30 SIGHUPs while 20 sockets follow demo
    answers: no crash, every socket gets its exact final, no duplicate
    offsets, old states close afterwards."""
    s = server(config={"lua": {"path": str(lua_dir)},
                       "demo": {"words_per_second": 100}})
    answer = sgtest.demo_answer(1, REPO)
    init = lua_dir / "init.lua"
    good = init.read_text()
    rooms = [sid("storm") for _ in range(10)]

    async def follow(ws):
        return await recv_until(
            ws, lambda f: f.get("type") == "message" and
            f["data"].get("is_complete") is True, timeout=90)

    async def go():
        socks = []
        for r in rooms:
            for _ in range(2):
                socks.append((await open_session(s.port, r))[0])
        followers = [asyncio.ensure_future(follow(w)) for w in socks]
        loop = asyncio.get_running_loop()
        for r in rooms:
            resp = await loop.run_in_executor(None, lambda r=r: s.http(
                "POST", "/api/chat", {"session_id": r, "user_id": "u1",
                                      "message": "Tell me about streaming"}))
            assert resp.status == 200, resp
        codes = []
        for i in range(100):
            if i % 10 == 5:
                init.write_text("local x = = 1\n")
            r = await loop.run_in_executor(None, reload, s)
            codes.append(r.status)
            if i % 10 == 5:
                init.write_text(good)
            if i % 3 == 0:
                os.kill(s.proc.pid, signal.SIGHUP)
            await asyncio.sleep(0)
        results = await asyncio.gather(*followers)
        for w in socks:
            await sgtest.ping_ok(w)
            await w.close()
        return codes, results

    codes, results = run(go(), timeout=150)
    assert codes.count(422) == 10 and codes.count(200) == 90, codes
    for frames in results:
        finals = sgtest.check_socket(frames, contiguous=False)
        assert list(finals.values())[-1]["content"] == answer
    sgtest.wait_until(lambda: admin_status(s)["lua_states"] == 1,
                      timeout=15, what="old Lua states closed")


def test_delta_mode_reader_gets_garbage_after_a_redact_content_reset(
        server, redis):
    """OBSERVED: docs/plugins.md says a masked partial that no longer
    starts with the previous text is recorded as a content reset and "a
    full-mode reader gets the new text whole". A delta-mode reader gets
    the new whole text in `chunk` too, with nothing that marks the reset
    (sg_chatmsg_chunk_frame() drops sg_chunk_t.reset), so concatenating
    chunks - the delta-mode contract (protocol.md) - yields
    "mail bob@examplemail [redacted] ..." and the text shown while
    streaming is wrong (and still holds the unmasked "bob@example").
    EXPECTED: in delta mode the chunks concatenate to the final content,
    or a reset is marked so the client can replace its text."""
    s = start_with(server, {"redis": {"url": redis.url},
                            **plugins(redact={})})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    room = sid("reset")

    async def go():
        ws, _ = await open_session(s.port, room, mode="delta")
        ai = FakeAI(redis, room)
        await sgtest.await_until(ai.subscribed, what="subscribed")
        ai.partial("m1", "mail bob@example", "mail bob@example")
        ai.partial("m1", "mail bob@example.com ok", ".com ok")
        ai.partial("m1", "mail bob@example.com ok then", " then")
        ai.final("m1", "mail bob@example.com ok then")
        frames = await recv_until(
            ws, lambda f: f.get("type") == "message" and
            f["data"]["is_complete"], timeout=10)
        ai.close()
        await ws.close()
        return frames

    frames = run(go())
    msgs = [f for f in frames if f.get("type") == "message"]
    text = "".join(f["data"].get("chunk") or "" for f in msgs)
    final = msgs[-1]["data"]["content"]
    assert final == "mail [redacted] ok then", final
    assert text == final or any("reset" in f or "reset" in f["data"]
                                for f in msgs), \
        f"delta chunks concatenate to {text!r}, final is {final!r}; " \
        f"frames: {[(f['offset'], f['index'], f['data']['chunk']) for f in msgs]}"


# ============================================================ producers

def test_held_up_odd_producer_messages(server, redis):
    """HELD UP (probe): NUL/emoji content, a 200 KB message_id, the same
    message_id in two sessions, is_complete as a string, negative and huge
    timestamps, an error final shorter than its partials, 10 interleaved
    answers: no crash, each socket ends with every exact final."""
    s = server(config={"redis": {"url": redis.url}})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    a, b = sid("odd"), sid("odd")
    big_mid = "M" * 200_000

    async def go():
        wa, _ = await open_session(s.port, a)
        wd, _ = await open_session(s.port, a, mode="delta")
        wb, _ = await open_session(s.port, b)
        aa, ab = FakeAI(redis, a), FakeAI(redis, b)
        await sgtest.await_until(lambda: aa.subscribed() and ab.subscribed(),
                                 what="subscribed")
        want = {}
        # NUL and emoji
        aa.partial("nul", "a\u0000b \U0001F600", "a\u0000b \U0001F600")
        aa.final("nul", "a\u0000b \U0001F600 end")
        want["nul"] = "a\u0000b \U0001F600 end"
        # huge message id
        aa.partial(big_mid, "big ", "big ")
        aa.final(big_mid, "big id")
        want[big_mid] = "big id"
        # same id in two sessions, different text
        aa.partial("same", "in a ", "in a ")
        ab.partial("same", "in b ", "in b ")
        aa.final("same", "in a done")
        ab.final("same", "in b done")
        want["same"] = "in a done"
        # is_complete as a string (not a boolean): must not end the answer
        aa.c.publish(f"chat:stream:{a}", json.dumps({
            "message_id": "str", "role": "assistant", "content": "s1",
            "is_complete": "true", "session_id": a}))
        aa.final("str", "s1 s2", ts=-5)
        want["str"] = "s1 s2"
        # error final shorter than its partials
        aa.partial("err", "a long partial answer", "a long partial answer")
        aa.final("err", "Error: x")
        want["err"] = "Error: x"
        # 10 interleaved answers
        for w in range(5):
            for k in range(10):
                aa.partial(f"i{k}", " ".join(f"w{j}" for j in range(w + 1)),
                           f"w{w}")
        for k in range(10):
            aa.final(f"i{k}", "w0 w1 w2 w3 w4 end")
            want[f"i{k}"] = "w0 w1 w2 w3 w4 end"
        out = []
        for w in (wa, wd):
            fr = await drain(w, 2.0)
            out.append(fr)
        fb = await drain(wb, 0.5)
        aa.close()
        ab.close()
        for w in (wa, wd, wb):
            await w.close()
        return want, out, fb

    want, (fa, fd), fb = run(go(), timeout=60)
    for frames, delta in ((fa, False), (fd, True)):
        chk = SocketCheck("delta" if delta else "full")
        for f in frames:
            chk.feed(f)
        errs = [e for e in chk.errors if "content of err " not in e]
        assert errs == [], errs  # (an error final may replace the text)
        finals = {f["data"]["message_id"]: f["data"]["content"]
                  for f in frames if f.get("type") == "message" and
                  f["data"]["is_complete"] is True}
        for mid, text in want.items():
            assert finals.get(mid) == text, \
                (delta, mid[:20], finals.get(mid), text)
    fin_b = [f["data"]["content"] for f in fb if f.get("type") == "message"
             and f["data"]["is_complete"] is True]
    assert fin_b == ["in b done"], fin_b


def test_a_max_int64_timestamp_poisons_the_session_in_redis_mode(
        server, redis):
    """OBSERVED (Redis mode): the producer's timestamp is accepted when it
    fits int64, but the append script re-encodes it through cjson/Lua
    numbers (14 significant digits): 9223372036854775807 becomes
    9.2233720368548e+18, which no longer fits int64. The node then
    rejects the live chunk ("bad live chunk ... mistyped field": live
    sockets miss it), and every later stream read of the session fails
    ("unexpected stream read reply") because the snapshot meta keeps the
    value for recovery_ttl: joins get no welcome, no history, no answer.
    One hostile/buggy producer message makes a session unjoinable.
    EXPECTED: the chunk is delivered (timestamp kept or clamped) and new
    clients can join the session."""
    s = server(config={"redis": {"url": redis.url}})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    room = sid("usec")

    async def go():
        ws, _ = await open_session(s.port, room)
        ai = FakeAI(redis, room)
        await sgtest.await_until(ai.subscribed, what="subscribed")
        ai.partial("m1", "hello ", "hello ", ts=2 ** 63 - 1)
        ai.final("m1", "hello world", ts=2 ** 63 - 1)
        live = await drain(ws, 1.5)
        ws2 = await sgtest.ws_connect(s.ws(session_id=room, user_id="u2",
                                           token="dev-token"))
        joined = await drain(ws2, 2.0)
        ai.close()
        await ws.close()
        await ws2.close()
        return live, joined

    live, joined = run(go())
    live_fin = [f["data"]["content"] for f in live
                if f.get("type") == "message" and f["data"]["is_complete"]]
    assert live_fin == ["hello world"], f"live socket got {live}"
    assert joined and joined[0].get("type") == "welcome", \
        f"a new client of the session got {joined}"


# ============================================================ resume probes

@pytest.mark.parametrize("mode", ["embedded", "redis"])
def test_held_up_resume_edge_values_and_floods(make_server, mode):
    """HELD UP: resume with since 0/10^15/2^53/-1/"5"/1.5, an empty
    epoch, another session's epoch, and 200 resume frames sent back to
    back: every valid one is answered (resumed or "already in progress"),
    recovered only with the right epoch and since <= last, and no live
    offset is repeated."""
    s = make_server(mode)
    room, other = sid("res"), sid("res")
    ai_needed = mode == "redis"

    async def go():
        ws, welcome = await open_session(s.port, room)
        ow, owel = await open_session(s.port, other)
        if ai_needed:
            ai = FakeAI(s.redis, room)
            await sgtest.await_until(ai.subscribed, what="subscribed")
            ai.partial("m1", "a ", "a ")
            ai.final("m1", "a b")
            ai.close()
        else:
            r = s.http("POST", "/api/chat", {"session_id": room,
                                             "message": "hi",
                                             "user_id": "u1"})
            assert r.status == 200
        await recv_until(ws, lambda f: f.get("type") == "message" and
                         f["data"]["is_complete"], timeout=20)
        ep = welcome["epoch"]
        res = {}
        cases = {"zero": (0, ep), "big": (10 ** 15, ep), "huge": (2 ** 53, ep),
                 "neg": (-1, ep), "str": ("5", ep), "frac": (1.5, ep),
                 "empty": (0, ""), "other": (0, owel["epoch"])}
        for name, (since, epoch) in cases.items():
            await ws.send(json.dumps({"type": "resume", "since": since,
                                      "epoch": epoch}))
            f = await recv_until(ws, lambda f: f.get("type") in
                                 ("resumed", "error"), timeout=5)
            res[name] = f[-1]
        for _ in range(200):
            await ws.send(json.dumps({"type": "resume", "since": 0,
                                      "epoch": ep}))
        flood = await drain(ws, 3.0)
        await sgtest.ping_ok(ws)
        await ws.close()
        await ow.close()
        return res, flood

    res, flood = run(go(), timeout=60)
    print(res)
    assert res["zero"]["recovered"] is True
    assert res["big"]["recovered"] is False
    assert res["empty"]["recovered"] is False
    assert res["other"]["recovered"] is False
    for k in ("neg", "str", "frac", "huge"):
        assert res[k]["type"] == "error", res[k]
    answered = [f for f in flood if f.get("type") in ("resumed", "error")]
    assert len(answered) == 200, len(answered)


def test_held_up_admin_token_variants(server):
    """HELD UP: with admin.token set, a prefix, a longer value, an empty
    header, a lowercase scheme and a token in the query are all refused."""
    s = server(config={"admin": {"token": "s3cret-admin-token"}})
    bad = [{}, {"X-Admin-Token": ""}, {"X-Admin-Token": "s3cret"},
           {"X-Admin-Token": "s3cret-admin-token-x"},
           {"Authorization": "Bearer s3cret-admin-toke"},
           {"Authorization": "Basic s3cret-admin-token"}]
    for h in bad:
        r = s.http("POST", "/admin/reload", headers=h)
        assert r.status == 401, (h, r)
    assert s.http("POST", "/admin/reload?token=s3cret-admin-token"
                  ).status == 401
    r = s.http("POST", "/admin/reload",
               headers={"X-Admin-Token": "s3cret-admin-token"})
    assert r.status == 200, r
