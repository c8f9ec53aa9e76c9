"""Offline evaluation: full ranking over every item, conservative ranks, next-item protocols, with
and without masking, and the leakage check of a checkpoint against a split.

A *case* is (prefix of item codes, target item code, user code). A *predictor* is anything with
``score_prefixes(prefixes, users) -> np.ndarray [n, n_items]`` over the dataset's item codes; the
GRU model, the baselines and any future model are all evaluated by the same code, which ranks
every item three times from one scoring: ``masked`` (the case's input items cannot be recommended,
as the worker never recommends a user's recent items), ``unmasked``, and ``masked-all`` (every
earlier item of the user masked, also those older than the input: the published leave-one-out
figures mask that way; a worker masks no more than its history window).

Protocols:
- ``loo``: per user, by time: last item test, second-last validation, the rest training; the
  prefix is the user's last ``max_len`` items before the target (comparable with RecBole's
  sequential setting);
- ``session``: a global time split: sessions starting in the last ``test_days`` are test, the
  rest training; every next item of a test session is predicted from the session prefix (state
  starting at zero). Test items never seen in training are dropped from test sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stream_recs.datasets import HISTORY_LEN, Events, to_sequences

KS = (10, 20)
METRICS = ("recall", "precision", "f1", "mrr", "ndcg")
MASKINGS = ("masked", "unmasked", "masked-all")  # masked first: it is what the worker serves


@dataclass
class Cases:
    """Evaluation cases over the dataset's item codes."""

    prefixes: list[np.ndarray]
    targets: np.ndarray
    users: np.ndarray
    histories: list[np.ndarray] | None = None  # every earlier item; None: the prefixes are all

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, keep: np.ndarray) -> Cases:
        """The cases at indices ``keep`` (or where the boolean ``keep`` is true), in that order."""
        rows = np.flatnonzero(keep) if keep.dtype == bool else keep
        histories = None if self.histories is None else [self.histories[k] for k in rows]
        return Cases([self.prefixes[k] for k in rows], self.targets[rows], self.users[rows], histories)


@dataclass
class Split:
    """Training events plus validation and test cases of one protocol."""

    train: Events
    valid: Cases
    test: Cases


def conservative_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each target; items tied with the target count as ranked above it, so
    constant scores give the worst rank. A target < 0, or scored NaN or -inf (masked, or unknown
    to the model), ranks last."""
    scores = np.asarray(scores)
    rows = np.arange(len(targets))
    target_scores = scores[rows, np.maximum(targets, 0)]
    ranks = (scores >= target_scores[:, None]).sum(1)
    ranks[(targets < 0) | np.isnan(target_scores) | np.isneginf(target_scores)] = scores.shape[1]
    return ranks


def mask_inputs(scores: np.ndarray, prefixes: Sequence[np.ndarray]) -> np.ndarray:
    """A copy of ``scores`` with each row's input items at -inf: never recommended."""
    masked = np.array(scores)  # a copy: a predictor may return a read-only view
    rows = np.repeat(np.arange(len(prefixes)), [len(p) for p in prefixes])
    masked[rows, np.concatenate([np.zeros(0, np.int64), *prefixes])] = -np.inf
    return masked


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall, Precision, F1, MRR, NDCG at each K for single-target cases."""
    ranks = np.asarray(ranks, np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        recall = hit.mean() if len(ranks) else 0.0
        precision = recall / k
        out[f"recall@{k}"] = float(recall)
        out[f"precision@{k}"] = float(precision)
        out[f"f1@{k}"] = float(2 * precision * recall / (precision + recall)) if recall else 0.0
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean()) if len(ranks) else 0.0
        out[f"ndcg@{k}"] = (
            float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean()) if len(ranks) else 0.0
        )
    return out


def evaluate(predictor, cases: Cases, ks: Sequence[int] = KS, batch_size: int = 512) -> dict:
    """Metrics of ``predictor`` over ``cases`` by full ranking, ``masked``, ``unmasked`` and
    ``masked-all`` (:data:`MASKINGS`), and the number of cases. Masked, a target that occurs in its own input
    is unreachable (it ranks last); ``targets_in_input`` counts such cases."""
    ranks: dict[str, list] = {masking: [] for masking in MASKINGS}
    for start in range(0, len(cases), batch_size):
        end = start + batch_size
        prefixes, targets = cases.prefixes[start:end], cases.targets[start:end]
        scores = predictor.score_prefixes(prefixes, cases.users[start:end])
        ranks["unmasked"].append(conservative_ranks(scores, targets))
        ranks["masked"].append(conservative_ranks(mask_inputs(scores, prefixes), targets))
        ranks["masked-all"].append(ranks["masked"][-1] if cases.histories is None else
                                   conservative_ranks(mask_inputs(scores, cases.histories[start:end]),
                                                      targets))
    seen = sum(bool(np.any(p == t)) for p, t in zip(cases.prefixes, cases.targets, strict=True))
    return {**{masking: metrics_from_ranks(np.concatenate(r) if r else np.zeros(0), ks)
               for masking, r in ranks.items()},
            "cases": len(cases), "targets_in_input": seen}


# --- protocols ------------------------------------------------------------------------------
def leave_one_out(events: Events, max_len: int = HISTORY_LEN) -> Split:
    """Per-user time split: last item test, second-last validation, earlier items training."""
    order = np.lexsort((np.arange(len(events)), events.ts, events.user))
    user = events.user[order]
    last = np.ones(len(order), bool)
    last[:-1] = user[1:] != user[:-1]
    second = np.zeros(len(order), bool)
    second[:-1] = last[1:] & (user[1:] == user[:-1])
    train_rows = np.sort(order[~(last | second)])
    valid, test = cases_at(events, order, second, max_len), cases_at(events, order, last, max_len)
    return Split(events.take(train_rows), valid, test)


def cases_at(events: Events, order: np.ndarray, is_target: np.ndarray, max_len: int) -> Cases:
    """A case for each row of ``order`` (rows sorted by user, then time) marked ``is_target``:
    its item, after the user's previous ``max_len`` items (a row with none makes no case), and all
    the user's earlier items (``histories``; None when none is longer than its prefix)."""
    items, user = events.item[order], events.user[order]
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    first_of = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    prefixes, histories, targets, users = [], [], [], []
    for pos in np.flatnonzero(is_target):
        lo = max(first_of[pos], pos - max_len)
        if pos > lo:
            prefixes.append(items[lo:pos])
            histories.append(items[first_of[pos]:pos])
            targets.append(items[pos])
            users.append(user[pos])
    longer = any(len(h) > len(p) for h, p in zip(histories, prefixes, strict=True))
    return Cases(prefixes, np.asarray(targets, np.int64), np.asarray(users, np.int64),
                 histories if longer else None)


