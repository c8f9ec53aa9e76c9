"""``stream-recs train --from-topic`` on the real broker: only committed clicks are learned,
malformed records and forget requests are skipped and counted, and ``--since`` leaves older
records out."""

from __future__ import annotations

import time

import orjson
import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from stream_recs.models import load_model

pytestmark = pytest.mark.kafka

DAY_MS = 86_400_000


def _clicks(prefix: str, count: int, ts: float) -> list[tuple[bytes, bytes]]:
    return [(f"u{n % 4}".encode(), orjson.dumps({"user_id": f"u{n % 4}", "item_id": f"{prefix}{n % 6}",
                                                 "ts": ts + n}))
            for n in range(count)]


def test_train_from_topic_reads_committed_clicks_since_an_age(stream, tmp_path):
    topic = stream.topics.clicks
    admin = KafkaAdminClient(bootstrap_servers=stream.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    admin.close()
    now = time.time()
    plain = KafkaProducer(bootstrap_servers=stream.bootstrap)
    for key, value in _clicks("old", 24, now - 10 * 86_400):  # appended "10 days ago"
        plain.send(topic, key=key, value=value, timestamp_ms=int(now * 1000) - 10 * DAY_MS)
    for key, value in _clicks("new", 40, now):
        plain.send(topic, key=key, value=value)
    plain.send(topic, key=b"u0", value=b"{not json")
    plain.send(topic, key=b"u1", value=orjson.dumps({"user_id": "u1", "type": "forget"}))
    plain.flush()
    plain.close()
    aborted = KafkaProducer(bootstrap_servers=stream.bootstrap, transactional_id=f"tx-{topic}")
    aborted.init_transactions()
    aborted.begin_transaction()
    for key, value in _clicks("aborted", 12, now):
        aborted.send(topic, key=key, value=value)
    aborted.flush()
    aborted.abort_transaction()
    aborted.close()

    everything = stream.cli("train", "--from-topic", topic, "--out", str(tmp_path / "all"),
                            "--epochs", "1", "--quiet", "--param", "hidden_size=8")
    assert everything.returncode == 0, everything.stderr
    assert f"read 64 clicks from {topic}, skipped bad_json 1, forget 1" in everything.stderr
    items = set(load_model(tmp_path / "all").item_ids)
    assert items == {f"old{n}" for n in range(6)} | {f"new{n}" for n in range(6)}  # none aborted

    recent = stream.cli("train", "--from-topic", topic, "--since", "7d", "--out",
                        str(tmp_path / "recent"), "--epochs", "1", "--quiet", "--param", "hidden_size=8")
    assert recent.returncode == 0, recent.stderr
    assert f"read 40 clicks from {topic}" in recent.stderr
    assert set(load_model(tmp_path / "recent").item_ids) == {f"new{n}" for n in range(6)}

    wrong = stream.cli("train", "--from-topic", topic, "--since", "soon", "--out", str(tmp_path / "x"))
    assert wrong.returncode == 2 and "not a duration" in wrong.stderr
