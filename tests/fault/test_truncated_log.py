"""A log truncated past a stopped worker's committed offsets (retention, or ``kafka-delete-records``):
after the restart the worker resumes from the earliest offset still in the log, counts the records
it could never read, and answers every new click."""

from __future__ import annotations

import time

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from tests.harness import make_model, numbered_clicks

pytestmark = pytest.mark.kafka

USERS = 20


def test_a_restart_past_a_truncated_log_resumes_from_its_start(stream, workers, tmp_path):
    model = make_model(tmp_path / "m1", "v1", seed=1)
    first = workers("first", model).start()
    stream.produce_events(numbered_clicks(0, 200, USERS))
    first.wait_until(lambda: first.answered() >= 200, "the first clicks were not answered")
    time.sleep(2)  # past a commit interval: the offsets of all 200 are committed
    first.stop()

    stream.produce_events(numbered_clicks(200, 300, USERS))  # never read: deleted below
    consumer = KafkaConsumer(bootstrap_servers=stream.bootstrap)
    topic = stream.topics.clicks
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    ends = consumer.end_offsets(partitions)
    consumer.close()
    admin = KafkaAdminClient(bootstrap_servers=stream.bootstrap)
    admin.delete_records(ends)
    admin.close()

    second = workers("second", model).start()
    stream.produce_events(numbered_clicks(500, 600, USERS))
    second.wait_until(lambda: second.answered() >= 600, "clicks after the truncation were not answered")
    second.wait_until(lambda: (second.value("stream_recs_truncated_records_total") or 0) >= 300,
                      "the deleted clicks were not counted")
    assert second.value("stream_recs_truncated_records_total") == 300
    answered = stream.consume(stream.topics.recommendations, 800, timeout_s=60)
    ids = [orjson.loads(record.value)["event_id"] for record in answered]
    assert set(ids) == {f"e{n}" for n in [*range(200), *range(500, 1100)]}
    log = second.log.read_text()
    assert 0 < log.count("no longer in the log") <= 4  # once per truncated partition, then it went on
    assert log.count("never arrived") <= 4 * 2, "sought back to the deleted offsets again and again"
