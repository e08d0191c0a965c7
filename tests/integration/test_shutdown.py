"""Graceful stop on SIGTERM (PROTOCOL.md §3 close code 1001)."""

import asyncio
import signal
import time

import sgtest
from sgtest import open_session, run


def test_sigterm_closes_clients_with_1001_and_exits_0(mode_server):
    s = mode_server

    async def body():
        socks = [(await open_session(s.port, f"drain-{i % 2}"))[0]
                 for i in range(3)]
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*(sgtest.expect_close(w, 5)
                                         for w in socks))
        assert [code for code, _ in results] == [1001] * 3, results
        return t0
    t0 = run(body())
    rc = s.proc.wait(max(0.1, 5 - (time.monotonic() - t0)))
    assert rc == 0, f"exit code {rc}"
    assert time.monotonic() - t0 < 5
