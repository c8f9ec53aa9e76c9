"""The canary on the real broker, with two workers: a candidate that passes the gate (it beats
the live model on the held-out slice of the clicks it learned from) but serves today's stream
worse is rolled back; one that serves as well is promoted. Each decision is published on
model-updates, and both workers end on the same model."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from stream_recs.datasets import Events, from_rows
from stream_recs.messages import CanaryDecision, decode_model_record
from stream_recs.models import load_model, save_model
from stream_recs.models.gate import judge, newest_slice
from stream_recs.models.train import TrainConfig, train_model, training_sequences

pytestmark = pytest.mark.kafka

ITEMS = [f"i{n}" for n in range(60)]
TOUR = ["i3", "i17", "i42", "i8", "i29", "i50", "i11", "i36"]  # what users click now, in order
STALE = ["i46", "i20", "i55", "i26", "i52", "i48", "i39", "i1"]  # what the stale candidate learned
HYPER = {"hidden_size": 24, "batch_size": 16, "learning_rate": 0.1, "n_sample": 2048, "max_len": 20}
ENV = {"STREAM_RECS_CANARY_SHARE": "0.5", "STREAM_RECS_CANARY_MIN_EVENTS": "150",
       "STREAM_RECS_CANARY_MAX_EVENTS": "5000", "STREAM_RECS_POPULARITY_INTERVAL": "1",
       "STREAM_RECS_K": "5"}


def clicks(tour: list[str], users: int, rounds: int, start: float, seed: int) -> Events:
    """``users`` users click ``tour`` ``rounds`` times, with random other items between tours."""
    rng, rows = random.Random(seed), []
    for user in range(users):
        t = start + user
        for _ in range(rounds):
            for item in [*tour, rng.choice(ITEMS), rng.choice(ITEMS)]:
                rows.append((f"t{user}", item, t))
                t += 1.0
    return from_rows(*zip(*rows, strict=True))


def trained(path: Path, version: str, events: Events, epochs: int, parent=None) -> Path:
    registry, sequences = training_sequences(events, None, parent.registry if parent else None)
    config = TrainConfig.from_dict({**HYPER, "epochs": epochs})
    model, _ = train_model(sequences, registry, config, version, show_progress=False, parent=parent)
    return save_model(model, path)


def answers_of(stream, events: list[dict]) -> list[dict]:
    stream.produce_events(events)
    wanted = {e["event_id"] for e in events}
    found = [a for a in stream.answers(stream.topics.recommendations, wanted, timeout_s=120)
             if a["event_id"] in wanted]
    assert {a["event_id"] for a in found} == wanted
    return found


def tours(prefix: str, users: int, rounds: int) -> list[dict]:
    """Today's clicks (the tour, other items between), as click events of new users."""
    events = clicks(TOUR, users, rounds, 0.0, seed=len(prefix) + users)
    return [{"event_id": f"{prefix}-{n}", "user_id": f"{prefix}{events.user_ids[user]}",
             "item_id": events.item_ids[item]}
            for n, (user, item) in enumerate(zip(events.user, events.item, strict=True))]


def decisions(stream) -> list[CanaryDecision]:
    records = stream.consume(stream.topics.model_updates, 1, timeout_s=10, settle_s=1.0)
    return [d for d in (decode_model_record(r.value) for r in records) if isinstance(d, CanaryDecision)]


def test_a_candidate_past_the_gate_that_serves_worse_is_rolled_back_and_a_good_one_promoted(
    stream, workers, tmp_path
):
    v1_path = trained(tmp_path / "v1", "v1", clicks(TOUR, 60, 4, 1e9, seed=1), epochs=10)
    v1 = load_model(v1_path)
    before = clicks(STALE, 60, 4, 2e9, seed=2)  # yesterday's clicks: the stale order
    v2_path = trained(tmp_path / "v2", "v2", before, epochs=10, parent=v1)
    held_out = newest_slice(before, 0.2, HYPER["max_len"])
    gate = judge(load_model(v2_path), v1, before.item_ids, held_out.cases, tolerance=0.05)
    assert gate.publish, gate.reason  # the gate, which sees only those clicks, lets it through
    v3_path = trained(tmp_path / "v3", "v3", clicks(TOUR, 60, 4, 3e9, seed=3), epochs=3, parent=v1)

    stream.env.update(ENV)
    first, second = workers("w1", v1_path).start(), workers("w2", v1_path).start()
    published = stream.cli("publish-model", str(v2_path), "--canary")
    assert published.returncode == 0, published.stderr
    for worker in (first, second):
        worker.wait_until(lambda w=worker: w.value("stream_recs_canary_active") == 1.0, "no canary")
    during = answers_of(stream, tours("a", 80, 3))
    assert {a["model_version"] for a in during} == {"v1", "v2"}
    for worker in (first, second):
        worker.wait_until(lambda w=worker: w.value("stream_recs_canary_decisions_total",
                                                   decision="rollback") == 1.0, "v2 was not rolled back")
    (rollback, *again) = decisions(stream)
    assert rollback.decision == "rollback" and rollback.version == "v2"
    assert {d.decision for d in again} <= {"rollback"}  # the other worker may have decided too
    evidence = rollback.evidence
    assert evidence["candidate"]["hr"] < evidence["live"]["hr"] and evidence["z"] <= -2.33
    after = answers_of(stream, tours("b", 20, 1))
    assert {a["model_version"] for a in after} == {"v1"}

    published = stream.cli("publish-model", str(v3_path), "--canary")
    assert published.returncode == 0, published.stderr
    answers_of(stream, tours("c", 80, 3))
    for worker in (first, second):
        worker.wait_until(lambda w=worker: w.value("stream_recs_model_info", version="v3") == 1.0,
                          "v3 was not promoted")
        assert worker.value("stream_recs_canary_decisions_total", decision="promote") == 1.0
        assert worker.value("stream_recs_canary_active") == 0.0
    promoted = [d for d in decisions(stream) if d.version == "v3"]
    assert promoted and {d.decision for d in promoted} == {"promote"}
    final = answers_of(stream, tours("d", 20, 1))
    assert {(a["model_version"], a["strategy"]) for a in final} == {("v3", "model")}
