"""Loss maths against values computed by hand on tiny inputs."""

import math

import pytest
import torch

from stream_recs.models.losses import bpr_max, cross_entropy_logq, final_activation, sampled_columns


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_cross_entropy_uniform_scores_is_log_c():
    scores = torch.zeros(2, 3)
    loss = cross_entropy_logq(scores, torch.tensor([0, 2]))
    assert loss.item() == pytest.approx(math.log(3))


def test_cross_entropy_hand_value():
    scores = torch.tensor([[1.0, 2.0, 0.0]])
    expected = -math.log(math.e / (math.e + math.e**2 + 1.0))
    assert cross_entropy_logq(scores, torch.tensor([0])).item() == pytest.approx(expected)


def test_logq_correction_subtracts_log_probability():
    # r = [ln 2, 0], log q = [ln 2, 0] -> corrected scores equal -> loss ln 2
    scores = torch.tensor([[math.log(2.0), 0.0]])
    logq = torch.tensor([math.log(2.0), 0.0])
    assert cross_entropy_logq(scores, torch.tensor([0]), logq).item() == pytest.approx(math.log(2))


def test_excluded_columns_do_not_count():
    scores = torch.zeros(1, 3)
    exclude = torch.tensor([[False, True, False]])
    loss = cross_entropy_logq(scores, torch.tensor([0]), exclude=exclude)
    assert loss.item() == pytest.approx(math.log(2))


def test_bpr_max_equal_negatives():
    # negatives weigh 0.5 each: -ln sigmoid(1); the regulariser sees zero scores
    scores = torch.tensor([[1.0, 0.0, 0.0]])
    loss = bpr_max(scores, torch.tensor([0]), bpreg=0.5)
    assert loss.item() == pytest.approx(-math.log(sig(1.0)), rel=1e-6)


def test_bpr_max_hand_value_with_regularisation():
    # negatives 0 and ln 3 -> softmax weights 1/4, 3/4
    ln3 = math.log(3.0)
    scores = torch.tensor([[2.0, 0.0, ln3], [0.0, 1.0, 0.0]])
    pos = torch.tensor([0, 1])
    bpreg = 0.7
    row0 = -math.log(0.25 * sig(2.0) + 0.75 * sig(2.0 - ln3)) + bpreg * 0.75 * ln3**2
    row1 = -math.log(sig(1.0))
    loss = bpr_max(scores, pos, bpreg=bpreg)
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_bpr_max_applies_final_activation_first():
    scores = torch.tensor([[1.0, -2.0, -2.0]])
    elu = 0.5 * (math.exp(-2.0) - 1.0)
    expected = -math.log(sig(1.0 - elu)) + 1.0 * elu**2
    loss = bpr_max(scores, torch.tensor([0]), bpreg=1.0, final_act="elu-0.5")
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(final_activation(scores, "linear"), scores)


def test_sampled_columns_diagonal_and_duplicates():
    targets = torch.tensor([5, 7, 5])
    columns, pos, exclude = sampled_columns(targets, torch.tensor([7, 1]))
    assert columns.tolist() == [5, 7, 5, 7, 1]
    assert pos.tolist() == [0, 1, 2]
    assert exclude.tolist() == [
        [False, False, True, False, False],
        [False, False, False, True, False],
        [True, False, False, False, False],
    ]
