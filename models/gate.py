"""The gate: a candidate model is published only when it is not worse than the live model on the
newest clicks, which neither trained on.

The newest ``holdout`` share of the window's time span is held out: the candidate trains on the
events before it, and every event in it is a next-item case whose input is the user's earlier
events (``models/evaluate.py``: full ranking over every item, the user's earlier items masked,
as the workers serve). Both models are scored on the same cases by the same code; an item a
model does not know ranks last for it, so a candidate gets credit for the new items it learned.
The candidate passes when its HR@20 (the workers' canary compares the same, online) is at least
``(1 - tolerance)`` times the live model's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream_recs.datasets import Events

from .evaluate import Cases, ModelPredictor, cases_at, evaluate

GATE_METRIC = "recall@20"  # HR@20 of single-target cases
MIN_CASES = 50  # fewer held-out cases than this judge nothing: the cycle waits for more clicks


@dataclass(frozen=True)
class Holdout:
    """The window cut in time: the events to train on, and the cases to judge on."""

    train: Events
    cases: Cases
    since: float  # event time where the held-out slice begins


def newest_slice(events: Events, holdout: float, max_len: int) -> Holdout:
    """The events before the newest ``holdout`` share of ``events``' time span, and one case per
    event after it (the user's previous ``max_len`` events as its input)."""
    if not len(events):
        return Holdout(events, Cases([], np.zeros(0, np.int64), np.zeros(0, np.int64)), 0.0)
    first, last = float(events.ts.min()), float(events.ts.max())
    since = last - holdout * (last - first)
    held = events.ts >= since if last > first else np.zeros(len(events), bool)
    order = np.lexsort((np.arange(len(events)), events.ts, events.user))
    cases = cases_at(events, order, held[order], max_len)
    return Holdout(events.take(np.flatnonzero(~held)), cases, since)


@dataclass(frozen=True)
class Verdict:
    """The gate's decision and the figures it rests on (masked metrics of both models)."""

    publish: bool
    reason: str
    candidate: dict
    live: dict
    cases: int


def judge(candidate, live, item_ids, cases: Cases, tolerance: float) -> Verdict:
    """Score ``candidate`` and ``live`` (None: no live model, anything better than nothing
    passes) on ``cases`` over ``item_ids`` (the events' item codes), and decide."""
    if len(cases) < MIN_CASES:
        return Verdict(False, f"{len(cases)} held-out cases, fewer than {MIN_CASES}", {}, {}, len(cases))
    ours = evaluate(ModelPredictor(candidate, item_ids), cases)["masked"]
    theirs = evaluate(ModelPredictor(live, item_ids), cases)["masked"] if live is not None else {}
    new, old = ours[GATE_METRIC], theirs.get(GATE_METRIC, 0.0)
    if new >= (1.0 - tolerance) * old and (live is not None or new > 0):
        return Verdict(True, f"{GATE_METRIC} {new:.4f} against the live model's {old:.4f}", ours, theirs,
                       len(cases))
    return Verdict(False, f"{GATE_METRIC} {new:.4f} is below {1.0 - tolerance:.2f} x the live model's "
                          f"{old:.4f}", ours, theirs, len(cases))
