"""Baselines evaluated by the same code as the GRU: most popular, item-to-item transitions
(first-order Markov) and vector session-kNN (V-SKNN, Ludewig & Jannach 2018).

All take training sequences of dataset item codes (ordered by start time) and expose
``score_prefixes(prefixes, users) -> np.ndarray [n, n_items]``. Popularity, scaled far below one
count, breaks ties of the sparse scorers so that their ranks are not decided by the conservative
tie rule alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _popularity(sequences: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    counts = np.bincount(np.concatenate(sequences), minlength=n_items) if sequences else None
    return np.zeros(n_items) if counts is None else counts.astype(np.float64)


class MostPopular:
    """Scores every item by its training frequency, whatever the prefix."""

    name = "most popular"

    def __init__(self, sequences: Sequence[np.ndarray], n_items: int):
        self.counts = _popularity(sequences, n_items)

    def score_prefixes(self, prefixes, users=None) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(prefixes), len(self.counts)))


class Markov:
    """First-order transitions: scores = counts of (last item -> next item) in training."""

    name = "Markov"

    def __init__(self, sequences: Sequence[np.ndarray], n_items: int):
        self.n_items = n_items
        pairs = [np.stack((s[:-1], s[1:]), 1) for s in sequences if len(s) > 1]
        pair = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
        self.from_, self.to = pair[:, 0], pair[:, 1]
        order = np.argsort(self.from_, kind="stable")
        self.from_, self.to = self.from_[order], self.to[order]
        self.offsets = np.searchsorted(self.from_, np.arange(n_items + 1))
        pop = _popularity(sequences, n_items)
        self.tie_break = pop / (pop.max() + 1.0) * 1e-3

    def score_prefixes(self, prefixes, users=None) -> np.ndarray:
        scores = np.tile(self.tie_break, (len(prefixes), 1))
        for row, prefix in enumerate(prefixes):
            if len(prefix):
                last = prefix[-1]
                nxt = self.to[self.offsets[last]:self.offsets[last + 1]]
                scores[row] += np.bincount(nxt, minlength=self.n_items)
        return scores


class VSKNN:
    """Vector session-kNN: neighbours are the most recent ``sample_size`` training sequences that
    share an item with the prefix; similarity is the dot product of the prefix (positions
    weighted linearly, the last item 1) with the neighbour's item set; the ``k`` most similar
    neighbours vote for their items with their similarity."""

    name = "V-SKNN"

    def __init__(
        self, sequences: Sequence[np.ndarray], n_items: int, k: int = 100,
        sample_size: int = 1000, users: np.ndarray | None = None, exclude_same_user: bool = False,
    ):
        self.n_items, self.k, self.sample_size = n_items, k, sample_size
        sets = [np.unique(s) for s in sequences]
        self.lengths = np.array([len(s) for s in sets])
        self.flat = np.concatenate(sets) if sets else np.zeros(0, np.int64)
        self.ptr = np.r_[0, np.cumsum(self.lengths)]
        owner = np.repeat(np.arange(len(sets)), self.lengths)
        order = np.argsort(self.flat, kind="stable")  # per item, sessions in time order
        self.item_sessions = owner[order]
        self.item_ptr = np.searchsorted(self.flat[order], np.arange(n_items + 1))
        self.users = users
        self.exclude_same_user = exclude_same_user and users is not None
        pop = _popularity(sequences, n_items)
        self.tie_break = pop / (pop.max() + 1.0) * 1e-6

    def _scores(self, prefix: np.ndarray, user: int | None) -> np.ndarray:
        scores = self.tie_break.copy()
        if not len(prefix):
            return scores
        weights = np.zeros(self.n_items)
        weights[prefix] = np.arange(1, len(prefix) + 1) / len(prefix)  # later wins for repeats
        items = np.unique(prefix)
        candidates = np.unique(np.concatenate(
            [self.item_sessions[self.item_ptr[i]:self.item_ptr[i + 1]] for i in items]
        ))
        if self.exclude_same_user and user is not None:
            candidates = candidates[self.users[candidates] != user]
        candidates = candidates[-self.sample_size:]
        if not len(candidates):
            return scores
        idx = np.concatenate([np.arange(self.ptr[c], self.ptr[c + 1]) for c in candidates])
        members = self.flat[idx]
        sims = np.add.reduceat(weights[members], np.r_[0, np.cumsum(self.lengths[candidates])[:-1]])
        top = np.argsort(-sims, kind="stable")[: self.k]
        top = top[sims[top] > 0]
        for c in top:
            scores[self.flat[self.ptr[candidates[c]]:self.ptr[candidates[c] + 1]]] += sims[c]
        return scores

    def score_prefixes(self, prefixes, users=None) -> np.ndarray:
        users = [None] * len(prefixes) if users is None else users
        return np.stack([self._scores(np.asarray(p), u) for p, u in zip(prefixes, users, strict=True)])
