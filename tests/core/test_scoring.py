"""Recommender: batched steps, masking, explanations, fallback, online evaluation, model swaps."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
import torch

from stream_recs.config import ServingOptions
from stream_recs.events import Event
from stream_recs.live_model import Vocabulary
from stream_recs.models.gru4rec import GRU4Rec
from stream_recs.models.registry import vocabulary_fingerprint
from stream_recs.scoring import MODEL, POPULAR, Recommender
from stream_recs.state import SessionState, fingerprint

T0 = 1_700_000_000.0
ITEMS = [f"i{i}" for i in range(50)]


def make_model(
    seed: int = 0, items=ITEMS, version: str = "v1", hidden_size: int = 8, seen_size: int = 0
) -> GRU4Rec:
    torch.manual_seed(seed)
    model = GRU4Rec(items, hidden_size=hidden_size, version=version, seen_size=seen_size)
    with torch.no_grad():  # non-zero biases so that they matter in the scores
        model.item_bias.weight.normal_(0, 0.1)
    return model


def ev(user: str, item: str, ts: float, n: int = 0, session: str | None = None) -> Event:
    return Event(f"{user}-{n}", user, item, "click", ts, session)


def reference_hidden(model: GRU4Rec, items: list[str]) -> torch.Tensor:
    """The model's state after ``items`` from zero, stored as float16 between steps."""
    h = model.init_hidden(1)
    for item in items:
        h = model.step(h, torch.tensor([model.item_index(item)])).half().float()
    return h


def reference_top(model: GRU4Rec, items: list[str], k: int, masked: list[str]) -> list[str]:
    scores = model.score(reference_hidden(model, items))[0].clone()
    for item in masked:
        scores[model.item_index(item)] = float("-inf")
    return [model.item_ids[i] for i in torch.topk(scores, k).indices.tolist()]


def run_one_by_one(rec: Recommender, events: list[Event], now: float):
    states: dict[str, SessionState] = {}
    outs = []
    for event in events:
        result = rec.step_batch([event], states, now)
        states.update(result.states)
        outs.append((result.recommendations[0], result.ranks[0]))
    return outs, states


@pytest.mark.parametrize("seen_size", [0, 4])
def test_single_event_matches_model_scores_with_item_masked(seen_size):
    model = make_model(seen_size=seen_size)
    rec = Recommender(model, ServingOptions(k=5))
    result = rec.step_batch([ev("u", "i3", T0)], {}, now=T0)
    answer = result.recommendations[0]
    assert answer.strategy == MODEL and answer.model_version == "v1"
    assert [it.item_id for it in answer.items] == reference_top(model, ["i3"], 5, ["i3"])
    scores = model.score(reference_hidden(model, ["i3"]))[0]
    for item in answer.items:
        assert item.score == pytest.approx(float(scores[model.item_index(item.item_id)]), abs=1e-5)
        assert item.because is None and item.weight is None  # one item: nothing to compare it with
    assert (answer.event_id, answer.user_id, answer.event_ts) == ("u-0", "u", T0)
    assert result.ranks == [None]
    assert result.inference_seconds > 0


@pytest.mark.parametrize("seen_size", [0, 4])
def test_batch_equals_one_event_at_a_time(seen_size):
    model = make_model(seen_size=seen_size)
    events = [
        ev("a", "i1", T0, 0),
        ev("b", "i2", T0, 0),
        ev("a", "i5", T0 + 1, 1),
        ev("c", "i9", T0, 0),
        ev("a", "i7", T0 + 2, 2),
        ev("b", "i1", T0 + 1, 1),
        ev("b", "nope", T0 + 2, 2),
        ev("a", "i1", T0 + 4000, 3),  # unknown item; new session
    ]
    batched = Recommender(model, ServingOptions(k=6)).step_batch(events, {}, now=T0 + 10)
    single, states = run_one_by_one(Recommender(model, ServingOptions(k=6)), events, now=T0 + 10)
    for got, (want, _) in zip(batched.recommendations, single, strict=True):
        assert [i.item_id for i in got.items] == [i.item_id for i in want.items]
        assert [i.because for i in got.items] == [i.because for i in want.items]
        assert [i.score for i in got.items] == pytest.approx([i.score for i in want.items], abs=1e-4)
        assert got.strategy == want.strategy
    assert batched.ranks == [rank for _, rank in single]
    assert batched.states.keys() == states.keys()
    for user, state in batched.states.items():  # equal up to float rounding of batched matmuls
        got, want = (np.frombuffer(s.hidden, np.float16) for s in (state, states[user]))
        assert got.tolist() == pytest.approx(want.tolist(), abs=2e-3)
        assert state._replace(hidden=b"") == states[user]._replace(hidden=b"")
    # hand check of a's third event: session i1, i5, i7, whole history masked
    assert [i.item_id for i in batched.recommendations[4].items] == reference_top(
        model, ["i1", "i5", "i7"], 6, ["i1", "i5", "i7"]
    )
    a = batched.states["a"]
    assert a.history == (1, 5, 7, 1) and a.session_len == 1
    expected = reference_hidden(model, ["i1"]).numpy().astype(np.float16).tobytes()
    assert a.hidden == expected and a.model == fingerprint("v1")


