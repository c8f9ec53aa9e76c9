"""What the catalogue keeps out of an answer: its unavailable items from every answer, and the
items of the categories a click names in ``exclude_categories`` from that click's answer.

On the model's side they become more masked indices per row (``masked``), which the top-K, the
ranker child, the bfloat16 screen and the approximate index all honour; the indices are computed
once per model version and catalogue change. A row with fewer exclusions than the widest is
padded with ``LiveModel.sink``, a padding index scored -inf already. On the fallback's side
they are ids to skip (``skipped``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from stream_recs.catalogue import Catalogue
from stream_recs.events import Event
from stream_recs.live_model import LiveModel


class Exclusions:
    """The catalogue's exclusions, as indices of a live model or as ids."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self._key: tuple = ()
        self._unavailable: torch.Tensor | None = None
        self._categories: dict[str, tuple[int, ...]] = {}

    def _refresh(self, live: LiveModel) -> None:
        key = (live.version, self.catalogue.generation)
        if key != self._key:
            index = live.vocab.index
            found = sorted(index[i] for i in self.catalogue.unavailable if i in index)
            self._key, self._categories = key, {}
            self._unavailable = torch.tensor(found, dtype=torch.int64) if found else None

    def _category(self, live: LiveModel, category: str) -> tuple[int, ...]:
        found = self._categories.get(category)
        if found is None:
            index = live.vocab.index
            found = self._categories[category] = tuple(
                index[i] for i in self.catalogue.in_category(category) if i in index)
        return found

    def masked(
        self, masked: torch.Tensor | None, live: LiveModel, events: Sequence[Event]
    ) -> torch.Tensor | None:
        """``masked`` (one row per model event of ``events``) with the exclusions added."""
        self._refresh(live)
        parts = [masked] if masked is not None else []
        if self._unavailable is not None:
            parts.append(self._unavailable.expand(len(events), -1))
        if any(event.exclude_categories for event in events):
            rows = [sorted({i for c in event.exclude_categories for i in self._category(live, c)})
                    for event in events]
            widest = max(len(row) for row in rows)
            if widest:
                per_row = torch.full((len(events), widest), live.sink, dtype=torch.int64)
                for n, row in enumerate(rows):
                    per_row[n, : len(row)] = torch.tensor(row, dtype=torch.int64)
                parts.append(per_row)
        return torch.cat(parts, dim=1) if len(parts) > 1 else (parts[0] if parts else None)

    def skipped(self, event: Event) -> frozenset[str]:
        """The ids the fallback must not offer ``event``."""
        categories = event.exclude_categories
        if not categories:
            return self.catalogue.unavailable
        return self.catalogue.unavailable.union(*(self.catalogue.in_category(c) for c in categories))
