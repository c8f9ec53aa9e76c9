"""``BF16Screen``: exact top-K through a bfloat16 matmul. Its answers equal float32 scoring's,
its rounding bound holds, and a row the bound cannot settle is scored again in float32."""

from __future__ import annotations

import pytest
import torch

from stream_recs import topk
from stream_recs.config import ServingOptions
from stream_recs.events import Event
from stream_recs.models.gru4rec import GRU4Rec
from stream_recs.scoring import Recommender
from stream_recs.topk import BF16Screen, top_k_scores


def assert_same_answer(screened, exact) -> None:
    """Equal sets of items per row and scores equal to float32 rounding (ties may swap)."""
    (values, indices), (expected_values, expected_indices) = screened, exact
    torch.testing.assert_close(values, expected_values, rtol=1e-5, atol=1e-5)
    rows = (indices.tolist(), values.tolist(), expected_indices.tolist(), expected_values.tolist())
    for row, vals, expected, expected_vals in zip(*rows, strict=True):
        finite = [i for i, v in zip(row, vals, strict=True) if v != float("-inf")]
        expected_finite = [i for i, v in zip(expected, expected_vals, strict=True) if v != float("-inf")]
        assert sorted(finite) == sorted(expected_finite)


@pytest.mark.parametrize("items", [7, 40, 1000, 20000])
@pytest.mark.parametrize("k", [1, 10, 20])
def test_equals_float32_scoring_with_masks_and_unrecommendable_items(items, k):
    gen = torch.Generator().manual_seed(items + k)
    weight = torch.randn(items, 32, generator=gen) * 0.3
    bias = torch.randn(items, generator=gen)
    bias[torch.randperm(items, generator=gen)[: items // 5]] = float("-inf")  # never_recommend
    outputs = torch.randn(48, 32, generator=gen) * 2
    masked = torch.randint(items, (48, 5), generator=gen)
    screen = BF16Screen(weight, bias)
    assert_same_answer(screen.top_k(outputs, k, masked), top_k_scores(outputs, weight, bias, k, masked))
    assert_same_answer(screen.top_k(outputs, k, None), top_k_scores(outputs, weight, bias, k))


@pytest.mark.parametrize("d", [16, 64, 1024])
def test_rounding_bound_holds(d):
    """Every item's float32 score lies within the bound of its bfloat16 screening score."""
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(3000, d, generator=gen) * torch.rand(3000, 1, generator=gen) * 3
    bias = torch.randn(3000, generator=gen)
    outputs = torch.randn(64, d, generator=gen) * torch.rand(64, 1, generator=gen) * 5
    screen = BF16Screen(weight, bias)
    queries = torch.cat([outputs, torch.ones(64, 2)], dim=1).bfloat16()
    rough = (queries @ screen.table.T).double()
    exact = outputs.double() @ weight.double().T + bias.double()
    unit = 2.0**-8
    reach = torch.cat([outputs, torch.ones(64, 1)], dim=1).norm(dim=1, keepdim=True).double() * screen.reach
    bound = rough.abs() * unit / (1 - unit) + reach * screen.slack
    assert ((exact - rough).abs() <= bound).all()
    assert ((exact - rough).abs() > bound / 50).any()  # the bound is not vacuous


@pytest.mark.parametrize(("close", "widened", "rescored"), [(50, [1], []), (100, [1], [1])])
def test_unsettled_rows_are_widened_then_scored_in_float32(monkeypatch, close, widened, rescored):
    """``close`` items score within rounding of each other at the top of the first row: 2k = 40
    candidates cannot settle it; 4k = 80 can when 50 are close, not when 100 are."""
    gen = torch.Generator().manual_seed(4)
    weight = torch.randn(3000, 16, generator=gen)
    weight[:close] = weight[0] * (1 + torch.arange(close)[:, None] * 1e-4)
    bias = torch.zeros(3000)
    outputs = torch.stack([weight[0], torch.randn(16, generator=gen)])
    calls = {"settle": [], "float32": []}
    settle = BF16Screen._settle

    def spy_settle(self, rows, *args):
        calls["settle"].append(len(rows))
        return settle(self, rows, *args)

    def spy_float32(rows, *args, **kwargs):
        calls["float32"].append(len(rows))
        return top_k_scores(rows, *args, **kwargs)

    monkeypatch.setattr(BF16Screen, "_settle", spy_settle)
    monkeypatch.setattr(topk, "top_k_scores", spy_float32)
    screen = BF16Screen(weight, bias)
    values, indices = screen.top_k(outputs, 20, None)
    assert calls == {"settle": [2, *widened], "float32": rescored}  # the first row only, each time
    assert (screen.rows, screen.rows_widened, screen.rows_rescored) == (2, len(widened), len(rescored))
    assert indices[0].tolist() == list(range(close - 1, close - 21, -1))  # exact order, from float32
    assert_same_answer((values, indices), top_k_scores(outputs, weight, bias, 20))


def test_recommender_answers_the_same_with_and_without_the_screen():
    items = [f"i{i}" for i in range(4003)]
    torch.manual_seed(0)
    model = GRU4Rec(items, hidden_size=16, version="v1")
    answers = []
    for screen in (False, True):
        rec = Recommender(model, ServingOptions(k=20, bf16_screen="on" if screen else "off"))
        assert (rec._live.screen is not None) is screen
        events = [Event(f"e{u}", f"u{u}", items[(u * 37) % 4003], "click", 1e9) for u in range(64)]
        states = rec.step_batch(events, {}, 1e9).states
        events = [Event(f"f{u}", f"u{u}", items[(u * 91) % 4003], "click", 1e9 + 1) for u in range(64)]
        answers.append(rec.step_batch(events, states, 1e9 + 1).recommendations)
    for plain, screened in zip(*answers, strict=True):
        assert sorted(it.item_id for it in plain.items) == sorted(it.item_id for it in screened.items)
        for a, b in zip(sorted(plain.items), sorted(screened.items), strict=True):
            assert a.score == pytest.approx(b.score, rel=1e-5, abs=1e-5)
