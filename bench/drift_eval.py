"""The measurements of bench/drift.py, from what the live run recorded and from offline replays.

One protocol for every arm (the online protocol of the workers): a click that continues a session
(same user, same session id) is judged against the answer to the click before it: a hit when it is
among that answer's top 20, its reciprocal rank for MRR@20. The static and continuous arms' answers
are the records their workers wrote; the oracle's are made offline by the workers' own
``Recommender`` (same masking, sessions and states) replaying the stream up to the window's end
with a model trained from scratch on every click before the window. A click whose answer is
missing counts as a miss. The window of a judged click is the simulated hour it falls in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from drift_run import Answer
from drift_stream import HOUR, Stream

from stream_recs.datasets import Events
from stream_recs.events import Event
from stream_recs.models import GRU4Rec
from stream_recs.models.train import TrainConfig, train_model, training_sequences
from stream_recs.scoring import Recommender

K = 20


def predecessors(events: Events) -> np.ndarray:
    """Per click row: the row of the same session's previous click (-1: the session's first)."""
    prev = np.full(len(events), -1)
    last: dict[int, int] = {}
    for row, session in enumerate(events.session.tolist()):
        prev[row] = last.get(session, -1)
        last[session] = row
    return prev


def windows_of(stream: Stream) -> np.ndarray:
    """Per click row: its simulated hour (from ``options.hours`` on: the serving phase, not judged)."""
    return (stream.events.ts // HOUR).astype(int)


@dataclass
class Scores:
    """Per window: judged clicks, hits and the sum of reciprocal ranks; answers missing."""

    cases: np.ndarray
    hits: np.ndarray
    rr: np.ndarray
    missing: int = 0

    def hr(self, sel=slice(None)) -> float:
        return float(self.hits[sel].sum() / max(self.cases[sel].sum(), 1))

    def mrr(self, sel=slice(None)) -> float:
        return float(self.rr[sel].sum() / max(self.cases[sel].sum(), 1))


def score(stream: Stream, answers: dict[int, list[str]], rows: np.ndarray | None = None) -> Scores:
    """Judge the clicks (``rows``: only these) against ``answers`` (click row -> items)."""
    ev, hours = stream.events, stream.options.hours
    prev, window = predecessors(ev), windows_of(stream)
    out = Scores(np.zeros(hours), np.zeros(hours), np.zeros(hours))
    for row in (np.arange(len(ev)) if rows is None else rows).tolist():
        if prev[row] < 0:
            continue
        w = window[row]
        if w >= hours:
            continue
        out.cases[w] += 1
        items = answers.get(int(prev[row]))
        if items is None:
            out.missing += 1
            continue
        target = ev.item_ids[ev.item[row]]
        if target in items[:K]:
            out.hits[w] += 1
            out.rr[w] += 1.0 / (items.index(target) + 1)
    return out


def train_scratch(events: Events, hyper: dict, version: str) -> GRU4Rec:
    """A model trained from scratch on ``events`` (a new lineage), ``hyper`` as TrainConfig."""
    registry, sequences = training_sequences(events, None)
    model, _ = train_model(sequences, registry, TrainConfig.from_dict(hyper), version, show_progress=False)
    return model.eval()


def replay(stream: Stream, model: GRU4Rec, end: float, offset: float,
           batch: int = 64) -> dict[int, list[str]]:
    """The answers the workers' ``Recommender`` gives with ``model`` to every click before ``end``
    (simulated seconds), in order, in micro-batches."""
    ev = stream.events
    recommender = Recommender(model)
    states: dict = {}
    stop = int(np.searchsorted(ev.ts, end))
    answers: dict[int, list[str]] = {}
    with torch.no_grad():
        for start in range(0, stop, batch):
            rows = range(start, min(start + batch, stop))
            events = [Event(f"e{r}", ev.user_ids[ev.user[r]], ev.item_ids[ev.item[r]], "click",
                            float(ev.ts[r]) + offset, f"s{ev.session[r]}") for r in rows]
            result = recommender.step_batch(events, states, float(ev.ts[rows[-1]]) + offset)
            states.update(result.states)
            for r, rec in zip(rows, result.recommendations, strict=True):
                answers[r] = [item.item_id for item in rec.items]
    return answers


def oracle(stream: Stream, hyper: dict, first: int, offset: float, log=print) -> Scores:
    """Per window from ``first`` on: a model trained from scratch on every click before it,
    judged on the window's clicks."""
    ev, window = stream.events, windows_of(stream)
    total = Scores(np.zeros(stream.options.hours), np.zeros(stream.options.hours),
                   np.zeros(stream.options.hours))
    for w in range(first, stream.options.hours):
        model = train_scratch(ev.take(np.flatnonzero(ev.ts < w * HOUR)), hyper, f"oracle-{w}")
        got = score(stream, replay(stream, model, (w + 1) * HOUR, offset), np.flatnonzero(window == w))
        total.cases += got.cases
        total.hits += got.hits
        total.rr += got.rr
        log(f"  oracle window {w}: {model.n_items} items, HR@20 {got.hr():.3f}")
    return total


