"""The worker's HTTP endpoint: /metrics, /healthz (liveness) and /readyz (readiness)."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import orjson
import pytest

from stream_recs.health import start_server
from stream_recs.metrics import Metrics


@pytest.fixture
def served():
    metrics = Metrics()
    server = start_server(metrics, port=0, host="127.0.0.1")
    yield metrics, f"http://127.0.0.1:{server.port}"
    server.stop()


def get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_metrics_are_served(served):
    metrics, base = served
    metrics.record_dead_letter("bad_json")
    status, content_type, body = get(f"{base}/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    assert 'stream_recs_dead_letters_total{reason="bad_json"} 1.0' in body.decode()


def test_liveness_does_not_depend_on_readiness(served):
    metrics, base = served
    for ready in (False, True):
        metrics.set_ready(ready)
        status, content_type, body = get(f"{base}/healthz")
        assert (status, content_type, orjson.loads(body)) == (200, "application/json", {"alive": True})


def test_readiness_follows_the_ready_gauge(served):
    metrics, base = served
    status, _, body = get(f"{base}/readyz")  # a new worker: no partitions yet
    assert status == 503 and orjson.loads(body) == {"ready": False, "model_version": None}
    metrics.set_model("v7")
    metrics.set_ready(True)
    status, _, body = get(f"{base}/readyz")
    assert status == 200 and orjson.loads(body) == {"ready": True, "model_version": "v7"}
    metrics.set_ready(False)  # partitions revoked
    assert get(f"{base}/readyz")[0] == 503
    assert get(f"{base}/readyz", method="HEAD")[0] == 503
    metrics.set_ready(True)
    status, _, body = get(f"{base}/readyz", method="HEAD")
    assert status == 200 and body == b""


def test_a_loop_without_heartbeat_is_neither_alive_nor_ready():
    """The endpoint answers from its own thread: it must not take that for the loop's health."""
    metrics = Metrics()
    server = start_server(metrics, port=0, host="127.0.0.1", liveness_timeout=5.0)
    base = f"http://127.0.0.1:{server.port}"
    try:
        metrics.set_ready(True)
        assert get(f"{base}/healthz")[0] == 200  # no beat yet: starting
        metrics.beat()
        assert get(f"{base}/healthz")[0] == 200 and get(f"{base}/readyz")[0] == 200
        metrics.beat(now=time.monotonic() - 6.0)  # the last beat, 6 s ago
        status, _, body = get(f"{base}/healthz")
        assert status == 503 and orjson.loads(body)["alive"] is False
        assert 6.0 <= orjson.loads(body)["heartbeat_age_s"] < 10
        assert get(f"{base}/readyz")[0] == 503
        assert 6.0 <= (metrics.registry.get_sample_value("stream_recs_heartbeat_age_seconds") or 0) < 10
        metrics.beat()
        assert get(f"{base}/healthz")[0] == 200 and get(f"{base}/readyz")[0] == 200
    finally:
        server.stop()


def test_unknown_paths_are_404(served):
    _, base = served
    status, _, body = get(f"{base}/nope")
    assert status == 404 and b"/nope" in body


def test_stop_frees_the_port():
    server = start_server(Metrics(), port=0)
    port = server.port
    server.stop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = start_server(Metrics(), port=0, host="::1")
    except OSError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    try:
        assert get(f"http://[::1]:{server.port}/healthz")[0] == 200
    finally:
        server.stop()
