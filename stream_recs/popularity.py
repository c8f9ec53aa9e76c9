"""The popularity fallback: exponentially decayed item counts, for events the model cannot answer
(no model live, or a session with no item the model knows)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Popularity:
    """Exponentially decayed item counts.

    Each item seen at time t adds ``2 ** ((t - t_ref) / half_life)``; the weights are rescaled
    when they grow large, so nothing is touched per item on decay. At most ``max_items`` are
    tracked; when full, the less popular half is forgotten.
    """

    def __init__(self, half_life: float, max_items: int = 200_000) -> None:
        self.half_life = half_life
        self.max_items = max_items
        self._slot: dict[str, int] = {}
        self._ids: list[str] = []
        self._counts = np.zeros(1024)
        self._t_ref: float | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, item_ids: Sequence[str], now: float) -> None:
        """Count one occurrence of each of ``item_ids`` at time ``now``."""
        if not item_ids:
            return
        if self._t_ref is None:
            self._t_ref = now
        weight = 2.0 ** ((now - self._t_ref) / self.half_life)
        if weight > 1e100:
            self._counts /= weight
            self._t_ref, weight = now, 1.0
        slots = [self._slot_of(item) for item in item_ids]
        np.add.at(self._counts, slots, weight)

    def top(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` most popular items with their share of the decayed total, best first."""
        size = len(self._ids)
        if size == 0 or n <= 0:
            return []
        counts = self._counts[:size]
        n = min(n, size)
        best = np.argpartition(-counts, n - 1)[:n] if n < size else np.arange(size)
        best = best[np.argsort(-counts[best], kind="stable")]
        total = counts.sum()
        return [(self._ids[i], float(counts[i] / total)) for i in best.tolist()]

    def _slot_of(self, item: str) -> int:
        slot = self._slot.get(item)
        if slot is None:
            if len(self._ids) >= self.max_items:
                self._prune()
            slot = len(self._ids)
            if slot == len(self._counts):
                self._counts = np.concatenate([self._counts, np.zeros(slot)])
            self._slot[item] = slot
            self._ids.append(item)
        return slot

    def _prune(self) -> None:
        size = len(self._ids)
        keep = np.sort(np.argsort(-self._counts[:size], kind="stable")[: self.max_items // 2])
        self._ids = [self._ids[i] for i in keep.tolist()]
        kept = self._counts[keep]
        self._counts = np.zeros(max(1024, 2 * len(kept)))
        self._counts[: len(kept)] = kept
        self._slot = {item: i for i, item in enumerate(self._ids)}