def session_split(
    events: Events, test_days: float = 1.0, valid_days: float = 1.0,
    session_gap: float | None = 1800.0, max_len: int = HISTORY_LEN,
) -> Split:
    """Global time split by session start: the last ``test_days`` test, the ``valid_days``
    before them validation, the rest training."""
    seqs = to_sequences(events, session_gap)
    end = float(events.ts.max())
    test_from = end - test_days * 86_400.0
    valid_from = test_from - valid_days * 86_400.0
    train_seq = seqs.start_ts < valid_from
    seq_id = _event_sequence_ids(events, session_gap)
    first_ts = np.full(seq_id.max() + 1, np.inf)
    np.minimum.at(first_ts, seq_id, events.ts)
    train = events.take(np.flatnonzero(first_ts[seq_id] < valid_from))
    known = np.zeros(len(events.item_ids), bool)
    known[train.item] = True

    def cases(mask: np.ndarray) -> Cases:
        prefixes, targets, users = [], [], []
        for k in np.flatnonzero(mask):
            seq = seqs.items[k][known[seqs.items[k]]]
            for j in range(1, len(seq)):
                prefixes.append(seq[max(0, j - max_len):j])
                targets.append(seq[j])
                users.append(seqs.users[k])
        return Cases(prefixes, np.asarray(targets, np.int64), np.asarray(users, np.int64))

    valid = cases(~train_seq & (seqs.start_ts < test_from))
    return Split(train, valid, cases(seqs.start_ts >= test_from))


def validation_split(
    events: Events, session_gap: float | None, max_len: int = HISTORY_LEN, days: float = 1.0,
) -> tuple[Events, Cases, str]:
    """The part of ``events`` to train on and the cases to validate on, by the data's shape:
    a session log (session ids, or a ``session_gap``) holds out its last ``days`` of sessions
    (at most a tenth of its time span), every next item of each predicted from its prefix, as
    the session protocol does; user histories hold out each user's last item (users with one
    event keep it), as leave-one-out does. Returns (training events, cases, the part's name)."""
    if events.session is not None or session_gap is not None:
        span = float(events.ts.max() - events.ts.min()) / 86_400.0 if len(events) else 0.0
        held = session_split(events, test_days=min(days, span / 10), valid_days=0.0,
                             session_gap=session_gap, max_len=max_len)
        return held.train, held.test, f"the last {min(days, span / 10):.3g} days' sessions"
    order = np.lexsort((np.arange(len(events)), events.ts, events.user))
    user = events.user[order]
    last = np.ones(len(order), bool)
    last[:-1] = user[1:] != user[:-1]
    last &= np.r_[False, user[1:] == user[:-1]]  # not a user's only event
    valid = cases_at(events, order, last, max_len)
    return events.take(np.sort(order[~last])), valid, "each user's last item"


