"""The batch planner: what each event of a micro-batch does to its user's state, in input order,
before any tensor work.

For each event, the events of one user applied one after the other (as if they came in separate
batches):

1. a state idle longer than ``state_ttl`` (processing time) is ignored: the user is new;
2. online evaluation: an event that continues a session whose last answer came from the model
   refers to that answer (``Plan.ref``), to be ranked once the batch is answered;
3. a new session (a gap longer than ``session_gap`` in event time, or another ``session_id``)
   resets the hidden state; history is kept for masking and explanations;
4. a state of the live model's lineage is read as it is, less the items the live model lacks
   (``SessionState.within``: written by a newer model, before a rollback); a state of another
   lineage is re-indexed into the live one (``Vocabularies``; an unknown lineage drops the
   history);
5. the item is appended to history when the live model knows it;
6. the event is answered by the model when one is live and the session holds a known item, else
   by the popularity fallback, which then must not offer ``Plan.masked_ids``.

``plan_batch`` returns the plans, each user's state after the batch's transitions, and per
hidden-state row the state it starts from (what the GRU steps in ``scoring.py`` begin with).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stream_recs.config import ServingOptions
from stream_recs.events import Event
from stream_recs.live_model import LiveModel, Vocabularies
from stream_recs.state import SessionState, session_fingerprint


@dataclass(slots=True)
class Plan:
    """One event after its state transitions, before the tensor work."""

    event: Event
    row: int  # the user's row in the batch's hidden states
    wave: int  # the user's n-th event of the batch steps in wave n
    item: int | None  # index in the live vocabulary, None when unknown or no model
    reset: bool  # the hidden state starts from zero before this event
    use_model: bool
    history: tuple[int, ...]  # after this event, in the live vocabulary (masking, because)
    masked_ids: frozenset[str] = frozenset()  # popular fallback: ids not to recommend
    ref: int | tuple[tuple[int, ...], int] | None = None  # previous answer: batch pos or (recs, vocab)
    ref_model: int = 0  # fingerprint of the model that gave the previous answer (stored ones)
    out: int = -1  # row in the batch's output matrix (model events)
    recs: list[int] | None = None  # model answer, live indices


@dataclass(slots=True)
class BatchPlan:
    plans: list[Plan]
    current: dict[str, SessionState]  # each user's state after the batch's transitions
    starts: list[SessionState]  # per hidden-state row: the state its hidden row starts from


def plan_batch(
    events: Sequence[Event], states: Mapping[str, SessionState | None], now: float,
    live: LiveModel | None, options: ServingOptions, vocabularies: Vocabularies,
) -> BatchPlan:
    """The transitions of every event of the batch, in order (see the module docstring)."""
    current: dict[str, SessionState] = {}
    rows: dict[str, int] = {}
    last_pos: dict[str, int] = {}
    starts: list[SessionState] = []
    plans: list[Plan] = []
    live_vocab = live.vocab.lineage if live else 0
    for pos, event in enumerate(events):
        user = event.user_id
        session = session_fingerprint(event.session_id)
        first = user not in rows
        state = states.get(user) if first else current[user]
        if first and state is not None and state.expired(now, options.state_ttl):
            state = None
        ref, ref_model = None, 0
        if state is None:
            state = SessionState(event.ts, int(now), session=session, vocab=live_vocab)
            reset = True
        elif state.is_new_session(event.ts, session, options.session_gap):
            state, reset = state.new_session(session), True
        else:
            reset = False
            ref = last_pos[user] if not first else (state.last_recs, state.vocab)
            ref_model = state.model
        if live is not None and state.model != live.fp:
            if state.vocab != live_vocab:
                state = state.translate(live_vocab, vocabularies.mapping(state.vocab, live))
            else:
                state = state.within(live.n_items)
        if first:
            rows[user] = len(starts)
            starts.append(state)
        item = live.vocab.index.get(event.item_id) if live else None
        if item is not None:
            state = state.append(item, event.ts, now, options.history_len)
        else:
            state = state.touch(event.ts, now)
        use_model = live is not None and state.session_len > 0
        plan = Plan(
            event=event,
            row=rows[user],
            wave=0 if first else plans[last_pos[user]].wave + 1,
            item=item,
            reset=reset,
            use_model=use_model,
            history=state.history,
            ref=ref,
            ref_model=ref_model,
        )
        if not use_model:
            plan.masked_ids = masked_ids(event.item_id, state, live, options, vocabularies)
        plans.append(plan)
        current[user] = state
        last_pos[user] = pos
    return BatchPlan(plans, current, starts)


def masked_ids(
    item_id: str, state: SessionState, live: LiveModel | None, options: ServingOptions,
    vocabularies: Vocabularies,
) -> frozenset[str]:
    """What the popularity fallback must not offer this event: its own item, the user's recent
    items (when their vocabulary is known) and the ids never recommended."""
    vocab = vocabularies.get(state.vocab, live)
    recent = state.history[-options.mask_recent :] if vocab and options.mask_recent else ()
    return frozenset((item_id, *(vocab.ids[i] for i in recent), *options.never_recommend))
