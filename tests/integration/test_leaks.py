"""Leaks (PROTOCOL.md §9 defect 5): thousands of connect/disconnect cycles
over 200 session ids on one node, some sessions with an answer in flight
(the test publishes as the Python AI service). Afterwards, once
stream.linger (0.5 s here) has passed: no Redis subscription is left
(PUBSUB NUMSUB of chat:stream:{sid} and sg:{sid}:live), the
broker_subscriptions / websocket_active_connections / stream_active_sessions
gauges are 0, every sg:* key has a TTL, and the server's RSS is back near
its warmed-up baseline."""

import asyncio
import random
import time
import uuid

import pytest
import websockets

import sgtest
from sgtest import answer_script, recv_json

SEED = 5
SIDS = [f"leak-{k:03d}" for k in range(200)]
BUSY = SIDS[::10]           # 20 sessions with answers streaming
WARMUP, CYCLES, CONCURRENCY = 300, 2000, 20
RSS_SLACK_KB = 10 * 1024


def is_asan(binary):
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


async def produce(c, sid, rng, stop):
    """Answers one after another on `sid` until `stop` is set."""
    n = 0
    while not stop.is_set():
        mid = str(uuid.uuid4())
        words = [f"w{k}" for k in range(rng.randint(20, 40))]
        partials, final, _ = answer_script(sid, mid, words)
        for _, p in partials:
            c.publish(f"chat:stream:{sid}", p)
            await asyncio.sleep(0.02)
        c.publish(f"chat:stream:{sid}", final)
        c.cmd("RPUSH", f"chat:history:{sid}", final)
        c.cmd("EXPIRE", f"chat:history:{sid}", 86400)
        n += 1
    return n


async def cycle(port, sid, rng):
    """One client: connect, get the welcome, maybe read a little or ping,
    then leave with a close frame or by cutting the TCP connection."""
    ws = await sgtest.ws_connect(sgtest.ws_url(
        port, session_id=sid, user_id="leaky", token="dev-token"))
    try:
        assert (await recv_json(ws))["type"] == "welcome"
        r = rng.random()
        if r < 0.3:
            for _ in range(rng.randint(1, 5)):
                try:
                    await recv_json(ws, 0.05)
                except AssertionError:
                    break
        elif r < 0.5:  # served: the pong comes (after any live frames)
            await ws.send('{"type":"ping"}')
            await sgtest.recv_until(ws, lambda f: f == {"type": "pong"},
                                    timeout=5)
    finally:
        if rng.random() < 0.8:
            await ws.close()
        else:
            ws.transport.abort()


async def run_cycles(port, n, rng):
    todo = [rng.choice(SIDS) if rng.random() < 0.7 else rng.choice(BUSY)
            for _ in range(n)]
    errors = []

    async def worker():
        while todo:
            sid = todo.pop()
            try:
                await cycle(port, sid, rng)
            except (AssertionError, OSError, asyncio.TimeoutError,
                    websockets.WebSocketException) as e:
                errors.append(f"{sid}: {e!r}")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    assert errors == [], f"{len(errors)} failed cycles: {errors[:5]}"


def leftover_subscriptions(c):
    chans = [f"chat:stream:{s}" for s in SIDS] + \
            [f"sg:{{{s}}}:live" for s in SIDS]
    reply = c.cmd("PUBSUB", "NUMSUB", *chans)
    counts = {reply[i].decode(): int(reply[i + 1])
              for i in range(0, len(reply), 2)}
    return {k: v for k, v in counts.items() if v != 0}


def gauges(s):
    m = s.metrics()
    return {name: sgtest.metric_sum(m, name)
            for name in ("broker_subscriptions",
                         "websocket_active_connections",
                         "stream_active_sessions")}


def settle(s, c):
    """Waits until nothing is subscribed or connected any more."""
    sgtest.wait_until(lambda: not leftover_subscriptions(c), timeout=10,
                      interval=0.1, what="PUBSUB NUMSUB 0 on every channel; "
                      f"left: {leftover_subscriptions(c)}")
    sgtest.wait_until(lambda: not any(gauges(s).values()), timeout=10,
                      interval=0.1, what=f"gauges at 0: {gauges(s)}")


@pytest.mark.slow
def test_connect_cycles_leave_no_subscription_key_or_memory(
        redis, server, binary, capsys):
    s = server(config={"redis": {"url": redis.url},
                       "stream": {"linger": 0.5}})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    rng = random.Random(SEED)
    pid = s.proc.pid
    c = redis.client()
    started = time.monotonic()

    async def phase(n):
        stop = asyncio.Event()
        producers = [asyncio.ensure_future(
            produce(c, sid, random.Random(f"{SEED}-{sid}"), stop))
            for sid in BUSY]
        await run_cycles(s.port, n, rng)
        stop.set()
        return sum(await asyncio.gather(*producers))

    try:
        answers = sgtest.run(phase(WARMUP), timeout=30)
        settle(s, c)
        base_kb = sgtest.vmrss_kb(pid)
        answers += sgtest.run(phase(CYCLES), timeout=60)
        settle(s, c)
        after_kb = sgtest.vmrss_kb(pid)

        keys = sgtest.scan_keys(c, "sg:*")
        ttls = {k.decode(): c.cmd("TTL", k) for k in keys}
    finally:
        c.close()
    assert len(keys) >= len(BUSY) * 4, \
        f"expected the busy sessions' stream keys, got {sorted(ttls)[:10]}"
    no_ttl = sorted(k for k, t in ttls.items() if t < 0)
    assert no_ttl == [], f"sg:* keys without a TTL: {no_ttl[:10]}"
    growth = after_kb - base_kb
    with capsys.disabled():
        print(f"\nleaks: {WARMUP}+{CYCLES} cycles over {len(SIDS)} sessions "
              f"({CONCURRENCY} concurrent), {answers} answers streamed; "
              f"VmRSS baseline {base_kb} kB, after {after_kb} kB "
              f"(+{growth} kB); {len(keys)} sg:* keys all with a TTL; "
              f"{time.monotonic() - started:.1f}s")
    if is_asan(binary):
        return  # ASan's quarantine holds freed memory: RSS says nothing
    assert growth <= RSS_SLACK_KB, \
        f"RSS grew {growth} kB over {CYCLES} cycles (baseline {base_kb} kB, " \
        f"after {after_kb} kB, bound +{RSS_SLACK_KB} kB)"
