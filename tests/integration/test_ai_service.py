"""upstream = "ai_service": the REST API proxied to a fake Python AI service
(original-system.md §3.1, §4.1, §4.2), in Redis mode with the real binary.

The fake is an http.server on a free loopback port, started by the test.
POST /chat RPUSHes and PUBLISHes the user message, answers 200 at once, and
a thread then PUBLISHes the partials and the final on chat:stream:{sid} and
RPUSHes the final, as the original does. /cancel, /history/{sid} and
/health answer like the original. `mode` switches /chat to a 400, a 500 or
a hang (to check the error mapping and the 504)."""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import sgtest
from sgtest import check_offsets, check_stream, open_session, \
    recv_until, run, stream_msgs

WORDS = ["Xin", "chào,", "đây", "là", "câu", "trả", "lời", "thử"]
HANG_SECONDS = 4


class FakeAIService:
    """The Python AI service, enough of it for the proxy: see the module
    docstring. `requests` records (method, path, json body or None)."""

    def __init__(self, redis_proc, port=None):
        self.redis_proc = redis_proc
        self.port = port or sgtest.free_port()
        self.mode = "ok"
        self.requests = []
        self.active = {}     # sid -> answer id
        self.threads = []
        self.httpd = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.handle(self, "GET")

            def do_POST(self):
                fake.handle(self, "POST")

            def do_DELETE(self):
                fake.handle(self, "DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        t = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        t.start()
        return self

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def join_answers(self, timeout=10):
        for t in self.threads:
            t.join(timeout)

    # ------------------------------------------------------------ routes

    def handle(self, h, method):
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n) if n else b""
        body = json.loads(raw) if raw else None
        self.requests.append((method, h.path, body))
        status, reply = self.route(method, h.path, body)
        data = json.dumps(reply, separators=(",", ":"),
                          ensure_ascii=False).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def route(self, method, path, body):
        if method == "GET" and path == "/health":
            return 200, {"status": "healthy", "redis": "connected",
                         "timestamp": "2026-01-01T00:00:00"}
        if method == "POST" and path == "/chat":
            return self.chat(body)
        if method == "POST" and path == "/cancel":
            return self.cancel(body)
        if path.startswith("/history/"):
            sid = path[len("/history/"):]
            if method == "GET":
                return self.history(sid)
            if method == "DELETE":
                with self.redis_proc.client() as c:
                    c.cmd("DEL", f"chat:history:{sid}")
                return 200, {"status": "success",
                             "message": f"History cleared for session {sid}"}
        return 404, {"detail": "Not Found"}

    def chat(self, body):
        if self.mode == "hang":
            time.sleep(HANG_SECONDS)
        if self.mode == "500":
            return 500, {"detail": "Internal server error",
                         "message": "An error occurred"}
        if not body or not body.get("session_id") or not body.get("message"):
            return 422, {"detail": [{"msg": "Field required"}]}
        if self.mode == "400" or not body["message"].strip():
            return 400, {"detail": "Message cannot be empty"}
        sid, user = body["session_id"], body.get("user_id", "default_user")
        uid = str(uuid.uuid4())
        user_msg = sgtest.py_msg(uid, sid, "user", body["message"], None,
                                 True, user=user)
        with self.redis_proc.client() as c:
            c.cmd("RPUSH", f"chat:history:{sid}", user_msg)
            c.cmd("EXPIRE", f"chat:history:{sid}", 86400)
            c.publish(f"chat:stream:{sid}", user_msg)
        aid = str(uuid.uuid4())
        self.active[sid] = aid
        t = threading.Thread(target=self.answer, args=(sid, aid, user),
                             daemon=True)
        self.threads.append(t)
        t.start()
        return 200, {"status": "streaming", "message_id": uid,
                     "session_id": sid,
                     "message": "AI is generating response..."}

    def answer(self, sid, aid, user):
        partials, final, _ = sgtest.answer_script(sid, aid, WORDS, user=user)
        with self.redis_proc.client() as c:
            for _, payload in partials:
                time.sleep(0.03)
                c.publish(f"chat:stream:{sid}", payload)
            time.sleep(0.03)
            c.publish(f"chat:stream:{sid}", final)
            c.cmd("RPUSH", f"chat:history:{sid}", final)
            c.cmd("EXPIRE", f"chat:history:{sid}", 86400)
        self.active.pop(sid, None)

    def cancel(self, body):
        sid, mid = body.get("session_id"), body.get("message_id")
        if not isinstance(sid, str) or not isinstance(mid, str):
            return 422, {"detail": [{"msg": "Field required"}]}
        active = self.active.get(sid)
        if active == mid:
            return 200, {"status": "cancelled",
                         "message": "Streaming cancelled successfully",
                         "session_id": sid, "message_id": mid}
        if active:
            return 200, {"status": "not_found",
                         "message": "Message ID mismatch - wrong message ID "
                                    "provided",
                         "detail": f"Active message ID: {active}, "
                                   f"requested: {mid}"}
        return 200, {"status": "completed",
                     "message": "Message already completed or not found",
                     "session_id": sid, "message_id": mid}

    def history(self, sid):
        with self.redis_proc.client() as c:
            items = c.cmd("LRANGE", f"chat:history:{sid}", 0, -1)
        msgs = [json.loads(i) for i in items]
        return 200, {"session_id": sid, "messages": msgs,
                     "count": len(msgs)}


