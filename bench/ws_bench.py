#!/usr/bin/python3
"""streamgate benchmark: memory per idle connection, fan-out latency,
throughput and slow-consumer behaviour of the real binary.

Starts its own streamgate (and, for the Redis scenarios, its own
redis-server) on free loopback ports with a generated Lua config, runs the
selected scenarios, prints one table per scenario and stops every process
it started by PID. Every loop is bounded in count and in time.

Run with Debian's interpreter (python3-websockets 10.4):
    /usr/bin/python3 bench/ws_bench.py            # default run (~2-3 min)
    /usr/bin/python3 bench/ws_bench.py --quick    # ~30 s
See bench/README.md for the flags and the figures measured so far.
"""

import argparse
import asyncio
import base64
import glob
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import websockets

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
REDIS_SERVER = "/usr/bin/redis-server"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_ENV_DROP = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD",
                   "PORT", "JWT_SECRET", "STREAMGATE_ENV", "NODE_ID",
                   "LOG_LEVEL", "DEMO_WORDS_PER_SECOND")
MAX_LAT_SAMPLES = 2_000_000      # latency samples kept per scenario
CLIENT_KIND = "websockets"       # or "raw" (--client)
SOURCE = REPO                    # where lua/ and public/ are (--source)


# ------------------------------------------------------------ small utils

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit():
    """Raises the soft RLIMIT_NOFILE to the hard limit; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def rss_kib(pid):
    """VmRSS of `pid` in KiB (from /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS line in /proc/{pid}/status")


def cpu_seconds(pid):
    """utime + stime of `pid` in seconds (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def self_cpu():
    t = os.times()
    return t.user + t.system


class CpuMeter:
    """CPU use of the server, redis (optional) and this client process
    between start() and stop(), as % of one core."""

    def __init__(self, server_pid, redis_pid=None):
        self.pids = {"server": server_pid}
        if redis_pid:
            self.pids["redis"] = redis_pid

    def start(self):
        self.t0 = time.monotonic()
        self.c0 = {k: cpu_seconds(p) for k, p in self.pids.items()}
        self.c0["client"] = self_cpu()
        return self

    def stop(self):
        wall = max(time.monotonic() - self.t0, 1e-9)
        now = {k: cpu_seconds(p) for k, p in self.pids.items()}
        now["client"] = self_cpu()
        self.wall = wall
        self.cpu_s = {k: now[k] - self.c0[k] for k in now}
        self.pct = {k: 100.0 * v / wall for k, v in self.cpu_s.items()}
        return self


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 *
                                                   (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def lat_summary(lat_ns):
    """(n, p50, p90, p99, max) in ms of a list of nanosecond latencies."""
    s = sorted(lat_ns)
    ms = [pct(s, p) / 1e6 for p in (50, 90, 99)]
    return len(s), ms[0], ms[1], ms[2], (s[-1] / 1e6 if s else float("nan"))


def print_table(title, rows):
    """rows: list of (label, value) pairs; prints a two-column table."""
    width = max(len(r[0]) for r in rows)
    print()
    print(f"== {title} " + "=" * max(0, 70 - len(title)))
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    sys.stdout.flush()


def fmt_lat(summary):
    n, p50, p90, p99, mx = summary
    if n == 0:
        return "no samples"
    return (f"p50 {p50:.2f}  p90 {p90:.2f}  p99 {p99:.2f}  max {mx:.2f} ms"
            f"  (n={n})")


def client_desc(a):
    if a.client == "raw":
        return "client=raw (no deflate)"
    return (f"client=websockets, "
            f"{'deflate offered' if a.compression else 'no deflate'}")


def fmt_cpu(meter):
    return "  ".join(f"{k} {v:.0f}%" for k, v in meter.pct.items())


# ------------------------------------------------------------ processes

def lua_value(v, indent=""):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        inner = indent + "  "
        items = [f'{inner}["{k}"] = {lua_value(x, inner)},'
                 for k, x in v.items()]
        return "{\n" + "\n".join(items) + "\n" + indent + "}"
    raise TypeError(f"cannot render {v!r} as Lua")


def stop_proc(proc, timeout=5.0):
    """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def http_get(port, path, timeout=2.0):
    """(status, body bytes) of a blocking GET on 127.0.0.1:port."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class Redis:
    def __init__(self, workdir):
        self.port = free_port()
        self.workdir = workdir
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        log = open(os.path.join(self.workdir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.workdir],
            stdout=log, stderr=log)
        log.close()
        wait_for(self._pings, 10, "redis PING")
        return self

    def _pings(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), 1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        stop_proc(self.proc)
        self.proc = None


class Server:
    def __init__(self, binary, workdir, name, extra_cfg):
        self.binary = binary
        self.port = free_port()
        self.cfg = {"port": self.port, "listen": "127.0.0.1",
                    "lua": {"path": os.path.join(SOURCE, "lua")},
                    "http": {"static_dir": os.path.join(SOURCE, "public")},
                    "limits": {"max_connections": 20000},
                    "log": {"level": "warn"}}
        for k, v in extra_cfg.items():
            if isinstance(v, dict) and isinstance(self.cfg.get(k), dict):
                self.cfg[k] = {**self.cfg[k], **v}
            else:
                self.cfg[k] = v
        self.config_path = os.path.join(workdir, f"{name}.lua")
        self.log_path = os.path.join(workdir, f"{name}.log")
        with open(self.config_path, "w") as f:
            f.write("return " + lua_value(self.cfg) + "\n")
        self.proc = None
        self.exit_code = None

    @property
    def pid(self):
        return self.proc.pid

    def start(self, redis=False):
        env = {k: v for k, v in os.environ.items()
               if k not in SERVER_ENV_DROP}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "--config",
                                      self.config_path],
                                     stdout=log, stderr=log, env=env,
                                     cwd=REPO)
        log.close()
        wait_for(lambda: self._status("/healthz") is not None, 15,
                 f"/healthz on port {self.port}")
        if redis:
            wait_for(lambda: self._status("/readyz") == 200, 15, "/readyz")
        return self

    def _status(self, path):
        if self.proc.poll() is not None:
            raise RuntimeError(f"streamgate exited {self.proc.returncode} "
                               f"at start-up; log {self.log_path}:\n"
                               f"{self.log_tail()}")
        try:
            return http_get(self.port, path, 1.0)[0]
        except OSError:
            return None

    def log_tail(self, n=3000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        self.exit_code = stop_proc(self.proc)
        return self.exit_code


# ------------------------------------------------------------ async helpers

async def ahttp(port, method, path, body=None, timeout=5.0):
    """Minimal async HTTP/1.1 request (Connection: close); returns
    (status, body bytes). Does not block the event loop."""
    async def go():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        data = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Connection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        w.write(head + data)
        raw = await r.read()  # to EOF (Connection: close)
        w.close()
        status = int(raw.split(b" ", 2)[1])
        return status, raw.partition(b"\r\n\r\n")[2]
    return await asyncio.wait_for(go(), timeout)


async def ametric(port, name, **labels):
    """Sum of the Prometheus samples `name{labels...}` from /metrics."""
    _, body = await ahttp(port, "GET", "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        if key != name and not key.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += float(val)
    return total


class ARedis:
    """Tiny asyncio RESP2 client: pipelined PUBLISH (replies counted, not
    awaited one by one) and awaited commands. Bounded outstanding
    replies via `window`."""

    def __init__(self, window=512):
        self.window = window
        self.waiters = []       # per sent command: Future or None
        self.outstanding = 0
        self.published = 0
        self.receivers_sum = 0  # sum of PUBLISH replies (subscriber counts)
        self.room = asyncio.Event()
        self.room.set()

    async def open(self, port):
        self.r, self.w = await asyncio.open_connection("127.0.0.1", port)
        self.reader_task = asyncio.ensure_future(self._read_loop())
        return self

    @staticmethod
    def _enc(*args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(parts)

    async def _reply(self):
        line = (await self.r.readline())[:-2]
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            return rest.decode()
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else (await self.r.readexactly(n + 2))[:-2]
        if kind == b"*":
            n = int(rest)
            return [await self._reply() for _ in range(max(n, 0))]
        raise ConnectionError(f"unexpected RESP {line!r}")

    async def _read_loop(self):
        # replies come in command order: a None waiter is a PUBLISH whose
        # reply (the receiver count) is only summed
        while True:
            val = await self._reply()
            fut = self.waiters.pop(0)
            if fut is not None:
                if not fut.done():
                    fut.set_result(val)
            elif isinstance(val, int):
                self.receivers_sum += val
            self.outstanding -= 1
            if self.outstanding < self.window:
                self.room.set()

    async def cmd(self, *args):
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        self.outstanding += 1
        self.w.write(self._enc(*args))
        return await asyncio.wait_for(fut, 5)

    async def publish(self, channel, payload):
        """Queues one PUBLISH; waits only when `window` replies are
        outstanding. `payload` may be a function called after that wait
        (so that a send timestamp inside it excludes the wait)."""
        while self.outstanding >= self.window:
            self.room.clear()
            await asyncio.wait_for(self.room.wait(), 5)
        if callable(payload):
            payload = payload()
        self.waiters.append(None)
        self.outstanding += 1
        self.published += 1
        self.w.write(self._enc("PUBLISH", channel, payload))
        if self.w.transport.get_write_buffer_size() > 1 << 20:
            await self.w.drain()

    async def flush(self, timeout=10):
        deadline = time.monotonic() + timeout
        while self.outstanding > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def close(self):
        self.reader_task.cancel()
        self.w.close()




# ------------------------------------------------------------ clients

def ws_url(port, sid, user="bench"):
    return (f"ws://127.0.0.1:{port}/ws/chat?session_id={sid}"
            f"&user_id={user}&token=dev-token")


class RawWS(asyncio.Protocol):
    """A minimal WebSocket client on asyncio.Protocol (no extensions, no
    per-frame task): used with --client raw to spend less client CPU per
    frame than the websockets library. Message frames go straight to an
    attached Sink (timestamped in data_received); otherwise text frames
    are queued for recv()."""

    def __init__(self, port, path):
        self.request = base64.b64encode(os.urandom(16)).decode()
        self.req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {self.request}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        self.buf = bytearray()
        self.upgraded = False
        self.opened = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.queue = asyncio.Queue()
        self.sink = None
        self.idx = 0
        self.close_code = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.req)

    def data_received(self, data):
        now = time.time_ns()
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buf[:end]).split(b"\r\n", 1)[0]
            del self.buf[:end + 4]
            if b" 101 " not in status + b" ":
                self.opened.set_exception(
                    RuntimeError(f"handshake answered {status!r}"))
                self.transport.close()
                return
            self.upgraded = True
            self.opened.set_result(True)
        self._frames(now)

    def _frames(self, now):
        buf, off, n = self.buf, 0, len(self.buf)
        while n - off >= 2:
            op, ln, hdr = buf[off] & 0x0F, buf[off + 1] & 0x7F, 2
            if ln == 126:
                if n - off < 4:
                    break
                ln, hdr = int.from_bytes(buf[off + 2:off + 4], "big"), 4
            elif ln == 127:
                if n - off < 10:
                    break
                ln, hdr = int.from_bytes(buf[off + 2:off + 10], "big"), 10
            if n - off < hdr + ln:
                break
            payload = bytes(buf[off + hdr:off + hdr + ln])
            off += hdr + ln
            if op == 1:
                self._text(payload, now)
            elif op == 8:
                self.close_code = (int.from_bytes(payload[:2], "big")
                                   if ln >= 2 else None)
        del buf[:off]

    def _text(self, payload, now):
        sink = self.sink
        if sink is None:
            self.queue.put_nowait(payload.decode())
            return
        k = payload.find(b'"content":"bench ')
        if k < 0:
            sink.bad += 1 if b'"type":"message"' in payload else 0
            return
        parts = payload[k + 17:k + 60].split(b" ", 2)
        sink.add(self.idx, now, int(parts[1]))

    def connection_lost(self, exc):
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed in handshake"))
        if self.sink is not None:
            self.sink.closes[self.idx] = (self.close_code, "raw")
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    async def recv(self):
        get = asyncio.ensure_future(self.queue.get())
        done, _ = await asyncio.wait({get, self.closed},
                                     return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            return get.result()
        get.cancel()
        raise websockets.ConnectionClosed(None, None)

    async def close(self):
        if self.transport is not None and not self.transport.is_closing():
            # close 1000, masked with a zero key (payload unchanged)
            self.transport.write(b"\x88\x82\x00\x00\x00\x00\x03\xe8")
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), 2)
            except asyncio.TimeoutError:
                self.transport.close()


async def raw_open(port, path):
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: RawWS(port, path),
                                            "127.0.0.1", port)
    await asyncio.wait_for(proto.opened, 10)
    return proto


async def ws_open(port, sid, compression, user="bench"):
    """Connects and consumes the welcome frame; returns the socket (a
    websockets client, or a RawWS with --client raw)."""
    if CLIENT_KIND == "raw":
        url = ws_url(port, sid, user)
        ws = await raw_open(port, url[url.index("/ws/"):])
    else:
        ws = await websockets.connect(ws_url(port, sid, user),
                                      open_timeout=10, ping_interval=None,
                                      close_timeout=2, max_size=None,
                                      max_queue=None,
                                      compression=compression)
    first = json.loads(await asyncio.wait_for(ws.recv(), 10))
    if first.get("type") != "welcome":
        raise RuntimeError(f"first frame was not welcome: {first!r}")
    return ws


async def open_many(port, sids, compression, concurrency=64, timeout=120):
    """Opens one socket per entry of `sids` (at most `concurrency` at a
    time); returns the sockets in order. Bounded by `timeout`."""
    sem = asyncio.Semaphore(concurrency)

    async def one(sid):
        async with sem:
            return await ws_open(port, sid, compression)
    return await asyncio.wait_for(asyncio.gather(*(one(s) for s in sids)),
                                  timeout)


async def close_many(socks, timeout=30):
    async def one(ws):
        try:
            await ws.close()
        except Exception:
            pass
    if socks:
        await asyncio.wait_for(asyncio.gather(*(one(w) for w in socks)),
                               timeout)


class Sink:
    """Collects receipts: latency samples (ns) and per-client counts."""

    def __init__(self, nclients, sample_every=1):
        self.lat = []
        self.counts = [0] * nclients
        self.sample_every = sample_every
        self.first_ns = None
        self.last_ns = None
        self.closes = {}        # client index -> (code, reason)
        self.bad = 0

    def add(self, idx, recv_ns, sent_ns):
        self.counts[idx] += 1
        if self.first_ns is None:
            self.first_ns = recv_ns
        self.last_ns = recv_ns
        if sent_ns is not None and (self.counts[idx] % self.sample_every
                                    == 0) and len(self.lat) < MAX_LAT_SAMPLES:
            self.lat.append(recv_ns - sent_ns)


def bench_sent_ns(data):
    """Send time (ns) encoded by the publisher in `content`:
    "bench <seq> <t_ns> <padding>"; None if not ours."""
    content = data.get("content") or ""
    if not content.startswith("bench "):
        return None
    parts = content.split(" ", 3)
    return int(parts[2])


async def reader(ws, idx, sink, deadline, expect=None):
    """Reads frames until the socket closes, `deadline` (monotonic) passes
    or `expect` message frames have arrived."""
    if isinstance(ws, RawWS):
        ws.sink, ws.idx = sink, idx
        while (time.monotonic() < deadline and not ws.closed.done() and
               (expect is None or sink.counts[idx] < expect)):
            await asyncio.sleep(0.05)
        return
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (expect is not None and
                             sink.counts[idx] >= expect):
                return
            try:
                raw = await asyncio.wait_for(ws.recv(), left)
            except asyncio.TimeoutError:
                return
            now = time.time_ns()
            f = json.loads(raw)
            if f.get("type") != "message":
                continue
            sent = bench_sent_ns(f["data"])
            if sent is None:
                sink.bad += 1
                continue
            sink.add(idx, now, sent)
    except websockets.ConnectionClosed as e:
        sink.closes[idx] = (e.rcvd.code if e.rcvd else None,
                            e.rcvd.reason if e.rcvd else "no close frame")


def chat_message(sid, seq, mid, payload_bytes):
    """One one-chunk answer per publish (its own message_id, complete):
    the stream's append rules drop a partial of a known message that is
    not longer than what was logged, so reusing one id with unrelated
    contents would measure duplicate suppression, not fan-out."""
    t_ns = time.time_ns()
    content = f"bench {seq} {t_ns} " + "x" * payload_bytes
    msg = {"message_id": f"{mid}-{seq}", "session_id": sid,
           "user_id": "bench", "role": "assistant", "content": content,
           "chunk": None, "timestamp": t_ns // 1_000_000,
           "is_complete": True, "t_ns": t_ns}
    return json.dumps(msg, separators=(",", ":"))


async def redis_direct_sub(port, channel, lat, ready, expect, deadline):
    """Reference path without the gateway: a direct SUBSCRIBE in this same
    process; appends publish->receipt latencies (ns) to `lat`."""
    sub = ARedis()
    sub.r, sub.w = await asyncio.open_connection("127.0.0.1", port)
    sub.w.write(sub._enc("SUBSCRIBE", channel))
    await sub._reply()
    ready.set()
    try:
        while len(lat) < expect:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                msg = await asyncio.wait_for(sub._reply(), left)
            except asyncio.TimeoutError:
                return
            now = time.time_ns()
            payload = msg[2]
            k = payload.find(b'"content":"bench ')
            if k >= 0:
                lat.append(now - int(payload[k + 17:k + 60].split(b" ")[1]))
    finally:
        sub.w.close()


async def wait_subscribed(red, sids, timeout=10):
    deadline = time.monotonic() + timeout
    for sid in sids:
        while True:
            reply = await red.cmd("PUBSUB", "NUMSUB", f"chat:stream:{sid}")
            if int(reply[1]) >= 1:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server never subscribed to "
                                   f"chat:stream:{sid}")
            await asyncio.sleep(0.02)


async def paced_publish(red, sids, rate, duration, payload, max_msgs=None):
    """Publishes round-robin over `sids` at `rate` msg/s (absolute
    schedule, catches up without sleeping when late) for `duration` s.
    Returns (published, wall seconds)."""
    total = int(rate * duration)
    if max_msgs is not None:
        total = min(total, max_msgs)
    mids = {sid: str(uuid.uuid4()) for sid in sids}
    t0 = time.monotonic()
    for i in range(total):
        target = t0 + i / rate
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sid = sids[i % len(sids)]
        await red.publish(f"chat:stream:{sid}",
                          lambda: chat_message(sid, i, mids[sid], payload))
    return total, time.monotonic() - t0


# ------------------------------------------------------------ scenarios

class Ctx:
    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.redis = None
        self.nserver = 0
        self.current = None
        self.results = {}

    def get_redis(self):
        if self.redis is None:
            self.redis = Redis(self.workdir).start()
        return self.redis

    def server(self, redis=False, extra=None):
        cfg = dict(extra or {})
        if redis:
            # a fresh db per server keeps history/channels apart
            cfg["redis"] = {"url": self.get_redis().url}
        self.nserver += 1
        srv = Server(self.args.binary, self.workdir,
                     f"streamgate-{self.nserver}", cfg)
        self.current = srv
        return srv.start(redis=redis)

    def close(self):
        if self.redis:
            self.redis.stop()


async def settle_rss(pid, seconds=1.0):
    await asyncio.sleep(seconds)
    return rss_kib(pid)


async def scenario_memory(ctx):
    a = ctx.args
    srv = ctx.server(redis=a.memory_redis)
    try:
        await asyncio.sleep(0.5)
        base = rss_kib(srv.pid)
        per = max(1, a.idle_per_session)
        sids = [f"idle-{i // per}" for i in range(a.idle)]
        t0 = time.monotonic()
        client_rss0 = rss_kib(os.getpid())
        socks = await open_many(srv.port, sids, a.compression)
        t_open = time.monotonic() - t0
        active = await ametric(srv.port, "websocket_active_connections")
        loaded = await settle_rss(srv.pid)
        client_rss1 = rss_kib(os.getpid())
        await close_many(socks)
        socks = None
        await asyncio.sleep(0.5)
        gone = await ametric(srv.port, "websocket_active_connections")
        after = await settle_rss(srv.pid, 1.0)
        n = a.idle
        rows = [
            ("idle connections", f"{n} ({len(set(sids))} sessions, "
                                 f"{'redis' if a.memory_redis else 'embedded'}"
                                 f" mode, {client_desc(a)})"),
            ("opened in", f"{t_open:.2f} s ({n / t_open:.0f} handshakes/s)"),
            ("server active gauge", f"{active:.0f} open, {gone:.0f} "
                                    "after close"),
            ("server RSS baseline", f"{base} KiB"),
            ("server RSS with N idle", f"{loaded} KiB"),
            ("server RSS after close", f"{after} KiB"),
            ("per idle connection", f"{(loaded - base) / n:.1f} KiB"),
            ("not returned after close", f"{(after - base) / n:.1f} KiB "
                                         "per connection"),
            ("client RSS growth", f"{(client_rss1 - client_rss0) / n:.1f} "
                                  "KiB per connection (python side)"),
        ]
        print_table("1. memory per idle connection", rows)
        ctx.results["memory_kib_per_conn"] = (loaded - base) / n
    finally:
        srv.stop()


async def scenario_fanout(ctx):
    a = ctx.args
    red_proc = ctx.get_redis()
    srv = ctx.server(redis=True)
    red = await ARedis().open(red_proc.port)
    try:
        sid = f"fan-{uuid.uuid4().hex[:8]}"
        socks = await open_many(srv.port, [sid] * a.clients, a.compression)
        await wait_subscribed(red, [sid])
        sink = Sink(len(socks))
        total = int(a.rate * a.duration)
        deadline = time.monotonic() + a.duration + 15
        readers = [asyncio.ensure_future(reader(ws, i, sink, deadline,
                                                expect=total))
                   for i, ws in enumerate(socks)]
        direct, ready = [], asyncio.Event()
        readers.append(asyncio.ensure_future(redis_direct_sub(
            red_proc.port, f"chat:stream:{sid}", direct, ready, total,
            deadline)))
        await asyncio.wait_for(ready.wait(), 5)
        cpu = CpuMeter(srv.pid, red_proc.proc.pid).start()
        sent0 = await ametric(srv.port, "websocket_messages_sent_total",
                              type="message")
        published, pub_wall = await paced_publish(red, [sid], a.rate,
                                                  a.duration, a.payload)
        await red.flush()
        drain_deadline = time.monotonic() + 10
        while (min(sink.counts) < published and
               time.monotonic() < drain_deadline and
               not all(r.done() for r in readers)):
            await asyncio.sleep(0.05)
        cpu.stop()
        for r in readers:
            r.cancel()
        sent1 = await ametric(srv.port, "websocket_messages_sent_total",
                              type="message")
        got = sum(sink.counts)
        span = (sink.last_ns - sink.first_ns) / 1e9 if got > 1 else 0
        want = published * len(socks)
        rows = [
            ("setup", f"{len(socks)} clients on 1 session, Redis mode, "
                      f"payload {a.payload} B, {client_desc(a)}"),
            ("published", f"{published} msgs in {pub_wall:.2f} s "
                          f"({published / pub_wall:.0f} msg/s, "
                          f"target {a.rate})"),
            ("delivered", f"{got} of {want} frames "
                          f"({got / span if span else 0:.0f} frames/s); "
                          f"server queued {sent1 - sent0:.0f}"),
            ("latency publish->client", fmt_lat(lat_summary(sink.lat))),
            ("reference: direct SUB", fmt_lat(lat_summary(direct)) +
             " (publish->redis->this process, no gateway)"),
            ("closed clients", str(sink.closes or "none")),
            ("CPU (% of one core)", fmt_cpu(cpu)),
        ]
        print_table("2a. fan-out latency (Redis mode)", rows)
        ctx.results["fanout"] = lat_summary(sink.lat)
        await close_many(socks)
    finally:
        await red.close()
        srv.stop()


async def scenario_embedded(ctx):
    """POST /api/chat with the demo upstream; inter-frame gaps at clients
    and latency from the producer's ms timestamp."""
    a = ctx.args
    srv = ctx.server(extra={"demo": {"words_per_second": a.wps}})
    try:
        sid = f"emb-{uuid.uuid4().hex[:8]}"
        socks = await open_many(srv.port, [sid] * a.emb_clients,
                                a.compression)
        gaps, lat_ms, frames = [], [], 0
        cpu = CpuMeter(srv.pid).start()
        t_start = time.monotonic()
        for k in range(a.answers):
            status, body = await ahttp(srv.port, "POST", "/api/chat",
                                       {"session_id": sid, "user_id": "bench",
                                        "message": f"hello {k}"})
            if status != 200:
                raise RuntimeError(f"POST /api/chat answered {status}: "
                                   f"{body[:200]!r}")

            async def collect(ws):
                out, deadline = [], time.monotonic() + 30
                while time.monotonic() < deadline:
                    raw = await asyncio.wait_for(
                        ws.recv(), deadline - time.monotonic())
                    now = time.time_ns()
                    f = json.loads(raw)
                    if f.get("type") != "message":
                        continue
                    out.append((now, f["data"]["timestamp"]))
                    if f["data"]["is_complete"]:
                        return out
                raise RuntimeError("answer did not complete within 30 s")
            per_client = await asyncio.gather(*(collect(w) for w in socks))
            for out in per_client:
                frames += len(out)
                for (t1, _), (t2, _) in zip(out, out[1:]):
                    gaps.append(t2 - t1)
                lat_ms.extend(now / 1e6 - ts for now, ts in out)
        wall = time.monotonic() - t_start
        cpu.stop()
        g = lat_summary(gaps)
        lat_sorted = sorted(lat_ms)
        rows = [
            ("setup", f"{len(socks)} clients, {a.answers} demo answers, "
                      f"words_per_second={a.wps} (expected gap "
                      f"{1000 / a.wps:.2f} ms)"),
            ("frames received", f"{frames} in {wall:.2f} s "
                                f"({frames / wall:.0f} frames/s)"),
            ("inter-frame gap", fmt_lat(g)),
            ("gap mean", f"{sum(gaps) / len(gaps) / 1e6:.3f} ms"
                         if gaps else "n/a"),
            ("producer ts->client", f"p50 {pct(lat_sorted, 50):.1f}  p99 "
                                    f"{pct(lat_sorted, 99):.1f}  max "
                                    f"{lat_sorted[-1]:.1f} ms (producer "
                                    "timestamp has 1 ms resolution)"),
            ("CPU (% of one core)", fmt_cpu(cpu)),
        ]
        print_table("2b. embedded mode: demo upstream via POST /api/chat",
                    rows)
        await close_many(socks)
    finally:
        srv.stop()


async def scenario_throughput(ctx):
    """S sessions x C clients; closed-loop publisher: publishes as fast
    as it can while the slowest reader is at most `window` messages behind,
    so that no queue grows without bound (no 4008 from the benchmark)."""
    a = ctx.args
    red_proc = ctx.get_redis()
    srv = ctx.server(redis=True)
    red = await ARedis(window=256).open(red_proc.port)
    try:
        sids = [f"tp{s}-{uuid.uuid4().hex[:6]}" for s in range(a.sessions)]
        owners = [s for s in sids for _ in range(a.tp_clients)]
        socks = await open_many(srv.port, owners, a.compression)
        await wait_subscribed(red, sids)
        sink = Sink(len(socks), sample_every=a.sample_every)
        dur = min(a.tp_duration, 20.0)
        deadline = time.monotonic() + dur + 15
        readers = [asyncio.ensure_future(reader(ws, i, sink, deadline))
                   for i, ws in enumerate(socks)]
        by_session = {s: [i for i, o in enumerate(owners) if o == s]
                      for s in sids}
        mids = {s: str(uuid.uuid4()) for s in sids}
        sent_per = {s: 0 for s in sids}
        window = a.window
        cpu = CpuMeter(srv.pid, red_proc.proc.pid).start()
        sent0 = await ametric(srv.port, "websocket_messages_sent_total",
                              type="message")
        t0 = time.monotonic()
        seq = 0
        stalls = 0
        while time.monotonic() - t0 < dur:
            progressed = False
            for s in sids:
                low = min(sink.counts[i] for i in by_session[s])
                burst = min(window - (sent_per[s] - low), 64)
                for _ in range(max(0, burst)):
                    await red.publish(f"chat:stream:{s}",
                                      lambda: chat_message(s, seq, mids[s],
                                                           a.payload))
                    seq += 1
                    sent_per[s] += 1
                    progressed = True
            if not progressed:
                stalls += 1
            await asyncio.sleep(0 if progressed else 0.001)
        pub_wall = time.monotonic() - t0
        await red.flush()
        drain_deadline = time.monotonic() + 10
        while time.monotonic() < drain_deadline and any(
                sink.counts[i] < sent_per[s] for s in sids
                for i in by_session[s]):
            await asyncio.sleep(0.05)
        wall = time.monotonic() - t0
        cpu.stop()
        for r in readers:
            r.cancel()
        sent1 = await ametric(srv.port, "websocket_messages_sent_total",
                              type="message")
        slow = await ametric(srv.port, "websocket_slow_consumer_closes_total")
        got = sum(sink.counts)
        want = sum(sent_per[s] * len(by_session[s]) for s in sids)
        srv_cpu = cpu.cpu_s["server"]
        rows = [
            ("setup", f"{a.sessions} sessions x {a.tp_clients} clients, "
                      f"Redis mode, payload {a.payload} B, window {window}, "
                      f"{client_desc(a)}"),
            ("published", f"{seq} msgs in {pub_wall:.2f} s "
                          f"({seq / pub_wall:.0f} msg/s)"),
            ("delivered", f"{got} of {want} frames in {wall:.2f} s = "
                          f"{got / wall:.0f} frames/s"),
            ("server queued frames", f"{sent1 - sent0:.0f}; slow-consumer "
                                     f"closes {slow:.0f}"),
            ("latency publish->client", fmt_lat(lat_summary(sink.lat)) +
             (f" (every {a.sample_every}th frame)"
              if a.sample_every > 1 else "")),
            ("CPU (% of one core)", fmt_cpu(cpu)),
            ("server CPU per frame", f"{1e6 * srv_cpu / max(got, 1):.2f} us "
                                     f"=> ~{got / max(srv_cpu, 1e-9):.0f} "
                                     "frames/s per server core (estimate)"),
            ("client CPU per frame",
             f"{1e6 * cpu.cpu_s['client'] / max(got, 1):.2f} us"),
        ]
        print_table("3. throughput (closed-loop publisher)", rows)
        ctx.results["throughput"] = got / wall
        await close_many(socks)
    finally:
        await red.close()
        srv.stop()


# ---- slow consumer: a raw socket that completes the handshake and then
# never reads again; its receive buffer is made small so that the server's
# queue grows soon.

def raw_ws_connect(port, sid, rcvbuf):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws/chat?session_id={sid}&user_id=slow&token=dev-token "
               f"HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("slow client: server closed the handshake")
        data += chunk
    if b" 101 " not in data.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"slow client: handshake answered {data[:80]!r}")
    return s, data.partition(b"\r\n\r\n")[2]


