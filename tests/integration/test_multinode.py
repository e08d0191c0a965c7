"""Several streamgate nodes on one redis-server, the test acting as the
Python AI service (PUBLISH on chat:stream:{sid}, then RPUSH of the final to
chat:history:{sid}; original-system.md §4.2). PROTOCOL.md §2-§3, §6, §9
defects 4 and 6: every node subscribed to a session ingests each producer
message, the chunk log takes it once, and every socket of the session on
any node sees each offset once and in order; a SIGKILLed node's clients
resume on another node by offset without a hole or a repeat."""

import asyncio
import uuid

import pytest
import websockets

import sgtest
from sgtest import SocketCheck, answer_script, assert_silent, open_session, \
    recv_json, run

WORDS = [f"w{k:02d}-từ" for k in range(30)]


@pytest.fixture
def cluster(redis, server):
    """Three nodes (NODE_ID node-0..2) sharing one redis-server."""
    nodes = []
    for i in range(3):
        s = server(config={"redis": {"url": redis.url}},
                   env={"NODE_ID": f"node-{i}"})
        s.redis = redis
        nodes.append(s)
    for s in nodes:
        sgtest.wait_until(lambda: s.ready() == 200, timeout=10,
                          what=f"node on port {s.port} ready")
    return nodes


def new_sid():
    return "mn-" + uuid.uuid4().hex[:10]


def ingest_totals(nodes):
    """(appended, duplicate) summed over the nodes' ingest counters."""
    app = dup = 0
    for s in nodes:
        m = s.metrics()
        app += sgtest.metric_sum(m, "stream_ingest_messages_total",
                                 result="appended")
        dup += sgtest.metric_sum(m, "stream_ingest_messages_total",
                                 result="duplicate")
    return int(app), int(dup)


async def wait_numsub(c, sid, n, timeout=5):
    for chan in (f"chat:stream:{sid}", f"sg:{{{sid}}}:live"):
        await sgtest.await_until(lambda: c.numsub(chan) == n, timeout=timeout,
                                 what=f"PUBSUB NUMSUB {chan} == {n}")


async def publish(c, sid, payloads, gap=0.02):
    for p in payloads:
        c.publish(f"chat:stream:{sid}", p)
        await asyncio.sleep(gap)


async def read_until_final(ws, check, mid, timeout=15):
    """Feeds frames to `check` until the final of `mid` arrived."""
    while True:
        f = await recv_json(ws, timeout)
        check.feed(f)
        if f.get("type") == "message" and f["data"]["message_id"] == mid \
                and f["data"]["is_complete"] is True:
            return


def test_clients_on_three_nodes_see_every_offset_once_in_order(cluster):
    nodes, sid, mid = cluster, new_sid(), str(uuid.uuid4())
    partials, final, text = answer_script(sid, mid, WORDS)
    n = len(partials) + 1
    before = ingest_totals(nodes)

    async def body():
        socks = []
        for i, s in enumerate(nodes):
            for j in range(2):
                ws, welcome = await open_session(s.port, sid,
                                                 user_id=f"u{i}{j}")
                assert welcome["node"] == f"node-{i}", welcome
                chk = SocketCheck(f"node-{i}/client-{j}")
                chk.feed(welcome)
                socks.append((ws, chk))
        with nodes[0].redis.client() as c:
            await wait_numsub(c, sid, 3)
            await publish(c, sid, [p for _, p in partials] + [final])
            c.cmd("RPUSH", f"chat:history:{sid}", final)
            await asyncio.gather(*(read_until_final(ws, chk, mid)
                                   for ws, chk in socks))
            await asyncio.gather(*(assert_silent(ws, 300) for ws, _ in socks))
            xlen = c.cmd("XLEN", f"sg:{{{sid}}}:log")
            seq = int(c.cmd("GET", f"sg:{{{sid}}}:seq"))
        for ws, _ in socks:
            await ws.close()
        return socks, xlen, seq

    socks, xlen, seq = run(body())
    contents = [acc for acc, _ in partials] + [text]
    for _, chk in socks:
        assert chk.errors == [], chk.errors
        assert chk.offsets == list(range(1, n + 1)), \
            f"{chk.name}: offsets {chk.offsets}"
        assert chk.latest == {mid: text}
    # every socket saw the same sequence; the log took each chunk once
    assert xlen == n and seq == n, f"XLEN {xlen}, seq {seq}, want {n}"
    after = ingest_totals(nodes)
    assert (after[0] - before[0], after[1] - before[1]) == (n, 2 * n), \
        f"ingest (appended, duplicate) {before} -> {after}: each of the " \
        f"{n} messages must be appended once and refused by 2 nodes"
    assert contents[-1] == " ".join(WORDS)