def test_online_rank_across_batches_and_within_a_batch():
    model = make_model()
    rec = Recommender(model, ServingOptions(k=5))
    first = rec.step_batch([ev("u", "i3", T0)], {}, now=T0)
    recs = [it.item_id for it in first.recommendations[0].items]
    assert first.states["u"].last_recs == tuple(model.item_index(i) for i in recs)
    second = rec.step_batch(
        [ev("u", recs[2], T0 + 5, 1), ev("u", "i3", T0 + 6, 2), ev("u", "zzz", T0 + 7, 3)],
        first.states,
        now=T0 + 7,
    )
    assert second.ranks[0] == 3
    in_batch = [it.item_id for it in second.recommendations[0].items]
    assert second.ranks[1] == (in_batch.index("i3") + 1 if "i3" in in_batch else 0)
    assert "i3" not in in_batch  # i3 is in history, so masked: a miss
    assert second.ranks[1] == 0
    assert second.ranks[2] == 0  # unknown item: a miss of the model
    # a new session is not evaluated against the previous one's answer
    third = rec.step_batch([ev("u", "i4", T0 + 7 + 1801, 4)], second.states, now=T0 + 9000)
    assert third.ranks == [None]


def test_new_session_id_resets_hidden_but_keeps_history():
    model = make_model()
    rec = Recommender(model, ServingOptions(k=5))
    s1 = rec.step_batch([ev("u", "i1", T0, 0, "s1"), ev("u", "i2", T0 + 1, 1, "s1")], {}, T0)
    s2 = rec.step_batch([ev("u", "i3", T0 + 2, 2, "s2")], s1.states, T0)
    state = s2.states["u"]
    assert state.history == (1, 2, 3) and state.session_len == 1
    assert state.hidden == reference_hidden(model, ["i3"]).numpy().astype(np.float16).tobytes()
    masked = {"i1", "i2", "i3"}
    assert not masked & {it.item_id for it in s2.recommendations[0].items}
    assert s2.ranks == [None]


def test_mask_recent_options_and_never_recommend():
    model = make_model(items=["[PAD]", *ITEMS[1:]])
    events = [ev("u", f"i{i}", T0 + i, i) for i in range(1, 6)]
    everything = Recommender(model, ServingOptions(k=49, mask_recent=0)).step_batch(events, {}, T0 + 9)
    last = [it.item_id for it in everything.recommendations[-1].items]
    assert len(last) == 49 and "[PAD]" not in last and "i5" in last
    two = Recommender(model, ServingOptions(k=49, mask_recent=2)).step_batch(events, {}, T0 + 9)
    last = [it.item_id for it in two.recommendations[-1].items]
    assert len(last) == 47 and {"i4", "i5", "[PAD]"}.isdisjoint(last) and "i3" in last
    full = Recommender(model, ServingOptions(k=49)).step_batch(events, {}, T0 + 9)
    assert len(full.recommendations[-1].items) == 44  # 50 - pad - 5 seen


def test_because_is_the_closest_history_item():
    model = GRU4Rec(["a", "b", "c", "d"], hidden_size=2, version="hand")
    with torch.no_grad():
        model.item_embedding.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]]))
    rec = Recommender(model, ServingOptions(k=4, explain="similarity"))
    result = rec.step_batch([ev("u", "a", T0, 0), ev("u", "b", T0, 1)], {}, T0)
    because = {it.item_id: it.because for it in result.recommendations[1].items}
    assert because == {"c": "a", "d": "b"}
    cosine = 0.9 / (0.9**2 + 0.1**2) ** 0.5
    assert [it.weight for it in result.recommendations[1].items] == pytest.approx([cosine] * 2)


def test_because_ignores_the_seen_memory_vectors():
    model = GRU4Rec(["a", "b", "c", "d"], hidden_size=2, version="hand", seen_size=2)
    with torch.no_grad():
        model.item_embedding.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]]))
        # over [embedding | seen vector], c would be closer to b and d to a
        model.seen_embedding.weight.copy_(torch.tensor([[0.0, 9.0], [9.0, 0.0], [9.0, 0.0], [0.0, 9.0]]))
    rec = Recommender(model, ServingOptions(k=4, explain="similarity"))
    result = rec.step_batch([ev("u", "a", T0, 0), ev("u", "b", T0, 1)], {}, T0)
    because = {it.item_id: it.because for it in result.recommendations[1].items}
    assert because == {"c": "a", "d": "b"}


