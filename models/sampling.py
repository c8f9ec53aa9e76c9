"""Popularity-based negative sampling: P(i) proportional to support(i)^alpha, drawn in bulk.

Samples are drawn many batches at a time (cumulative distribution + binary search) and served from
a cache, as in the GRU4Rec papers, so the per-step cost is a slice.
"""

from __future__ import annotations

import numpy as np
import torch


class PopularitySampler:
    """Shared extra negatives for each mini-batch."""

    def __init__(
        self,
        support: np.ndarray,
        n_sample: int,
        alpha: float = 0.5,
        cache_batches: int = 256,
        seed: int = 0,
    ) -> None:
        support = np.asarray(support, np.float64)
        if n_sample < 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError("need n_sample >= 0 and 0 <= alpha <= 1")
        weights = np.where(support > 0, support, 0.0) ** alpha
        weights[support <= 0] = 0.0
        if weights.sum() <= 0:
            raise ValueError("no item has positive support")
        self.n_sample = n_sample
        self.probs = weights / weights.sum()
        self._cdf = np.cumsum(self.probs)
        self._cdf[-1] = 1.0
        self._rng = np.random.default_rng(seed)
        self._cache_batches = cache_batches
        self._cache = np.empty((0, n_sample), np.int64)
        self._next = 0

    def log_probs(self) -> torch.Tensor:
        """log P(i) for every item (-inf for items that are never sampled)."""
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(self.probs)).float()

    def sample(self) -> torch.Tensor:
        """``n_sample`` item indices for one mini-batch."""
        if self._next >= len(self._cache):
            u = self._rng.random((self._cache_batches, self.n_sample))
            self._cache = np.searchsorted(self._cdf, u, side="right").clip(max=len(self._cdf) - 1)
            self._next = 0
        row = self._cache[self._next]
        self._next += 1
        return torch.from_numpy(row)
