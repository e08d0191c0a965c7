"""Fixtures for the streamgate integration suite: a real redis-server on a
free loopback port and the real streamgate binary started with a generated
Lua config. Every process is stopped by its PID; a server's stderr log is
attached to the report of any failing test that started it.

Binary: env SG_BINARY, else <repo>/build/streamgate, else the newest
<repo>/build-*/streamgate. Repo root: env SG_SOURCE_DIR, else ../.. from here.
"""

import glob
import os
import signal
import subprocess

import pytest

import sgtest

REPO = os.path.abspath(os.environ.get("SG_SOURCE_DIR") or
                       os.path.join(os.path.dirname(__file__), "..", ".."))
REDIS_SERVER = "/usr/bin/redis-server"

# Environment variables the server reads; never inherited from the caller.
_SERVER_ENV_DROP = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD",
                    "PORT", "JWT_SECRET", "STREAMGATE_ENV", "NODE_ID",
                    "KAFKA_ENABLED", "KAFKA_BOOTSTRAP_SERVERS",
                    "AI_SERVICE_URL")


def find_binary():
    path = os.environ.get("SG_BINARY")
    if path:
        return path
    default = os.path.join(REPO, "build", "streamgate")
    if os.path.exists(default):
        return default
    found = glob.glob(os.path.join(REPO, "build-*", "streamgate"))
    if found:
        return max(found, key=os.path.getmtime)
    return default


@pytest.fixture(scope="session")
def binary():
    path = find_binary()
    if not os.access(path, os.X_OK):
        pytest.fail(f"streamgate binary not found at {path}: build it or "
                    "set SG_BINARY")
    return path


# ---------------------------------------------------------------- redis

class RedisProc:
    """One redis-server; can be stopped (SIGTERM or SIGKILL) and started
    again on the same port."""

    def __init__(self, workdir, port=None, password=None):
        self.port = port or sgtest.free_port()
        self.password = password
        self.workdir = workdir
        self.proc = None

    @property
    def url(self):
        if self.password:
            return f"redis://:{self.password}@127.0.0.1:{self.port}"
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.workdir]
        if self.password:
            args += ["--requirepass", self.password]
        log = open(os.path.join(self.workdir, f"redis-{self.port}.log"), "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        log.close()
        sgtest.wait_until(self._pings, timeout=10, what="redis PING")
        return self

    def _pings(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited {self.proc.returncode}")
        try:
            with self.client() as c:
                return c.cmd("PING") == "PONG"
        except (OSError, sgtest.RespError):
            return False

    def client(self):
        return sgtest.Resp(self.port, self.password)

    def stop(self, kill=False):
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def redis_factory(tmp_path):
    procs = []

    def make(password=None, port=None, start=True):
        r = RedisProc(str(tmp_path), port=port, password=password)
        procs.append(r)
        return r.start() if start else r

    yield make
    for r in procs:
        r.stop()


@pytest.fixture
def redis(redis_factory):
    return redis_factory()


# ---------------------------------------------------------------- server

def lua_value(v, indent=""):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') \
            .replace("\n", "\\n") + '"'
    if isinstance(v, dict):
        inner = indent + "  "
        items = [f'{inner}["{k}"] = {lua_value(val, inner)},'
                 for k, val in v.items()]
        return "{\n" + "\n".join(items) + "\n" + indent + "}"
    raise TypeError(f"cannot render {v!r} as Lua")


def deep_merge(base, extra):
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        elif v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def base_config(port):
    return {"port": port, "listen": "127.0.0.1",
            "lua": {"path": os.path.join(REPO, "lua")},
            "http": {"static_dir": os.path.join(REPO, "public")},
            "demo": {"words_per_second": 200}}


def write_config(path, cfg):
    with open(path, "w") as f:
        f.write("return " + lua_value(cfg) + "\n")


def server_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_DROP}
    env.update(extra or {})
    return env


class Server:
    """A running streamgate. `port` is where it listens."""

    def __init__(self, binary, workdir, name, config=None, env=None,
                 args=(), port=None):
        self.port = port or sgtest.free_port()
        self.cfg = deep_merge(base_config(self.port), config or {})
        self.config_path = os.path.join(workdir, f"{name}.lua")
        self.log_path = os.path.join(workdir, f"{name}.log")
        write_config(self.config_path, self.cfg)
        self.argv = [binary, "--config", self.config_path, *args]
        self.env = server_env(env)
        self.proc = None
        self.returncode = None
        self.started_ok = False

    def start(self, listen_port=None, ready_path="/healthz"):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log,
                                     env=self.env, cwd=REPO)
        log.close()
        if listen_port is not None:
            self.port = listen_port
        sgtest.wait_until(lambda: self._answers(ready_path), timeout=15,
                          what=f"GET {ready_path} on port {self.port}")
        self.started_ok = True
        return self

    def _answers(self, path):
        if self.proc.poll() is not None:
            raise AssertionError(
                f"streamgate exited with {self.proc.returncode} during "
                f"start-up; log:\n{self.log()}")
        try:
            sgtest.http_request(self.port, "GET", path, timeout=1)
            return True
        except OSError:
            return False

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def http(self, method, path, body=None, headers=None):
        return sgtest.http_request(self.port, method, path, body, headers)

    def metrics(self):
        r = self.http("GET", "/metrics")
        assert r.status == 200, f"/metrics answered {r!r}"
        return sgtest.parse_prometheus(r.text)[0]

    def metric(self, name, **labels):
        return sgtest.metric_sum(self.metrics(), name, **labels)

    def ready(self):
        try:
            return self.http("GET", "/readyz").status
        except OSError:
            return None

    def ws(self, **query):
        return sgtest.ws_url(self.port, **query)

    def terminate(self, timeout=5.0):
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code
        (negative for a signal) and records it."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                self.returncode = "killed after SIGTERM timeout"
                self.proc = None
                return self.returncode
        self.returncode = self.proc.returncode
        self.proc = None
        return self.returncode


