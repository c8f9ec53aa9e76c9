"""GRU4Rec-style next-item network and the incremental inference API the stream uses.

State layout: a hidden state is one float32 row per sequence, ``[n, state_size]`` with
``state_size = n_layers * hidden_size + seen_size`` (layers concatenated, then the seen memory), so
callers can store it as bytes without knowing the depth. Item embeddings are tied: the input
embedding of an item is its output vector, plus a per-item output bias.

Seen memory (``seen_size > 0``, off by default): a decayed sum ``m = decay * m + f(item)`` of a
second item table ``f``, scored as ``scale * (m . f(i))`` beside ``h . e(i) + b(i)``. With the
learned ``scale`` below zero this penalises what the sequence already holds, which a GRU state of a
few hundred floats cannot remember item by item (MovieLens users never rate a film twice). Scores
stay one inner product, ``[h | scale * m] . [e(i) | f(i)] + b(i)``, so serving and the approximate
index are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .registry import ItemRegistry, RegistryError


class Dropout(nn.Dropout):
    """Inverted dropout from a uniform draw: same result as ``nn.Dropout``, faster on CPU than its
    Bernoulli sampling for the small tensors of a training step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


class GRU4Rec(nn.Module):
    """Tied-embedding GRU next-item model over a fixed item vocabulary."""

    def __init__(
        self,
        item_ids: Sequence[str],
        hidden_size: int = 64,
        n_layers: int = 1,
        dropout_embed: float = 0.0,
        dropout_hidden: float = 0.0,
        version: str = "untrained",
        seen_size: int = 0,
        seen_decay: float = 0.97,
    ) -> None:
        super().__init__()
        if not item_ids:
            raise ValueError("a model needs at least one item")
        self.item_ids: list[str] = [str(i) for i in item_ids]
        self._index = {item: i for i, item in enumerate(self.item_ids)}
        if len(self._index) != len(self.item_ids):
            raise ValueError("item ids must be unique")
        self.registry = ItemRegistry.new(self.item_ids)  # a new lineage unless ``use_registry``
        self.item_counts: tuple[int, ...] = ()  # clicks per item in its training data (empty: unknown)
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.version = version
        self.seen_size = seen_size
        self.seen_decay = seen_decay
        self.item_embedding = nn.Embedding(len(self.item_ids), hidden_size, sparse=True)
        self.item_bias = nn.Embedding(len(self.item_ids), 1, sparse=True)
        self.cells = nn.ModuleList(nn.GRUCell(hidden_size, hidden_size) for _ in range(n_layers))
        self.dropout_embed = Dropout(dropout_embed)
        self.dropout_hidden = Dropout(dropout_hidden)
        if seen_size:
            self.seen_embedding = nn.Embedding(len(self.item_ids), seen_size, sparse=True)
            self.seen_scale = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights, zero biases (as in the GRU4Rec papers); seen-memory vectors of
        unit expected norm, so that a repeated item starts with a penalty of about 1."""
        nn.init.xavier_uniform_(self.item_embedding.weight)
        if self.seen_size:
            nn.init.normal_(self.seen_embedding.weight, std=self.seen_size**-0.5)
            nn.init.constant_(self.seen_scale, -1.0)
        nn.init.zeros_(self.item_bias.weight)
        for cell in self.cells:
            for name, param in cell.named_parameters():
                if name.startswith("weight"):
                    # one Glorot init per gate block (reset, update, new)
                    for block in param.data.chunk(3, 0):
                        nn.init.xavier_uniform_(block)
                else:
                    nn.init.zeros_(param)

    # --- vocabulary -----------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def state_size(self) -> int:
        return self.n_layers * self.hidden_size + self.seen_size

    def use_registry(self, registry: ItemRegistry) -> None:
        """Adopt ``registry`` (its lineage, retirements, last-seen times) for these item ids."""
        if registry.ids != tuple(self.item_ids):
            raise RegistryError("the registry lists other item ids than the model")
        self.registry = registry

    def item_index(self, item_id: str) -> int | None:
        """Index of an external item id, or None when the model has never seen it."""
        return self._index.get(item_id)

    # --- training-time forward ------------------------------------------------------------
    def forward(self, hidden: torch.Tensor, item_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step for a batch of sequences: returns (next hidden state, output vector [n, d]).

        Dropout applies to the input embedding and to the GRU's output (only in training mode).
        """
        x = self.dropout_embed(self.item_embedding(item_idx))
        size = self.hidden_size
        new_layers = []
        for depth, cell in enumerate(self.cells):
            x = cell(x, hidden[:, depth * size : (depth + 1) * size])
            new_layers.append(x)
        output = self.dropout_hidden(x)
        if self.seen_size:
            seen = self.seen_step(hidden, self.seen_embedding(item_idx))
            new_layers.append(seen)
            output = torch.cat([output, self.seen_scale * seen], dim=1)
        new_hidden = torch.cat(new_layers, dim=1) if len(new_layers) > 1 else new_layers[0]
        return new_hidden, output

    def seen_step(self, hidden: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """The next seen memory of states ``hidden``, given the new items' seen vectors."""
        return vectors + self.seen_decay * hidden[:, self.n_layers * self.hidden_size :]

    def logits(self, output: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of outputs ``[n, d]`` against ``items`` (all items when None): ``[n, m]``."""
        if items is None:
            weight, bias = self.item_embedding.weight, self.item_bias.weight[:, 0]
            if self.seen_size:
                weight = torch.cat([weight, self.seen_embedding.weight], dim=1)
        else:
            weight, bias = self.item_embedding(items), self.item_bias(items)[:, 0]
            if self.seen_size:
                weight = torch.cat([weight, self.seen_embedding(items)], dim=1)
        return torch.addmm(bias, output, weight.T)

    # --- incremental inference API (the contract the stream relies on) --------------------
    def init_hidden(self, n: int) -> torch.Tensor:
        """Zero state for ``n`` sequences: ``[n, state_size]`` float32."""
        return torch.zeros(n, self.state_size)

    @torch.inference_mode()
    def step(self, hidden: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """Advance ``n`` sequences by one item each; returns the next state."""
        if not self.training:  # the serving case: no mode switch (it walks every submodule)
            return self.forward(hidden, item_idx)[0]
        self.eval()
        try:
            new_hidden, _ = self.forward(hidden, item_idx)
        finally:
            self.train()
        return new_hidden

    @torch.inference_mode()
    def output_of(self, hidden: torch.Tensor) -> torch.Tensor:
        """Output vector of a state ``[n, state_size]`` -> ``[n, hidden_size + seen_size]``: the
        top layer, then the scaled seen memory."""
        top = hidden[:, (self.n_layers - 1) * self.hidden_size : self.n_layers * self.hidden_size]
        if not self.seen_size:
            return top
        return torch.cat([top, self.seen_scale * hidden[:, self.n_layers * self.hidden_size :]], 1)

    @torch.inference_mode()
    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each state: ``[n, n_items]``, aligned with ``item_ids``."""
        return self.logits(self.output_of(hidden))

    def output_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(item matrix ``[n_items, hidden_size + seen_size]``, bias ``[n_items]``) for callers
        that score ``output_of`` themselves; the first ``hidden_size`` columns are the item
        embedding."""
        weight = self.item_embedding.weight.detach()
        if self.seen_size:
            weight = torch.cat([weight, self.seen_embedding.weight.detach()], dim=1)
        return weight, self.item_bias.weight.detach()[:, 0]
