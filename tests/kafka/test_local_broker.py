"""The embedded broker's lifecycle: up, status, down, up again, a taken port, via the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from stream_recs.config import load_settings
from stream_recs.kafka_local import LocalKafka, metadata_answers

pytestmark = pytest.mark.kafka


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream_recs", *args], capture_output=True, text=True, env=env, timeout=180
    )


def test_up_status_down_up_down_on_a_taken_port(tmp_path, kafka_bootstrap):
    """A second broker with its own state dir: its preferred port is the session broker's, so
    it must pick another; it must restart after ``down`` with no stale lock or port."""
    home = tmp_path / "home"
    jars = load_settings().home / "jars"
    home.mkdir()
    (home / "jars").symlink_to(jars)  # reuse the resolved jars, keep the state separate
    taken = int(kafka_bootstrap.rsplit(":", 1)[1])
    env = {**os.environ, "STREAM_RECS_HOME": str(home)}
    env.pop("STREAM_RECS_BOOTSTRAP_SERVERS", None)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)

    up = _cli("kafka", "up", "--port", str(taken), env=env)
    assert up.returncode == 0, up.stderr
    bootstrap = up.stdout.strip().splitlines()[-1]
    host, port = bootstrap.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) != taken
    assert metadata_answers(bootstrap)

    status = _cli("kafka", "status", env=env)
    assert status.returncode == 0 and status.stdout.strip().splitlines()[-1] == bootstrap
    assert "4." in status.stdout  # "Apache Kafka 4.x.y ... running"

    assert _cli("kafka", "down", env=env).stdout.strip() == "stopped"
    assert _cli("kafka", "status", env=env).returncode == 1
    assert not metadata_answers(bootstrap, timeout_s=1.0)

    again = _cli("kafka", "up", "--port", str(taken), env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == bootstrap, "a restart keeps its address"
    assert _cli("kafka", "down", env=env).stdout.strip() == "stopped"
    assert _cli("kafka", "down", env=env).stdout.strip() == "not running"


def test_broker_listens_on_loopback_only(kafka_bootstrap):
    settings = load_settings()
    if not settings.embedded:
        pytest.skip("an external cluster is configured")
    config = (LocalKafka(settings.home / "kafka", settings.home / "jars").state_dir / "server.properties")
    listeners = [ln for ln in config.read_text().splitlines() if ln.startswith(("listeners=", "advertised."))]
    urls = [url for line in listeners for url in line.split("=", 1)[1].split(",")]
    assert urls and all(url.split("://")[1].startswith("127.0.0.1:") for url in urls)
    port = int(kafka_bootstrap.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
