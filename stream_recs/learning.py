"""One continuous-learning cycle, without Kafka: from the live model and the recent clicks, a
candidate model, and the gate's verdict on it.

1. The window's newest slice is held out (``models/gate.py``); the rest, plus a replay sample of
   older clicks (against forgetting what the window no longer shows), is the training data.
2. The candidate warm-starts from the live model (``train --parent``): same architecture, same
   item indices; the items the live model lacks that were clicked at least ``min_item_count``
   times in the window (the held-out slice counts: an item is admitted in the cycle its count
   is crossed, though only its earlier clicks train it) are appended to its item registry, and
   their rows start from the known items clicked next to them (``init_from_neighbours``). Items
   unseen for ``retire_after`` are retired.
3. It is fine-tuned for a few epochs with the live model's hyper-parameters but a smaller
   learning rate (``learning_rate_scale``: the live model's rate was chosen to train from
   scratch, and at full rate a few epochs on a small window undo what it learned). An item's
   rows learn faster the more of their clicks are new to the live model (``row_rates``): a new
   item's at the live model's full rate, a growing item's in between. Given ``content``
   (``content_rows.ContentRows.apply`` in the trainer), the catalogue's items without clicks
   get their content rows. Then it is judged against the live model on the held-out slice, so
   the gate sees any harm those rows do.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stream_recs.datasets import Events, concat_events
from stream_recs.models import GRU4Rec
from stream_recs.models.gate import Verdict, judge, newest_slice
from stream_recs.models.registry import ItemRegistry
from stream_recs.models.train import TrainConfig, item_clicks, item_support, train_model, training_sequences
from stream_recs.models.warm_start import inherited


@dataclass(frozen=True)
class CycleOptions:
    """What a cycle does (the trainer's settings)."""

    min_item_count: int
    epochs: int
    holdout: float
    tolerance: float
    retire_after: float | None = None  # seconds unseen before an item is retired (None: never)
    learning_rate_scale: float = 1.0  # fine-tuning's learning rate: the live model's times this


@dataclass(frozen=True)
class Cycle:
    """A cycle's outcome: the candidate (None when the window held too little to judge), the
    verdict, and what it learned from."""

    candidate: GRU4Rec | None
    verdict: Verdict
    train_events: int
    items_added: int  # items admitted by their clicks
    seconds: float
    content_rows: int = 0  # catalogue items without clicks given content rows


def run_cycle(live: GRU4Rec, hyper: dict, window: Events, replay: Events | None,
              options: CycleOptions, version: str, base: ItemRegistry | None = None,
              content: Callable[[GRU4Rec, list[np.ndarray]], tuple[GRU4Rec, int]] | None = None) -> Cycle:
    """Train a candidate from ``live`` (its ``hyper``-parameters, from its checkpoint) on
    ``window`` plus ``replay``, and judge it. Its item registry extends ``base`` (default: the
    live model's; a newer one of the lineage, such as a rolled-back candidate's, keeps the
    indices that candidate gave its items, which the states it served hold). ``content(candidate,
    training sequences)`` returns the candidate with content rows, and how many."""
    started = time.perf_counter()
    config = TrainConfig.from_dict({**hyper, **inherited(live), "epochs": options.epochs})
    config = dataclasses.replace(config, learning_rate=config.learning_rate * options.learning_rate_scale)
    holdout = newest_slice(window, options.holdout, config.max_len)
    train = concat_events(holdout.train, replay) if replay is not None and len(replay) else holdout.train
    if not len(train):
        verdict = judge(live, live, window.item_ids, holdout.cases, options.tolerance)
        return Cycle(None, dataclasses.replace(verdict, publish=False, reason="nothing to train on"),
                     0, 0, time.perf_counter() - started)
    registry, sequences = training_sequences(
        train, hyper.get("session_gap"), admitted(window, base or live.registry, options.min_item_count),
        options.min_item_count)
    if options.retire_after is not None:
        registry = registry.retire_unseen(float(train.ts.max()), options.retire_after)
    rates = row_rates(live, item_support(sequences, len(registry.ids)), 1.0 / options.learning_rate_scale)
    candidate, _ = train_model(sequences, registry, config, version, show_progress=False,
                               parent=live, from_neighbours=True, row_scale=rates)
    added, rows = candidate.n_items - live.n_items, 0
    if content is not None:
        candidate, rows = content(candidate, sequences)
    verdict = judge(candidate, live, window.item_ids, holdout.cases, options.tolerance)
    return Cycle(candidate, verdict, len(train), added, time.perf_counter() - started, rows)


def row_rates(live: GRU4Rec, support: np.ndarray, full: float) -> np.ndarray:
    """Each item's learning-rate multiple in a gentle cycle, from 1 to ``full`` (which restores
    the live model's rate), given ``support``, its clicks in the cycle's training data: ``full``
    for the items the live model lacks; for the others, 1 plus ``full - 1`` times the part of
    their share of the clicks that is new since the live model was trained (its
    ``item_counts``), so an item whose share grew learns faster and a steady or fading one moves
    gently."""
    rates = np.full(len(support), float(full))
    known = support[:live.n_items]
    before = np.asarray(live.item_counts, np.float64)
    if not len(before) or not before.sum() or not known.sum():
        rates[:live.n_items] = 1.0
        return rates
    was, now = before / before.sum(), known / support.sum()
    fresh = np.where(now > 0, np.clip(1.0 - was / np.maximum(now, 1e-300), 0.0, 1.0), 0.0)
    rates[:live.n_items] = 1.0 + (full - 1.0) * fresh
    return rates


def admitted(window: Events, registry: ItemRegistry, min_count: int) -> ItemRegistry:
    """``registry`` extended by the items of ``window`` it lacks that occur at least ``min_count``
    times there, with their newest click times (sorted, as ``training_sequences`` appends)."""
    counts, newest = item_clicks(window)
    known = set(registry.ids)
    new = sorted((window.item_ids[c], int(newest[c])) for c in np.flatnonzero(counts >= max(min_count, 1))
                 if window.item_ids[c] not in known)
    return registry.extend([item for item, _ in new]).seen(dict(new))
