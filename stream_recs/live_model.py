"""A model made ready to serve, its vocabulary, and the vocabularies of other lineages.

``LiveModel`` is built once per model swap (in the worker, and the same way in its ranker child):
the output matrix padded for ``topk.top_k``, the ids never to recommend and the retired items
scored -inf, the unit item vectors ``because`` compares, and the bfloat16 screen or the
approximate index. States are tagged with the lineage of the item registry they were written
under (``models/registry.py``): any model of that lineage reads them as they are. ``Vocabularies``
keeps the newest vocabulary of the last few lineages served, so a state of another lineage can
be re-indexed into the live one while the worker runs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from stream_recs.config import ServingOptions
from stream_recs.models.gru4rec import GRU4Rec
from stream_recs.state import fingerprint
from stream_recs.topk import (
    BF16Screen,
    ann_top_k,
    bf16_screen_available,
    ivf_index,
    padded_multiple,
    top_k_scores,
)


class Vocabulary:
    """A model's item ids, their indices, and the lineage states are tagged with."""

    __slots__ = ("ids", "index", "lineage")

    def __init__(self, item_ids: Sequence[str], lineage: int) -> None:
        self.ids = list(item_ids)
        self.index = {item: i for i, item in enumerate(self.ids)}
        self.lineage = lineage


def screen_wanted(option: str) -> bool:
    """The ``bf16_screen`` option resolved: ``auto`` means where the CPU has bfloat16 dot products."""
    return option == "on" or (option == "auto" and bf16_screen_available())


class LiveModel:
    """A model and what serving derives from it once per swap. The output matrices are padded
    to a multiple of ``padded_multiple(k)`` rows, at least one (zero vectors, bias -inf) so that
    ``top_k`` never copies the scores (of exact or ``BF16Screen`` scoring); a padding
    index is only ever returned with a -inf score."""

    def __init__(self, model: GRU4Rec, options: ServingOptions) -> None:
        model.eval()
        self.model = model
        self.k = options.k
        self.version = model.version
        self.fp = fingerprint(model.version)
        self.registry = model.registry
        self.n_items = model.n_items
        self.vocab = Vocabulary(model.item_ids, model.registry.lineage)
        weight, bias = (t.float() for t in model.output_embeddings())
        multiple = padded_multiple(self.k)
        padding = -len(weight) % multiple or multiple  # at least one: ``sink``
        self.sink = len(weight)  # a padding index, scored -inf: masking it changes nothing
        self.weight = torch.cat([weight, weight.new_zeros(padding, weight.shape[1])]).contiguous()
        self.bias = torch.cat([bias, bias.new_full((padding,), float("-inf"))])
        for item in options.never_recommend:
            index = self.vocab.index.get(item)
            if index is not None:
                self.bias[index] = float("-inf")
        self.bias[model.registry.retired_indices()] = float("-inf")
        embedding = self.weight[:, : model.hidden_size]  # ``because`` compares item embeddings
        self.unit = embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.state_size = model.state_size
        lists = options.ann_lists
        self.index = ivf_index(self.weight, self.bias, lists, options.ann_probes) if lists else None
        use_screen = not lists and screen_wanted(options.bf16_screen)
        self.screen = BF16Screen(self.weight, self.bias) if use_screen else None
        self._scores = torch.empty(0, len(self.weight))  # reused: one batch at a time

    @torch.inference_mode()
    def top_k(self, outputs: torch.Tensor, masked: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` (values, indices) per row of ``outputs``' scores, with ``masked[i]`` excluded
        from row i: from the approximate index, or exact (through the bfloat16 screen when on)."""
        if self.index is not None:
            return ann_top_k(self.index, outputs, self.k, masked)
        if self.screen is not None:
            return self.screen.top_k(outputs, self.k, masked)
        if len(self._scores) < len(outputs):
            self._scores = torch.empty(len(outputs), len(self.weight))
        out = self._scores[: len(outputs)]
        return top_k_scores(outputs, self.weight, self.bias, self.k, masked, out=out)


class Vocabularies:
    """The newest vocabulary of each of the last ``keep`` lineages served, and the index mapping
    from one of them into the live one (one mapping at a time: all a swap needs)."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._known: OrderedDict[int, Vocabulary] = OrderedDict()
        self._mapping: tuple[tuple[int, ...], np.ndarray] | None = None

    def remember(self, vocab: Vocabulary) -> None:
        """Keep ``vocab`` for its lineage; a lineage only grows, so the newest one reads all."""
        known = self._known.get(vocab.lineage)
        if known is None or len(known.ids) <= len(vocab.ids):
            self._known[vocab.lineage] = vocab
        self._known.move_to_end(vocab.lineage)
        while len(self._known) > self.keep:
            self._known.popitem(last=False)

    def get(self, lineage: int, live: LiveModel | None) -> Vocabulary | None:
        """The vocabulary of ``lineage``: the live one, or a remembered one (None: unknown)."""
        if live is not None and live.vocab.lineage == lineage:
            return live.vocab
        return self._known.get(lineage)

    def mapping(self, lineage: int, live: LiveModel) -> np.ndarray | None:
        """``mapping[index in lineage] = live index`` (-1: not in the live vocabulary); None when
        the lineage is unknown."""
        old = self._known.get(lineage)
        if old is None:
            return None
        key = (lineage, len(old.ids), live.vocab.lineage, len(live.vocab.ids))
        if self._mapping is None or self._mapping[0] != key:
            index = live.vocab.index
            self._mapping = key, np.array([index.get(item, -1) for item in old.ids], dtype=np.int64)
        return self._mapping[1]
