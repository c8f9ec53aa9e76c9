"""Explanations: which item of the current session a recommendation is ``because`` of.

Modes (``ServingOptions.explain``, ``STREAM_RECS_EXPLAIN``):

- ``replay``: leave-one-out through the GRU. For each model event the last ``WINDOW`` items of
  its current session are replayed from the zero state, whole and with each item left out, and
  every recommended item is scored against each variant (its row of the output matrix only, not
  the catalogue). ``because`` is the item whose removal (every click on it in the window) lowers
  the recommended item's score the most; its ``weight`` is that drop's share of the positive
  drops of all the window's distinct items (in (0, 1]: 1 when no other item's removal lowers the
  score). ``because`` is None when the session holds one item (there is nothing to compare it
  with: the item is the whole input) and when no item's removal lowers the score.
  The replay costs about m + m(m-1)/2 GRU row-steps per event for a window of m items, several
  times an event's own step, so it explains the share ``explain_share`` of the model's answers
  (a hash of the event id picks them); the others' ``because`` is None.
- ``similarity``: the history item (current session or earlier, up to ``history_len``) whose item
  embedding is the most similar (cosine) to the recommended item's; ``weight`` is that cosine.
  It ignores the GRU and the order of the clicks.
- ``off``: ``because`` None.

The replay shares prefixes: the window is replayed once, keeping the state after each click, and
the variant without item x starts from the state before x's first click and steps through the
clicks after it, skipping x's, all events of a batch stepping together.
Hidden states are rounded to float16 after every step, as the worker's are.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch

REPLAY, SIMILARITY, OFF = "replay", "similarity", "off"  # the choices of ServingOptions.explain
WINDOW = 10  # the newest items of the session that the replay leaves out in turn
NONE = -1  # no explanation (an index that is never an item)


def _as_stored(hidden: torch.Tensor) -> torch.Tensor:
    return hidden.half().float()


def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 2-D index, by one ``index_select`` (cheaper than advanced indexing)."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[1])


def sampled(event_id: str, share: float) -> bool:
    """Is this event among the ``share`` whose answers the replay explains? A hash of its id, so
    a replayed event gets the same answer."""
    return share >= 1.0 or zlib.crc32(event_id.encode()) < share * 2**32


def session_lengths(plans: Sequence, starts: Sequence) -> list[int]:
    """Each plan's current-session length after its event, following ``planner.plan_batch``'s
    transitions (a reset empties the session, a known item joins it, bounded by the history)."""
    lengths = [state.session_len for state in starts]
    out = []
    for plan in plans:
        n = 0 if plan.reset else lengths[plan.row]
        if plan.item is not None:
            n = min(n + 1, len(plan.history))
        lengths[plan.row] = n
        out.append(n)
    return out


def session_tails(plans: Sequence, starts: Sequence, share: float) -> list[tuple[int, ...]]:
    """Per model event of a batch (``planner.Plan``, in order): its current session's newest
    ``WINDOW`` items, or none when ``share`` leaves the event out."""
    lengths = session_lengths(plans, starts)
    return [plan.history[-min(n, WINDOW) :] if sampled(plan.event.event_id, share) else ()
            for plan, n in zip(plans, lengths, strict=True) if plan.use_model]


def explain(
    mode: str, live, top: torch.Tensor, tails: Sequence[Sequence[int]] | None, history: torch.Tensor
) -> dict[int, tuple[list[int], list[float]]]:
    """Row of ``top [n, K]`` -> ``because`` (item indices, ``NONE``: none) and ``weight`` of its
    items, for the rows ``mode`` explains; ``live`` is the ``LiveModel``, ``tails`` what
    ``session_tails`` gave (``REPLAY``), ``history`` the events' histories (``SIMILARITY``)."""
    if mode == REPLAY:
        rows, because, weight = leave_one_out(live.model, live.weight, tails, top)
    elif mode == SIMILARITY:
        because, weight = most_similar(live.unit, top, history)
        rows = range(len(top))
    else:
        return {}
    return dict(zip(rows, zip(because.tolist(), weight.tolist(), strict=True), strict=True))