class Track:
    """One logical client: its sockets' checks in order and the frames'
    (offset, content or chunk) across reconnects."""

    def __init__(self, name, mode="full"):
        self.name, self.mode = name, mode
        self.checks = []
        self.seq = []          # (offset, data) over all its sockets
        self.epoch = None

    async def connect(self, port, sid, since=None):
        q = {"user_id": self.name}
        if self.mode == "delta":
            q["mode"] = "delta"
        if since is not None:
            q.update(since=since, epoch=self.epoch)
        ws, welcome = await open_session(port, sid, **q)
        self.epoch = self.epoch or welcome["epoch"]
        chk = SocketCheck(f"{self.name}#{len(self.checks)}")
        chk.feed(welcome)
        self.checks.append(chk)
        return ws, welcome

    def feed(self, f):
        self.checks[-1].feed(f)
        if f.get("type") == "message":
            self.seq.append((f["offset"], f["data"]))

    @property
    def last_offset(self):
        return self.seq[-1][0] if self.seq else 0

    async def read(self, ws, mid, timeout=15):
        """Frames until the final of mid; returns 'final' or 'closed'."""
        try:
            while True:
                f = await recv_json(ws, timeout)
                self.feed(f)
                if f.get("type") == "message" and \
                        f["data"]["message_id"] == mid and \
                        f["data"]["is_complete"] is True:
                    return "final"
        except websockets.ConnectionClosed:
            return "closed"


def test_sigkill_of_a_node_mid_answer_clients_resume_elsewhere(cluster):
    nodes, sid, mid = cluster, new_sid(), str(uuid.uuid4())
    partials, final, text = answer_script(sid, mid, WORDS)
    n = len(partials) + 1
    victim = nodes[2]

    async def body():
        stay = [Track("stay0"), Track("stay1")]
        movers = [Track("move-full"), Track("move-delta", mode="delta"),
                  Track("move-full2")]
        socks = {}
        for t, s in zip(stay, nodes[:2]):
            socks[t.name] = (await t.connect(s.port, sid))[0]
        for t in movers:
            socks[t.name] = (await t.connect(victim.port, sid))[0]
        with nodes[0].redis.client() as c:
            await wait_numsub(c, sid, 3)
            readers = {t.name: asyncio.ensure_future(
                t.read(socks[t.name], mid)) for t in stay + movers}
            # half the answer, then kill the victim while it streams
            await publish(c, sid, [p for _, p in partials[:12]])
            await sgtest.await_until(
                lambda: all(t.last_offset >= 10 for t in movers), timeout=5,
                what="the victim's clients saw offset 10: " + repr(
                    [(t.name, [o for o, _ in t.seq]) for t in stay + movers]))
            pub = asyncio.ensure_future(
                publish(c, sid, [p for _, p in partials[12:]] + [final]))
            await sgtest.await_until(
                lambda: all(t.last_offset >= 14 for t in stay), timeout=5,
                what="offset 14 on the surviving nodes")
            sgtest.sigkill(victim)
            for t in movers:
                assert await readers[t.name] == "closed", \
                    f"{t.name} did not see the node die"
            resumed = {}
            for k, t in enumerate(movers):
                port = nodes[k % 2].port
                ws, welcome = await t.connect(port, sid, since=t.last_offset)
                resumed[t.name] = (welcome, t.last_offset)
                socks[t.name] = ws
                readers[t.name] = asyncio.ensure_future(t.read(ws, mid))
            await pub
            c.cmd("RPUSH", f"chat:history:{sid}", final)
            for t in stay + movers:
                assert await readers[t.name] == "final", t.name
        for ws in socks.values():
            await ws.close()
        return stay, movers, resumed

    stay, movers, resumed = run(body(), timeout=60)
    assert [sgtest.log_error_lines(s) for s in nodes[:2]] == [[], []]
    for t in stay:
        assert [e for c in t.checks for e in c.errors] == []
        assert [o for o, _ in t.seq] == list(range(1, n + 1)), t.name
        assert t.seq[-1][1]["content"] == text
    for t in movers:
        welcome, since = resumed[t.name]
        assert welcome.get("recovered") is True, \
            f"{t.name} resumed with since={since}: {welcome!r}"
        assert [e for c in t.checks for e in c.errors] == []
        offsets = [o for o, _ in t.seq]
        assert offsets == sorted(set(offsets)), \
            f"{t.name}: offsets repeat or go back: {offsets}"
        if t.mode == "delta":
            assert offsets == list(range(1, n + 1)), \
                f"{t.name}: delta mode must see every offset: {offsets}"
            assert "".join(d["chunk"] or "" for _, d in t.seq) == text
            assert t.seq[-1][1]["content"] == text
        else:
            chain = [d["content"] for _, d in t.seq]
            for a, b in zip(chain[:-1], chain[1:-1]):
                assert b.startswith(a) and len(b) > len(a), \
                    f"{t.name}: {a[-30:]!r} -> {b[-30:]!r}"
            assert chain[-1].startswith(chain[-2])
            assert chain[-1] == text and offsets[-1] == n
        assert t.seq[-1][1]["is_complete"] is True


