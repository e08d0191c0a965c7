"""Adversarial tests of the ai_service upstream: a raw-socket fake AI that
misbehaves at the HTTP level. Failing tests are bug reproducers."""

import json
import signal
import socket
import threading
import time
import concurrent.futures as cf

import pytest

import sgtest


class RawAI:
    """Loopback TCP server; `behave(sock, method, path, body)` answers."""

    def __init__(self):
        self.port = sgtest.free_port()
        self.requests = []
        self.behave = self.ok
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(512)
        self.stopping = False
        self.conns = []
        threading.Thread(target=self.accept, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        try:
            c.settimeout(20)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                d = c.recv(65536)
                if not d:
                    return
                data += d
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            hdrs = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            n = int(hdrs.get("content-length", 0))
            while len(body) < n:
                d = c.recv(65536)
                if not d:
                    break
                body += d
            self.requests.append((method, path, hdrs, body))
            self.behave(c, method, path, body)
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    @staticmethod
    def ok(c, method, path, body):
        data = b'{"status":"healthy"}'
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(data) + data)

    def stop(self):
        self.stopping = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def rawai():
    ai = RawAI()
    yield ai
    ai.stop()


@pytest.fixture
def srv(server, rawai):
    return server(config={"upstream": "ai_service",
                          "ai_service": {"url": rawai.url, "timeout": 2}})


def reply(raw):
    def b(c, method, path, body):
        c.sendall(raw)
    return b


def chat(s, timeout=10):
    return sgtest.http_request(s.port, "POST", "/api/chat",
                               {"session_id": "s1", "message": "hi"},
                               timeout=timeout)


def alive(s):
    r = sgtest.http_request(s.port, "GET", "/healthz", timeout=3)
    assert r.status == 200


# ------------------------------------------------------------- bodies

def test_huge_body_50mb_is_refused_not_buffered(srv, rawai):
    def b(c, m, p, body):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
                  % (50 << 20))
        chunk = b"x" * 65536
        try:
            for _ in range(800):
                c.sendall(chunk)
        except OSError:
            pass
    rawai.behave = b
    r = chat(srv, timeout=15)
    assert r.status == 502, r
    assert "too big" in r.json()["detail"]
    alive(srv)


def test_huge_body_no_length(srv, rawai):
    def b(c, m, p, body):
        c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        chunk = b"x" * 65536
        try:
            for _ in range(800):
                c.sendall(chunk)
        except OSError:
            pass
    rawai.behave = b
    r = chat(srv, timeout=15)
    assert r.status == 502, r
    alive(srv)


def test_non_json_body_passes_through(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                         b"Content-Length: 9\r\n\r\n<b>hi</b>")
    r = chat(srv)
    assert r.status == 200 and r.body == b"<b>hi</b>", r
    assert r.headers["content-type"] == "text/html"


def test_invalid_utf8_in_4xx_detail_gives_valid_json(srv, rawai):
    bad = b'{"detail":"\xff\xfe\xc3("}'
    rawai.behave = reply(b"HTTP/1.1 400 Bad\r\nContent-Length: %d\r\n\r\n"
                         % len(bad) + bad)
    r = chat(srv)
    assert r.status == 400, r
    print("RAW", r.body)
    r.body.decode("utf-8")  # the proxy's own JSON must be valid UTF-8
    json.loads(r.body)


def test_invalid_utf8_in_5xx_detail_gives_valid_json(srv, rawai):
    bad = b"\xff\xfe\x80 oops"
    rawai.behave = reply(b"HTTP/1.1 503 X\r\nContent-Length: %d\r\n\r\n"
                         % len(bad) + bad)
    r = chat(srv)
    assert r.status == 502, r
    r.body.decode("utf-8")
    json.loads(r.body)


def test_slow_trickle_body_times_out(srv, rawai):
    def b(c, m, p, body):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            try:
                c.sendall(b"x")
            except OSError:
                return
            time.sleep(0.1)
    rawai.behave = b
    t0 = time.monotonic()
    r = chat(srv)
    took = time.monotonic() - t0
    assert r.status == 504, r
    assert took < 3.5, took
    alive(srv)