def test_unknown_item_uses_current_session_or_falls_back():
    model = make_model()
    rec = Recommender(model, ServingOptions(k=3))
    cold = rec.step_batch([ev("u", "new-item", T0)], {}, T0)
    assert cold.recommendations[0].strategy == POPULAR
    assert cold.recommendations[0].model_version is None
    assert cold.states["u"].history == () and cold.states["u"].hidden == b""
    warm = rec.step_batch([ev("v", "i1", T0, 0), ev("v", "new-item", T0 + 1, 1)], {}, T0 + 1)
    first, second = warm.recommendations
    assert second.strategy == MODEL
    assert [i.item_id for i in second.items] == [i.item_id for i in first.items]
    assert warm.states["v"].history == (1,)


def test_popular_fallback_offers_the_decayed_counts_of_known_items():
    model = make_model()
    model.use_registry(model.registry.retire(["i3"]))
    rec = Recommender(model, ServingOptions(k=3, popularity_half_life=100.0))
    rec.popularity.count([(0, 0, "i1"), (0, 1, "i1"), (0, 2, "made-up"), (0, 3, "i3")], T0)
    rec.popularity.count([(0, 4, "i2"), (1, 0, "i5")], T0 + 100)
    result = rec.step_batch([ev("z", "i5-unknown", T0, 0)], {}, now=T0 + 100)
    # weights at T0 + 100: i1 2 * 1/2, i2 1, i5 1 -> shares 1/3 each; made-up and retired i3 uncounted
    items = result.recommendations[0].items
    assert [i.item_id for i in items] == ["i1", "i2", "i5"]
    assert [i.score for i in items] == pytest.approx([1 / 3] * 3)
    assert all(i.because is None and i.weight is None for i in items)
    assert result.recommendations[0].strategy == POPULAR and result.ranks == [None]


def test_expired_state_is_a_new_user():
    model = make_model()
    rec = Recommender(model, ServingOptions(k=3, state_ttl=60.0))
    first = rec.step_batch([ev("u", "i1", T0)], {}, now=T0)
    again = rec.step_batch([ev("u", "i2", T0 + 1)], first.states, now=T0 + 61)
    assert again.states["u"].history == (2,) and again.ranks == [None]


@pytest.mark.parametrize("seen_size", [0, 4])
def test_swap_same_vocabulary_rebuilds_stale_hidden_lazily(seen_size):
    old, new = make_model(0, version="v1"), make_model(1, version="v2", seen_size=seen_size)
    rec = Recommender(old, ServingOptions(k=5))
    s = rec.step_batch([ev("u", "i1", T0, 0), ev("u", "i2", T0 + 1, 1)], {}, T0).states
    rec.swap_model(new)
    assert rec.model_version == "v2"
    result = rec.step_batch([ev("u", "i3", T0 + 2, 2)], s, T0 + 2)
    state = result.states["u"]
    assert state.model == fingerprint("v2") and state.history == (1, 2, 3)
    want = reference_hidden(new, ["i1", "i2", "i3"]).numpy().astype(np.float16).tobytes()
    assert state.hidden == want
    assert [i.item_id for i in result.recommendations[0].items] == reference_top(
        new, ["i1", "i2", "i3"], 5, ["i1", "i2", "i3"]
    )
    assert result.ranks[0] is not None  # the old model's answer is still evaluated


def test_prepare_in_another_thread_changes_nothing_until_installed():
    old, new = make_model(0, version="v1"), make_model(1, version="v2")
    rec, swapped = Recommender(old, ServingOptions(k=5)), Recommender(old, ServingOptions(k=5))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        prepared = pool.submit(rec.prepare, new).result()
    assert rec.model_version == "v1"
    assert rec.step_batch([ev("u", "i1", T0)], {}, T0).states["u"].model == fingerprint("v1")
    rec.install(prepared)
    swapped.swap_model(new)
    a = rec.step_batch([ev("u", "i1", T0), ev("u", "i2", T0 + 1)], {}, T0)
    b = swapped.step_batch([ev("u", "i1", T0), ev("u", "i2", T0 + 1)], {}, T0)
    assert rec.model_version == "v2" and a.recommendations == b.recommendations
    rec.install(None)
    assert rec.model_version is None


