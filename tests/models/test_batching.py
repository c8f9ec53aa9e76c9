"""Session-parallel mini-batches: lanes, replacements, resets, shrinking; no padding."""

import itertools

import numpy as np

from stream_recs.models.batching import session_parallel
from stream_recs.models.train import split_long


def test_lanes_replacements_and_resets():
    seqs = [np.array([1, 2, 3]), np.array([4, 5]), np.array([6, 7, 8, 9]), np.array([10])]
    steps = list(session_parallel(seqs, batch_size=2))
    got = [
        (None if s.keep is None else s.keep.tolist(), s.reset.tolist(), s.inputs.tolist(),
         s.targets.tolist())
        for s in steps
    ]
    assert got == [
        (None, [True, True], [1, 4], [2, 5]),
        (None, [False, True], [2, 6], [3, 7]),
        ([1], [False], [7], [8]),
        (None, [False], [8], [9]),
    ]


def test_every_transition_once():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 50, size=rng.integers(1, 9)) for _ in range(40)]
    pairs = sorted(
        (int(a), int(b))
        for s in session_parallel(seqs, batch_size=7)
        for a, b in zip(s.inputs, s.targets, strict=True)
    )
    expected = sorted((int(a), int(b)) for s in seqs for a, b in itertools.pairwise(s))
    assert pairs == expected


def test_split_long_keeps_every_transition_and_orders_by_piece():
    seqs = [np.arange(0, 7), np.arange(10, 13), np.array([20])]
    pieces = split_long(seqs, chunk_len=3)
    assert [p.tolist() for p in pieces] == [[0, 1, 2, 3], [10, 11, 12], [20], [3, 4, 5, 6]]
    assert split_long(seqs, 0) == seqs


def test_train_epoch_lanes_ignore_one_item_sequences():
    # two trainable sequences and three one-item ones, batch 4: the state must have 2 lanes
    import torch

    from stream_recs.models import GRU4Rec
    from stream_recs.models.train import TrainConfig, Trainer

    torch.manual_seed(0)
    seqs = [np.array([0, 1, 2]), np.array([3]), np.array([4]), np.array([2, 3, 4, 0]), np.array([1])]
    model = GRU4Rec([str(i) for i in range(5)], hidden_size=8)
    stats = Trainer(model, seqs, TrainConfig(hidden_size=8, batch_size=4, n_sample=0)).train_epoch()
    assert stats["events"] == 5
