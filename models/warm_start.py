"""Warm start: a child model begins from its parent's weights, so retraining on new data refines
what the parent learned instead of starting over.

The child's item registry extends the parent's (``models/registry.py``), so an item's row has
the same index in both: the parent's rows are copied as they are, and so is every other
parameter. The rows of items the parent lacks keep the child's own initialisation.
"""

from __future__ import annotations

import torch

from .gru4rec import GRU4Rec
from .registry import RegistryError

_ARCHITECTURE = ("hidden_size", "n_layers", "seen_size")
_ITEM_TABLES = ("item_embedding.weight", "item_bias.weight", "seen_embedding.weight")


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