@pytest.fixture
def ai(redis):
    fake = FakeAIService(redis).start()
    yield fake
    fake.stop()
    fake.join_answers()


@pytest.fixture
def aserver(server, redis, ai):
    s = server(config={"redis": {"url": redis.url},
                       "upstream": "ai_service",
                       "ai_service": {"url": ai.url, "timeout": 1}})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    return s


def new_sid():
    return "ai-" + uuid.uuid4().hex[:10]


def test_chat_passes_through_and_the_answer_streams(aserver, ai, redis):
    sid = new_sid()

    async def go():
        ws, _ = await open_session(aserver.port, sid)
        with redis.client() as c:
            await sgtest.await_until(
                lambda: c.numsub(f"chat:stream:{sid}") >= 1, timeout=3,
                what=f"SUBSCRIBE chat:stream:{sid}")
        r = aserver.http("POST", "/api/chat",
                         {"session_id": sid, "message": "hello",
                          "user_id": "u1"})
        assert r.status == 200, r
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert set(body) == {"status", "message_id", "session_id", "message"}
        assert body["status"] == "streaming"
        assert body["session_id"] == sid
        assert body["message"] == "AI is generating response..."
        frames = await recv_until(
            ws, lambda f: f.get("type") == "message"
            and f["data"]["is_complete"] is True, timeout=10)
        await sgtest.assert_silent(ws, 300)
        await ws.close()
        return body, frames

    body, frames = run(go())
    assert ai.requests[0] == ("POST", "/chat",
                              {"session_id": sid, "message": "hello",
                               "user_id": "u1"})
    final = check_stream(stream_msgs(frames))
    assert final["content"] == " ".join(WORDS)
    # every chunk went through the log (offsets 1..9); a queued partial may
    # be coalesced into a later one, never the final
    offs = check_offsets(frames, contiguous=False)
    assert offs[-1] == len(WORDS) + 1, offs
    assert len(offs) >= len(WORDS) // 2, offs
    # the user message id is the one the AI answered with, in history
    ai.join_answers()
    r = aserver.http("GET", f"/api/history/{sid}")
    assert r.status == 200, r
    hist = r.json()
    assert hist["count"] == 2
    assert [m["role"] for m in hist["messages"]] == ["user", "assistant"]
    assert hist["messages"][0]["message_id"] == body["message_id"]
    assert hist["messages"][1]["content"] == " ".join(WORDS)


def test_cancel_is_passed_through(aserver, ai):
    r = aserver.http("POST", "/api/cancel",
                     {"session_id": "s-c", "message_id": "m-1"})
    assert r.status == 200, r
    assert r.json() == {"status": "completed",
                        "message": "Message already completed or not found",
                        "session_id": "s-c", "message_id": "m-1"}
    ai.active["s-c"] = "m-2"
    r = aserver.http("POST", "/api/cancel",
                     {"session_id": "s-c", "message_id": "m-2"})
    assert r.json() == {"status": "cancelled",
                        "message": "Streaming cancelled successfully",
                        "session_id": "s-c", "message_id": "m-2"}
    assert ai.requests[-1] == ("POST", "/cancel",
                               {"session_id": "s-c", "message_id": "m-2"})


