"""Chaos: three nodes on one redis-server, the test as the Python AI
service streaming answers into many sessions at once while clients
disconnect, reload (reconnect without `since`), resume (`since` + `epoch`)
on random nodes, and one node is SIGKILLed mid-run (PROTOCOL.md §2-§3, §9
defects 4, 6, 7, 24, 26, 30).

At the end every client must hold exactly the final text of every answer
of its session; per socket connection no offset twice or backwards, content
cumulative per message_id and nothing after a final. Bounded (< 90 s);
the random seed (env SG_CHAOS_SEED, else fixed) is printed on failure."""

import asyncio
import json
import os
import random
import time
import uuid

import pytest
import websockets

import sgtest
from sgtest import SocketCheck, answer_script

SEED = int(os.environ.get("SG_CHAOS_SEED", "20261203"))
SESSIONS = 50
DEADLINE_S = 80.0
SETTLE_S = 10.0   # after the last final: every client must be complete


async def close_quietly(ws):
    try:
        await ws.close()
    except websockets.ConnectionClosed:
        pass  # its node died while we said goodbye


class Client:
    """A logical client (one browser tab) over successive sockets."""

    def __init__(self, name, sid):
        self.name, self.sid = name, sid
        self.checks = []
        self.latest = {}       # message_id -> newest content shown
        self.epoch = None
        self.max_offset = 0    # newest offset seen in self.epoch
        self.reconnects = {"reload": 0, "resume": 0, "moved": 0}
        self.not_recovered = 0
        self.frames = 0

    def feed(self, f):
        self.frames += 1
        self.checks[-1].feed(f)
        kind = f.get("type")
        if kind == "welcome":
            if f.get("epoch") != self.epoch:
                self.epoch, self.max_offset = f.get("epoch"), 0
            if f.get("recovered") is False:
                self.not_recovered += 1
        elif kind == "history":
            for m in f.get("messages", []):
                if m.get("role") == "assistant" and m.get("is_complete"):
                    self.latest[m["message_id"]] = m["content"]
        elif kind == "message":
            self.latest[f["data"]["message_id"]] = f["data"]["content"]
            self.max_offset = max(self.max_offset, f["offset"])

    def complete(self, expected):
        return self.latest == expected


class Chaos:
    def __init__(self, nodes, redis, rng):
        self.nodes, self.redis, self.rng = nodes, redis, rng
        self.alive = list(range(len(nodes)))
        self.expected = {}            # sid -> {mid: final text}
        self.done = asyncio.Event()   # every final published and stored
        self.killed = None
        self.pub = redis.client()

    def node_port(self, rng):
        return self.nodes[rng.choice(self.alive)].port

    # ---- producer (the Python AI service) ------------------------------

    async def answer(self, sid, start, nth):
        rng = random.Random(f"{SEED}-{sid}-{nth}")
        words = [f"{sid[-4:]}-{k}-từ" for k in range(rng.randint(20, 60))]
        mid = str(uuid.uuid4())
        gaps = [rng.uniform(0.02, 0.05) for _ in words]
        partials, final, text = answer_script(sid, mid, words)
        await asyncio.sleep(start)
        for (_, p), gap in zip(partials, gaps):
            self.pub.publish(f"chat:stream:{sid}", p)
            await asyncio.sleep(gap)
        self.pub.publish(f"chat:stream:{sid}", final)
        self.pub.cmd("RPUSH", f"chat:history:{sid}", final)
        self.expected.setdefault(sid, {})[mid] = text

    async def killer(self, after):
        await asyncio.sleep(after)
        victim = self.rng.choice(self.alive)
        self.alive.remove(victim)
        sgtest.sigkill(self.nodes[victim])
        self.killed = (victim, time.monotonic())

    # ---- clients ---------------------------------------------------------

    async def connect(self, cl, how, rng):
        q = {"session_id": cl.sid, "user_id": cl.name, "token": "dev-token"}
        if how == "resume" and cl.epoch is not None:
            q.update(since=cl.max_offset, epoch=cl.epoch)
        for attempt in range(20):
            port = self.node_port(rng)
            try:
                ws = await sgtest.ws_connect(sgtest.ws_url(port, **q))
                break
            except (OSError, asyncio.TimeoutError,
                    websockets.InvalidHandshake, websockets.ConnectionClosed):
                await asyncio.sleep(0.05)  # a node that just died
        else:
            raise AssertionError(f"{cl.name}: could not connect")
        cl.checks.append(SocketCheck(f"{cl.name}#{len(cl.checks)}"
                                     f"@{port}/{how}"))
        return ws

    async def read_until(self, cl, ws, until):
        """Reads frames until monotonic time `until`, the socket closes
        (returns 'closed') or, once the producers are done, the client is
        complete (returns 'complete')."""
        while True:
            if self.done.is_set() and \
                    cl.complete(self.expected.get(cl.sid, {})):
                return "complete"
            left = self.end(until) - time.monotonic()
            if left <= 0:
                return "timeout"
            try:
                frame = await asyncio.wait_for(ws.recv(), min(left, 0.1))
            except asyncio.TimeoutError:
                continue
            except websockets.ConnectionClosed:
                return "closed"
            cl.feed(json.loads(frame))

    def end(self, hard_end):
        """Clients give up at hard_end, or SETTLE_S after the last final
        was stored."""
        if self.done.is_set():
            return min(hard_end, self.done_at + SETTLE_S)
        return hard_end

    async def client(self, cl, hard_end):
        rng = random.Random(f"{SEED}-{cl.name}")
        await asyncio.sleep(rng.uniform(0, 0.6))
        ws = await self.connect(cl, "fresh", rng)
        events = rng.randint(1, 4)
        while True:
            if events > 0 and not self.done.is_set():
                until = time.monotonic() + rng.uniform(0.2, 1.5)
            else:
                until = self.end(hard_end)
            got = await self.read_until(cl, ws, until)
            if got == "complete" or time.monotonic() >= self.end(hard_end):
                await close_quietly(ws)
                return
            if got == "closed":       # its node died: move by offset
                cl.reconnects["moved"] += 1
                ws = await self.connect(cl, "resume", rng)
                continue
            events -= 1
            if rng.random() < 0.7:
                await close_quietly(ws)
            else:
                ws.transport.abort()  # a network cut: no close frame
            await asyncio.sleep(rng.uniform(0, 0.3))
            how = rng.choice(["reload", "resume"])
            cl.reconnects[how] += 1
            ws = await self.connect(cl, how, rng)


