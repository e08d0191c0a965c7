"""Redis password, Redis outages and late Redis start (PROTOCOL.md §6,
defect 20)."""

import asyncio
import time
import uuid

import sgtest
from sgtest import open_session, py_msg, recv_until, run, stream_msgs

FAST_RECONNECT = {"reconnect_min_delay": 0.05, "reconnect_max_delay": 0.5}


def is_final(f):
    return f.get("type") == "message" and f["data"]["is_complete"] is True


async def deliver_answer(ws, redis, session, words=("one", "two", "three")):
    """Publishes one answer as the AI service would once the server is
    subscribed, and asserts the socket receives all of it."""
    mid = str(uuid.uuid4())
    with redis.client() as c:
        await sgtest.await_until(
            lambda: c.numsub(f"chat:stream:{session}") >= 1, timeout=5,
            what=f"SUBSCRIBE chat:stream:{session}")
        acc = ""
        for k, w in enumerate(words):
            piece = w + (" " if k < len(words) - 1 else "")
            acc += piece
            c.publish(f"chat:stream:{session}",
                      py_msg(mid, session, "assistant", acc, piece))
            await asyncio.sleep(0.02)
        c.publish(f"chat:stream:{session}",
                  py_msg(mid, session, "assistant", acc, None, True))
    frames = await recv_until(ws, is_final, timeout=5)
    datas = [d for d in stream_msgs(frames) if d["message_id"] == mid]
    final = sgtest.check_stream(datas, mid)
    assert final["content"] == " ".join(words)


def test_redis_with_requirepass_works(server, redis_factory):
    r = redis_factory(password="s3cret-pass")
    s = server(env={"REDIS_URL": r.url})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10,
                      what="ready with a password-protected Redis")

    async def body():
        ws, _ = await open_session(s.port, "pw-session")
        await deliver_answer(ws, r, "pw-session")
        await ws.close()
    run(body())


def test_wrong_redis_password_is_not_ready(server, redis_factory):
    r = redis_factory(password="right-pass")
    s = server(env={"REDIS_URL":
                    f"redis://:wrong-pass@127.0.0.1:{r.port}"})
    # give it time to try; it must never claim readiness
    for _ in range(20):
        assert s.ready() == 503
        time.sleep(0.05)


def test_redis_restart_is_survived_by_a_connected_client(server, redis):
    s = server(config={"redis": {"url": redis.url, **FAST_RECONNECT}})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    session = "restart-" + uuid.uuid4().hex[:8]

    async def body():
        ws, _ = await open_session(s.port, session)
        await deliver_answer(ws, redis, session, ("before", "restart"))
        redis.stop(kill=True)
        await sgtest.await_until(lambda: s.ready() == 503, timeout=5,
                                 what="/readyz 503 while Redis is down")
        await sgtest.ping_ok(ws)
        redis.start()
        await sgtest.await_until(lambda: s.ready() == 200, timeout=10,
                                 what="/readyz 200 after Redis is back")
        await deliver_answer(ws, redis, session, ("after", "the", "restart"))
        await ws.close()
    run(body())


def test_server_starts_while_redis_is_down_and_becomes_ready(server,
                                                             redis_factory):
    r = redis_factory(start=False)
    s = server(config={"redis": {"url": r.url, **FAST_RECONNECT}})
    assert s.http("GET", "/healthz").status == 200
    assert s.ready() == 503
    h = s.http("GET", "/actuator/health")
    assert h.status == 503, h
    assert h.json()["components"]["redis"]["status"] != "UP", h.json()
    r.start()
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10,
                      what="/readyz 200 once Redis starts")

    async def body():
        ws, _ = await open_session(s.port, "late-redis")
        await deliver_answer(ws, r, "late-redis")
        await ws.close()
    run(body())
