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