def test_reset_mid_body(srv, rawai):
    def b(c, m, p, body):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")
        time.sleep(0.1)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()
    rawai.behave = b
    r = chat(srv)
    assert r.status == 502, r
    assert r.json()["error"] == "Communication error with AI service"
    alive(srv)


def test_close_mid_body_with_length(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nab")
    r = chat(srv)
    assert r.status == 502, r


@pytest.mark.xfail(strict=True, reason="lws 4.1.6 does not keep the response's Transfer-Encoding, so a chunked body cut short looks like a close-delimited one (known weak)")
def test_close_mid_chunked(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
                         b"\r\n\r\n5\r\nhello\r\n")
    r = chat(srv)
    assert r.status == 502, r


def test_chunked_garbage(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
                         b"\r\n\r\nzzzz\r\nhello\r\n0\r\n\r\n")
    r = chat(srv)
    assert r.status == 502, r
    alive(srv)


def test_chunked_huge_size(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
                         b"\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n")
    r = chat(srv)
    assert r.status == 502, r
    alive(srv)


def test_chunked_ok(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
                         b"\r\nContent-Type: application/json\r\n\r\n"
                         b"5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")
    r = chat(srv)
    assert r.status == 200 and r.body == b'{"a":1}', r


def test_missing_content_length_close_delimited(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\nContent-Type: application/json"
                         b"\r\n\r\n{\"ok\":true}")
    r = chat(srv)
    assert r.status == 200 and r.body == b'{"ok":true}', r


def test_negative_content_length(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nabc")
    r = chat(srv)
    assert r.status in (200, 502), r
    alive(srv)


def test_two_content_lengths(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                         b"Content-Length: 10\r\n\r\nabcdefghij")
    r = chat(srv)
    assert r.status in (200, 502), r
    alive(srv)


# ------------------------------------------------------------ statuses

def test_redirect_not_followed(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 302 Found\r\nLocation: http://evil/x\r\n"
                         b"Content-Length: 0\r\n\r\n")
    r = chat(srv)
    # a 3xx from the AI is not a success: Java (RestTemplate) would hand
    # it back; at least it must not be followed and the server stays up
    assert len(rawai.requests) == 1
    assert r.status in (302, 502), r
    alive(srv)


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(srv, rawai, status):
    rawai.behave = reply(b"HTTP/1.1 %d X\r\n\r\n" % status)

    def b(c, m, p, body):
        c.sendall(b"HTTP/1.1 %d X\r\n\r\n" % status)
        time.sleep(5)  # keep the connection open: no body must be awaited
    rawai.behave = b
    t0 = time.monotonic()
    r = chat(srv)
    took = time.monotonic() - t0
    assert took < 1.5, f"{status}: answered {r.status} after {took:.2f}s"
    assert r.status in (status, 502), r


def test_100_continue_then_200(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 100 Continue\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
                         b'{"a":1}')
    r = chat(srv)
    assert r.status == 200 and r.body == b'{"a":1}', r


@pytest.mark.parametrize("line", [b"HTTP/1.1 199 Odd", b"HTTP/1.1 101 Up",
                                  b"HTTP/1.1 000 Zero",
                                  b"HTTP/1.1 999 Big", b"HTTP/1.1 abc x",
                                  b"HTTP/1.1 1000 X", b"garbage"])
def test_odd_status_lines(srv, rawai, line):
    rawai.behave = reply(line + b"\r\nContent-Length: 2\r\n\r\n{}")
    r = chat(srv)
    assert 200 <= r.status <= 599 and r.status not in (101, 204, 304), r
    alive(srv)


def test_ai_health_with_non_json(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n\xff[x")
    r = sgtest.http_request(srv.port, "GET", "/api/ai-health")
    assert r.status == 200 and r.json()["status"] == "unknown", r


# ----------------------------------------------------------- session ids

@pytest.mark.parametrize("sid", ["a%2Fb", "a%3Fx=1", "a%23f", "%2e%2e",
                                 "..", ".", "a%20b", "a%0d%0aX:1",
                                 "a%00b", "a;b", "%252F"])
def test_session_id_url_special(srv, rawai, sid):
    import http.client
    try:
        r = sgtest.http_request(srv.port, "GET", f"/api/history/{sid}")
    except http.client.RemoteDisconnected:
        # lws drops a request whose URI decodes to a NUL (not ai_service)
        assert sid == "a%00b"
        r = None
    for (m, p, h, b) in rawai.requests:
        assert p.startswith("/history/"), p
        tail = p[len("/history/"):]
        assert tail not in ("..", "."), f"dot segment forwarded: {p!r}"
        assert all(ch.isalnum() or ch in "_.:-%" for ch in tail), p
    assert r is None or r.status in (200, 400, 404), r


@pytest.mark.parametrize("sid", ["..", "."])
def test_session_id_dot_segments_in_chat(srv, rawai, sid):
    r = sgtest.http_request(srv.port, "DELETE", f"/api/history/{sid}")
    paths = [p for (_, p, _, _) in rawai.requests]
    assert r.status == 400 or not any(p.endswith("/..") or p.endswith("/.")
                                      for p in paths), (r, paths)


# ----------------------------------------------------------- concurrency

def test_200_concurrent_chats_while_ai_hangs(server, rawai):
    s = server(config={"upstream": "ai_service",
                       "ai_service": {"url": rawai.url, "timeout": 4}})
    hang = threading.Event()

    def b(c, m, p, body):
        hang.wait(8)
    rawai.behave = b
    lat = []
    with cf.ThreadPoolExecutor(200) as ex:
        futs = [ex.submit(chat, s, 15) for _ in range(200)]
        time.sleep(1.0)
        for _ in range(10):
            t0 = time.monotonic()
            alive(s)
            lat.append(time.monotonic() - t0)
            time.sleep(0.1)
        res = [f.result() for f in futs]
    hang.set()
    codes = {}
    for r in res:
        codes[r.status] = codes.get(r.status, 0) + 1
    print("healthz latencies", [round(x, 3) for x in lat], codes)
    assert max(lat) < 0.5, lat
    assert codes == {504: 200}, codes
    alive(s)


def test_client_disconnects_mid_request(server, rawai):
    s = server(config={"upstream": "ai_service",
                       "ai_service": {"url": rawai.url, "timeout": 3}})
    rawai.behave = lambda c, m, p, b: time.sleep(2)
    for _ in range(30):
        k = socket.create_connection(("127.0.0.1", s.port))
        body = b'{"session_id":"s1","message":"hi"}'
        k.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/json\r\nContent-Length: %d\r\n\r\n"
                  % len(body) + body)
        time.sleep(0.01)
        k.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     b"\x01\x00\x00\x00\x00\x00\x00\x00")
        k.close()
    time.sleep(3.5)
    alive(s)
    rawai.behave = RawAI.ok
    r = chat(s)
    assert r.status == 200, r


def test_sigterm_with_requests_in_flight(server, rawai):
    s = server(config={"upstream": "ai_service",
                       "ai_service": {"url": rawai.url, "timeout": 20}})
    rawai.behave = lambda c, m, p, b: time.sleep(10)
    ex = cf.ThreadPoolExecutor(20)
    futs = [ex.submit(chat, s, 15) for _ in range(20)]
    time.sleep(1.0)
    t0 = time.monotonic()
    rc = s.terminate(timeout=8)
    took = time.monotonic() - t0
    for f in futs:
        try:
            f.result(timeout=15)
        except Exception:
            pass
    ex.shutdown()
    assert rc == 0, (rc, s.log()[-3000:])
    assert took < 6, took


# ----------------------------------------------------------- URL edges

@pytest.mark.parametrize("url,ok", [
    ("http://127.0.0.1:0", False),
    ("http://127.0.0.1:70000", False),
    ("http://127.0.0.1:65536", False),
    ("http://127.0.0.1:-1", False),
    ("http://127.0.0.1:8000?x=1", False),
    ("http://127.0.0.1:8000/p?x=1", False),
    ("http://127.0.0.1:8000/p#f", False),
    ("http://[::1]:8000", False),
    ("http://user:pw@127.0.0.1:8000", False),
    ("http://127.0.0.1:8000/", True),
    ("http://127.0.0.1:8000///", True),
    ("http://127.0.0.1:8000/base/", True),
    ("http://127.0.0.1:", False),
    ("http://:8000", False),
    ("http://127.0.0.1:+80", False),
    ("http://127.0.0.1:0080", True),
    ("HTTP://127.0.0.1:8000", False),  # scheme is case-sensitive in both checks
    ("http://127.1:8000", False),
    ("http://0x7f.0.0.1:8000", False),
    ("http://LOCALHOST:8000", False),  # only lower-case localhost
    ("http://127.0.0.1:8000/%zz", True),
    ("http://127.0.0.1:8000/a\tb", False),
])
def test_url_edges_config_check(binary, tmp_path, url, ok):
    import subprocess
    from conftest import REPO, server_env, write_config
    path = str(tmp_path / "c.lua")
    write_config(path, {"upstream": "ai_service",
                        "ai_service": {"url": url}})
    p = subprocess.run([binary, "-t", "--config", path], cwd=REPO,
                       env=server_env(), capture_output=True, timeout=10)
    assert (p.returncode == 0) == ok, (url, p.returncode, p.stderr[-500:])


def test_base_path_and_trailing_slash(server, rawai):
    s = server(config={"upstream": "ai_service",
                       "ai_service": {"url": rawai.url + "/base//"}})
    r = chat(s)
    assert r.status == 200, r
    assert rawai.requests[-1][1] == "/base/chat", rawai.requests[-1][1]


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
])
def test_complete_answer_on_kept_alive_connection(srv, rawai, head):
    def b(c, m, p, body):
        c.sendall(head)
        time.sleep(5)  # keep-alive: the answer is complete already
    rawai.behave = b
    t0 = time.monotonic()
    r = chat(srv)
    took = time.monotonic() - t0
    assert took < 1.5, f"answered {r.status} after {took:.2f}s"


