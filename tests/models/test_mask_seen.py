"""mask_seen: the items a training sequence already holds are no negatives of its later steps."""

import itertools

import numpy as np
import torch
import torch.nn.functional as F

from stream_recs.models import GRU4Rec
from stream_recs.models.batching import session_parallel
from stream_recs.models.train import TrainConfig, Trainer, train_model

ITEMS = [f"i{k}" for k in range(20)]


def test_seen_columns_follow_lanes_through_resets_and_drops():
    # every item occurs once, so a row's target tells its sequence and position; batch 2 makes
    # lane 1 take a second sequence (reset) and then end alone (dropped lanes)
    seqs = [np.arange(0, 6), np.array([6, 7]), np.array([8, 9, 10])]
    where = {int(t): (s, p) for s, seq in enumerate(seqs) for p, t in enumerate(seq)}
    config = TrainConfig(hidden_size=4, batch_size=2, bptt=2, n_sample=0, mask_seen=True)
    trainer = Trainer(GRU4Rec(ITEMS, hidden_size=4), seqs, config)
    steps = session_parallel(trainer.sequences, 2)
    seen, checked = torch.zeros(len(ITEMS), 2, dtype=torch.bool), 0
    while window := list(itertools.islice(steps, 2)):
        seen, rows = trainer.seen_columns(seen, window, None)
        targets = torch.cat([s.targets for s in window]).tolist()
        for row, target in zip(rows, targets, strict=True):
            s, p = where[target]
            assert row.nonzero()[:, 0].tolist() == seqs[s][:p].tolist()
            checked += 1
    assert checked == sum(len(s) - 1 for s in seqs)


def test_seen_columns_gather_the_sampled_columns():
    seqs = [np.array([0, 1, 2]), np.array([3, 4, 5])]
    trainer = Trainer(GRU4Rec(ITEMS, hidden_size=4), seqs,
                      TrainConfig(hidden_size=4, batch_size=2, bptt=2, n_sample=0, mask_seen=True))
    window = list(session_parallel(trainer.sequences, 2))
    columns = torch.tensor([1, 0, 4, 3, 19])
    _, rows = trainer.seen_columns(torch.zeros(len(ITEMS), 2, dtype=torch.bool), window, columns)
    # rows: (0 -> 1), (3 -> 4), (1 -> 2), (4 -> 5)
    assert rows.tolist() == [[False, True, False, False, False], [False, False, False, True, False],
                             [True, True, False, False, False], [False, False, True, True, False]]


def test_full_softmax_loss_drops_seen_columns_but_keeps_a_repeated_target():
    torch.manual_seed(0)
    model = GRU4Rec(ITEMS, hidden_size=4)
    trainer = Trainer(model, [np.array([0, 1])], TrainConfig(hidden_size=4, n_sample=len(ITEMS)))
    outputs, targets = torch.randn(2, 4), torch.tensor([3, 5])
    seen = torch.zeros(2, len(ITEMS), dtype=torch.bool)
    seen[0, [1, 2]] = True
    seen[1, [5, 7]] = True  # row 1's target was seen before: it stays the positive
    with torch.no_grad():
        loss = trainer.loss(outputs, targets, None, seen.clone())
        scores = model.logits(outputs)
        scores[0, [1, 2]] = float("-inf")
        scores[1, 7] = float("-inf")
        assert torch.isclose(loss, F.cross_entropy(scores, targets))
        assert loss < trainer.loss(outputs, targets)


def test_sampled_training_with_mask_seen_learns():
    rng = np.random.default_rng(0)
    seqs = [np.arange(k, k + 6) % 20 for k in rng.integers(0, 20, size=60)]
    config = TrainConfig(hidden_size=16, batch_size=8, n_sample=8, epochs=6, learning_rate=0.1,
                         bptt=3, mask_seen=True)
    _, history = train_model(seqs, ITEMS, config, "t", show_progress=False)
    assert all(np.isfinite(h["loss"]) for h in history) and history[-1]["loss"] < history[0]["loss"]