def first_recommendations(stream: Stream, answers: dict[int, Answer], sent: np.ndarray,
                          cycle_ends: list[float], min_clicks: int, since: float,
                          published: list[tuple[float, str, set[str]]]) -> list[dict]:
    """For each item born from ``since`` on (after the static model's data) that reached
    ``min_clicks`` clicks: its first click, its ``min_clicks``-th click, the first published model
    that holds it and the first model answer of the arm holding it (wall and simulated times),
    and the trainer cycles completed in between."""
    ev = stream.events
    clicks: dict[int, list[int]] = {}
    for row, item in enumerate(ev.item[: len(sent)].tolist()):
        clicks.setdefault(item, []).append(row)
    new = {ev.item_ids[c]: c for c in stream.new_items(since)}
    first_answer: dict[str, int] = {}
    for row in sorted(answers):
        answer = answers[row]
        if answer.strategy != "model":
            continue
        for item in answer.items:
            if item in new and item not in first_answer:
                first_answer[item] = row
    ends = np.sort(np.asarray(cycle_ends))
    out = []
    for item, code in new.items():
        rows = clicks.get(code, [])
        if len(rows) < min_clicks:
            continue
        first, enough = rows[0], rows[min_clicks - 1]
        entry = {"item": item, "first_sim": float(ev.ts[first]), "enough_sim": float(ev.ts[enough]),
                 "first_wall": float(sent[first]), "enough_wall": float(sent[enough]), "clicks": len(rows),
                 "age_at_enough_sim": float(ev.ts[enough] - stream.birth[code])}
        added = next((seen for seen, _, ids in published if item in ids), None)
        if added is not None:
            entry.update(added_wall=added,
                         cycles_to_added=int(np.sum((ends > sent[enough]) & (ends <= added + 1.0))))
        got = first_answer.get(item)
        if got is not None:
            wall = answers[got].produced
            entry.update(rec_wall=wall, rec_sim=float(ev.ts[got]),
                         cycles_from_first=int(np.sum((ends > sent[first]) & (ends <= wall))),
                         cycles_from_enough=int(np.sum((ends > sent[enough]) & (ends <= wall))))
        out.append(entry)
    return out


def latency_split(answers: dict[int, Answer], sent: np.ndarray, spans: list[tuple[float, float]],
                  rows: range) -> dict[str, np.ndarray]:
    """Answer latencies (produced - sent, ms) of the clicks ``rows``: those sent within one of
    ``spans`` (wall from, to) and the others."""
    bounds = np.array(spans) if spans else np.zeros((0, 2))
    inside, outside = [], []
    for row in rows:
        answer = answers.get(row)
        if answer is None:
            continue
        at = sent[row]
        hit = bool(np.any((bounds[:, 0] <= at) & (at <= bounds[:, 1]))) if len(bounds) else False
        (inside if hit else outside).append((answer.produced - at) * 1e3)
    return {"in": np.asarray(inside), "out": np.asarray(outside)}
