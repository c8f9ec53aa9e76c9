"""Content rows in the trainer's candidates: an item that the catalogue lists (available, with a
title, categories or attributes) but that was never clicked gets its row from its content
(``models/content.py``), so the workers can recommend it before its first click.

The tower is fitted on the candidate, with the GRU frozen, only while there is an item to give a
row to, and at most every ``refit_seconds`` within a budget of ``fit_seconds``: it takes minutes
on a large catalogue, while a cycle takes seconds. Between fits, the last tower writes the rows;
fine-tuning moves the item space little from one cycle to the next. A row is written again in
every candidate while its item has no click (training on a full softmax pushes an unclicked
row down), and never once it has one: from then on the clicks refine it (``warm_start``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stream_recs.models import GRU4Rec
from stream_recs.models.content import ContentTower, fit_tower, unclicked, with_content_rows

log = logging.getLogger(__name__)

MAX_CONTEXTS = 50_000  # the GRU outputs a fit learns from (drawn at random along the sequences)


@dataclass(frozen=True)
class ContentOptions:
    """When the tower is fitted (the trainer's settings)."""

    refit_seconds: float
    fit_seconds: float


class ContentRows:
    """Gives a candidate's catalogue-only items their content rows; keeps the last tower."""

    def __init__(self, options: ContentOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self.options, self.clock = options, clock
        self.tower: ContentTower | None = None
        self.fitted_at = 0.0

    def apply(self, candidate: GRU4Rec, sequences: Sequence[np.ndarray],
              catalogue: Mapping[str, object]) -> tuple[GRU4Rec, int]:
        """``candidate`` with content rows for the available ``catalogue`` records (item id ->
        record) of items it never saw clicked, and how many rows were written. It is returned
        as it is when there are none, or when the tower cannot be fitted yet (too few of its
        items have a record)."""
        records = unclicked(candidate, catalogue.values())
        if not records:
            return candidate, 0
        if self._due(candidate):
            started = time.perf_counter()
            try:
                self.tower = fit_tower(candidate, sequences, catalogue, max_events=MAX_CONTEXTS,
                                       max_seconds=self.options.fit_seconds)
            except ValueError as exc:
                log.info("no content rows: %s", exc)
                return candidate, 0
            self.fitted_at = self.clock()
            log.info("content tower fitted in %.1f s", time.perf_counter() - started)
        return with_content_rows(candidate, self.tower, records), len(records)

    def _due(self, candidate: GRU4Rec) -> bool:
        return (self.tower is None or self.tower.out_size != candidate.hidden_size + candidate.seen_size
                or self.clock() - self.fitted_at >= self.options.refit_seconds)
