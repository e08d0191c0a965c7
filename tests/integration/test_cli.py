"""Command line, config checking and environment overrides (DESIGN.md §5).

Assumption (documented in README.md): precedence is
    built-in default < config file < environment (PORT) < --port flag.
"""

import re
import socket
import subprocess

import pytest

import sgtest
from conftest import REPO, base_config, server_env, write_config


def run_cli(binary, *args, env=None, timeout=10):
    return subprocess.run([binary, *args], capture_output=True, text=True,
                          timeout=timeout, env=server_env(env), cwd=REPO)


def test_version_flag_prints_the_version_and_exits_0(binary):
    r = run_cli(binary, "--version")
    assert r.returncode == 0, r.stderr
    assert re.search(r"\b\d+\.\d+\.\d+\b", r.stdout + r.stderr), \
        f"no version number in {r.stdout!r} / {r.stderr!r}"


def test_help_flag_prints_usage_and_exits_0(binary):
    r = run_cli(binary, "--help")
    assert r.returncode == 0, r.stderr
    out = (r.stdout + r.stderr).lower()
    assert "usage" in out and "--config" in out, out


def test_unknown_flag_prints_usage_on_stderr_and_exits_2(binary):
    r = run_cli(binary, "--no-such-flag")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "usage" in r.stderr.lower(), r.stderr


def test_config_test_mode_accepts_a_good_config(binary, tmp_path):
    cfg = tmp_path / "good.lua"
    write_config(cfg, base_config(sgtest.free_port()))
    r = run_cli(binary, "--config", str(cfg), "-t")
    assert r.returncode == 0, (r.stdout, r.stderr)


@pytest.mark.parametrize("extra,key", [
    ({"prot": 8080}, "prot"),
    ({"limits": {"max_frame_byte": 10}}, "max_frame_byte"),
    ({"port": "eighty"}, "port"),
    ({"limits": {"max_frame_bytes": "big"}}, "max_frame_bytes"),
    ({"port": 70000}, "port"),
])
def test_config_test_mode_rejects_a_bad_key_naming_it(binary, tmp_path,
                                                      extra, key):
    cfg = tmp_path / "bad.lua"
    write_config(cfg, {**base_config(sgtest.free_port()), **extra})
    r = run_cli(binary, "--config", str(cfg), "-t")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert key in r.stderr, f"stderr does not name {key!r}: {r.stderr!r}"


def test_config_with_a_lua_syntax_error_exits_2(binary, tmp_path):
    cfg = tmp_path / "broken.lua"
    cfg.write_text("return { port = \n")
    r = run_cli(binary, "--config", str(cfg), "-t")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "broken.lua" in r.stderr, r.stderr


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_env_port_overrides_the_config_port(server):
    env_port = sgtest.free_port()
    s = server(env={"PORT": str(env_port)}, start=False)
    cfg_port = s.port
    s.start(listen_port=env_port)
    assert s.http("GET", "/healthz").status == 200
    assert not _listening(cfg_port), "still listening on the config port"


def test_port_flag_overrides_env_port(server):
    env_port, flag_port = sgtest.free_port(), sgtest.free_port()
    s = server(env={"PORT": str(env_port)}, args=["--port", str(flag_port)],
               start=False)
    s.start(listen_port=flag_port)
    assert s.http("GET", "/healthz").status == 200
    assert not _listening(env_port), "listening on PORT despite --port"


def _redis_component(s):
    r = s.http("GET", "/actuator/health")
    body = r.json()
    return (body.get("components") or {}).get("redis")


def test_without_redis_config_the_server_runs_embedded(server):
    s = server()
    comp = _redis_component(s)
    # absent, not UP, or UP but saying it is the embedded broker
    assert comp is None or comp.get("status") != "UP" or \
        (comp.get("details") or {}).get("mode") == "embedded", \
        f"embedded mode reports a live redis component: {comp!r}"


def test_redis_url_env_switches_to_redis_mode(server, redis):
    s = server(env={"REDIS_URL": redis.url})
    sgtest.wait_until(lambda: s.ready() == 200, timeout=10,
                      what="/readyz 200 with REDIS_URL")
    comp = _redis_component(s)
    assert comp is not None and comp.get("status") == "UP", comp
    assert (comp.get("details") or {}).get("mode", "redis") == "redis", comp

    async def body():
        ws, _ = await sgtest.open_session(s.port, "cli-redis-mode")
        with redis.client() as c:
            await sgtest.await_until(
                lambda: c.numsub("chat:stream:cli-redis-mode") == 1,
                timeout=3, what="server SUBSCRIBEd to chat:stream:<sid>")
        await ws.close()
    sgtest.run(body())
