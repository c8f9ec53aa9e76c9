"""A real broker carries 1,000 JSON events from kafka-python to a Faust agent intact."""

from __future__ import annotations

import asyncio
import uuid

import faust
import orjson
import pytest
from kafka import KafkaAdminClient, KafkaProducer

pytestmark = pytest.mark.kafka

N_EVENTS = 1000
N_USERS = 37


def _produce(bootstrap: str, topic: str) -> list[dict]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": 4, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    sent = []
    for seq in range(N_EVENTS):
        user, item = f"u{seq % N_USERS}", f"i{seq * 7 % 101}"
        event = {"user_id": user, "item_id": item, "seq": seq, "ts": 1.7e9 + seq}
        producer.send(topic, key=event["user_id"].encode(), value=orjson.dumps(event))
        sent.append(event)
    producer.flush()
    producer.close()
    return sent


async def test_faust_agent_receives_every_event_in_order(kafka_bootstrap, topic_name, tmp_path):
    sent = _produce(kafka_bootstrap, topic_name)
    app = faust.App(
        f"roundtrip-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{kafka_bootstrap}",
        store="memory://",
        datadir=str(tmp_path),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=4,
    )
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    received: list[tuple[str, dict]] = []
    all_in = asyncio.Event()

    @app.agent(topic)
    async def collect(stream):
        async for key, value in stream.items():
            received.append((key.decode(), orjson.loads(value)))
            if len(received) >= N_EVENTS:
                all_in.set()

    await app.start()
    try:
        await asyncio.wait_for(all_in.wait(), timeout=90)
        await asyncio.sleep(1.0)  # anything past 1,000 would be a duplicate
    finally:
        await app.stop()

    assert len(received) == N_EVENTS
    assert sorted(v["seq"] for _, v in received) == list(range(N_EVENTS))
    assert all(key == value["user_id"] for key, value in received)
    by_seq = {e["seq"]: e for e in sent}
    assert all(value == by_seq[value["seq"]] for _, value in received)
    for user in {e["user_id"] for e in sent}:
        seqs = [v["seq"] for k, v in received if k == user]
        assert seqs == sorted(seqs), f"order of {user} not kept"
