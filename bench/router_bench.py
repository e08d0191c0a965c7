#!/usr/bin/python3
"""Frame routing through Lua vs the C fast path (a benchmark, not a test).

Starts the real binary (embedded mode) once per variant and drives it with
C raw-socket WebSocket clients that each keep W `{"type":"ping"}` frames in
flight (closed loop: a new ping for every pong) for a fixed number of
frames. Reports, per variant, delivered frames/s and the server's CPU time
per frame (utime+stime from /proc/PID/stat), which is the figure that does
not depend on how fast this Python client is.

Variants:
  lua         the shipped lua/ router, default budgets (JIT off: a count
              hook enforces lua.hook_timeout)
  lua-jit     the same router with lua.hook_timeout = 0 (JIT on, no budget)
  c-fastpath  lua.fast_path = true: the exact ping is answered in C

Usage: /usr/bin/python3 bench/router_bench.py [-C 20] [-W 16] [-n 20000]
       [--binary build/streamgate]
"""
import argparse
import asyncio
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
PING = b'{"type":"ping"}'
PONG = b'{"type":"pong"}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(binary, lua_cfg, workdir):
    port = free_port()
    cfg = workdir / f"cfg-{port}.lua"
    extra = ", ".join(f"{k} = {v}" for k, v in lua_cfg.items())
    cfg.write_text(
        f'return {{ port = {port}, listen = "127.0.0.1", '
        f'lua = {{ path = "{REPO / "lua"}", {extra} }}, '
        f'http = {{ static_dir = "{REPO / "public"}" }}, '
        f'log = {{ level = "warn" }}, '
        f'stream = {{ max_pending_chunks = 100000 }} }}\n')
    log = open(workdir / f"server-{port}.log", "w")
    proc = subprocess.Popen([str(binary), "--config", str(cfg)],
                            stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return proc, port
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"server exited: see {log.name}")
            time.sleep(0.05)
    proc.kill()
    sys.exit("server did not start")


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ws_frame(payload):
    """A masked client text frame (mask 0: XOR is a no-op, still valid)."""
    n = len(payload)
    head = bytes([0x81])
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


class Client:
    """Closed loop: keeps `window` pings in flight until `total` pongs."""

    def __init__(self, port, window, total):
        self.port, self.window, self.total = port, window, total
        self.got = 0

    async def run(self):
        r, w = await asyncio.open_connection("127.0.0.1", self.port)
        w.write(b"GET /ws/chat?session_id=rb&token=dev-token HTTP/1.1\r\n"
                b"Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n")
        await r.readuntil(b"\r\n\r\n")
        buf = b""
        frame = ws_frame(PING)
        sent = min(self.window, self.total)
        w.write(frame * sent)
        welcome_seen = False
        while self.got < self.total:
            data = await r.read(65536)
            if not data:
                raise RuntimeError("server closed the connection")
            buf += data
            more = 0
            while len(buf) >= 2:
                n = buf[1] & 0x7F
                off = 2
                if n == 126:
                    if len(buf) < 4:
                        break
                    n, off = int.from_bytes(buf[2:4], "big"), 4
                elif n == 127:
                    if len(buf) < 10:
                        break
                    n, off = int.from_bytes(buf[2:10], "big"), 10
                if len(buf) < off + n:
                    break
                payload, buf = buf[off:off + n], buf[off + n:]
                if payload == PONG:
                    self.got += 1
                    if sent < self.total:
                        more += 1
                elif not welcome_seen:
                    welcome_seen = True
            if more:
                more = min(more, self.total - sent)
                w.write(frame * more)
                sent += more
        w.close()


async def drive(port, clients, window, per_client):
    cs = [Client(port, window, per_client) for _ in range(clients)]
    t0 = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(c.run() for c in cs)), 300)
    return time.monotonic() - t0, sum(c.got for c in cs)


def run_variant(name, lua_cfg, args, workdir):
    proc, port = start_server(args.binary, lua_cfg, workdir)
    try:
        asyncio.run(drive(port, 2, 4, 500))          # warm-up
        cpu0 = cpu_seconds(proc.pid)
        wall, frames = asyncio.run(drive(port, args.clients, args.window,
                                         args.frames // args.clients))
        cpu = cpu_seconds(proc.pid) - cpu0
    finally:
        stop_server(proc)
    return {"name": name, "frames": frames, "wall": wall,
            "fps": frames / wall, "cpu_us": cpu * 1e6 / frames,
            "server_cpu_pct": 100 * cpu / wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-C", "--clients", type=int, default=20)
    ap.add_argument("-W", "--window", type=int, default=16)
    ap.add_argument("-n", "--frames", type=int, default=40000)
    ap.add_argument("--binary", default=os.environ.get(
        "SG_BINARY", str(REPO / "build" / "streamgate")))
    args = ap.parse_args()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="sg-router-bench-"))
    variants = [
        ("lua", {}),
        ("lua-jit", {"hook_timeout": 0}),
        ("c-fastpath", {"fast_path": "true"}),
    ]
    rows = [run_variant(n, cfg, args, workdir) for n, cfg in variants]
    base = next(r for r in rows if r["name"] == "c-fastpath")
    print(f"\nrouting {args.frames} pings, {args.clients} clients x "
          f"window {args.window} ({time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} cores)")
    print(f"{'variant':<12} {'frames/s':>10} {'server us/frame':>16} "
          f"{'server CPU':>11} {'vs C fast path':>15}")
    for r in rows:
        extra = r["cpu_us"] / base["cpu_us"] - 1
        print(f"{r['name']:<12} {r['fps']:>10.0f} {r['cpu_us']:>16.1f} "
              f"{r['server_cpu_pct']:>10.0f}% {extra:>+14.0%}")
    print("\n'vs C fast path' is the extra server CPU per frame; frames/s is"
          " bounded by this one-process Python client.")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