@pytest.mark.xfail(strict=True, reason='same as test_close_mid_chunked: chunked truncation is not detected (known weak)')
def test_truncated_chunked_then_hold_open(srv, rawai):
    def b(c, m, p, body):
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n")
        time.sleep(0.3)
    rawai.behave = b
    r = chat(srv)
    assert r.status == 502, r


def test_truncated_close_delimited_is_indistinguishable(srv, rawai):
    # without length the close ends the body: documented HTTP/1.0 style
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\n\r\n{\"trunc")
    r = chat(srv)
    assert r.status == 200, r


def test_huge_response_header(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200000 +
                         b"\r\nContent-Length: 2\r\n\r\n{}")
    r = chat(srv)
    assert r.status in (200, 502), r
    alive(srv)


def test_many_response_headers(srv, rawai):
    hs = b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\n" + hs +
                         b"Content-Length: 2\r\n\r\n{}")
    r = chat(srv)
    assert r.status in (200, 502), r
    alive(srv)


def test_content_type_with_nul_and_high_bytes(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\nContent-Type: a\x00b\xff\r\n"
                         b"Content-Length: 2\r\n\r\n{}")
    r = chat(srv)
    assert r.status in (200, 502), r
    alive(srv)


@pytest.mark.xfail(strict=True, reason='the request body is decoded and re-encoded with lua-cjson (14-digit numbers, [] as {}) (known weak)')
def test_chat_body_passes_through_unchanged(srv, rawai):
    raw = (b'{"session_id":"s1","message":"hi","user_id":"u",'
           b'"n":12345678901234567890,"tags":[],"f":0.1}')
    r = sgtest.http_request(srv.port, "POST", "/api/chat", raw,
                            {"Content-Type": "application/json"})
    assert r.status == 200, r
    sent = json.loads(rawai.requests[-1][3])
    assert sent["n"] == 12345678901234567890, sent
    assert sent["tags"] == [], sent


