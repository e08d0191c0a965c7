"""Helpers for the streamgate integration suite (black box, stdlib only).

What lives here: a tiny RESP client for redis-server, HTTP and raw-handshake
helpers, WebSocket client helpers (websockets 10.4 asyncio API), a Prometheus
text parser, JWT crafting, and a bounded `wait_until` poller. Fixtures that
start processes live in conftest.py.
"""

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import re
import socket
import time

import websockets

ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
CHATMSG_KEYS = {"message_id", "session_id", "user_id", "role", "content",
                "chunk", "timestamp", "is_complete"}


# ---------------------------------------------------------------- polling

def wait_until(pred, timeout=5.0, interval=0.02, what="condition"):
    """Polls pred() until truthy; returns its value or raises AssertionError
    naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for "
                                 f"{what}; last value: {last!r}")
        time.sleep(interval)


async def await_until(pred, timeout=5.0, interval=0.02, what="condition"):
    """Async twin of wait_until for use inside coroutines (pred is sync)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for "
                                 f"{what}; last value: {last!r}")
        await asyncio.sleep(interval)


def run(coro, timeout=60.0):
    """Runs a coroutine to completion with an overall time bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- redis

class RespError(Exception):
    pass


class Resp:
    """Minimal synchronous RESP2 client (one connection, no pipelining
    beyond what callers do by hand). Arguments may be str, bytes or int."""

    def __init__(self, port, password=None, host="127.0.0.1", timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        if password is not None:
            self.cmd("AUTH", password)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _enc(arg):
        if isinstance(arg, bytes):
            return arg
        return str(arg).encode()

    def cmd(self, *args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            b = self._enc(a)
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RespError(f"unexpected RESP reply {line!r}")

    # conveniences
    def numsub(self, channel):
        reply = self.cmd("PUBSUB", "NUMSUB", channel)
        return int(reply[1])

    def channels(self, pattern="*"):
        return sorted(c.decode() for c in self.cmd("PUBSUB", "CHANNELS",
                                                  pattern))

    def publish(self, channel, payload):
        return self.cmd("PUBLISH", channel, payload)


# ---------------------------------------------------------------- http

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # dict, lower-case names
        self.body = body                # bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


def http_request(port, method, path, body=None, headers=None, timeout=5.0):
    """One HTTP/1.1 request to 127.0.0.1:port; never raises on 4xx/5xx."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        elif isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        return Response(r.status, hdrs, data)
    finally:
        conn.close()


def raw_handshake(port, path, timeout=5.0):
    """Sends a WebSocket upgrade request and returns (status, headers, body)
    of whatever the server answers. For non-101 answers the body is read to
    Content-Length (or EOF). Used to check rejected handshakes, whose body
    the websockets client hides."""
    key = base64.b64encode(b"streamgate-tests").decode()
    req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           "Origin: http://localhost:3000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(req.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if status != 101:
            want = int(headers.get("content-length", "-1"))
            deadline = time.monotonic() + timeout
            while (want < 0 or len(body) < want) and \
                    time.monotonic() < deadline:
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                body += chunk
        return status, headers, body


# ---------------------------------------------------------------- metrics

