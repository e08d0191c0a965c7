"""sg.http.request end to end: the real binary runs a copy of lua/ whose
init.lua adds /t/* routes that call an upstream Python HTTP server (in
this process, on a free loopback port) and answer with what they got."""

import json
import os
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import websockets

import sgtest

REPO = os.environ.get("SG_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROUTES = r'''
local hooks = require "base_init"
local sse = require "sse"
local json = sg.json
local UP = "http://127.0.0.1:%d"
local DEAD = "http://127.0.0.1:%d"
local base_http = hooks.on_http

local function fetch_sse()
    local p, events = sse.new(), {}
    local res, err = sg.http.request{ url = UP .. "/sse", on_chunk =
        function(piece)
            for _, ev in ipairs(p:feed(piece)) do
                events[#events + 1] = ev.data
            end
        end }
    if not res then
        return 502, { error = err }
    end
    return 200, { status = res.status, body = res.body == nil,
                  events = events }
end

local routes = {
    ["/t/get"] = function()
        local res, err = sg.http.request{ url = UP .. "/hello" }
        if not res then return 502, { error = err } end
        return 200, { status = res.status, body = res.body,
                      ctype = res.headers["content-type"] }
    end,
    ["/t/post"] = function(req)
        local res, err = sg.http.request{ method = "POST",
            url = UP .. "/echo", body = req.body, timeout = 5,
            headers = { ["content-type"] = "application/json" } }
        if not res then return 502, { error = err } end
        return res.status, res.body
    end,
    ["/t/404"] = function()
        local res = sg.http.request{ url = UP .. "/nope" }
        return 200, { status = res.status }
    end,
    ["/t/sse"] = fetch_sse,
    ["/t/refused"] = function()
        local res, err = sg.http.request{ url = DEAD .. "/" }
        return 502, { res = res == nil, error = err }
    end,
    ["/t/timeout"] = function()
        local res, err = sg.http.request{ url = UP .. "/hang",
                                          timeout = 0.3 }
        return 504, { error = err }
    end,
    ["/t/slow"] = function()
        local res, err = sg.http.request{ url = UP .. "/hang" }
        return 502, { error = err }
    end,
}

hooks.on_http = function(req)
    local route = routes[req.path]
    if route then
        return route(req)
    end
    return base_http(req)
end

return hooks
'''


class Upstream(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/hello":
            self._send(200, "text/plain", b"hello from upstream")
        elif self.path == "/sse":
            # HTTP/1.0 style: no length, the body ends with the connection
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for n in range(1, 6):
                self.wfile.write(b"event: delta\ndata: {\"n\":%d}\n\n" % n)
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path == "/hang":
            time.sleep(3)
        else:
            self._send(404, "text/plain", b"nope")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        ctype = self.headers.get("Content-Type", "")
        self._send(200, "application/json", json.dumps(
            {"got": body.decode(), "ctype": ctype}).encode())


@pytest.fixture
def upstream():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def gw(server, upstream, tmp_path):
    lua_dir = tmp_path / "lua"
    shutil.copytree(os.path.join(REPO, "lua"), lua_dir)
    os.rename(lua_dir / "init.lua", lua_dir / "base_init.lua")
    (lua_dir / "init.lua").write_text(
        ROUTES % (upstream, sgtest.free_port()))
    return server(config={"lua": {"path": str(lua_dir)}})


def test_get_returns_the_upstream_body(gw):
    r = gw.http("GET", "/t/get")
    assert r.status == 200, r
    assert r.json() == {"status": 200, "body": "hello from upstream",
                        "ctype": "text/plain"}


def test_post_body_and_headers_reach_the_upstream(gw):
    r = gw.http("POST", "/t/post", body='{"q":"hi"}')
    assert r.status == 200, r
    assert r.json() == {"got": '{"q":"hi"}', "ctype": "application/json"}


def test_upstream_404_is_passed_through(gw):
    assert gw.http("GET", "/t/404").json() == {"status": 404}


def test_sse_stream_is_parsed_into_5_events(gw):
    r = gw.http("GET", "/t/sse")
    assert r.status == 200, r
    assert r.json() == {"status": 200, "body": True,
                        "events": ['{"n":%d}' % n for n in range(1, 6)]}


def test_connection_refused_and_timeout_are_errors(gw):
    assert gw.http("GET", "/t/refused").json() == {
        "res": True, "error": "connection refused"}
    t0 = time.monotonic()
    r = gw.http("GET", "/t/timeout")
    assert r.status == 504 and r.json() == {"error": "timeout"}
    assert time.monotonic() - t0 < 2.5


def test_concurrent_requests_do_not_block_each_other(gw):
    results = []

    def call(path):
        results.append((path, gw.http("GET", path).status))

    threads = [threading.Thread(target=call, args=(p,))
               for p in ["/t/timeout", "/t/get", "/t/get", "/t/sse"]]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [("/t/get", 200), ("/t/get", 200),
                               ("/t/sse", 200), ("/t/timeout", 504)]
    assert time.monotonic() - t0 < 2.5
    assert "on_http failed" not in gw.log(), gw.log()[-3000:]


def test_websocket_cannot_bind_to_the_client_protocol(gw):
    async def go():
        async with websockets.connect(
                f"ws://127.0.0.1:{gw.port}/ws",
                subprotocols=["sg-http-client"], open_timeout=3) as ws:
            await ws.recv()

    with pytest.raises(Exception):
        sgtest.run(go(), timeout=10)
    assert gw.http("GET", "/t/get").status == 200


def test_stop_with_a_request_in_flight_exits_cleanly(gw):
    box = {}

    def call():
        try:
            box["r"] = gw.http("GET", "/t/slow")
        except OSError as e:
            box["e"] = e

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    assert gw.terminate(timeout=8) == 0, gw.log()[-3000:]
    t.join(5)
    # The upstream would answer after 3 s: the request was completed with
    # "closed" at shutdown instead of being waited for.
    assert time.monotonic() - t0 < 2.5
    if "r" in box:
        assert box["r"].status in (502, 503), box["r"]
