"""Warm start: a child model begins from its parent's weights, so retraining on new data refines
what the parent learned instead of starting over.

The child's item registry extends the parent's (``models/registry.py``), so an item's row has
the same index in both: the parent's rows are copied as they are, and so is every other
parameter. The rows of items the parent lacks keep the child's own initialisation, or, with
``init_from_neighbours``, start where the items clicked next to them are: a new item's embedding
(tied input and output) and bias become the mean of those of the known items right before and
after it in the training sequences, so the model can rank it from its first fine-tuning steps
instead of from a random point. ``item_rows_scale`` lets some rows (new ones, say) learn faster
than the others when fine-tuning runs at a gentle rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .gru4rec import GRU4Rec
from .registry import RegistryError

_ARCHITECTURE = ("hidden_size", "n_layers", "seen_size")  # must be the parent's for a warm start
INHERITED = (*_ARCHITECTURE, "seen_decay")  # what a child takes from its parent, whatever it is told
_ITEM_TABLES = ("item_embedding.weight", "item_bias.weight", "seen_embedding.weight")


def inherited(parent: GRU4Rec) -> dict:
    """The hyper-parameters a child of ``parent`` must have (``INHERITED``)."""
    return {name: getattr(parent, name) for name in INHERITED}


def warm_start(child: GRU4Rec, parent: GRU4Rec) -> None:
    """Copy ``parent``'s weights into ``child`` (same architecture; registry extending the
    parent's), else ``RegistryError`` saying what differs."""
    for name in _ARCHITECTURE:
        if getattr(child, name) != getattr(parent, name):
            raise RegistryError(f"{name} is {getattr(child, name)}, the parent's is "
                                f"{getattr(parent, name)}: a warm start needs the same architecture")
    n = parent.n_items
    if child.registry.lineage != parent.registry.lineage or child.registry.ids[:n] != parent.registry.ids:
        raise RegistryError("the child's item registry does not extend the parent's")
    own = child.state_dict()
    with torch.no_grad():
        for name, value in parent.state_dict().items():
            if name in _ITEM_TABLES:
                own[name][:n] = value
            else:
                own[name].copy_(value)


def init_from_neighbours(model: GRU4Rec, known: int, sequences: Sequence[np.ndarray]) -> int:
    """Set the item rows at index ``known`` and above to the mean of the rows of the known items
    (index below ``known``) next to them in ``sequences``; returns how many had such neighbours
    (the others keep their rows)."""
    new = model.n_items - known
    if new <= 0:
        return 0
    pairs = [np.stack([seq[:-1], seq[1:]]) for seq in sequences if len(seq) > 1]
    if not pairs:
        return 0
    left, right = np.concatenate(pairs, axis=1)
    ends = np.concatenate([left, right])
    others = np.concatenate([right, left])  # each pair, seen from either end
    keep = (ends >= known) & (others < known)
    rows, neighbours = torch.from_numpy(ends[keep] - known), torch.from_numpy(others[keep])
    counts = torch.bincount(rows, minlength=new).float()
    with torch.no_grad():
        for table in (model.item_embedding.weight, model.item_bias.weight):
            sums = torch.zeros(new, table.shape[1]).index_add_(0, rows, table[neighbours])
            has = counts > 0
            table[known:][has] = sums[has] / counts[has, None]
    return int((counts > 0).sum())


def item_rows_scale(model: GRU4Rec, scale: np.ndarray) -> dict[torch.Tensor, torch.Tensor]:
    """``scale`` (a learning-rate multiple per item) for each of ``model``'s item tables: an
    optimiser's ``row_scale``."""
    tables, rows = dict(model.named_parameters()), torch.as_tensor(scale, dtype=torch.float32)
    return {tables[name]: rows for name in _ITEM_TABLES if name in tables}
