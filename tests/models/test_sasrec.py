"""The SASRec-style reference model: windows, causality, and that it learns a sequence."""

import itertools

import numpy as np
import torch

from stream_recs.models.sasrec import SASRec, SASRecConfig, SelfAttentive, training_windows


def test_windows_hold_every_transition_once():
    seqs = [np.arange(7), np.array([3, 4]), np.array([5])]
    windows = training_windows(seqs, max_len=3, stride=3)
    assert windows.shape == (3, 4)  # 6 + 1 transitions in windows of 3; [5] has none
    pairs = [(int(a) - 1, int(b) - 1) for w in windows for a, b in itertools.pairwise(w) if a > 0]
    assert sorted(pairs) == sorted([(k, k + 1) for k in range(6)] + [(3, 4)])
    assert windows[-1].tolist() == [0, 0, 4, 5]  # left-padded
    overlapping = training_windows(seqs, max_len=3, stride=1)
    assert [w.tolist() for w in overlapping[:3]] == [[4, 5, 6, 7], [3, 4, 5, 6], [2, 3, 4, 5]]
    assert len(overlapping) == 6 + 1  # a window ends after each item but the first


def test_outputs_do_not_see_later_items():
    torch.manual_seed(0)
    net = SelfAttentive(20, SASRecConfig(dims=16, heads=1, max_len=6)).eval()
    a = torch.tensor([[0, 0, 3, 5, 7, 9]])
    b = torch.tensor([[0, 0, 3, 5, 12, 2]])
    with torch.no_grad():
        out_a, out_b = net(a), net(b)
    assert torch.allclose(out_a[:, :4], out_b[:, :4], atol=1e-6)
    assert not torch.allclose(out_a[:, 4:], out_b[:, 4:])


def test_learns_a_cycle_and_scores_every_item():
    rng = np.random.default_rng(0)
    seqs = [(np.arange(rng.integers(0, 10), 40) % 10) for _ in range(60)]  # 0 -> 1 -> ... -> 9 -> 0
    config = SASRecConfig(dims=16, blocks=1, heads=1, dropout=0.1, epochs=30, batch_size=16, max_len=8,
                          stride=8, learning_rate=5e-3)
    model = SASRec(seqs, n_items=12, config=config)
    assert model.losses[-1] < model.losses[0] / 3
    scores = model.score_prefixes([np.array([4, 5, 6]), np.array([8]), np.array([], np.int64)])
    assert scores.shape == (3, 12)
    assert scores[:2].argmax(axis=1).tolist() == [7, 9]
