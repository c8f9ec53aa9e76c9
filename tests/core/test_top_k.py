"""Block-maxima top-K (``ranking.top_k``) equals ``torch.topk``: values always, indices up to ties;
and the live scorer's catalogue padding never leaks into answers."""

from __future__ import annotations

import pytest
import torch

from stream_recs.config import ServingOptions
from stream_recs.events import Event
from stream_recs.models.gru4rec import GRU4Rec
from stream_recs.scoring import Recommender
from stream_recs.topk import select_block, top_k, top_k_scores


def check_against_topk(scores: torch.Tensor, k: int) -> None:
    values, indices = top_k(scores, k)
    expected = torch.topk(scores, min(k, scores.shape[1]), dim=1).values
    assert torch.equal(values, expected)
    assert torch.equal(scores.gather(1, indices), values)  # each index carries its value
    for row in indices.tolist():
        assert len(set(row)) == len(row)  # no item twice


@pytest.mark.parametrize("width", [1, 199, 200, 201, 1000, 4001, 10007])
@pytest.mark.parametrize("k", [1, 7, 20, 100, 300])
def test_distinct_scores_give_torch_topk_exactly(width, k):
    scores = torch.randn(13, width, generator=torch.Generator().manual_seed(width * 1000 + k))
    check_against_topk(scores, k)
    assert torch.equal(top_k(scores, k)[1], torch.topk(scores, min(k, width), dim=1).indices)


@pytest.mark.parametrize("width", [250, 3000])
def test_ties_and_minus_infinity(width):
    gen = torch.Generator().manual_seed(width)
    ties = torch.randint(0, 4, (9, width), generator=gen).float()
    check_against_topk(ties, 20)
    sparse = torch.full((9, width), float("-inf"))
    sparse[:, :: width // 6] = torch.randn(9, len(range(0, width, width // 6)), generator=gen)
    check_against_topk(sparse, 20)  # fewer than k finite scores per row


def test_best_items_clustered_in_one_block_are_all_found():
    width, k = 5000, 20
    blocks = width // select_block(k)
    scores = torch.zeros(2, width)
    scores[:, torch.arange(0, width, blocks)] = torch.arange(1.0, select_block(k) + 1)  # block 0
    scores[:, 1:12] = torch.arange(100.0, 111.0)
    check_against_topk(scores, k)


def test_negative_zero_nan_and_other_dtypes():
    scores = -torch.rand(2, 240, generator=torch.Generator().manual_seed(2)) - 1.0
    scores[:, [7, 8, 9, 10]] = torch.tensor([-0.0, 0.0, float("nan"), float("-inf")])
    values, indices = top_k(scores, 3)
    assert torch.isnan(values[:, 0]).all() and (indices[:, 0] == 9).all()  # NaN first, as torch.topk
    assert values[:, 1:].tolist() == [[0.0, -0.0]] * 2 and (indices[:, 1:] == torch.tensor([8, 7])).all()
    with pytest.raises(TypeError):
        top_k(scores.double(), 3)


def test_scores_written_into_a_reused_buffer():
    gen = torch.Generator().manual_seed(1)
    weight, bias, outputs = torch.randn(3000, 8, generator=gen), torch.randn(3000), torch.randn(5, 8)
    masked = torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]])
    buffer = torch.empty(5, 3000)
    fresh = top_k_scores(outputs, weight, bias, 20, masked)
    reused = top_k_scores(outputs, weight, bias, 20, masked, out=buffer)
    assert torch.equal(fresh[0], reused[0]) and torch.equal(fresh[1], reused[1])
    for row, mask in zip(fresh[1].tolist(), masked.tolist(), strict=True):
        assert not set(row) & set(mask)


@pytest.mark.parametrize("bf16_screen", ["off", "on"])
def test_padding_items_never_answered_when_few_items_remain(bf16_screen):
    items = [f"i{i}" for i in range(203)]  # not a multiple of the block: the scorer pads
    torch.manual_seed(0)
    model = GRU4Rec(items, hidden_size=8, version="v1")
    options = ServingOptions(k=20, never_recommend=tuple(items[:195]), bf16_screen=bf16_screen)
    rec = Recommender(model, options)
    answer = rec.step_batch([Event("e", "u", "i200", "click", 1e9)], {}, 1e9).recommendations[0]
    assert sorted(it.item_id for it in answer.items) == sorted(set(items[195:]) - {"i200"})
    assert all(it.score != float("-inf") for it in answer.items)
