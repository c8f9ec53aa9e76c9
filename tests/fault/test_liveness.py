"""Liveness that tells the truth: a worker whose event loop is blocked answers /healthz (and
/readyz) with 503 within seconds, from its HTTP thread, and recovers when the loop does."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.kafka

STALL_S = 20.0


def status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_blocked_event_loop_is_reported_unhealthy_within_10_s(stream, workers, tmp_path):
    trigger = tmp_path / "stall"
    stream.env.update(STALL_TRIGGER=str(trigger), STALL_SECONDS=str(STALL_S))
    worker = workers("w", module="tests.fault.stalling_worker").start()
    time.sleep(2)
    assert status(worker.port, "/healthz") == 200 and status(worker.port, "/readyz") == 200
    trigger.touch()
    while trigger.exists():  # the loop takes it up within its timer's period
        time.sleep(0.05)
    blocked = time.monotonic()
    while status(worker.port, "/healthz") == 200:
        assert time.monotonic() - blocked < 10, "a blocked loop was still reported alive after 10 s"
        time.sleep(0.2)
    reported = time.monotonic() - blocked
    assert status(worker.port, "/readyz") == 503
    assert (worker.value("stream_recs_heartbeat_age_seconds") or 0) >= 5
    assert worker.running  # only the probes say it; the process lives
    while time.monotonic() - blocked < STALL_S + 10 and status(worker.port, "/healthz") != 200:
        time.sleep(0.5)
    assert status(worker.port, "/healthz") == 200, "the loop came back, the probe did not"
    print(f"blocked loop reported unhealthy after {reported:.1f} s")