def test_swap_to_new_vocabulary_translates_history():
    old = make_model(0, version="v1")
    new_items = ["n0", *reversed(ITEMS[2:])]  # i0 and i1 gone, order changed, one new item
    new = make_model(2, items=new_items, version="v2")
    rec = Recommender(old, ServingOptions(k=5))
    s = rec.step_batch(
        [ev("u", "i0", T0, 0), ev("u", "i7", T0, 1), ev("u", "i1", T0, 2), ev("u", "i9", T0, 3)],
        {},
        T0,
    ).states
    rec.swap_model(new)
    result = rec.step_batch([ev("u", "i4", T0 + 1, 4)], s, T0 + 1)
    state = result.states["u"]
    assert state.vocab == vocabulary_fingerprint(new_items)
    assert [new_items[i] for i in state.history] == ["i7", "i9", "i4"]
    assert state.session_len == 3
    want = reference_hidden(new, ["i7", "i9", "i4"]).numpy().astype(np.float16).tobytes()
    assert state.hidden == want
    # the previous answer (old vocabulary) is still evaluated
    old_recs = [old.item_ids[i] for i in s["u"].last_recs]
    assert result.ranks == [old_recs.index("i4") + 1 if "i4" in old_recs else 0]


def test_unknown_old_vocabulary_drops_history_and_registered_one_translates():
    old = make_model(0, version="v1")
    new = make_model(2, items=[*ITEMS, "x"], version="v2")
    states = Recommender(old, ServingOptions(k=5)).step_batch([ev("u", "i7", T0)], {}, T0).states
    fresh = Recommender(new, ServingOptions(k=5))
    lost = fresh.step_batch([ev("u", "i4", T0 + 1, 1)], states, T0 + 1)
    assert lost.states["u"].history == (4,) and lost.ranks == [None]
    # as after a swap from the old model:
    fresh.vocabularies.remember(Vocabulary(ITEMS, vocabulary_fingerprint(ITEMS)))
    kept = fresh.step_batch([ev("u", "i4", T0 + 1, 1)], states, T0 + 1)
    assert kept.states["u"].history == (7, 4) and kept.states["u"].session_len == 2


def test_model_unloaded_keeps_states_and_serves_popular():
    model = make_model()
    rec = Recommender(model, ServingOptions(k=3))
    s = rec.step_batch([ev("u", "i1", T0)], {}, T0).states
    rec.swap_model(None)
    result = rec.step_batch([ev("u", "i2", T0 + 1, 1)], s, T0 + 1)
    assert result.recommendations[0].strategy == POPULAR
    assert [i.item_id for i in result.recommendations[0].items] == []  # only i1 (masked), i2 seen
    assert result.states["u"].history == (1,) and result.states["u"].last_recs == ()


def test_state_size_at_d64_history50_k20():
    model = make_model(hidden_size=64, items=[f"i{i}" for i in range(3000)])
    rec = Recommender(model, ServingOptions(k=20, history_len=50))
    events = [ev("u", f"i{i * 37}", T0 + i, i) for i in range(60)]
    state = rec.step_batch(events, {}, T0 + 60).states["u"]
    assert len(state.history) == 50 and len(state.last_recs) == 20
    assert len(state.encode()) == 305 <= 512
    assert SessionState.decode(state.encode()) == state


def test_small_catalogue_returns_fewer_than_k():
    model = make_model(items=["a", "b", "c"])
    rec = Recommender(model, ServingOptions(k=20))
    result = rec.step_batch([ev("u", "a", T0), ev("u", "b", T0, 1)], {}, T0)
    assert [i.item_id for i in result.recommendations[1].items] == ["c"]


def test_rebuild_of_many_sessions_of_different_lengths_in_one_batch():
    old, new = make_model(0, version="v1"), make_model(3, version="v2", hidden_size=16)
    rec = Recommender(old, ServingOptions(k=5))
    sessions = {"a": ["i1"], "b": ["i2", "i3", "i4"], "c": ["i5", "i6", "i7", "i8", "i9"]}
    events = [ev(u, item, T0 + n, n) for u, items in sessions.items() for n, item in enumerate(items)]
    states = rec.step_batch(events, {}, T0 + 9).states
    states["d"] = (
        rec.step_batch([ev("d", "i0", T0)], {}, T0)
        .states["d"]
        ._replace(
            last_ts=T0 - 4000.0  # its next event starts a new session: no rebuild needed
        )
    )
    rec.swap_model(new)
    batch = [ev(u, "i10", T0 + 10, 10) for u in ("a", "b", "c", "d")]
    result = rec.step_batch(batch, states, T0 + 10)
    for user, items in {**sessions, "d": []}.items():
        state = result.states[user]
        want = reference_hidden(new, [*items, "i10"]).numpy().astype(np.float16).tobytes()
        assert state.hidden == want, user
        assert len(state.hidden) == 2 * 16