def _event_sequence_ids(events: Events, session_gap: float | None) -> np.ndarray:
    """Sequence number of every event row, consistent with :func:`to_sequences`."""
    group = events.user if events.session is None else events.session
    order = np.lexsort((np.arange(len(events)), events.ts, group))
    user, ts = events.user[order], events.ts[order]
    new = np.ones(len(order), bool)
    new[1:] = user[1:] != user[:-1]
    if events.session is not None:
        new[1:] |= events.session[order][1:] != events.session[order][:-1]
    elif session_gap is not None:
        new[1:] |= (ts[1:] - ts[:-1]) > session_gap
    ids = np.empty(len(order), np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids


# --- leakage ---------------------------------------------------------------------------------
def training_record(holdout: str, source: str, data: str, parent_meta: dict | None) -> list[dict]:
    """The ``trainings`` that ``train`` keeps in a checkpoint's hyper-parameters, newest first (the
    parent's lineage after its own): the fingerprint of the events each training used, of the data
    set they were cut from, and the holdout protocol that cut them ("none": all of it)."""
    own = {"data": data, "source": source, "holdout": holdout}
    return [own, *(trainings(parent_meta) if parent_meta is not None else [])]


def trainings(meta: dict) -> list[dict]:
    """A checkpoint's ``trainings``; one written before they were recorded: its data alone."""
    recorded = meta.get("hyperparameters", {}).get("trainings")
    return recorded or [{"data": meta.get("data_fingerprint"), "source": None, "holdout": None}]


def leakage(meta: dict, events: Events, split: Split) -> str | None:
    """Whether a checkpoint, its ancestors included, may have trained on ``split``'s evaluation
    cases, judged by fingerprints: ``"all"`` (a training used all of ``events``), ``"other split"``
    (the training part of another split of ``events``), ``"unknown"`` (other data, which the
    fingerprints cannot relate to ``events``) or None (each used exactly ``split.train``)."""
    full, part = events.fingerprint(), split.train.fingerprint()
    found = set()
    for training in trainings(meta):
        if training["data"] == full:
            found.add("all")
        elif training["data"] != part:
            found.add("other split" if training["source"] == full else "unknown")
    return next((verdict for verdict in ("all", "other split", "unknown") if verdict in found), None)


# --- the GRU model as a predictor -----------------------------------------------------------
class ModelPredictor:
    """Scores prefixes with a GRU4Rec through its incremental API (state starts at zero)."""

    name = "GRU4Rec (ours)"

    def __init__(self, model, item_ids: Sequence[str]):
        self.model = model.eval()
        lookup = [model.item_index(i) for i in item_ids]
        self.to_model = np.array([-1 if i is None else i for i in lookup], np.int64)
        known = self.to_model >= 0
        self.columns = torch.from_numpy(np.flatnonzero(known))
        self.model_columns = torch.from_numpy(self.to_model[known])
        self.n_items = len(item_ids)

    @torch.inference_mode()
    def score_prefixes(self, prefixes: Sequence[np.ndarray], users=None) -> np.ndarray:
        mapped = [p[p >= 0] for p in (self.to_model[np.asarray(p, np.int64)] for p in prefixes)]
        hidden = self.model.init_hidden(len(mapped))
        lengths = np.array([len(p) for p in mapped])
        width = int(lengths.max()) if len(mapped) else 0
        grid = np.zeros((len(mapped), width), np.int64)  # right-aligned prefixes
        for row, p in enumerate(mapped):
            if len(p):
                grid[row, width - len(p):] = p
        for t in range(width):
            active = torch.from_numpy(np.flatnonzero(t >= width - lengths))
            step_items = torch.from_numpy(grid[:, t])[active]
            hidden[active] = self.model.step(hidden[active], step_items)
        model_scores = self.model.score(hidden)
        scores = torch.full((len(mapped), self.n_items), float("-inf"))
        scores[:, self.columns] = model_scores[:, self.model_columns]
        return scores.numpy()
