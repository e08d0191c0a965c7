"""Adversarial reproducers (black box). Each test is a minimal repro of a
defect found by breaking the server on purpose; the docstring says what was
observed and what is expected. Tests that held up are at the end.

Run: SG_BINARY=build-asan/streamgate /usr/bin/python3 -m pytest \
         tests/integration/test_adversarial.py
"""

import asyncio
import os
import signal
import socket
import struct
import threading
import time
import uuid

import pytest

import sgtest
from sgtest import open_session, py_msg, run

WS_KEY = "c3RyZWFtZ2F0ZS10ZXN0cw=="


# ---------------------------------------------------------------- helpers

def raw_exchange(port, data, timeout=2.0):
    """Sends `data` on one TCP connection and returns everything read until
    EOF or `timeout` (never raises on timeout)."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
    return out


def post_req(path, body):
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body))


def upgrade_req(path):
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def ws_frame(opcode, payload):
    n = len(payload)
    if n < 126:
        hdr = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        hdr = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawWS:
    """A WebSocket client on a plain socket, fast in C-ish terms: no
    per-frame queue limits, so it measures the server, not the client."""

    def __init__(self, port, query, rcvbuf=None, timeout=10.0):
        self.s = socket.socket()
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(timeout)
        self.s.connect(("127.0.0.1", port))
        self.s.sendall(upgrade_req("/ws/chat?" + query))
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            assert chunk, f"closed during handshake: {self.buf!r}"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split()[1])

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("eof")
            self.buf += chunk

    def recv(self):
        """(opcode, payload)"""
        self._need(2)
        n, off = self.buf[1] & 0x7F, 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
        self._need(off + n)
        op, payload = self.buf[0] & 0x0F, self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return op, payload

    def close(self):
        self.s.close()


def healthz_answers(port, timeout=3.0):
    try:
        return sgtest.http_request(port, "GET", "/healthz",
                                   timeout=timeout).status == 200
    except OSError:
        return False


# =================================================================== BUGS

# ---- 1. CRITICAL: pipelined request + POST body -> 100 % CPU spin -------

@pytest.mark.parametrize("first", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    post_req(b"/api/chat", b'{"session_id":"pp","message":"hi"}'),
    post_req(b"/nope", b"{}"),
], ids=["get-then-post", "post-then-post", "404post-then-post"])
def test_pipelined_request_then_post_does_not_wedge_the_server(server, first):
    """Observed: an HTTP request followed, in the same TCP write, by a POST
    with a body gets one response; then the process spins at 100 % CPU
    inside lws_service_do_ripe_rxflow -> LWS_CALLBACK_HTTP_BODY_COMPLETION
    (http.c sg__http_callback, pss->http already dispatched), answers
    nothing any more (/healthz times out for every client) and ignores
    SIGTERM (teardown has to SIGKILL). One ~300-byte unauthenticated packet
    kills the node. Expected: both requests answered (or the second one
    refused), server stays responsive, SIGTERM exits 0."""
    s = server()
    second = post_req(b"/api/chat", b'{"session_id":"pp","message":"hi"}')
    got = raw_exchange(s.port, first + second, timeout=2)
    assert healthz_answers(s.port), \
        "server stopped answering after a pipelined POST (busy loop)"
    # A POST pipelined behind a pending response makes the server close the
    # connection (decision D-021; RFC 9112 §9.3.2: clients should not
    # pipeline non-idempotent methods). What was answered is well formed.
    assert got == b"" or got.startswith(b"HTTP/1.1 "), got[:300]
    if first.startswith(b"GET"):
        assert got.startswith(b"HTTP/1.1 200"), got[:300]


# ---- 2. HIGH: a session whose history exceeds max_pending_bytes --------

def test_large_history_does_not_make_session_unjoinable(server):
    """Observed: 5 unauthenticated POST /api/chat with a ~1 MiB message
    (under limits.max_body_bytes) make chat:history:{sid} ~5 MiB; from then
    on EVERY connect to that session gets welcome and then close 4008
    "slow consumer" with "0 frames, 0 bytes queued" (the history frame alone
    is over stream.max_pending_bytes). The session is bricked for the whole
    history TTL (24 h) and the browser reconnect-loops. Anyone can do it to
    any session id. Expected: the socket stays open (history truncated /
    split / bounded, or big messages refused at /api/chat)."""
    s = server(config={"demo": {"words_per_second": 10000}})
    big = "a" * (1024 * 1024 - 200)
    for _ in range(5):
        r = s.http("POST", "/api/chat", {"session_id": "brick",
                                          "message": big})
        assert r.status == 200, r
    time.sleep(0.5)

    async def body():
        ws, _ = await open_session(s.port, "brick")
        try:
            await ws.send('{"type":"ping"}')
            kinds = []
            while not kinds or kinds[-1] != "pong":
                kinds.append((await sgtest.recv_json(ws, 10))["type"])
            assert kinds == ["history", "pong"], kinds
        finally:
            code = ws.close_code
            await ws.close()
        assert code is None, f"closed with {code} {ws.close_reason!r}"
    run(body())


def test_single_big_producer_message_does_not_close_healthy_clients(
        server, redis_factory):
    """Observed: one 5 MiB message on chat:stream:{sid} closes every socket
    of the session with 4008 "slow consumer" although nothing was queued
    (log: "0 frames, 0 bytes queued"). Expected: the oversize message is
    dropped and counted as an ingest error; the reading client stays open
    and gets the next message."""
    r = redis_factory()
    s = server(config={"redis": {"url": r.url}})

    async def body():
        ws, _ = await open_session(s.port, "bigmsg")
        with r.client() as c:
            await sgtest.await_until(
                lambda: c.numsub("chat:stream:bigmsg") >= 1, 5)
            c.publish("chat:stream:bigmsg", py_msg(
                "big", "bigmsg", "assistant", "x" * (5 << 20), "x"))
            c.publish("chat:stream:bigmsg", py_msg(
                "ok", "bigmsg", "assistant", "fine", None, True))
        frames = await sgtest.recv_until(
            ws, lambda f: f.get("data", {}).get("message_id") == "ok", 10)
        assert frames
        await ws.close()
    run(body())


# ---- 3. HIGH: fast reader closed with 4008 under an ingest burst --------

def test_fast_reader_survives_a_burst_of_partials(server, redis_factory):
    """Observed (release and ASan build): 20 000 partials of ONE message,
    ~1 KiB each, published back to back (~10k msg/s, ~10 MB/s) to a session
    with a single raw-socket reader that reads as fast as it can: the reader
    is closed with 4008 "slow consumer" after ~1300 frames (log: "513
    frames, 4193334 bytes queued"; with 100-byte partials: after ~2500
    frames, i.e. at under 1 MB/s). ws.c writes one frame per
    SERVER_WRITEABLE callback while one Redis read delivers hundreds, and
    PROTOCOL.md §3 coalescing of queued partials in full mode is not
    implemented. Expected: partials coalesced (only the newest kept), the
    final delivered last, no 4008 for a reader that keeps up."""
    r = redis_factory()
    s = server(config={"redis": {"url": r.url}})
    w = RawWS(s.port, "session_id=burst&token=dev-token")
    assert w.status == 101
    w.recv()                                            # welcome
    res = {}

    def reader():
        n, code = 0, None
        try:
            while True:
                op, pl = w.recv()
                if op == 8:
                    code = struct.unpack(">H", pl[:2])[0]
                    break
                n += 1
                if b'"is_complete":true' in pl:
                    break
        except OSError as e:
            code = repr(e)
        res.update(n=n, code=code)

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    with r.client() as c:
        sgtest.wait_until(lambda: c.numsub("chat:stream:burst") >= 1, 5)
        for i in range(20000):
            c.publish("chat:stream:burst", py_msg(
                "m", "burst", "assistant", "x" * 1000 + str(i), "w"))
        c.publish("chat:stream:burst", py_msg(
            "m", "burst", "assistant", "final", None, True))
    th.join(30)
    w.close()
    assert res.get("code") is None, \
        f"fast reader closed with {res.get('code')} after {res.get('n')} frames"


# ---- 4. MEDIUM: long query parameter skips session_id validation -------

@pytest.mark.parametrize("query", [
    "session_id=" + "a" * 2000,                       # 2000-char sid
    "pad=" + "a" * 1100 + "&session_id=bad!!",        # long param first
    "&".join(f"p{i}=v" for i in range(16)) + "&session_id=bad!!",  # 17th
], ids=["sid-2000-chars", "after-1100-byte-param", "17th-param"])
def test_session_id_after_long_or_many_params_is_still_validated(
        server, query):
    """Observed: 101 and welcome with sessionId "default". ws.c
    ws_query_params copies each fragment into a 1024-byte buffer and stops
    at the first that does not fit (lws_hdr_copy_fragment returns -1), and
    reads at most 16 parameters; everything after is silently ignored, so an
    invalid session id is not rejected and the client is dropped into the
    shared "default" session (token/user_id after it are lost the same way:
    in production a valid >1 KiB JWT is treated as missing -> 401).
    Expected: 400 for the invalid session id."""
    s = server()
    status, _, body = sgtest.raw_handshake(s.port, "/ws/chat?" + query)
    assert status == 400, (status, body[:200])


# ---- 5. MEDIUM: no history for a tab that joins during a Redis outage ---

def test_join_during_redis_outage_gets_history_after_recovery(
        server, redis_factory):
    """Observed: while session S is held open by tab A, Redis goes down; tab
    B connects to S, gets welcome, the history read fails at once ("history
    read for sid=S not started: not ready") and B is made live WITHOUT
    history and without an error frame; after Redis is back B never gets
    the history (session.c: s->subscribed stays 1 across the outage, so B
    does not wait for the resubscription). A new session joined during the
    same outage does get its history after recovery. Expected: B receives
    the history frame once Redis is back (or at least an error frame)."""
    r = redis_factory()
    # The reconnect waits 1 s, so the history is stored on the restarted
    # Redis (below) before the server is back and reads it.
    s = server(config={"redis": {"url": r.url, "reconnect_min_delay": 1.0,
                                 "reconnect_max_delay": 1.0}})

    async def body():
        a, _ = await open_session(s.port, "outage")
        with r.client() as c:
            await sgtest.await_until(
                lambda: c.numsub("chat:stream:outage") >= 1, 5)
        port = r.port
        r.stop()
        await sgtest.await_until(lambda: s.ready() == 503, 5)
        b, _ = await open_session(s.port, "outage")
        fresh, _ = await open_session(s.port, "outage-new")
        r2 = redis_factory(port=port)
        with r2.client() as c:
            for sid in ("outage", "outage-new"):
                c.cmd("RPUSH", f"chat:history:{sid}", py_msg(
                    "h1", sid, "assistant", "stored", None, True))
        await sgtest.await_until(lambda: s.ready() == 200, 10)
        got_fresh = await sgtest.recv_json(fresh, 5)
        assert got_fresh["type"] == "history"        # holds up
        frame = await sgtest.recv_json(b, 3)          # fails: nothing comes
        assert frame["type"] in ("history", "error"), frame
        for ws in (a, b, fresh):
            await ws.close()
    run(body())


# ---- 6. MEDIUM: chunked request body is never answered ------------------

def test_chunked_post_gets_an_answer(server):
    """Observed: POST /api/chat with Transfer-Encoding: chunked gets no
    response at all; the connection is dropped after lws' 30 s timeout.
    Expected: the body is read (200) or 411/400 at once."""
    s = server()
    body = b'{"session_id":"ch","message":"hi"}'
    req = (b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: "
           b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
           b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    got = raw_exchange(s.port, req, timeout=4)
    assert got.startswith(b"HTTP/1.1 "), got[:200]


# ---- 7. LOW: UB on an empty POST body -----------------------------------

def test_empty_post_body_is_not_undefined_behaviour(server):
    """Observed with the SG_SANITIZE build: POST with Content-Length: 0 logs
    "src/http.c:133:5: runtime error: null pointer passed as argument 2"
    (http_body_append memcpy(.., NULL, 0): lws passes in=NULL, len=0).
    The answer itself is a correct 400. Expected: no UB."""
    s = server()
    got = raw_exchange(s.port, post_req(b"/api/chat", b""), timeout=1)
    assert b" 400 " in got.split(b"\r\n")[0]
    time.sleep(0.2)
    assert "runtime error" not in s.log(), s.log()[-500:]


# ---- 8. LOW: oversize request line/headers dropped without an answer ----

@pytest.mark.parametrize("path", [
    pytest.param("/ws/chat?session_id=a&token=" + "t" * 10000,
                 marks=pytest.mark.xfail(strict=True, reason=(
                     "lws 4.1.6 drops a request over max_http_header_data "
                     "(8 KiB) without any response; no hook to answer 431"))),
    "/" + "a" * 8000,
], ids=["10k-token", "8k-path"])
def test_oversize_request_gets_an_http_error_not_a_silent_drop(server, path):
    """Observed: lws "Ran out of header data space" (max_http_header_data
    = 4096) and the connection is closed with no HTTP response at all (a
    10 KB JWT or a long URL looks like a network failure to the client).
    Expected: 414/431 (JSON error)."""
    s = server()
    got = raw_exchange(s.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"
                       .encode(), timeout=2)
    assert got.startswith(b"HTTP/1.1 4"), got[:200]


def test_head_on_builtin_health_endpoint(server):
    """Observed: HEAD /healthz (and HEAD /metrics, /readyz) -> 404 (only GET
    is routed to built-ins); HEAD / works. Load balancers often probe with
    HEAD. Expected: 200 without a body."""
    s = server()
    assert s.http("HEAD", "/healthz").status == 200


# ---- 9. LOW: inbound ping flood is reported as a "slow consumer" --------

def test_pipelined_pings_from_a_reading_client_are_not_a_slow_consumer(
        server):
    """Observed: 2000 {"type":"ping"} frames written at once by a client
    that reads everything: only a few pongs arrive, then close 4008 "slow
    consumer" (all replies are queued in one RECEIVE burst, 1000-frame cap).
    Expected: all pongs, or a documented rate limit closing with 1008
    (PROTOCOL.md §3), not 4008."""
    s = server()
    w = RawWS(s.port, "session_id=flood&token=dev-token")
    w.recv()
    w.s.sendall(b"".join(ws_frame(1, b'{"type":"ping"}')
                         for _ in range(2000)))
    pongs, code = 0, None
    try:
        while pongs < 2000:
            op, pl = w.recv()
            if op == 8:
                code = struct.unpack(">H", pl[:2])[0]
                break
            pongs += 1
    except OSError:
        pass
    w.close()
    assert code != 4008, f"closed 4008 after {pongs} pongs"


# ---- 10. LOW: send-queue histogram is never observed -------------------

def test_send_queue_depth_histogram_is_observed(server):
    """Observed: websocket_send_queue_depth_count stays 0 after hundreds of
    frames were queued (registered in server.c, never updated). Expected:
    one observation per queued frame (its help text says so)."""
    s = server(config={"demo": {"words_per_second": 2000}})

    async def body():
        ws, _ = await open_session(s.port, "qd")
        s.http("POST", "/api/chat", {"session_id": "qd", "message": "hi"})
        await sgtest.recv_until(
            ws, lambda f: f.get("type") == "message" and
            f["data"]["is_complete"] is True, 10)
        await ws.close()
    run(body())
    assert s.metric("websocket_send_queue_depth_count") > 0


# ---- 11. LOW: Lua entry point that never returns ----------------------

def test_config_check_does_not_hang_on_a_looping_init_lua(binary, tmp_path):
    """Observed: `streamgate -t` with lua.path at a dir whose init.lua is
    `while true do end` never returns (no instruction/time budget; the
    server itself would hang at start-up the same way). Expected: -t exits
    2 naming the file (e.g. after a load-time budget)."""
    import subprocess
    d = tmp_path / "lua"
    d.mkdir()
    (d / "init.lua").write_text("while true do end\n")
    cfg = tmp_path / "c.lua"
    cfg.write_text(f'return {{ lua = {{ path = "{d}" }} }}\n')
    try:
        p = subprocess.run([binary, "-t", "-c", str(cfg)], timeout=10,
                           capture_output=True)
    except subprocess.TimeoutExpired:
        pytest.fail("streamgate -t still running after 10 s")
    assert p.returncode == 2


def test_production_without_on_connect_hook_is_not_fail_open(server,
                                                            tmp_path):
    """Observed: STREAMGATE_ENV=production, lua.path at a dir whose init.lua
    returns {} (no on_connect): `-t` says OK and every WebSocket is accepted
    with no token at all (101). Documented as "every hook is optional", but
    it silently turns auth off in production. Expected: deny (or refuse to
    start) when production has no on_connect."""
    d = tmp_path / "lua"
    d.mkdir()
    (d / "init.lua").write_text("return {}\n")
    s = server(config={"lua": {"path": str(d)}},
               env={"STREAMGATE_ENV": "production", "JWT_SECRET": "x" * 40})
    status, _, _ = sgtest.raw_handshake(
        s.port, "/ws/chat?session_id=a&user_id=admin")
    assert status == 401


# ============================================================ HELD UP
# Brief regression guards for attacks that did not break anything.

def test_held_up_frame_protocol_edge_cases(server):
    """Fragmented messages at exactly/just over max_frame_bytes (ok/1009),
    invalid UTF-8 (1007), ping control frame (pong), JSON nesting bomb
    (error frame), weird reconnect values (error/recovery_status)."""
    s = server(config={"limits": {"max_frame_bytes": 1000}})
    pad = b'{"type":"ping","x":"'

    def exchange(frames, want):
        w = RawWS(s.port, "session_id=edge&token=dev-token")
        w.recv()
        w.s.sendall(b"".join(frames))
        op, pl = w.recv()
        w.close()
        assert want(op, pl), (op, pl[:200])

    def frag(payload):       # text frame split into a 3-frame message
        a, b = payload[:10], payload[10:]
        first = bytearray(ws_frame(1, a))
        first[0] &= 0x7F                     # FIN off
        mid = bytearray(ws_frame(0, b[:-2]))
        mid[0] &= 0x7F
        return [bytes(first), bytes(mid), ws_frame(0, b[-2:])]

    ok = pad + b"a" * (1000 - len(pad) - 2) + b'"}'
    over = pad + b"a" * (1001 - len(pad) - 2) + b'"}'
    exchange(frag(ok), lambda op, pl: pl == b'{"type":"pong"}')
    exchange(frag(over), lambda op, pl: op == 8 and pl[:2] == b"\x03\xf1")
    exchange([ws_frame(1, b'{"type":"\xff"}')],
             lambda op, pl: op == 8 and pl[:2] == b"\x03\xef")
    exchange([ws_frame(9, b"hi")], lambda op, pl: op == 10 and pl == b"hi")
    exchange([ws_frame(1, b"[" * 900)], lambda op, pl: b"Invalid JSON" in pl)
    exchange([ws_frame(1, b'{"type":"reconnect","messageId":7}')],
             lambda op, pl: b"Recovery failed" in pl)
    assert healthz_answers(s.port)


def test_held_up_connect_close_churn_leaves_nothing_behind(server,
                                                          redis_factory):
    """500 parallel connect/abort cycles (partial handshakes, close before
    welcome, RST, close with a reconnect read in flight) on 5 sessions with
    big histories: gauges and PUBSUB return to 0, no ASan report."""
    r = redis_factory()
    s = server(config={"redis": {"url": r.url}})
    with r.client() as c:
        for k in range(5):
            c.cmd("RPUSH", f"chat:history:churn{k}", *[
                py_msg(f"m{i}", f"churn{k}", "assistant", "y" * 2000, None,
                       True) for i in range(100)])

    def worker(seed):
        import random
        rnd = random.Random(seed)
        for _ in range(50):
            req = upgrade_req(f"/ws/chat?session_id=churn{rnd.randrange(5)}")
            try:
                so = socket.create_connection(("127.0.0.1", s.port), 3)
                mode = rnd.randrange(4)
                if mode == 0:
                    so.sendall(req[:rnd.randrange(1, len(req))])
                elif mode == 1:
                    so.sendall(req)
                elif mode == 2:
                    so.sendall(req)
                    so.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                  struct.pack("ii", 1, 0))
                else:
                    so.sendall(req + ws_frame(
                        1, b'{"type":"reconnect","messageId":"m5"}'))
                so.close()
            except OSError:
                pass
    ths = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
    with r.client() as c:
        sgtest.wait_until(
            lambda: s.metric("websocket_active_connections") == 0 and
            s.metric("broker_subscriptions") == 0 and
            not c.channels("chat:stream:*"), 10, what="cleanup")
    assert s.metric("stream_active_sessions") == 0
    assert "ERROR: AddressSanitizer" not in s.log()


def test_held_up_sigterm_while_streaming_to_a_stalled_reader(server):
    """A reader with a full TCP window during a 5000 words/s stream, plus a
    half-sent HTTP request: SIGTERM -> exit 0 quickly, reader gets 1001."""
    s = server(config={"demo": {"words_per_second": 5000}})
    w = RawWS(s.port, "session_id=stall&token=dev-token", rcvbuf=4096)
    for _ in range(5):
        s.http("POST", "/api/chat", {"session_id": "stall",
                                     "message": "workflow"})
    half = socket.create_connection(("127.0.0.1", s.port))
    half.sendall(b"GET /api/history/stall HTTP/1.1\r\nHost: x\r\n")
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    code = None
    try:
        while True:
            op, pl = w.recv()
            if op == 8:
                code = struct.unpack(">H", pl[:2])[0]
                break
    except OSError:
        pass
    assert code == 1001
    assert s.proc.wait(5) == 0
    half.close()
    w.close()