def raw_drain_close_code(s, leftover, timeout=5.0, max_bytes=256 << 20):
    """Reads what the server left in the slow socket (after `leftover`,
    the bytes read with the handshake); returns (bytes read, close code or
    None, how the stream ended)."""
    s.settimeout(0.5)
    buf, total, code = leftover, len(leftover), None
    frames, end = 0, "still open (timeout)"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and total < max_bytes:
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            continue
        except ConnectionResetError:
            end = "reset by server"
            break
        if not chunk:
            end = "EOF"
            break
        total += len(chunk)
        buf += chunk
        # parse complete frames, keep the tail
        while len(buf) >= 2:
            op, ln = buf[0] & 0x0F, buf[1] & 0x7F
            hdr = 2
            if ln == 126:
                if len(buf) < 4:
                    break
                ln, hdr = int.from_bytes(buf[2:4], "big"), 4
            elif ln == 127:
                if len(buf) < 10:
                    break
                ln, hdr = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < hdr + ln:
                break
            frames += 1
            if op == 8:
                code = int.from_bytes(buf[hdr:hdr + 2], "big") if ln >= 2 \
                    else None
            buf = buf[hdr + ln:]
    return total, frames, code, end


async def slow_phase(ctx, srv, red, sid, socks, with_slow, seconds, rss_log):
    a = ctx.args
    sink = Sink(len(socks))
    total = int(a.slow_rate * seconds)
    deadline = time.monotonic() + seconds + 15
    readers = [asyncio.ensure_future(reader(ws, i, sink, deadline,
                                            expect=total))
               for i, ws in enumerate(socks)]
    slow_closed_at = None
    closes0 = await ametric(srv.port, "websocket_slow_consumer_closes_total")
    t0 = time.monotonic()

    async def monitor():
        nonlocal slow_closed_at
        while True:
            rss_log.append((time.monotonic() - t0, rss_kib(srv.pid)))
            if with_slow and slow_closed_at is None:
                c = await ametric(srv.port,
                                  "websocket_slow_consumer_closes_total")
                if c > closes0:
                    slow_closed_at = time.monotonic() - t0
            await asyncio.sleep(0.5)
    mon = asyncio.ensure_future(monitor())
    published, _ = await paced_publish(red, [sid], a.slow_rate, seconds,
                                       a.slow_payload)
    await red.flush()
    dd = time.monotonic() + 10
    while min(sink.counts) < published and time.monotonic() < dd:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.6)
    mon.cancel()
    for r in readers:
        r.cancel()
    return sink, published, slow_closed_at