@pytest.mark.xfail(strict=True, reason="ai_service.url is not checked against sg.http's 2048-byte URL limit (known weak)")
def test_long_base_path_accepted_then_every_request_fails(server, rawai):
    s = server(config={"upstream": "ai_service",
                       "ai_service": {"url": rawai.url + "/" + "p" * 2030}})
    r = chat(s)
    assert r.status == 200, r  # config accepted it, so requests must work


@pytest.mark.xfail(strict=True, reason='pending Lua HTTP responses are dropped on SIGTERM instead of answered 503 (known weak)')
def test_sigterm_in_flight_clients_get_an_answer(server, rawai):
    s = server(config={"upstream": "ai_service",
                       "ai_service": {"url": rawai.url, "timeout": 20}})
    rawai.behave = lambda c, m, p, b: time.sleep(10)
    ex = cf.ThreadPoolExecutor(5)
    futs = [ex.submit(chat, s, 15) for _ in range(5)]
    time.sleep(1.0)
    t0 = time.monotonic()
    rc = s.terminate(timeout=8)
    took = time.monotonic() - t0
    outs = []
    for f in futs:
        try:
            outs.append(f.result(timeout=15).status)
        except Exception as e:
            outs.append(type(e).__name__)
    ex.shutdown()
    print("SIGTERM took", took, "outcomes", outs)
    assert rc == 0
    assert all(o in (502, 503, 504) for o in outs), outs


