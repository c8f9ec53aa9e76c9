"""The compose file's broker, run here: deploy/kafka/compose-entrypoint.sh with a KAFKA_HOME whose
bin/ scripts start the same Kafka classes the apache/kafka image's scripts do (from the embedded
broker's jar cache). Both reachable listeners serve the compose user over SCRAM-SHA-512 and refuse
an unauthenticated client and a wrong password; the compose `topics` service's command works with
the compose worker settings; a restart keeps the data and the credential."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from kafka import KafkaAdminClient

from stream_recs.config import load_settings
from stream_recs.devkit import free_port, stop_process
from stream_recs.kafka_local import java_binary, local_kafka, metadata_answers

from .sasl import sasl_client, served

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def scram(user: str, password: str) -> dict:
    return sasl_client("SCRAM-SHA-512", user, password)  # the compose listeners' mechanism

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ENTRYPOINT = DEPLOY / "kafka" / "compose-entrypoint.sh"
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
STARTUP_S = 90.0


def kafka_home(root: Path) -> Path:
    """A KAFKA_HOME with the two scripts the entrypoint runs."""
    classpath, java = local_kafka(load_settings().home).classpath(), java_binary()
    log4j = DEPLOY / "kafka" / "log4j2.properties"
    scripts = {
        "kafka-storage.sh": f'exec "{java}" -cp "{classpath}" kafka.tools.StorageTool "$@"',
        "kafka-server-start.sh": (
            f'exec "{java}" -Xmx384m -Dlog4j2.configurationFile="{log4j}" '
            f'-Dkafka.logs.dir="{root}/logs" -cp "{classpath}" kafka.Kafka "$@"'
        ),
    }
    (root / "bin").mkdir(parents=True)
    for name, body in scripts.items():
        path = root / "bin" / name
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)
    return root


class ComposeBroker:
    """The entrypoint as a process, on free loopback ports, with the compose file's kafka env."""

    def __init__(self, tmp_path: Path, password: str) -> None:
        self.ports = {name: free_port() for name in ("INTERNAL", "HOST", "BROKER", "CONTROLLER")}
        kafka_env = COMPOSE["services"]["kafka"]["environment"]
        self.user = kafka_env["STREAM_RECS_SECURITY_SASL_USERNAME"]
        self.log = tmp_path / "entrypoint.log"
        self.env = {
            "PATH": os.environ["PATH"], "TMPDIR": str(tmp_path),
            "KAFKA_HOME": str(kafka_home(tmp_path / "kafka-home")),
            "KAFKA_DATA_DIR": str(tmp_path / "data"), "KAFKA_BIND_ADDRESS": "127.0.0.1",
            "KAFKA_INTERNAL_HOST": "127.0.0.1", "KAFKA_HOST_NAME": "127.0.0.1",
            **{f"KAFKA_{name}_PORT": str(port) for name, port in self.ports.items()},
            "CLUSTER_ID": kafka_env["CLUSTER_ID"],
            "STREAM_RECS_SECURITY_SASL_USERNAME": self.user,
            "STREAM_RECS_SECURITY_SASL_PASSWORD": password,
        }
        self.proc: subprocess.Popen | None = None

    def bootstrap(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"

    def start(self) -> ComposeBroker:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["bash", str(ENTRYPOINT)], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_S
        while not metadata_answers(self.bootstrap("BROKER"), timeout_s=2.0):
            assert self.proc.poll() is None, f"the entrypoint exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no broker in {STARTUP_S} s:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s=30)


def test_compose_broker_requires_scram_on_every_reachable_listener(tmp_path):
    password = secrets.token_urlsafe(24)  # what `make secrets` writes
    broker = ComposeBroker(tmp_path, password).start()
    try:
        for listener in ("INTERNAL", "HOST"):
            bootstrap = broker.bootstrap(listener)
            assert served(bootstrap, **scram(broker.user, password)), listener
            assert not served(bootstrap, **scram(broker.user, password + "x")), f"{listener}: wrong password"
            assert not served(bootstrap, **scram("someone-else", password)), f"{listener}: unknown user"
            assert not served(bootstrap), f"{listener}: unauthenticated client served"

        worker_env = COMPOSE["services"]["topics"]["environment"]
        env = {
            **os.environ, **worker_env,
            "STREAM_RECS_BOOTSTRAP_SERVERS": broker.bootstrap("INTERNAL"),
            "STREAM_RECS_SECURITY_SASL_PASSWORD": password,
        }
        applied = subprocess.run(
            [sys.executable, "-m", "stream_recs", *COMPOSE["services"]["topics"]["command"][1:]],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert password not in applied.stdout + applied.stderr

        broker.stop()
        broker.start()  # formatted already: the data and the SCRAM credential stay
        host = broker.bootstrap("HOST")
        connection = KafkaAdminClient(bootstrap_servers=host, **scram(broker.user, password))
        try:
            assert {"clicks", "recommendations", "dead-letters"} <= set(connection.list_topics())
        finally:
            connection.close()
    finally:
        broker.stop()
    assert password not in broker.log.read_text()
