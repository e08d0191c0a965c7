"""WebSocket /ws/chat frame protocol (PROTOCOL.md §2), in both run modes.

Lead decision on unparseable JSON: text that starts with '{' or '[' but
does not parse gets an `error` frame; other non-JSON text (except `ping`)
is ignored. The connection stays open either way.
"""

import json
import uuid

import pytest
import websockets

import sgtest
from sgtest import assert_silent, open_session, ping_ok, recv_frame, \
    recv_json, run


def sid():
    return "t-" + uuid.uuid4().hex[:12]


@pytest.mark.parametrize("path", ["/ws/chat", "/ws/chat/v2"])
def test_welcome_is_the_first_frame_with_session_id_and_iso_time(
        mode_server, path):
    s = mode_server

    async def body():
        session = sid()
        ws = await sgtest.ws_connect(sgtest.ws_url(
            s.port, path, session_id=session, user_id="u1",
            token="dev-token"))
        assert ws.subprotocol is None
        w = await recv_json(ws)
        assert w["type"] == "welcome", w
        assert w["sessionId"] == session
        assert sgtest.ISO_RE.match(w["timestamp"]), w["timestamp"]
        # a brand-new session has no history frame
        await assert_silent(ws, 200)
        await ws.close()
    run(body())


def test_missing_session_id_means_default(mode_server):
    async def body():
        ws = await sgtest.ws_connect(sgtest.ws_url(mode_server.port,
                                                   user_id="u1"))
        w = await recv_json(ws)
        assert w["type"] == "welcome" and w["sessionId"] == "default", w
        await ws.close()
    run(body())


def test_json_ping_gets_exactly_pong(mode_server):
    async def body():
        ws, _ = await open_session(mode_server.port, sid())
        await ws.send('{"type":"ping"}')
        frame = await recv_frame(ws)
        assert json.loads(frame) == {"type": "pong"}, frame
        await ws.close()
    run(body())


def test_text_ping_gets_text_pong(mode_server):
    async def body():
        ws, _ = await open_session(mode_server.port, sid())
        await ws.send("ping")
        assert await recv_frame(ws) == "pong"
        await ws.close()
    run(body())


def test_heartbeat_gets_exactly_heartbeat_ack(mode_server):
    async def body():
        ws, _ = await open_session(mode_server.port, sid())
        await ws.send('{"type":"heartbeat"}')
        frame = await recv_frame(ws)
        assert json.loads(frame) == {"type": "heartbeat_ack"}, frame
        await ws.close()
    run(body())


def test_unknown_type_gets_an_error_naming_it_and_socket_stays_open(
        mode_server):
    async def body():
        ws, _ = await open_session(mode_server.port, sid())
        await ws.send('{"type":"frobnicate_xyz"}')
        err = await recv_json(ws)
        assert err["type"] == "error", err
        assert "frobnicate_xyz" in err["error"], err
        assert sgtest.ISO_RE.match(err["timestamp"]), err
        await ping_ok(ws)
        await ws.close()
    run(body())


@pytest.mark.parametrize("text", ['{"type": "ping"', "[1, 2", "{not json}"])
def test_unparseable_json_gets_an_error_frame_and_socket_stays_open(
        server, text):
    s = server()

    async def body():
        ws, _ = await open_session(s.port, sid())
        await ws.send(text)
        err = await recv_json(ws)
        assert err["type"] == "error" and isinstance(err["error"], str), err
        await ping_ok(ws)
        await ws.close()
    run(body())


def test_plain_text_other_than_ping_is_ignored(server):
    s = server()

    async def body():
        ws, _ = await open_session(s.port, sid())
        await ws.send("hello there")
        await assert_silent(ws, 300)
        await ping_ok(ws)
        await ws.close()
    run(body())


def test_binary_frame_closes_with_1003(mode_server):
    async def body():
        ws, _ = await open_session(mode_server.port, sid())
        await ws.send(b"\x00\x01binary")
        code, _ = await sgtest.expect_close(ws)
        assert code == 1003, code
    run(body())


def test_frame_of_exactly_max_frame_bytes_is_accepted(server):
    s = server()

    async def body():
        ws = await sgtest.ws_connect(s.ws(session_id=sid()),
                                     compression=None)
        await recv_json(ws)
        await ws.send("x" * 65536)
        await ping_ok(ws)
        await ws.close()
    run(body())


def test_frame_over_max_frame_bytes_closes_with_1009(server):
    s = server()

    async def body():
        ws = await sgtest.ws_connect(s.ws(session_id=sid()),
                                     compression=None)
        await recv_json(ws)
        await ws.send("x" * 65537)
        code, _ = await sgtest.expect_close(ws)
        assert code == 1009, code
    run(body())


def test_configured_max_frame_bytes_is_enforced(server):
    s = server(config={"limits": {"max_frame_bytes": 1024}})

    async def body():
        ws = await sgtest.ws_connect(s.ws(session_id=sid()),
                                     compression=None)
        await recv_json(ws)
        await ws.send("y" * 1024)
        await ping_ok(ws)
        await ws.send("y" * 1025)
        code, _ = await sgtest.expect_close(ws)
        assert code == 1009, code
    run(body())


@pytest.mark.parametrize("bad", ["a" * 129, "a b", "../x", "x/y", "",
                                 "caf\u00e9"],
                         ids=["129chars", "space", "dotdot", "slash", "empty",
                              "non-ascii"])
def test_invalid_session_id_is_rejected_at_the_handshake_with_400(
        server, bad):
    from urllib.parse import quote
    s = server()
    status, _, body = sgtest.raw_handshake(
        s.port, f"/ws/chat?session_id={quote(bad)}&user_id=u1")
    assert status == 400, (status, body)
    assert b"session_id" in body, body


def test_session_id_of_128_allowed_chars_is_accepted(mode_server):
    good = ("Aa0_.:-" * 19)[:128]

    async def body():
        ws, w = await open_session(mode_server.port, good)
        assert w["sessionId"] == good
        await ws.close()
    run(body())


def test_query_values_are_split_before_percent_decoding(mode_server):
    # %26 is '&' inside the value: after decoding the sid contains '&',
    # which is outside the allowed charset, so the handshake is rejected
    # (decoding first would have produced session_id=ab and accepted it).
    status, _, body = sgtest.raw_handshake(
        mode_server.port, "/ws/chat?session_id=ab%26user_id%3Dx&user_id=u1")
    assert status == 400, (status, body)


def test_rejected_handshake_is_not_an_open_socket(mode_server):
    async def body():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await sgtest.ws_connect(sgtest.ws_url(mode_server.port,
                                                  session_id="a b"))
        assert e.value.status_code == 400
    run(body())