@pytest.fixture
def nodes(redis, server):
    out = []
    for i in range(3):
        s = server(config={"redis": {"url": redis.url}},
                   env={"NODE_ID": f"chaos-{i}"})
        out.append(s)
    for s in out:
        sgtest.wait_until(lambda: s.ready() == 200, timeout=10,
                          what=f"node on port {s.port} ready")
    return out


@pytest.mark.slow
def test_chaos_every_client_ends_with_every_final(nodes, redis, capsys):
    rng = random.Random(SEED)
    chaos = Chaos(nodes, redis, rng)
    sids = [f"chaos-{SEED}-{k:03d}" for k in range(SESSIONS)]
    clients = [Client(f"{sid}-c{j}", sid) for sid in sids
               for j in range(rng.randint(2, 3))]
    started = time.monotonic()

    async def body():
        end = time.monotonic() + DEADLINE_S - 15
        producers = [chaos.answer(sid, rng.uniform(0, 1.0), 0)
                     for sid in sids]
        # a second, interleaved answer in every fifth session (defect 30)
        producers += [chaos.answer(sid, rng.uniform(0.5, 2.0), 1)
                      for sid in sids[::5]]

        async def produce():
            await asyncio.gather(*producers)
            chaos.done_at = time.monotonic()
            chaos.done.set()

        await asyncio.gather(produce(), chaos.killer(rng.uniform(1.2, 2.0)),
                             *(chaos.client(c, end) for c in clients))

    try:
        sgtest.run(body(), timeout=DEADLINE_S)
        errors = [e for c in clients for k in c.checks for e in k.errors]
        assert errors == [], f"{len(errors)} violations: {errors[:10]}"
        wrong = [(c.name, {m: (c.latest.get(m) or "")[-30:]
                           for m in chaos.expected[c.sid]
                           if c.latest.get(m) != chaos.expected[c.sid][m]},
                  sorted(set(c.latest) - set(chaos.expected[c.sid])),
                  [k.name for k in c.checks], c.max_offset)
                 for c in clients
                 if not c.complete(chaos.expected[c.sid])]
        assert wrong == [], \
            f"{len(wrong)} clients without exactly every final: {wrong[:5]}"
        assert chaos.killed is not None
        # the log keeps every offset and the epoch never changes here
        lost = [c.name for c in clients if c.not_recovered]
        assert lost == [], f"resumes answered recovered:false: {lost[:5]}"
        survivors = [s for s in nodes if s.proc is not None]
        assert len(survivors) == 2
        errs = [ln for s in survivors for ln in sgtest.log_error_lines(s)]
        assert errs == [], f"error lines in the survivors' logs: {errs[:5]}"
    except BaseException as e:
        raise AssertionError(f"[chaos seed={SEED}; rerun with "
                             f"SG_CHAOS_SEED={SEED}] {e!r}") from e
    moves = sum(c.reconnects["moved"] for c in clients)
    assert moves > 0, "no client was on the killed node"
    with capsys.disabled():
        print(f"\nchaos seed={SEED}: {len(sids)} sessions, "
              f"{sum(len(v) for v in chaos.expected.values())} answers, "
              f"{len(clients)} clients, sockets "
              f"{sum(len(c.checks) for c in clients)}, reconnects "
              f"reload={sum(c.reconnects['reload'] for c in clients)} "
              f"resume={sum(c.reconnects['resume'] for c in clients)} "
              f"moved={moves} (not recovered: "
              f"{sum(c.not_recovered for c in clients)}), frames "
              f"{sum(c.frames for c in clients)}, killed node "
              f"{chaos.killed[0]}, {time.monotonic() - started:.1f}s")