@pytest.fixture
def server(binary, tmp_path, request):
    """Factory: server(config={...}, env={...}, args=[...], start=True).
    Teardown sends SIGTERM and asserts exit code 0 within 5 s."""
    started = []
    request.node._sg_servers = started

    def make(config=None, env=None, args=(), start=True, port=None,
             listen_port=None, ready_path="/healthz"):
        s = Server(binary, str(tmp_path), f"streamgate-{len(started)}",
                   config=config, env=env, args=args, port=port)
        started.append(s)
        return s.start(listen_port, ready_path) if start else s

    yield make
    bad = []
    for s in started:
        # a server that failed to start already failed its test; one that
        # crashed mid-test (or exits non-zero on SIGTERM) fails here
        checked = s.started_ok and s.proc is not None
        rc = s.terminate()
        if checked and rc != 0:
            bad.append((s, rc))
    if bad:
        s, rc = bad[0]
        pytest.fail(f"streamgate exit code on SIGTERM was {rc}, expected 0; "
                    f"log:\n{s.log()[-6000:]}")


@pytest.fixture(params=["embedded", "redis"])
def mode_server(request, server, redis_factory):
    """A started server in embedded mode or in Redis mode (param)."""
    if request.param == "embedded":
        return server()
    r = redis_factory()
    s = server(config={"redis": {"url": r.url}})
    s.redis = r
    return s


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for s in getattr(item, "_sg_servers", []):
            rep.sections.append((f"streamgate log {s.log_path}",
                                 s.log()[-8000:]))


@pytest.fixture
def make_server(server, redis_factory):
    """Factory: make_server(mode, config=None) -> a started server in
    "embedded" or "redis" mode (a fresh redis-server, `s.redis`; ready
    waited for); `s.mode` is the mode."""

    def make(mode, config=None):
        cfg = dict(config or {})
        r = None
        if mode == "redis":
            r = redis_factory()
            cfg = deep_merge(cfg, {"redis": {"url": r.url}})
        s = server(config=cfg)
        s.mode, s.redis = mode, r
        if r is not None:
            sgtest.wait_until(lambda: s.ready() == 200, timeout=10,
                              what="/readyz 200 in redis mode")
        return s

    return make
