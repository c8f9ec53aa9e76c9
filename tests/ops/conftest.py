"""Fixtures of the operations tests: the deploy/ folder, the Prometheus binaries and a real
Prometheus server started (and stopped) by the test."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from stream_recs.devkit import free_port, stop_process

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
SCRAPE_JOB = "stream-recs"
TRAINER_JOB = "stream-recs-trainer"


def binary(name: str) -> str:
    """Path of a Prometheus binary; `make test` installs them (Debian package `prometheus`)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run `make system-deps` (apt-get install prometheus)")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return binary("promtool")


class Prometheus:
    """A Prometheus server on 127.0.0.1 scraping ``targets`` (workers) and ``trainers`` every second
    with the deployed jobs and rules; ``query`` is its HTTP API."""

    def __init__(self, workdir: Path, targets: list[str], trainers: list[str] = ()) -> None:
        deployed = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        jobs = []
        for name, static in ((SCRAPE_JOB, targets), (TRAINER_JOB, list(trainers))):
            job = next(c for c in deployed["scrape_configs"] if c["job_name"] == name)
            job = {k: v for k, v in job.items() if not k.endswith("_sd_configs")}
            job["static_configs"] = [{"targets": static}]
            if static:
                jobs.append(job)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROMETHEUS_DIR / name) for name in deployed["rule_files"]],
            "scrape_configs": jobs,
        }
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [binary("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float = 60.0) -> Prometheus:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            assert time.monotonic() < deadline, f"prometheus not ready:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.3)

    def api(self, path: str, **params: str) -> dict:
        """GET ``/api/v1/<path>``; the decoded body (``status`` "success" or "error")."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:  # 400 for a bad query: the body says why
            return json.load(exc)

    def query(self, expr: str) -> list[dict]:
        """Instant query result (a vector's samples); fails on a query Prometheus rejects."""
        body = self.api("query", query=expr)
        assert body["status"] == "success", f"{expr}: {body.get('errorType')}: {body.get('error')}"
        return body["data"]["result"]

    def stop(self) -> None:
        stop_process(self.proc, 30)


@pytest.fixture
def prometheus(tmp_path):
    """Factory: ``prometheus(["127.0.0.1:PORT", ...], trainers=[...])`` starts a server scraping
    those targets (its own storage under tmp_path); every one started is stopped at the end."""
    started: list[Prometheus] = []

    def start(targets: list[str], trainers: list[str] = ()) -> Prometheus:
        server = Prometheus(tmp_path / f"prometheus-{len(started)}", targets, trainers)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()
