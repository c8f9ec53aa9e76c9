"""The popularity fallback on the real broker: its counts survive a worker restart on an empty
data dir (they come back from the popularity changelog, written at the clean stop too), and item
ids that no model knows, however often producers send them, are never offered."""

from __future__ import annotations

import signal
import time

import pytest

from stream_recs.popularity import Shard
from stream_recs.topology.topics import COUNTS_TABLE, changelog_topic
from tests.fault.load import read_all
from tests.harness import make_model

from .test_stream import K, by_event

pytestmark = pytest.mark.kafka

POPULAR = [f"i{n}" for n in range(15)]  # i0 clicked 30 times, i1 29 times, ...


def counted(stream) -> int:
    """Clicks counted by the latest snapshot of each partition in the popularity changelog."""
    topic = changelog_topic(stream.env["STREAM_RECS_APP_ID"], COUNTS_TABLE)
    records = read_all(stream.bootstrap, topic, 1, settle_s=1)
    latest = {record.partition: Shard.decode(record.value).offset for record in records}
    return sum(latest.values())


def test_counts_survive_a_restart_and_only_known_items_are_offered(stream, workers, tmp_path):
    stream.env["STREAM_RECS_POPULARITY_INTERVAL"] = "3600"  # no write before the stop: it writes them
    model = make_model(tmp_path / "m1", "v1", seed=1)  # no training counts: nothing seeded
    first = workers("first", model).start()
    now = time.time()
    clicks = [item for rank, item in enumerate(POPULAR) for _ in range(30 - rank)]
    events = [{"event_id": f"e{n}", "user_id": f"u{n % 40}", "item_id": item, "ts": now}
              for n, item in enumerate(clicks)]
    flood = [{"event_id": f"f{n}", "user_id": f"bot{n % 20}", "item_id": f"evil{n % 5}", "ts": now}
             for n in range(1000)]
    stream.produce_events(events + flood)
    answers = by_event(stream.answers(stream.topics.recommendations, {e["event_id"] for e in events + flood}))
    bots = [answers[e["event_id"]] for e in flood]
    assert {a["strategy"] for a in bots} == {"popular"}
    assert all(item["item_id"] in POPULAR for a in bots for item in a["items"])
    assert counted(stream) == 0
    first.stop(signal.SIGTERM)
    assert counted(stream) == len(events + flood)  # every click is in a snapshot

    workers("second", model).start()  # an empty data dir: the counts can only come from Kafka
    stream.produce_events([{"event_id": "cold", "user_id": "newcomer", "item_id": "evil0",
                            "ts": time.time()}])
    cold = by_event(stream.answers(stream.topics.recommendations, {"cold"}))["cold"]
    assert cold["strategy"] == "popular"
    assert [item["item_id"] for item in cold["items"]] == POPULAR[:K]
