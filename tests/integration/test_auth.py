"""Handshake authentication (PROTOCOL.md §2 "Auth", defect 13)."""

import json
import time
from urllib.parse import quote

import pytest

import sgtest
from sgtest import make_jwt, run

SECRET = "integration-test-secret-0123456789abcdef"   # 40 bytes
PROD_ENV = {"STREAMGATE_ENV": "production", "JWT_SECRET": SECRET}


def claims(sub="alice", exp_in=600, **extra):
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + exp_in, **extra}


def handshake(s, token, user="alice", sid="auth-s1"):
    path = f"/ws/chat?session_id={sid}&user_id={user}"
    if token is not None:
        path += f"&token={token}"
    return sgtest.raw_handshake(s.port, path)


def assert_rejected(s, token, **kw):
    status, headers, body = handshake(s, token, **kw)
    assert status == 401, (status, body)
    assert json.loads(body) == {"error": "Authentication failed"}, body


def assert_accepted(s, token, user="alice", sid="auth-s1"):
    async def body():
        url = f"ws://127.0.0.1:{s.port}/ws/chat?session_id={sid}" \
              f"&user_id={user}" + (f"&token={token}" if token else "")
        ws = await sgtest.ws_connect(url)
        w = await sgtest.recv_json(ws)
        assert w["type"] == "welcome", w
        await ws.close()
    run(body())


def test_dev_mode_accepts_dev_token_and_no_token(mode_server):
    assert_accepted(mode_server, "dev-token", user="anyone")
    assert_accepted(mode_server, None, user="anyone")


def test_production_rejects_dev_token_with_401(server):
    s = server(env=PROD_ENV)
    assert_rejected(s, "dev-token")
    assert_rejected(s, None)


def test_production_accepts_valid_hs256_jwt_for_its_subject(server):
    s = server(env=PROD_ENV)
    assert_accepted(s, make_jwt(claims("alice"), SECRET))


def test_production_accepts_bearer_prefixed_jwt(server):
    s = server(env=PROD_ENV)
    assert_accepted(s, "Bearer%20" + make_jwt(claims("alice"), SECRET))


@pytest.mark.parametrize("case", [
    "expired", "wrong_sub", "wrong_signature", "alg_none", "hs512",
    "missing_exp", "garbage"])
def test_production_rejects_bad_jwt(server, case):
    s = server(env=PROD_ENV)
    token = {
        "expired": lambda: make_jwt(claims(exp_in=-3600), SECRET),
        "wrong_sub": lambda: make_jwt(claims("mallory"), SECRET),
        "wrong_signature": lambda: make_jwt(claims(),
                                            SECRET[::-1]),
        "alg_none": lambda: make_jwt(claims(), SECRET, alg="none"),
        "hs512": lambda: make_jwt(claims(), SECRET, alg="HS512"),
        "missing_exp": lambda: make_jwt({"sub": "alice"}, SECRET),
        "garbage": lambda: "not.a.jwt",
    }[case]()
    assert_rejected(s, quote(token, safe=""))


def test_auth_metrics_count_successes_and_failures(server):
    s = server(env=PROD_ENV)
    m0 = s.metrics()
    ok0 = sgtest.metric_sum(m0, "authentication_attempts_total",
                            status="success")
    bad0 = sgtest.metric_sum(m0, "authentication_attempts_total",
                             status="failure")
    assert_accepted(s, make_jwt(claims(), SECRET))
    assert_rejected(s, "dev-token")
    assert_rejected(s, make_jwt(claims("mallory"), SECRET))
    m1 = s.metrics()
    assert sgtest.metric_sum(m1, "authentication_attempts_total",
                             status="success") == ok0 + 1
    assert sgtest.metric_sum(m1, "authentication_attempts_total",
                             status="failure") == bad0 + 2
    sgtest.wait_until(lambda: s.metric("websocket_active_connections") == 0,
                      timeout=2, what="active gauge back to 0")


def test_rejected_connection_subscribes_nothing_in_redis(server, redis):
    s = server(env=PROD_ENV, config={"redis": {"url": redis.url}})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10, what="ready")
    with redis.client() as c:
        before = c.channels()
        assert_rejected(s, "dev-token", sid="auth-rejected")
        assert_rejected(s, make_jwt(claims("mallory"), SECRET),
                        sid="auth-rejected")
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            assert c.numsub("chat:stream:auth-rejected") == 0
            time.sleep(0.05)
        assert c.channels() == before
        assert not [ch for ch in c.channels() if "auth-rejected" in ch]
