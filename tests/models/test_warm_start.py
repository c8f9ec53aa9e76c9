"""New items of a warm-started child: their rows start from the known items clicked next to them,
learn at their own rate, and only the items seen often enough are added."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from stream_recs.datasets import events_from_dicts
from stream_recs.models import GRU4Rec
from stream_recs.models.registry import ItemRegistry
from stream_recs.models.train import TrainConfig, train_model, training_sequences
from stream_recs.models.warm_start import init_from_neighbours


def test_new_items_start_at_the_mean_of_their_known_neighbours():
    torch.manual_seed(0)
    model = GRU4Rec(["a", "b", "c", "n1", "n2", "n3"], hidden_size=8)
    table, bias = model.item_embedding.weight.detach(), model.item_bias.weight.detach()
    untouched = table[5].clone()
    sequences = [np.array([0, 3, 1]), np.array([2, 4]), np.array([4, 2]), np.array([5, 3])]
    assert init_from_neighbours(model, 3, sequences) == 2
    torch.testing.assert_close(table[3], (table[0] + table[1]) / 2)  # n3 (new) is no neighbour
    torch.testing.assert_close(table[4], table[2])
    torch.testing.assert_close(bias[4], bias[2])
    torch.testing.assert_close(table[5], untouched)  # only new neighbours: keeps its own row


def test_only_new_items_clicked_often_enough_are_registered():
    rows = [{"user_id": f"u{n % 5}", "item_id": item, "ts": float(n)}
            for n, item in enumerate(["a", "b", "new", "a", "rare", "new", "new", "b"])]
    events = events_from_dicts(rows)
    parent = ItemRegistry.new(["a", "b", "gone"])
    registry, sequences = training_sequences(events, None, parent, min_count=3)
    assert registry.ids == ("a", "b", "gone", "new")  # "rare" (1 click) waits
    index = dict(zip(registry.ids, range(4), strict=True))
    assert sorted(np.concatenate(sequences).tolist()) == sorted(
        index[r["item_id"]] for r in rows if r["item_id"] != "rare"
    )


def test_rows_learn_at_their_own_rate():
    parent_ids = [f"i{n}" for n in range(8)]
    sequences = [np.array([n % 8, 8, (n + 1) % 8, 9]) for n in range(40)]  # 8 and 9 are new
    config = TrainConfig(hidden_size=8, batch_size=4, n_sample=0, epochs=1, learning_rate=0.01)
    known = [np.array([n % 8, (n + 1) % 8, (n + 3) % 8]) for n in range(10)]
    parent, _ = train_model(known, parent_ids, config, "p", show_progress=False)
    registry = parent.registry.extend(["n8", "n9"])

    def moved(row_scale):
        child, _ = train_model(sequences, registry, config, "c", show_progress=False, parent=parent,
                               row_scale=row_scale)
        start, _ = train_model([], registry, dataclasses.replace(config, epochs=0), "c",
                               show_progress=False, parent=parent)
        step = (child.item_embedding.weight - start.item_embedding.weight).norm(dim=1).detach()
        return step[:8].mean().item(), step[8:].mean().item()

    old_same, new_same = moved(None)
    old_fast, new_fast = moved(np.array([1.0] * 8 + [50.0, 50.0]))
    assert old_fast == pytest.approx(old_same, rel=0.5)  # the other rows: the same gentle rate
    assert new_fast > 10 * new_same
