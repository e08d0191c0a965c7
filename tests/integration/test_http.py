"""Health endpoints and Prometheus metrics (PROTOCOL.md §4, §8, defect 18)."""

import json
import uuid

import pytest

import sgtest
from sgtest import open_session, run

REQUIRED_FAMILIES = [
    "websocket_active_connections", "websocket_connections_total",
    "websocket_disconnections_total", "websocket_messages_received_total",
    "websocket_messages_sent_total", "authentication_attempts_total",
]


@pytest.mark.parametrize("path", ["/health", "/healthz", "/readyz",
                                  "/health/live", "/health/ready",
                                  "/actuator/health"])
def test_health_endpoints_answer_200_json(mode_server, path):
    s = mode_server
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    r = s.http("GET", path)
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("application/"), \
        r.headers
    assert isinstance(r.json(), dict)


def test_actuator_health_lists_components(mode_server):
    s = mode_server
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    body = s.http("GET", "/actuator/health").json()
    assert body["status"] == "UP", body
    comps = body["components"]
    assert comps["lua"]["status"] == "UP", comps
    if hasattr(s, "redis"):
        assert comps["redis"]["status"] == "UP", comps


@pytest.mark.parametrize("path", ["/metrics", "/actuator/prometheus"])
def test_metrics_are_prometheus_text_with_the_compat_names(server, path):
    s = server()
    r = s.http("GET", path)
    assert r.status == 200, r
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith("text/plain") and "0.0.4" in ctype, ctype
    samples, types = sgtest.parse_prometheus(r.text)
    for name in REQUIRED_FAMILIES:
        assert name in types, f"# TYPE line for {name} missing"
    assert types["websocket_active_connections"] == "gauge"
    assert types["websocket_connections_total"] == "counter"


def test_message_counters_and_labels_move(server):
    s = server()
    m0 = s.metrics()

    async def body():
        ws, _ = await open_session(s.port, "metrics-" + uuid.uuid4().hex[:6])
        await sgtest.ping_ok(ws)
        await ws.send('{"type":"heartbeat"}')
        assert json.loads(await ws.recv()) == {"type": "heartbeat_ack"}
        await ws.close()
    run(body())
    m1 = s.metrics()
    names = ("websocket_messages_received_total",
             "websocket_messages_sent_total")
    for n in names:
        assert sgtest.metric_sum(m1, n) >= sgtest.metric_sum(m0, n) + 2, n
    recv_types = {lbl.get("type") for n, lbl, _ in m1 if n == names[0]}
    assert "ping" in recv_types and "heartbeat" in recv_types, recv_types
    labelled = [lbl for n, lbl, _ in m1 if n == "websocket_connections_total"]
    assert labelled and all("status" in lbl for lbl in labelled), labelled
    assert sgtest.metric_sum(m1, "websocket_disconnections_total") >= \
        sgtest.metric_sum(m0, "websocket_disconnections_total") + 1


def test_active_gauge_returns_to_zero_including_rejected_clients(server):
    s = server()

    async def body():
        socks = [(await open_session(s.port, f"g{i}"))[0] for i in range(3)]
        assert s.metric("websocket_active_connections") == 3
        for bad in ("a%20b", "..%2Fx"):
            status, _, _ = sgtest.raw_handshake(
                s.port, f"/ws/chat?session_id={bad}")
            assert status == 400
        assert s.metric("websocket_active_connections") == 3
        for w in socks:
            await w.close()
    run(body())
    sgtest.wait_until(lambda: s.metric("websocket_active_connections") == 0,
                      timeout=2, what="active gauge back to 0")
    for n, _, v in s.metrics():
        if n in ("websocket_active_connections", "stream_active_sessions"):
            assert v >= 0, (n, v)


def test_actuator_metrics_lists_names(server):
    s = server()
    r = s.http("GET", "/actuator/metrics")
    assert r.status == 200, r
    names = r.json()["names"]
    assert "websocket_active_connections" in names, names