@pytest.mark.xfail(strict=True, reason='lws 4.1.6 reports an interim 1xx as the final status; streamgate answers 502 instead of waiting for the 200')
def test_103_early_hints_then_200(srv, rawai):
    rawai.behave = reply(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                         b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
                         b'{"a":1}')
    r = chat(srv)
    assert r.status == 200 and r.body == b'{"a":1}', r


def test_trickled_headers_time_out(srv, rawai):
    def b(c, m, p, body):
        c.sendall(b"HTTP/1.1 200 OK\r\n")
        for i in range(60):
            try:
                c.sendall(b"X-%d: v\r\n" % i)
            except OSError:
                return
            time.sleep(0.1)
    rawai.behave = b
    t0 = time.monotonic()
    r = chat(srv)
    assert r.status == 504 and time.monotonic() - t0 < 3.5, r


@pytest.mark.xfail(strict=True, reason='a detached HTTP request keeps its upstream call until the timeout (bounded; known weak)')
def test_client_gone_cancels_upstream(server, rawai):
    s = server(config={"upstream": "ai_service",
                       "ai_service": {"url": rawai.url, "timeout": 10}})
    seen = {}

    def b(c, m, p, body):
        t0 = time.monotonic()
        c.settimeout(9)
        try:
            d = c.recv(10)
        except OSError:
            d = None
        seen["eof_after"] = time.monotonic() - t0 if d == b"" else None
    rawai.behave = b
    k = socket.create_connection(("127.0.0.1", s.port))
    body = b'{"session_id":"s1","message":"hi"}'
    k.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: "
              b"application/json\r\nContent-Length: %d\r\n\r\n"
              % len(body) + body)
    time.sleep(0.5)
    k.close()
    sgtest.wait_until(lambda: "eof_after" in seen, timeout=12, what="AI side")
    print("upstream closed after", seen)
    assert seen["eof_after"] is not None and seen["eof_after"] < 2, seen


