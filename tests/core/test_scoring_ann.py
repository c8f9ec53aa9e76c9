"""The approximate (inverted-file) scoring option: same answers as exact scoring when every cell
is scanned, masking and never_recommend respected, and a usable recall with few cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_recs.config import ServingOptions
from stream_recs.events import Event
from stream_recs.models.gru4rec import GRU4Rec
from stream_recs.scoring import Recommender
from stream_recs.topk import top_k_scores

pytest.importorskip("faiss")

T0 = 1_700_000_000.0
ITEMS = ["[PAD]", *(f"i{i}" for i in range(1, 400))]


def make_model() -> GRU4Rec:
    torch.manual_seed(0)
    model = GRU4Rec(ITEMS, hidden_size=16, version="v1")
    with torch.no_grad():
        model.item_embedding.weight.normal_(0, 0.5)
        model.item_bias.weight.normal_(0, 0.1)
    return model


def sessions(n_users: int, length: int, seed: int = 0) -> list[list[Event]]:
    rng = np.random.default_rng(seed)
    def click(u: int, t: int) -> Event:
        return Event(f"u{u}-{t}", f"u{u}", f"i{rng.integers(1, len(ITEMS))}", "click", T0 + t)

    return [[click(u, t) for u in range(n_users)] for t in range(length)]


def serve(rec: Recommender, waves: list[list[Event]]):
    states, answers = {}, []
    for wave in waves:
        result = rec.step_batch(wave, states, T0 + 100)
        states.update(result.states)
        answers.append(result.recommendations)
    return answers


def test_scanning_every_cell_gives_the_exact_answers():
    model, waves = make_model(), sessions(30, 6)
    exact = serve(Recommender(model, ServingOptions(k=10)), waves)
    approximate = serve(Recommender(model, ServingOptions(k=10, ann_lists=8, ann_probes=8)), waves)
    for wave_exact, wave_ann in zip(exact, approximate, strict=True):
        for a, b in zip(wave_exact, wave_ann, strict=True):
            assert [it.item_id for it in a.items] == [it.item_id for it in b.items]
            assert [it.because for it in a.items] == [it.because for it in b.items]
            assert np.allclose([it.score for it in a.items], [it.score for it in b.items], atol=1e-4)


def test_masked_history_and_never_recommend_are_not_returned():
    model = make_model()
    rec = Recommender(model, ServingOptions(k=20, ann_lists=4, ann_probes=2))
    waves = sessions(10, 8, seed=1)
    history: dict[str, set[str]] = {}
    for wave, recs in zip(waves, serve(rec, waves), strict=True):
        for event, answer in zip(wave, recs, strict=True):
            history.setdefault(event.user_id, set()).add(event.item_id)
            returned = {it.item_id for it in answer.items}
            assert "[PAD]" not in returned
            assert not returned & history[event.user_id]


def test_recall_of_exact_top_k_with_a_few_cells():
    model = make_model()
    weight, bias = (t.float() for t in model.output_embeddings())
    rec = Recommender(model, ServingOptions(ann_lists=16, ann_probes=8))
    outputs = torch.randn(64, 16)
    _, exact = top_k_scores(outputs, weight, bias, 20)
    _, approx = rec._live.top_k(outputs, None)
    pairs = zip(approx.tolist(), exact.tolist(), strict=True)
    recall = np.mean([len(set(a) & set(e)) / 20 for a, e in pairs])
    assert recall >= 0.8