@torch.inference_mode()
def window_outputs(
    model, tails: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replay each tail (2 distinct items or more) whole and with each of its items left out
    (every click on it).

    Returns (``items [n, L]`` left-padded with ``NONE``; ``kept [n, L]``: the columns that hold
    an item's first click, whose variants count; ``full [n, D]``: the output of the whole tail;
    ``without [n, L, D]``: the output without column c's item), ``L`` the longest tail."""
    n, longest = len(tails), max(len(t) for t in tails)
    items = torch.tensor([(NONE,) * (longest - len(t)) + tuple(t) for t in tails], dtype=torch.long)
    starts = (items == NONE).sum(1)
    safe = items.clamp_min(0)
    same = items.unsqueeze(2) == items.unsqueeze(1)  # [n, L, L]: column c's item at column j
    kept = ~(same & torch.ones(longest, longest, dtype=torch.bool).tril(-1)).any(2) & (items != NONE)
    size = model.state_size
    prefix = torch.zeros(n, longest + 1, size)  # prefix[:, c]: the state before column c
    hidden = model.init_hidden(n)
    for t in range(longest):
        active = (starts <= t).nonzero()[:, 0]
        hidden[active] = _as_stored(model.step(hidden[active], safe[active, t]))
        prefix[:, t + 1] = hidden
    variants = prefix[:, :longest].reshape(n * longest, size)  # row (e, c) leaves out c's item
    column = torch.arange(longest).repeat(n)
    real = kept.reshape(-1)
    other = ~same.reshape(n * longest, longest)  # row (e, c): column t holds another item
    owner = torch.arange(n).repeat_interleave(longest)
    for t in range(1, longest):
        active = (real & (column < t) & other[:, t]).nonzero()[:, 0]
        variants[active] = _as_stored(model.step(variants[active], safe[owner[active], t]))
    full = model.output_of(prefix[:, longest])
    without = model.output_of(variants).view(n, longest, -1)
    return items, kept, full, without


@torch.inference_mode()
def leave_one_out(
    model, weight: torch.Tensor, tails: Sequence[Sequence[int]], top: torch.Tensor
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """The rows of ``top [n, K]`` (the recommended items of n events) that can be explained,
    and for each of their items ``because`` (item index, ``NONE`` for none) and ``weight``,
    given each event's session ``tails`` (its newest ``WINDOW`` items at most, or none: not to be
    explained; see the module docstring)."""
    rows = [i for i, tail in enumerate(tails) if len(tail) > 1 and len(set(tail[-WINDOW:])) > 1]
    if not rows:
        return rows, torch.empty(0, top.shape[1], dtype=torch.long), torch.empty(0, top.shape[1])
    items, kept, full, without = window_outputs(model, [tails[i][-WINDOW:] for i in rows])
    vectors = _rows(weight, top[rows])  # [n, K, D]
    base = torch.bmm(vectors, full.unsqueeze(2))  # [n, K, 1]; the bias cancels in the drops
    drops = base - torch.bmm(vectors, without.transpose(1, 2))  # [n, K, L]
    drops.masked_fill_(~kept.unsqueeze(1), float("-inf"))
    best, column = drops.max(dim=2)
    total = drops.clamp_min(0.0).sum(dim=2)
    found = best > 0
    because = torch.where(found, items.gather(1, column), NONE)
    return rows, because, torch.where(found, best / total.clamp_min(1e-12), 0.0)


@torch.inference_mode()
def most_similar(
    unit: torch.Tensor, top: torch.Tensor, history: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``similarity`` mode: for each of ``top [n, K]``, the item of ``history [n, H]`` with the
    most similar unit embedding, and that cosine."""
    similarity = torch.bmm(_rows(unit, top), _rows(unit, history).transpose(1, 2))
    cosine, position = similarity.max(dim=2)
    return history.gather(1, position), cosine
