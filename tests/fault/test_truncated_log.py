"""A log truncated past a stopped worker's committed offsets (retention, or ``kafka-delete-records``):
after the restart the worker resumes from the earliest offset still in the log, counts the records
it could never read, and answers every new click."""

from __future__ import annotations

import time

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from tests.harness import make_model

pytestmark = pytest.mark.kafka

USERS = 20


def clicks(start: int, count: int) -> list[dict]:
    return [
        {"event_id": f"e{n}", "user_id": f"u{n % USERS}", "item_id": f"i{n % 300}", "ts": time.time()}
        for n in range(start, start + count)
    ]


def wait_for(worker, name: str, value: float, timeout_s: float = 90.0, **labels: str) -> None:
    deadline = time.monotonic() + timeout_s
    while (worker.value(name, **labels) or 0) < value:
        assert worker.running, f"worker exited:\n{worker.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, (
            f"{name} {labels} stayed at {worker.value(name, **labels)}, not {value}:\n"
            f"{worker.log.read_text()[-3000:]}"
        )
        time.sleep(0.3)


def test_a_restart_past_a_truncated_log_resumes_from_its_start(stream, workers, tmp_path):
    model = make_model(tmp_path / "m1", "v1", seed=1)
    first = workers("first", model).start()
    stream.produce_events(clicks(0, 200))
    wait_for(first, "stream_recs_events_total", 200, outcome="recommended")
    time.sleep(2)  # past a commit interval: the offsets of all 200 are committed
    first.stop()

    stream.produce_events(clicks(200, 300))  # never read: deleted below
    consumer = KafkaConsumer(bootstrap_servers=stream.bootstrap)
    topic = stream.topics.clicks
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    ends = consumer.end_offsets(partitions)
    consumer.close()
    admin = KafkaAdminClient(bootstrap_servers=stream.bootstrap)
    admin.delete_records(ends)
    admin.close()

    second = workers("second", model).start()
    stream.produce_events(clicks(500, 600))
    wait_for(second, "stream_recs_events_total", 600, outcome="recommended")
    wait_for(second, "stream_recs_truncated_records_total", 300)
    assert second.value("stream_recs_truncated_records_total") == 300
    answered = stream.consume(stream.topics.recommendations, 800, timeout_s=60)
    ids = [orjson.loads(record.value)["event_id"] for record in answered]
    assert set(ids) == {f"e{n}" for n in [*range(200), *range(500, 1100)]}
    assert "never arrived" not in second.log.read_text()
    assert "no longer in the log" in second.log.read_text()