_SAMPLE_RE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text):
    """Returns (samples, types): samples is a list of (name, labels dict,
    float value); types maps family name to its # TYPE."""
    samples, types = [], {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            parts = line.split()
            types[parts[2]] = parts[3]
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        assert m, f"line is not Prometheus text format: {line!r}"
        labels = dict(_LABEL_RE.findall(m.group(3) or ""))
        samples.append((m.group(1), labels, float(m.group(4))))
    return samples, types


def metric_sum(samples, name, **labels):
    """Sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for n, lbl, v in samples:
        if n == name and all(lbl.get(k) == val for k, val in labels.items()):
            total += v
    return total


# ---------------------------------------------------------------- jwt

def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims, secret, alg="HS256", header=None):
    """HMAC JWT built by hand (so tests control every byte); alg "none"
    gives an unsigned token with an empty signature."""
    hdr = header or {"alg": alg, "typ": "JWT"}
    signing = (_b64url(json.dumps(hdr, separators=(",", ":")).encode()) +
               "." +
               _b64url(json.dumps(claims, separators=(",", ":")).encode()))
    if alg == "none":
        return signing + "."
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384,
              "HS512": hashlib.sha512}[alg]
    sig = hmac.new(secret.encode(), signing.encode(), digest).digest()
    return signing + "." + _b64url(sig)


# ---------------------------------------------------------------- websocket

def ws_url(port, path="/ws/chat", **query):
    from urllib.parse import quote
    qs = "&".join(f"{k}={quote(str(v), safe='')}" if v is not None else k
                  for k, v in query.items())
    return f"ws://127.0.0.1:{port}{path}" + (f"?{qs}" if qs else "")


async def ws_connect(url, compression="deflate", **kw):
    """Opens a client socket the way a browser does: no subprotocol, no
    keepalive pings from the client library."""
    return await websockets.connect(url, open_timeout=5, ping_interval=None,
                                    close_timeout=2, max_size=None,
                                    compression=compression, **kw)


async def recv_frame(ws, timeout=5.0):
    """Next frame as sent (str or bytes); AssertionError on timeout."""
    try:
        return await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"no frame within {timeout}s") from None


async def recv_json(ws, timeout=5.0):
    frame = await recv_frame(ws, timeout)
    assert isinstance(frame, str), f"expected a text frame, got {frame!r}"
    try:
        return json.loads(frame)
    except ValueError:
        raise AssertionError(f"expected JSON text, got {frame!r}") from None


async def recv_until(ws, pred, timeout=10.0, max_frames=5000):
    """Collects JSON frames until pred(frame) is true (that frame included).
    Bounded by time and count."""
    frames = []
    deadline = time.monotonic() + timeout
    while len(frames) < max_frames:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            f = await recv_json(ws, left)
        except AssertionError:
            break
        frames.append(f)
        if pred(f):
            return frames
    raise AssertionError(f"predicate not met within {timeout}s / "
                         f"{max_frames} frames; got {len(frames)} frames, "
                         f"last: {frames[-3:]!r}")


async def assert_silent(ws, ms=300):
    """Asserts that no frame arrives within `ms` milliseconds."""
    try:
        frame = await asyncio.wait_for(ws.recv(), ms / 1000.0)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"expected no frame within {ms} ms, got {frame!r}")


async def expect_close(ws, timeout=5.0):
    """Waits for the server to close; returns (code, reason). Frames that
    arrive first are discarded."""
    try:
        await asyncio.wait_for(ws.wait_closed(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"socket still open after {timeout}s") from None
    return ws.close_code, ws.close_reason


async def open_session(port, sid, path="/ws/chat", **query):
    """Connects and consumes the welcome frame. Returns (ws, welcome)."""
    q = {"session_id": sid, "user_id": "u1", "token": "dev-token"}
    q.update(query)
    q = {k: v for k, v in q.items() if v is not ...}
    ws = await ws_connect(ws_url(port, path, **q))
    welcome = await recv_json(ws)
    assert welcome.get("type") == "welcome", \
        f"first frame must be welcome, got {welcome!r}"
    return ws, welcome


async def ping_ok(ws):
    """JSON ping round trip: proves the socket is still open and served."""
    await ws.send('{"type":"ping"}')
    reply = await recv_json(ws)
    assert reply == {"type": "pong"}, f"ping answered with {reply!r}"


def stream_msgs(frames):
    """The `data` of every `message` frame, in order."""
    return [f["data"] for f in frames if f.get("type") == "message"]


def check_stream(datas, message_id=None):
    """Asserts the compat streaming contract for one answer's frames:
    assistant only, one message_id, content grows (each a prefix of the
    next), exactly one final and it is last. Returns the final."""
    assert datas, "no message frames"
    mids = {d["message_id"] for d in datas}
    assert len(mids) == 1, f"frames of several messages: {mids}"
    if message_id is not None:
        assert mids == {message_id}
    for d in datas:
        assert d["role"] == "assistant", f"non-assistant frame {d!r}"
        assert CHATMSG_KEYS <= set(d), \
            f"ChatMessage keys missing: {CHATMSG_KEYS - set(d)} in {d!r}"
    finals = [i for i, d in enumerate(datas) if d["is_complete"] is True]
    assert finals == [len(datas) - 1], \
        f"expected exactly one final, last; finals at {finals} of {len(datas)}"
    for a, b in zip(datas, datas[1:]):
        assert b["content"].startswith(a["content"]), \
            f"content not cumulative: {a['content']!r} -> {b['content']!r}"
    partial_lens = [len(d["content"]) for d in datas[:-1]]
    assert partial_lens == sorted(set(partial_lens)), \
        f"partials repeat or shrink (duplicate frame?): {partial_lens}"
    return datas[-1]


# ------------------------------------------------------- fake AI producer

def py_msg(mid, sid, role, content, chunk=None, complete=False, user="u1",
           ts=None, style="pydantic", extra=None, drop=()):
    """A ChatMessage as the Python service (pydantic, compact, raw UTF-8)
    or the race scripts (json.dumps: spaces, \\u escapes) would publish."""
    obj = {"message_id": mid, "session_id": sid, "user_id": user,
           "role": role, "content": content,
           "timestamp": ts if ts is not None else int(time.time() * 1000),
           "is_complete": complete, "chunk": chunk}
    if extra:
        obj.update(extra)
    for k in drop:
        obj.pop(k, None)
    if style == "pydantic":
        return json.dumps(obj, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")
    return json.dumps(obj).encode("ascii")


# ================================================ H12: multi-node helpers
# Used by test_multinode.py, test_chaos.py and test_leaks.py. Appended
# block: nothing above it is changed by these additions.

def answer_script(sid, mid, words, user="u1"):
    """One answer as the Python AI service publishes it (original-system.md
    §4.2): partials with cumulative `content` and `chunk` = word + " " (the
    last word without the space), then the final (`chunk` null), which it
    also RPUSHes to chat:history:{sid}. Returns (partials, final, text):
    partials is a list of (content, payload bytes)."""
    partials, acc = [], ""
    for k, w in enumerate(words):
        piece = w + (" " if k < len(words) - 1 else "")
        acc += piece
        partials.append((acc, py_msg(mid, sid, "assistant", acc, piece,
                                     False, user=user)))
    final = py_msg(mid, sid, "assistant", acc, None, True, user=user)
    return partials, final, acc


def sigkill(server):
    """SIGKILLs a conftest Server by its PID and reaps it; teardown then
    skips it (its exit code is recorded as -9)."""
    import signal as _signal
    proc = server.proc
    assert proc is not None and proc.poll() is None, "server not running"
    proc.send_signal(_signal.SIGKILL)
    proc.wait(5)
    server.returncode = proc.returncode
    server.proc = None


def vmrss_kb(pid):
    """VmRSS of a process in kB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS line in /proc/{pid}/status")


def scan_keys(client, pattern):
    """Every key matching `pattern`, via SCAN (never KEYS)."""
    keys, cursor = [], b"0"
    while True:
        cursor, batch = client.cmd("SCAN", cursor, "MATCH", pattern,
                                   "COUNT", 1000)
        keys.extend(batch)
        if cursor in (b"0", "0"):
            return keys


class SocketCheck:
    """Checks the frames of ONE WebSocket connection as they arrive and
    collects violations in `errors` (so a concurrent test can report all
    of them): message offsets strictly increasing (hence none twice), per
    message_id content growing as a prefix chain, nothing after a final
    (a final from the `history` frame counts too). `latest` maps
    message_id to the newest content this socket showed (history
    included), as a client UI would."""

    def __init__(self, name):
        self.name = name
        self.welcome = None
        self.offsets = []
        self.latest = {}
        self.finals = set()
        self.unknown = set()
        self.frames = 0
        self.errors = []

    def feed(self, f):
        self.frames += 1
        kind = f.get("type")
        if kind == "welcome":
            self.welcome = f
        elif kind == "history":
            for m in f.get("messages", []):
                if m.get("role") == "assistant" and m.get("is_complete"):
                    self.latest[m["message_id"]] = m["content"]
                    self.finals.add(m["message_id"])
        elif kind == "message":
            self._message(f)

    def _message(self, f):
        d, off = f["data"], f.get("offset")
        mid = d["message_id"]
        if not isinstance(off, int):
            self.errors.append(f"{self.name}: message without offset {f!r}")
        elif self.offsets and off <= self.offsets[-1]:
            kind = "duplicate" if off in self.offsets else "out-of-order"
            self.errors.append(f"{self.name}: {kind} offset {off} after "
                               f"{self.offsets[-1]} (mid {mid})")
        if isinstance(off, int):
            self.offsets.append(off)
        prev = self.latest.get(mid)
        content = d.get("content")
        if mid in self.finals and not (d["is_complete"] is True and
                                       content == prev):
            # (the same final again, e.g. after `history`, is harmless)
            self.errors.append(
                f"{self.name}: frame after the final of {mid}: offset {off} "
                f"complete={d['is_complete']} content="
                f"{(content or d.get('chunk') or '')[-40:]!r}")
        if content is None:  # delta mode partial: the text is the chunks
            if prev is None and f.get("index", 0) > 0:
                self.unknown.add(mid)  # resumed mid-message: no prefix
            content = (prev or "") + (d.get("chunk") or "")
        if prev is not None and mid not in self.finals and \
                mid not in self.unknown and not content.startswith(prev):
            self.errors.append(f"{self.name}: content of {mid} not "
                               f"cumulative: {prev[-40:]!r} -> "
                               f"{content[-40:]!r}")
        self.latest[mid] = content
        if d["is_complete"] is True:
            self.finals.add(mid)
            self.unknown.discard(mid)


def log_error_lines(server):
    """The lines of a conftest Server's log at level `error` (a healthy
    run, even one where another node dies, has none)."""
    return [line for line in server.log().splitlines()
            if re.match(r"^\S+Z error ", line)]
# ========================================== end of H12: multi-node helpers


# ------------------------------------------- stream invariants (resume suite)

def msg_frames(frames):
    """The `message` frames among `frames`, in order."""
    return [f for f in frames if f.get("type") == "message"]


def check_offsets(frames, contiguous=True):
    """Asserts the native offsets of one socket's message frames: integers,
    strictly increasing (so no duplicates) and, when `contiguous`, each
    exactly one more than the previous. Returns the offsets."""
    offs = [f.get("offset") for f in msg_frames(frames)]
    assert all(isinstance(o, int) and o >= 1 for o in offs), \
        f"every message frame needs an integer offset >= 1: {offs}"
    for a, b in zip(offs, offs[1:]):
        assert b > a, f"offsets not strictly increasing: {a} then {b} " \
                      f"in {offs}"
        if contiguous:
            assert b == a + 1, f"offset gap {a} -> {b} (a lost frame?) " \
                               f"in {offs}"
    return offs


def check_messages(frames, delta=False):
    """Per message_id over one socket's message frames: index strictly
    increasing, nothing after the final, and (full mode) each content a
    prefix of the next, or (delta mode) content only on the final and the
    chunks concatenating to it. Returns {message_id: final data or None}."""
    by_mid = {}
    for f in msg_frames(frames):
        by_mid.setdefault(f["data"]["message_id"], []).append(f)
    finals = {}
    for mid, fs in by_mid.items():
        done = [i for i, f in enumerate(fs) if f["data"]["is_complete"]]
        assert done in ([], [len(fs) - 1]), \
            f"{mid}: a frame after the final (finals at {done} of " \
            f"{len(fs)}): {[f['data'] for f in fs[-3:]]}"
        idx = [f["index"] for f in fs]
        assert idx == sorted(set(idx)), f"{mid}: indexes {idx}"
        datas = [f["data"] for f in fs]
        for d in datas:
            assert d["role"] == "assistant", d
        if delta:
            for d in datas[:-1] if done else datas:
                assert "content" not in d, f"delta partial with content {d}"
            text = "".join(d["chunk"] or "" for d in datas)
            if done:
                assert text == datas[-1]["content"], \
                    f"{mid}: deltas {text!r} != final " \
                    f"{datas[-1]['content']!r}"
        else:
            for a, b in zip(datas, datas[1:]):
                assert b["content"].startswith(a["content"]) and \
                    len(b["content"]) > len(a["content"]) or \
                    b["is_complete"] and b["content"] == a["content"], \
                    f"{mid}: content not growing: {a['content']!r} -> " \
                    f"{b['content']!r}"
        finals[mid] = datas[-1] if done else None
    return finals


def check_socket(frames, contiguous=True, delta=False):
    """check_offsets + check_messages for the frames of one socket."""
    check_offsets(frames, contiguous)
    return check_messages(frames, delta)


def words_text(n, word="w", start=0):
    """The text `word0 word1 ...` of n words and its cumulative prefixes
    as the Python service builds them (a space after every word but the
    last). Returns (chunks, contents)."""
    chunks, contents, acc = [], [], ""
    for k in range(n):
        piece = f"{word}{start + k}" + (" " if k < n - 1 else "")
        acc += piece
        chunks.append(piece)
        contents.append(acc)
    return chunks, contents


class FakeAI:
    """The Python AI service as a producer on one session: partials on
    chat:stream:{sid}, the final PUBLISHed and only then RPUSHed to
    chat:history:{sid} (original-system.md §4.2). Uses its own Resp."""

    def __init__(self, redis_proc, sid, user="u1"):
        self.c = redis_proc.client()
        self.sid = sid
        self.user = user

    def close(self):
        self.c.close()

    def partial(self, mid, content, chunk, ts=None, **kw):
        self.c.publish(f"chat:stream:{self.sid}",
                       py_msg(mid, self.sid, "assistant", content, chunk,
                              False, user=self.user, ts=ts, **kw))

    def publish_final(self, mid, content, ts=None, **kw):
        payload = py_msg(mid, self.sid, "assistant", content, None, True,
                         user=self.user, ts=ts, **kw)
        self.c.publish(f"chat:stream:{self.sid}", payload)
        return payload

    def store(self, payload):
        self.c.cmd("RPUSH", f"chat:history:{self.sid}", payload)
        self.c.cmd("EXPIRE", f"chat:history:{self.sid}", 86400)

    def final(self, mid, content, ts=None, **kw):
        self.store(self.publish_final(mid, content, ts=ts, **kw))

    def subscribed(self):
        return self.c.numsub(f"chat:stream:{self.sid}") >= 1


def demo_answer(index, repo):
    """The final text of canned answer `index` of lua/upstreams/demo.lua,
    as the demo upstream streams it (words joined by single spaces)."""
    import os
    with open(os.path.join(repo, "lua", "upstreams", "demo.lua")) as f:
        src = f.read()
    m = re.search(r"\[%d\] = (.*?),\n    \[|\[%d\] = (.*?),\n}" %
                  (index, index), src, re.S)
    assert m, f"answer {index} not found in demo.lua"
    body = m.group(1) or m.group(2)
    text = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', body))
    return " ".join(text.split())


def rss_kb(pid):
    """VmRSS of a process in KiB (from /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class RawWs:
    """A WebSocket client on a raw socket with a chosen SO_RCVBUF: it can
    stop reading entirely (to fill its TCP window) and read later. No
    extensions are offered, so server frames are plain."""

    def __init__(self, port, path, rcvbuf=None, timeout=5.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(b"streamgate-slow!").decode()
        self.sock.sendall((
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n")[0]
        assert b" 101 " in status, f"handshake answered {head!r}"
        self.close_code = None
        self.eof = False

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def _need(self, n):
        while len(self.buf) < n:
            self._fill()

    def next_frame(self):
        """(opcode, payload bytes) of the next complete frame."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n, pos = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, pos = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            self._need(10)
            n, pos = int.from_bytes(self.buf[2:10], "big"), 10
        self._need(pos + n)
        payload = self.buf[pos:pos + n]
        self.buf = self.buf[pos + n:]
        assert b0 & 0x80, "fragmented frames are not expected from the server"
        return b0 & 0x0F, payload

    def read_all(self, until, timeout=10.0):
        """Reads JSON text frames until until(frame) is true, a close frame
        (close_code set) or EOF/reset (eof set). Returns the frames."""
        frames = []
        deadline = time.monotonic() + timeout
        self.sock.settimeout(timeout)
        try:
            while time.monotonic() < deadline:
                op, payload = self.next_frame()
                if op == 8:
                    self.close_code = int.from_bytes(payload[:2], "big") \
                        if len(payload) >= 2 else 1005
                    return frames
                if op == 1:
                    frames.append(json.loads(payload.decode("utf-8")))
                    if until(frames[-1]):
                        return frames
        except (ConnectionError, OSError):
            self.eof = True
        return frames

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
