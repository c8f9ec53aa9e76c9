"""New items of a warm-started child: their rows start from the known items clicked next to them,
and only the items seen often enough are added."""

from __future__ import annotations

import numpy as np
import torch

from stream_recs.datasets import events_from_dicts
from stream_recs.models import GRU4Rec
from stream_recs.models.registry import ItemRegistry
from stream_recs.models.train import training_sequences
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
