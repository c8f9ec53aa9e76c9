"""Explanations: the leave-one-out replay against a brute-force one, nulls, weights, modes."""

from __future__ import annotations

import pytest
import torch

from stream_recs.config import ServingOptions
from stream_recs.events import Event
from stream_recs.explain import WINDOW, session_lengths
from stream_recs.models.gru4rec import GRU4Rec
from stream_recs.planner import plan_batch
from stream_recs.scoring import Recommender

T0 = 1_700_000_000.0
ITEMS = [f"i{i}" for i in range(40)]


def make_model(seen_size: int = 0) -> GRU4Rec:
    torch.manual_seed(3)
    model = GRU4Rec(ITEMS, hidden_size=8, version="v1", seen_size=seen_size)
    with torch.no_grad():
        model.item_bias.weight.normal_(0, 0.1)
        for cell in model.cells:  # livelier than the init, so that every input matters
            cell.weight_hh.mul_(3.0)
            cell.weight_ih.mul_(3.0)
    return model.eval()


def clicks(user: str, items: list[str], start: float = T0, first: int = 0) -> list[Event]:
    return [Event(f"{user}-{first + n}", user, item, "click", start + n) for n, item in enumerate(items)]


def score(model: GRU4Rec, items: list[str], target: str) -> float:
    """``target``'s score after ``items`` from the zero state, rounded as the worker stores states."""
    hidden = model.init_hidden(1)
    for item in items:
        hidden = model.step(hidden, torch.tensor([model.item_index(item)])).half().float()
    return float(model.score(hidden)[0, model.item_index(target)])


def brute_force(model: GRU4Rec, session: list[str], target: str) -> tuple[str | None, float | None]:
    """Leave each item of the last ``WINDOW`` clicks out in turn (all its clicks) and replay: the
    largest drop wins."""
    window = session[-WINDOW:]
    whole = score(model, window, target)
    drops = {x: whole - score(model, [i for i in window if i != x], target) for x in dict.fromkeys(window)}
    best = max(drops, key=drops.__getitem__)
    if drops[best] <= 0:
        return None, None
    return best, drops[best] / sum(d for d in drops.values() if d > 0)


def serve(rec: Recommender, events: list[Event], batched: bool = True):
    if batched:
        return rec.step_batch(events, {}, T0 + 100).recommendations
    states, out = {}, []
    for event in events:
        result = rec.step_batch([event], states, T0 + 100)
        states.update(result.states)
        out.append(result.recommendations[0])
    return out


@pytest.mark.parametrize("seen_size", [0, 4])
@pytest.mark.parametrize("session", [
    ["i3", "i10"], [f"i{(7 * n + 3) % 40}" for n in range(6)], [f"i{(7 * n + 3) % 40}" for n in range(13)],
    ["i1", "i2", "i1", "i5", "i2", "i1", "i9"],  # repeats: removing an item removes all its clicks
])
def test_because_is_the_item_whose_removal_drops_the_score_most(seen_size, session):
    model = make_model(seen_size)
    rec = Recommender(model, ServingOptions(k=8, mask_recent=0, explain="replay", explain_share=1.0))
    answer = serve(rec, clicks("u", session))[-1]
    explained = 0
    for item in answer.items:
        because, weight = brute_force(model, session, item.item_id)
        assert item.because == because
        if because is not None:
            explained += 1
            assert item.weight == pytest.approx(weight, rel=1e-4, abs=1e-5)
            assert 0 < item.weight <= 1
            assert item.because in session[-WINDOW:]
        else:
            assert item.weight is None
    assert explained > 0


def test_a_session_of_one_item_is_not_explained():
    model = make_model()
    rec = Recommender(model, ServingOptions(k=5, explain="replay", explain_share=1.0))
    events = [*clicks("u", ["i1", "i2", "i3"]), Event("u-9", "u", "i4", "click", T0 + 5000)]  # new session
    answers = serve(rec, events)
    assert all(it.because is None and it.weight is None for it in answers[0].items)
    assert all(it.because is None for it in answers[-1].items)  # history of 4, session of 1
    assert any(it.because is not None for it in answers[2].items)
    again = serve(rec, clicks("v", ["i7", "i7", "i7"]))[-1]  # one item, clicked three times
    assert all(it.because is None for it in again.items)


def test_batched_explanations_equal_one_event_at_a_time():
    model = make_model()
    events = []
    for n, user in enumerate("abcd"):
        events += clicks(user, [f"i{(n + 5 * j) % 40}" for j in range(3 + 4 * n)], first=0)
    events.sort(key=lambda e: e.ts)
    options = ServingOptions(k=6, explain="replay", explain_share=1.0)
    together = serve(Recommender(model, options), events)
    apart = serve(Recommender(model, options), events, batched=False)
    for got, want in zip(together, apart, strict=True):
        pairs = [(it.item_id, it.because) for it in got.items]
        assert pairs == [(it.item_id, it.because) for it in want.items]
        assert [it.weight for it in got.items] == pytest.approx([it.weight for it in want.items], abs=1e-5)


def test_a_share_of_the_answers_is_explained():
    model = make_model()
    events = [e for n in range(40) for e in clicks(f"u{n}", ["i1", "i2", "i3"])]
    for share, low, high in ((0.0, 0, 0), (0.5, 10, 30), (1.0, 40, 40)):
        rec = Recommender(model, ServingOptions(k=5, explain="replay", explain_share=share))
        answers = serve(rec, events)[2::3]  # each user's third click
        explained = sum(any(it.because for it in a.items) for a in answers)
        assert low <= explained <= high
        assert answers == serve(Recommender(model, rec.options), events, batched=False)[2::3]


def test_similarity_and_off():
    model = make_model()
    events = clicks("u", ["i1", "i2", "i3"])
    similar = serve(Recommender(model, ServingOptions(k=5, explain="similarity")), events)[-1]
    assert all(it.because in {"i1", "i2", "i3"} and -1 <= it.weight <= 1 for it in similar.items)
    off = serve(Recommender(model, ServingOptions(k=5, explain="off")), events)[-1]
    assert all(it.because is None and it.weight is None for it in off.items)


def test_session_lengths_follow_the_planner():
    model = make_model()
    rec = Recommender(model, ServingOptions())
    events = clicks("a", ["i1", "i2", "x-unknown", "i3"]) + clicks("b", ["i4"])
    events.append(Event("a-9", "a", "i5", "click", T0 + 9000))  # a new session
    states = {}
    batch = plan_batch(events, states, T0 + 100, rec._live, rec.options, rec.vocabularies)
    assert session_lengths(batch.plans, batch.starts) == [1, 2, 2, 3, 1, 1]
    assert batch.current["a"].session_len == 1 and batch.current["b"].session_len == 1