def orphan_setup(cluster, sid, mid):
    """A session whose only client is on node 2: half the answer streams,
    node 2 is SIGKILLed, the rest and the final are published while no
    node is subscribed, then the final is RPUSHed to history. Returns
    (track, text)."""
    nodes = cluster
    partials, final, text = answer_script(sid, mid, WORDS)

    async def body():
        t = Track("orphan")
        ws, _ = await t.connect(nodes[2].port, sid)
        with nodes[0].redis.client() as c:
            await wait_numsub(c, sid, 1)
            reader = asyncio.ensure_future(t.read(ws, mid))
            await publish(c, sid, [p for _, p in partials[:15]])
            await sgtest.await_until(lambda: t.last_offset == 15, timeout=5,
                                     what="offset 15 on the orphan client")
            sgtest.sigkill(nodes[2])
            assert await reader == "closed"
            await wait_numsub(c, sid, 0)
            await publish(c, sid, [p for _, p in partials[15:]] + [final],
                          gap=0.005)
            c.cmd("RPUSH", f"chat:history:{sid}", final)
        return t
    return run(body()), text


def test_orphaned_final_is_repaired_from_history_on_resume(cluster):
    sid, mid = new_sid(), str(uuid.uuid4())
    t, text = orphan_setup(cluster, sid, mid)

    async def body():
        ws, welcome = await t.connect(cluster[0].port, sid,
                                      since=t.last_offset)
        got = await t.read(ws, mid, timeout=5)
        await assert_silent(ws, 300)
        await ws.close()
        return welcome, got

    welcome, got = run(body())
    assert welcome.get("recovered") is True, welcome
    assert got == "final", f"no final after resume; frames {t.seq[15:]!r}"
    assert [e for c in t.checks for e in c.errors] == []
    assert [o for o, _ in t.seq] == list(range(1, 17))
    assert t.seq[-1][1]["content"] == text


def test_orphaned_final_on_reload_no_partial_after_history_final(cluster):
    """A reload (no `since`) gets the final from history; the in-flight
    snapshot of that message must not follow it as a partial (defect 7).
    Delta mode, because in full mode the send queue may coalesce such a
    partial away before it is written, hiding the bug."""
    sid, mid = new_sid(), str(uuid.uuid4())
    _, text = orphan_setup(cluster, sid, mid)

    async def body():
        ws, _ = await open_session(cluster[1].port, sid, mode="delta")
        frames = []
        try:
            while True:
                frames.append(await recv_json(ws, 0.5))
        except AssertionError:
            pass  # quiet for 0.5 s
        await ws.close()
        return frames

    frames = run(body())
    assert frames and frames[0]["type"] == "history", frames
    hist = [m for m in frames[0]["messages"] if m["message_id"] == mid]
    assert [m["content"] for m in hist] == [text]
    after = [(f["offset"], f["data"]["is_complete"],
              f["data"].get("content", f["data"]["chunk"])[-20:])
             for f in frames[1:] if f.get("type") == "message"]
    assert all(done for _, done, _ in after), \
        f"partial after the final held by history: {after}"
