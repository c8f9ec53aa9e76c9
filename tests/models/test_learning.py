"""One continuous-learning cycle without Kafka: a candidate learns an item its parent never saw
and passes the gate; a candidate trained on shuffled clicks is stopped by it, and so is one whose
content rows ruin it (they are written before the gate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_recs.datasets import Events, concat_events, from_rows, synthetic_sessions
from stream_recs.learning import CycleOptions, admitted, row_rates, run_cycle
from stream_recs.models import GRU4Rec
from stream_recs.models.gate import judge, newest_slice
from stream_recs.models.train import TrainConfig, train_model, training_sequences

HYPER = {"hidden_size": 24, "batch_size": 32, "learning_rate": 0.1, "n_sample": 0, "epochs": 4,
         "max_len": 20, "session_gap": None}


@pytest.fixture(scope="module")
def stream() -> tuple[Events, Events]:
    """A log of sessions cut in two: what the parent learned, and the window that follows."""
    events = synthetic_sessions(n_users=300, n_items=60, n_events=9000, seed=3, days=10)
    cut = int(len(events) * 0.5)
    return events.take(np.arange(cut)), events.take(np.arange(cut, len(events)))


@pytest.fixture(scope="module")
def parent(stream):
    registry, sequences = training_sequences(stream[0], None)
    model, _ = train_model(sequences, registry, TrainConfig.from_dict(HYPER), "v1", show_progress=False)
    return model


def with_new_item(window: Events, after: str, new: str) -> Events:
    """``window`` with a click on ``new`` right after every click on ``after``."""
    rows = [(window.user_ids[u], window.item_ids[i], t) for u, i, t in
            zip(window.user, window.item, window.ts, strict=True)]
    out = []
    for user, item, ts in rows:
        out.append((user, item, ts))
        if item == after:
            out.append((user, new, ts + 0.5))
    users, items, times = zip(*out, strict=True)
    return from_rows(users, items, times)


def top(model, items: list[str], k: int = 10) -> list[str]:
    hidden = model.init_hidden(1)
    for item in items:
        hidden = model.step(hidden, torch.tensor([model.item_index(item)]))
    return [model.item_ids[i] for i in torch.topk(model.score(hidden)[0], k).indices.tolist()]


def test_a_cycle_adds_a_new_item_that_the_candidate_recommends_and_the_gate_passes(stream, parent):
    popular = parent.item_ids[int(np.argmax(parent.item_counts))]
    window = with_new_item(stream[1], popular, "brand-new")
    options = CycleOptions(min_item_count=5, epochs=3, holdout=0.2, tolerance=0.05)
    cycle = run_cycle(parent, HYPER, window, None, options, "v2")
    assert cycle.candidate is not None and cycle.items_added == 1
    assert cycle.candidate.item_ids[: parent.n_items] == parent.item_ids  # no item renumbered
    assert cycle.verdict.publish, cycle.verdict.reason
    assert cycle.verdict.candidate["recall@20"] > cycle.verdict.live["recall@20"]
    assert "brand-new" in top(cycle.candidate, [popular])
    assert "brand-new" not in parent.item_ids


def test_the_gate_stops_a_candidate_trained_on_shuffled_clicks(stream, parent):
    holdout = newest_slice(stream[1], 0.2, HYPER["max_len"])
    shuffled = holdout.train.take(np.arange(len(holdout.train)))
    shuffled.item = np.random.default_rng(0).permutation(shuffled.item)  # the same clicks, no order
    registry, sequences = training_sequences(shuffled, None, parent.registry)
    config = TrainConfig.from_dict({**HYPER, "epochs": 3})
    bad, _ = train_model(sequences, registry, config, "bad", show_progress=False, parent=parent)
    verdict = judge(bad, parent, stream[1].item_ids, holdout.cases, tolerance=0.05)
    assert not verdict.publish, verdict.reason
    assert verdict.candidate["recall@20"] < 0.95 * verdict.live["recall@20"]
    registry, sequences = training_sequences(holdout.train, None, parent.registry)
    good, _ = train_model(sequences, registry, config, "good", show_progress=False, parent=parent)
    assert judge(good, parent, stream[1].item_ids, holdout.cases, tolerance=0.05).publish


def test_replayed_clicks_join_the_training_data(stream, parent):
    merged = concat_events(stream[1], stream[0])
    assert len(merged) == len(stream[0]) + len(stream[1])
    assert [merged.item_ids[i] for i in merged.item[len(stream[1]):]] == [
        stream[0].item_ids[i] for i in stream[0].item]


def test_after_a_rollback_the_next_candidate_keeps_the_indices_the_rolled_back_one_gave(stream, parent):
    rolled_back = parent.registry.extend(["gone-1", "gone-2"])  # a candidate the canary rolled back
    popular = parent.item_ids[int(np.argmax(parent.item_counts))]
    window = with_new_item(stream[1], popular, "brand-new")
    options = CycleOptions(min_item_count=5, epochs=1, holdout=0.2, tolerance=0.05)
    cycle = run_cycle(parent, HYPER, window, None, options, "v3", base=rolled_back)
    ids = cycle.candidate.item_ids
    kept = len(rolled_back.ids)
    assert ids[:kept] == list(rolled_back.ids) and ids[kept:] == ["brand-new"]
    assert rolled_back.conflict_with(cycle.candidate.registry) is None


def test_an_item_crossing_the_count_in_the_held_out_slice_is_admitted_in_that_cycle(stream, parent):
    window = stream[1]
    since = newest_slice(window, 0.2, HYPER["max_len"]).since
    late = [(window.user_ids[u], "late-item", t + 0.5) for u, t in zip(window.user, window.ts, strict=True)
            if t >= since][:8]  # every click on it falls in the held-out slice
    rows = [(window.user_ids[u], window.item_ids[i], t) for u, i, t in
            zip(window.user, window.item, window.ts, strict=True)]
    users, items, times = zip(*(rows + late), strict=True)
    grown = from_rows(users, items, times)
    extended = admitted(grown, parent.registry, min_count=5)
    assert extended.ids == (*parent.registry.ids, "late-item")
    assert extended.last_seen[-1] == int(max(t for _, _, t in late))
    assert admitted(grown, parent.registry, min_count=9).ids == parent.registry.ids  # 8 clicks: too few
    cycle = run_cycle(parent, HYPER, grown, None,
                      CycleOptions(min_item_count=5, epochs=1, holdout=0.2, tolerance=0.05), "v4")
    assert cycle.items_added == 1 and cycle.candidate.item_ids[-1] == "late-item"


def test_content_rows_are_written_before_the_gate_judges(stream, parent):
    seen = []

    def content(candidate, sequences):  # rows that ruin the model: the gate must see them
        seen.append((candidate.n_items, len(sequences)))
        with torch.no_grad():
            candidate.item_embedding.weight.normal_(generator=torch.Generator().manual_seed(0))
        return candidate, 3

    options = CycleOptions(min_item_count=5, epochs=1, holdout=0.2, tolerance=0.05)
    cycle = run_cycle(parent, HYPER, stream[1], None, options, "v2", content=content)
    assert seen == [(cycle.candidate.n_items, seen[0][1])] and seen[0][1] > 0
    assert cycle.content_rows == 3 and cycle.items_added == cycle.candidate.n_items - parent.n_items
    assert not cycle.verdict.publish, cycle.verdict


def test_rows_learn_faster_the_more_of_their_clicks_are_new_to_the_live_model():
    live = GRU4Rec(["steady", "growing", "fading", "unclicked"], hidden_size=4)
    live.item_counts = (50, 10, 40, 0)  # the clicks the live model was trained on
    support = np.array([60.0, 40.0, 10.0, 0.0, 10.0])  # this cycle's, and a new item's
    rates = row_rates(live, support, full=5.0)
    assert rates[1] == pytest.approx(1.0 + 4.0 * (1 - 0.1 / (40 / 120)))  # most of its share is new
    assert rates[0] == rates[2] == rates[3] == 1.0  # steady, fading, not clicked now: the gentle rate
    assert rates[4] == 5.0  # new: the live model's own rate
    live.item_counts = ()  # a checkpoint without counts: only new rows learn faster
    assert row_rates(live, support, full=5.0).tolist() == [1.0, 1.0, 1.0, 1.0, 5.0]
