"""Kafka security settings reach every client: a worker (Faust, aiokafka) and the CLI
(kafka-python) work over SASL_PLAINTEXT on a broker of the test's own; a wrong password is
refused; the password shows in no log or error message."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import orjson
import pytest
from kafka import KafkaProducer

from stream_recs.config import Topics
from tests.harness import Stream, Worker, make_model

from .load import Tally, read_all
from .sasl import SaslListener, sasl_client, served

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

USER, PASSWORD, WRONG = "recs", "s3cret-Sasl-pw-41d9", "not-the-password"


def stream_env(bootstrap: str, mechanism: str, password: str, tag: str) -> tuple[Topics, dict]:
    topics = Topics.tagged(tag)
    env = {
        **os.environ,
        "STREAM_RECS_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_RECS_APP_ID": f"app-{tag}",
        "STREAM_RECS_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAM_RECS_SECURITY_SASL_MECHANISM": mechanism,
        "STREAM_RECS_SECURITY_SASL_USERNAME": USER,
        "STREAM_RECS_SECURITY_SASL_PASSWORD": password,
        **topics.env(),
    }
    return topics, env


def test_plain_listener_accepts_its_users_only(own_broker):
    info = own_broker(extra_listener=SaslListener("PLAIN", {USER: PASSWORD})).start()
    assert served(info.extra_bootstrap, **sasl_client("PLAIN", USER, PASSWORD))
    assert not served(info.extra_bootstrap, **sasl_client("PLAIN", USER, WRONG))


def test_worker_and_cli_over_scram_and_a_wrong_password_refused(own_broker, tmp_path):
    mechanism = "SCRAM-SHA-256"
    info = own_broker(extra_listener=SaslListener(mechanism, {USER: PASSWORD})).start()
    bootstrap = info.extra_bootstrap
    assert not served(bootstrap, **sasl_client(mechanism, USER, WRONG))

    tag = uuid.uuid4().hex[:8]
    topics, bad_env = stream_env(bootstrap, mechanism, WRONG, tag)
    bad = subprocess.run([sys.executable, "-m", "stream_recs", "worker", "--metrics-port", "0",
                          "--data-dir", str(tmp_path / "bad")], env=bad_env, capture_output=True,
                         text=True, timeout=180)
    assert bad.returncode != 0, "a worker with a wrong password ran"
    assert WRONG not in bad.stdout + bad.stderr

    _, env = stream_env(bootstrap, mechanism, PASSWORD, tag)
    stream = Stream(bootstrap, topics, env)
    worker = Worker(stream, tmp_path / "w", make_model(tmp_path / "m1", "v1", seed=1))
    try:
        worker.start()
        client = sasl_client(mechanism, USER, PASSWORD)
        producer = KafkaProducer(bootstrap_servers=bootstrap, **client, acks="all")
        events = [{"event_id": f"e{n}", "user_id": f"u{n % 7}", "item_id": f"i{n}"} for n in range(200)]
        for event in events:
            producer.send(topics.clicks, key=event["user_id"].encode(), value=orjson.dumps(event))
        producer.flush()
        producer.close()
        records = read_all(bootstrap, topics.recommendations, 200, **client)
        answers = [orjson.loads(r.value)["event_id"] for r in records]
        Tally.of("SASL_PLAINTEXT SCRAM-SHA-256", [e["event_id"] for e in events], answers).report()
        assert sorted(answers) == sorted(e["event_id"] for e in events)
        forgot = stream.cli("forget", "u1")  # the CLI's kafka-python clients over SASL too
        assert forgot.returncode == 0, forgot.stderr
    finally:
        worker.stop()
    assert PASSWORD not in worker.log.read_text()