async def scenario_slow(ctx):
    a = ctx.args
    red_proc = ctx.get_redis()
    srv = ctx.server(redis=True)
    red = await ARedis().open(red_proc.port)
    slow = None
    try:
        sid = f"slow-{uuid.uuid4().hex[:8]}"
        socks = await open_many(srv.port, [sid] * a.slow_readers,
                                a.compression)
        await wait_subscribed(red, [sid])
        rss_a, rss_b = [], []
        sink_a, pub_a, _ = await slow_phase(ctx, srv, red, sid, socks, False,
                                            a.slow_base_seconds, rss_a)
        slow, leftover = await asyncio.get_running_loop().run_in_executor(
            None, raw_ws_connect, srv.port, sid, 4096)
        await asyncio.sleep(0.3)
        sink_b, pub_b, closed_at = await slow_phase(
            ctx, srv, red, sid, socks, True, a.slow_seconds, rss_b)
        loop = asyncio.get_running_loop()
        nbytes, nframes, code, end = await loop.run_in_executor(
            None, raw_drain_close_code, slow, leftover, 5.0)
        lat_a, lat_b = lat_summary(sink_a.lat), lat_summary(sink_b.lat)
        peak = max(r for _, r in rss_b) if rss_b else 0
        rows = [
            ("setup", f"{len(socks)} readers + 1 raw client that stops "
                      f"reading (SO_RCVBUF 4096), {a.slow_rate} msg/s, "
                      f"payload {a.slow_payload} B"),
            ("readers without slow", fmt_lat(lat_a) +
             f"; {sum(sink_a.counts)}/{pub_a * len(socks)} frames"),
            ("readers with slow", fmt_lat(lat_b) +
             f"; {sum(sink_b.counts)}/{pub_b * len(socks)} frames"),
            ("slow client closed", f"after {closed_at:.1f} s (slow-consumer "
                                   "metric)" if closed_at is not None else
             f"not within {a.slow_seconds} s"),
            ("slow client saw", f"{nbytes} bytes, {nframes} frames, close "
                                f"code {code}, then {end}"),
            ("server log", " | ".join(line.strip()[-90:] for line in
                                      srv.log_tail(20000).splitlines()
                                      if "slow consumer" in line)[:300]
             or "no 'slow consumer' line"),
            ("server RSS (s: KiB)", " ".join(f"{t:.1f}:{r}" for t, r in
                                            rss_b[::max(1, len(rss_b) // 12)])
             ),
            ("server RSS peak", f"{peak} KiB (before slow client: "
                                f"{rss_a[-1][1] if rss_a else 0} KiB)"),
            ("reader closes", str(sink_b.closes or "none")),
        ]
        print_table("4. slow consumer", rows)
        await close_many(socks)
    finally:
        if slow is not None:
            slow.close()
        await red.close()
        srv.stop()


# ------------------------------------------------------------ main

SCENARIOS = {"memory": scenario_memory, "fanout": scenario_fanout,
             "embedded": scenario_embedded, "throughput": scenario_throughput,
             "slow": scenario_slow}


def find_binary():
    for p in [os.path.join(REPO, "build", "streamgate")] + sorted(
            glob.glob(os.path.join(REPO, "build-*", "streamgate")),
            key=os.path.getmtime, reverse=True):
        if os.access(p, os.X_OK):
            return p
    return None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.
                                ArgumentDefaultsHelpFormatter)
    p.add_argument("--binary", default=os.environ.get("SG_BINARY") or
                   find_binary(), help="streamgate executable")
    p.add_argument("--source", default=REPO,
                   help="tree whose lua/ and public/ the server uses (match "
                        "it to the binary)")
    p.add_argument("--mode", default="memory,fanout,embedded,throughput,slow",
                   help="comma list of scenarios: " + ",".join(SCENARIOS))
    p.add_argument("--quick", action="store_true",
                   help="smaller figures for a ~30 s run")
    p.add_argument("--client", choices=["websockets", "raw"],
                   default="websockets",
                   help="reader implementation: the websockets library, or "
                        "a minimal asyncio.Protocol client (no deflate, "
                        "less client CPU per frame)")
    p.add_argument("--compression", choices=["deflate", "none"],
                   default="deflate", help="client permessage-deflate offer")
    g = p.add_argument_group("1. memory")
    g.add_argument("-N", "--idle", type=int, default=2000,
                   help="idle connections")
    g.add_argument("--idle-per-session", type=int, default=1,
                   help="idle connections per session")
    g.add_argument("--memory-redis", action="store_true",
                   help="run the memory scenario in Redis mode")
    g = p.add_argument_group("2. fan-out")
    g.add_argument("-C", "--clients", type=int, default=100,
                   help="clients on the fan-out session")
    g.add_argument("--rate", type=float, default=200,
                   help="publish rate, msg/s")
    g.add_argument("--duration", type=float, default=10,
                   help="publish seconds")
    g.add_argument("--payload", type=int, default=200,
                   help="padding bytes in each message's content")
    g.add_argument("--wps", type=float, default=2000,
                   help="embedded: demo words_per_second (<= 10000)")
    g.add_argument("--emb-clients", type=int, default=20,
                   help="embedded: clients on the session")
    g.add_argument("--answers", type=int, default=5,
                   help="embedded: demo answers to stream")
    g = p.add_argument_group("3. throughput")
    g.add_argument("-S", "--sessions", type=int, default=10)
    g.add_argument("--tp-clients", type=int, default=20,
                   help="clients per session")
    g.add_argument("--tp-duration", type=float, default=15,
                   help="seconds (capped at 20)")
    g.add_argument("--window", type=int, default=50,
                   help="max messages the slowest reader may lag")
    g.add_argument("--sample-every", type=int, default=1,
                   help="keep every k-th latency sample")
    g = p.add_argument_group("4. slow consumer")
    g.add_argument("--slow-readers", type=int, default=20)
    g.add_argument("--slow-rate", type=float, default=500)
    g.add_argument("--slow-payload", type=int, default=2000)
    g.add_argument("--slow-base-seconds", type=float, default=5)
    g.add_argument("--slow-seconds", type=float, default=20,
                   help="max seconds with the slow client")
    a = p.parse_args(argv)
    if a.quick:
        quick = {"idle": 500, "clients": 50, "duration": 4, "answers": 2,
                 "emb_clients": 10, "sessions": 5, "tp_clients": 10,
                 "tp_duration": 5, "slow_readers": 10,
                 "slow_base_seconds": 2, "slow_seconds": 10}
        for k, v in quick.items():
            if getattr(a, k) == p.get_default(k):
                setattr(a, k, v)
    a.compression = None if a.compression == "none" else "deflate"
    a.modes = [m.strip() for m in a.mode.split(",") if m.strip()]
    bad = [m for m in a.modes if m not in SCENARIOS]
    if bad:
        p.error(f"unknown scenario(s) {bad}; expected some of "
                f"{list(SCENARIOS)}")
    if not a.binary or not os.access(a.binary, os.X_OK):
        p.error(f"streamgate binary not found ({a.binary}); build it or "
                "pass --binary")
    a.binary = os.path.abspath(a.binary)
    if not 0 < a.wps <= 10000:
        p.error("--wps must be in (0, 10000]")
    return a


async def run_all(ctx):
    for m in ctx.args.modes:
        t0 = time.monotonic()
        ctx.current = None
        try:
            await SCENARIOS[m](ctx)
        except Exception:
            srv = ctx.current
            if srv is not None and srv.proc is not None and \
                    srv.proc.returncode not in (None, 0, -signal.SIGTERM):
                print(f"\n!! scenario {m}: streamgate (pid {srv.pid}) died "
                      f"with exit status {srv.proc.returncode} (negative = "
                      f"signal); config {srv.config_path}; log tail:\n"
                      f"{srv.log_tail(1500)}", file=sys.stderr)
            raise
        print(f"  ({m} took {time.monotonic() - t0:.1f} s)")


def main(argv=None):
    global CLIENT_KIND, SOURCE
    a = parse_args(sys.argv[1:] if argv is None else argv)
    CLIENT_KIND = a.client
    SOURCE = os.path.abspath(a.source)
    fds = raise_fd_limit()
    need = max(a.idle, a.clients, a.sessions * a.tp_clients) + 100
    if fds < need:
        sys.exit(f"fd limit {fds} is below the {need} this run needs")
    workdir = tempfile.mkdtemp(prefix="sg-bench-")
    print(f"streamgate bench: binary {a.binary}, lua/public from "
          f"{SOURCE}\n  {os.cpu_count()} CPUs, "
          f"fd limit {fds}, workdir {workdir}, "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}, load average {loadavg()}")
    ctx = Ctx(a, workdir)
    t0 = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(run_all(ctx), 900))
    finally:
        ctx.close()
    print(f"\ntotal {time.monotonic() - t0:.1f} s; load average "
          f"{loadavg()} (other processes on the box disturb the figures)")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