def test_keepalive_client_reuses_connection_after_proxy(srv, rawai):
    import http.client
    rawai.behave = reply(b"HTTP/1.1 200 OK\r\n\r\n{\"x\":1}")  # no length
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    for i in range(3):
        conn.request("POST", "/api/chat",
                     body=json.dumps({"session_id": "s1", "message": "hi"}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b'{"x":1}'
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        assert r.status == 200
        r.read()
    conn.close()


@pytest.mark.xfail(strict=True, reason='a request pipelined behind a pending response closes the connection (decision D-021)')
def test_pipelined_requests_behind_a_slow_proxy(srv, rawai):
    """Pre-existing, not ai_service specific: the demo upstream hangs too
    when a POST body and the next request arrive in one segment."""
    def b(c, m, p, body):
        time.sleep(0.5)
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    rawai.behave = b
    body = b'{"session_id":"s1","message":"hi"}'
    k = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    k.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: "
              b"application/json\r\nContent-Length: %d\r\n\r\n"
              % len(body) + body +
              b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    t0 = time.monotonic()
    while data.count(b"HTTP/1.1 ") < 2 and time.monotonic() - t0 < 4:
        try:
            d = k.recv(65536)
        except socket.timeout:
            break
        if not d:
            break
        data += d
    k.close()
    print("PIPE", data)
    assert data.count(b"HTTP/1.1 200") == 2, data
    assert data.index(b"{}") < data.rindex(b"HTTP/1.1 200"), data


def _mixed(c, m, p, body):
    import random
    k = random.randrange(7)
    if k == 0:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" +
                  b"x" * 5000)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     b"\x01\x00\x00\x00\x00\x00\x00\x00")
    elif k == 1:
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\nZZ\r\n")
    elif k == 2:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
                  % (9 << 20))
        try:
            for _ in range(150):
                c.sendall(b"y" * 65536)
        except OSError:
            pass
    elif k == 3:
        time.sleep(random.random() * 3)
    elif k == 4:
        c.sendall(b"\x00\xff garbage\r\n\r\n")
    elif k == 5:
        c.sendall(b"HTTP/1.1 500 X\r\nContent-Length: 3\r\n\r\n\xff\xfe\xfd")
    else:
        RawAI.ok(c, m, p, body)


def test_mixed_chaos_no_crash(server, rawai):
    s = server(config={"upstream": "ai_service",
                       "ai_service": {"url": rawai.url, "timeout": 2}})
    rawai.behave = _mixed

    def one(i):
        if i % 5 == 0:
            k = socket.create_connection(("127.0.0.1", s.port))
            b = b'{"session_id":"s1","message":"hi"}'
            k.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length:"
                      b" %d\r\n\r\n" % len(b) + b)
            time.sleep(0.05 * (i % 7))
            k.close()
            return "gone"
        path = ["/api/chat", "/api/ai-health", "/api/history/s1"][i % 3]
        try:
            if path == "/api/chat":
                return chat(s, 10).status
            return sgtest.http_request(s.port, "GET", path, timeout=10).status
        except Exception as e:
            return type(e).__name__
    with cf.ThreadPoolExecutor(60) as ex:
        outs = list(ex.map(one, range(300)))
    cnt = {}
    for o in outs:
        cnt[o] = cnt.get(o, 0) + 1
    print("outcomes", cnt)
    alive(s)
    assert all(isinstance(o, int) or o == "gone" for o in outs), cnt


def test_sigterm_while_bodies_stream(server, rawai):
    s = server(config={"upstream": "ai_service",
                       "ai_service": {"url": rawai.url, "timeout": 20}})

    def b(c, m, p, body):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n")
        try:
            for _ in range(500):
                c.sendall(b"z" * 10000)
                time.sleep(0.01)
        except OSError:
            pass
    rawai.behave = b
    ex = cf.ThreadPoolExecutor(20)
    futs = [ex.submit(chat, s, 15) for _ in range(20)]
    time.sleep(1.0)
    rc = s.terminate(timeout=8)
    for f in futs:
        try:
            f.result(timeout=15)
        except Exception:
            pass
    ex.shutdown()
    assert rc == 0, (rc, s.log()[-3000:])