def test_history_get_and_delete(aserver, ai, redis):
    sid = new_sid()
    with redis.client() as c:
        c.cmd("RPUSH", f"chat:history:{sid}",
              sgtest.py_msg("u-1", sid, "user", "q", None, True))
    r = aserver.http("GET", f"/api/history/{sid}")
    assert r.status == 200, r
    body = r.json()
    assert body["session_id"] == sid and body["count"] == 1
    assert body["messages"][0]["message_id"] == "u-1"

    r = aserver.http("DELETE", f"/api/history/{sid}")
    assert r.status == 200, r
    assert r.json() == {"status": "success",
                        "message": f"History cleared for session {sid}"}
    assert ai.requests[-1] == ("DELETE", f"/history/{sid}", None)
    with redis.client() as c:
        assert c.cmd("EXISTS", f"chat:history:{sid}") == 0


def test_ai_health_reachable_then_unreachable(aserver, ai):
    r = aserver.http("GET", "/api/ai-health")
    assert r.status == 200, r
    assert r.json() == {"ai_service": "reachable", "status": "healthy",
                        "url": ai.url}
    ai.stop()
    r = aserver.http("GET", "/api/ai-health")
    assert r.status == 503, r
    assert r.json() == {"ai_service": "unreachable",
                        "error": "Communication error: connection refused",
                        "url": ai.url}
    # the data routes map the same failure to 502
    r = aserver.http("POST", "/api/chat", {"session_id": "s1",
                                           "message": "hi"})
    assert r.status == 502, r
    assert r.json() == {
        "error": "Communication error with AI service",
        "detail": f'I/O error on POST request for "{ai.url}/chat": '
                  "connection refused"}


def test_ai_4xx_and_5xx_are_mapped(aserver, ai):
    ai.mode = "400"
    r = aserver.http("POST", "/api/chat", {"session_id": "s1",
                                           "message": "hi"})
    assert r.status == 400, r
    assert r.json() == {"error": "Bad request",
                        "detail": '{"detail":"Message cannot be empty"}'}
    ai.mode = "500"
    r = aserver.http("POST", "/api/chat", {"session_id": "s1",
                                           "message": "hi"})
    assert r.status == 502, r
    assert r.json() == {
        "error": "AI service error",
        "detail": '500 Internal Server Error: {"detail":"Internal server '
                  'error","message":"An error occurred"}'}


def test_ai_hanging_gives_504_within_the_timeout(aserver, ai):
    ai.mode = "hang"
    t0 = time.monotonic()
    r = aserver.http("POST", "/api/chat", {"session_id": "s1",
                                           "message": "hi"})
    took = time.monotonic() - t0
    assert r.status == 504, r
    assert r.json() == {"error": "AI service timeout",
                        "detail": f"no answer from POST {ai.url}/chat "
                                  "within 1 s"}
    assert 0.9 <= took < 2.5, f"504 after {took:.2f}s, expected about 1 s"
    # the server still serves while and after the AI hangs
    ai.mode = "ok"
    assert aserver.http("GET", "/api/ai-health").status == 200


def test_bad_url_is_a_config_error(binary, tmp_path):
    import subprocess
    from conftest import REPO, server_env, write_config
    path = str(tmp_path / "bad.lua")
    write_config(path, {"upstream": "ai_service",
                        "ai_service": {"url": "http://python-ai:8000"}})
    p = subprocess.run([binary, "-t", "--config", path], cwd=REPO,
                       env=server_env(), capture_output=True, timeout=10)
    assert p.returncode == 2, p
    assert b"config: ai_service.url = 'http://python-ai:8000': host " \
           b"'python-ai' is not an IPv4 literal or localhost" in p.stderr, p


def test_embedded_mode_warns_at_load(server, ai):
    s = server(config={"upstream": "ai_service",
                       "ai_service": {"url": ai.url}})
    sgtest.wait_until(lambda: "ai_service: embedded mode" in s.log(),
                      timeout=5, what="the embedded-mode warning")
    assert "set redis.url (REDIS_URL)" in s.log()
