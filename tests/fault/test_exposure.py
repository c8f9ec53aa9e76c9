"""The service opens no door by default: /metrics binds to the configured address (loopback by
default), and settings never show secrets in their repr (what a log line or traceback prints)."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from stream_recs.config import Security, Worker, load_settings
from stream_recs.health import start_server
from stream_recs.metrics import Metrics


def _other_local_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, it only picks a route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_metrics_bind_to_the_configured_address_only():
    assert Worker().metrics_host == "127.0.0.1"
    server = start_server(Metrics(), 0, "127.0.0.1")
    try:
        assert server.server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            assert b"stream_recs_ready" in response.read()
        other = _other_local_address()
        if other is None:
            pytest.skip("no non-loopback address to probe from")
        with pytest.raises(OSError):
            socket.create_connection((other, server.port), timeout=2).close()
    finally:
        server.stop()


def test_secrets_never_show_in_settings_repr(monkeypatch):
    monkeypatch.setenv("STREAM_RECS_SECURITY_SASL_PASSWORD", "pw-never-shown")
    monkeypatch.setenv("STREAM_RECS_PSEUDONYMISE_KEY", "key-never-shown-0123456789")
    settings = load_settings()
    assert settings.security.sasl_password == "pw-never-shown"
    assert settings.worker.pseudonymise_key == "key-never-shown-0123456789"
    for text in (repr(settings), str(settings), repr(Security(sasl_password="pw-never-shown"))):
        assert "pw-never-shown" not in text and "key-never-shown" not in text
