"""Recommendations for a micro-batch of events: the GRU steps and the answers, around a top-K.

The wiring calls, per micro-batch of valid events::

    result = recommender.step_batch(events, {user: state_or_None, ...}, now=time.time())
    # result.recommendations[i] answers events[i]; result.states[user] is the state to write back;
    # result.ranks[i]: online evaluation of events[i] (None: not evaluated, 0: miss, r: rank),
    # result.judged[i]: the version whose answer it judged

or, per side of the canary (``split``: the users of a candidate model and the others), in three
steps, so that the top-K can be found elsewhere (the worker's ranker child, ``ranker_child.py``)
while the caller goes on::

    for arm, positions in recommender.split(events):
        pending = recommender.begin_batch(events_at_positions, states, now, arm)  # GRU steps
        ranked = pending.live.top_k(*pending.query) if pending.query is not None else None
        part = recommender.finish_batch(pending, ranked)  # answers, explanations, new states
    result = merged(len(events), parts)

and on a hot swap ``recommender.swap_model(model)``, or ``prepare(model)`` in another thread then
``install`` (building the approximate index takes seconds). ``begin_batch`` plans every event's
state transitions (``planner.py``), then advances the GRU: a hidden state from another model
version is rebuilt, lazily, by replaying the current session's history through the live model
(all such users at once), and the events step in waves (the n-th events of all users of the
batch), so usually in one batched step. Strategy ``model`` ranks ``H @ E.T + b`` for all its
events at once (``LiveModel.top_k``: exact, through the bfloat16 screen, or approximate), the
ids never to recommend and the user's ``mask_recent`` latest items masked, and explains each item
by ``because`` and its ``weight`` (``explain.py``; by default the session item whose removal
lowers the item's score most, by a leave-one-out replay). Strategy ``popular``
offers the known items with the largest decayed counts (``popularity.py``, which the wiring feeds
with every click: ``recommender.popularity.count``), minus the event's item and the masked
history, ``because`` None.

A hidden state is rounded to float16 after every step, as the state store keeps it, so answers
do not depend on where micro-batch boundaries fall (a replayed batch may be cut differently).
``install`` may be called from another thread: a batch in flight finishes with its model.

A candidate model (``install_candidate``) serves the users ``canary.in_canary`` puts in its
share, with states of their own (tagged with its fingerprint); ``promote`` makes it live.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import torch

from stream_recs.batch_result import BatchResult, merged
from stream_recs.canary import CANDIDATE_ARM, LIVE_ARM, in_canary
from stream_recs.catalogue import Catalogue
from stream_recs.config import ServingOptions
from stream_recs.events import Event
from stream_recs.exclusions import Exclusions
from stream_recs.explain import NONE, REPLAY, explain, session_tails
from stream_recs.live_model import LiveModel, Vocabularies
from stream_recs.messages import RecItem, Recommendation
from stream_recs.models.gru4rec import GRU4Rec
from stream_recs.planner import Plan, plan_batch
from stream_recs.popularity import Popularity
from stream_recs.state import SessionState

MODEL = "model"
POPULAR = "popular"


def _as_stored(hidden: torch.Tensor) -> torch.Tensor:
    """Round a hidden state to what the state store keeps (float16)."""
    return hidden.half().float()


@dataclass(slots=True)
class PendingBatch:
    """A batch between ``Recommender.begin_batch`` and ``finish_batch``: its top-K is to be found
    by ``live.top_k(*query)`` (``query`` is None when no event of the batch uses the model)."""

    plans: list[Plan]
    current: dict[str, SessionState]
    live: LiveModel | None
    arm: int
    now: float
    started: float  # perf_counter when the tensor work began (inference_seconds)
    hidden: torch.Tensor | None = None
    history: torch.Tensor | None = None
    query: tuple[torch.Tensor, torch.Tensor | None] | None = None  # outputs, masked indices
    tails: list[tuple[int, ...]] | None = None  # per model event: its session's newest items (replay)


class Recommender:
    """Turns micro-batches of events and their users' states into recommendations and new states.

    Holds no per-user data: states come in and go out with each batch. ``options`` say how
    (``config.ServingOptions``: k, masking, sessions, the screen or the approximate index)."""

    def __init__(self, model: GRU4Rec | None, options: ServingOptions | None = None) -> None:
        self.options = options or ServingOptions()
        self.popularity = Popularity(self.options.popularity_half_life, self.options.popularity_items)
        self.vocabularies = Vocabularies()
        self._live: LiveModel | None = None
        self._candidate: LiveModel | None = None
        self._share = 0.0
        self._versions: dict[int, str] = {}  # fingerprint -> version of the models served lately
        self.catalogue = Catalogue()  # the wiring keeps it; its unavailable items are never offered
        self.exclusions = Exclusions(self.catalogue)
        self.swap_model(model)

    # --- model management -----------------------------------------------------------------
    @property
    def model_version(self) -> str | None:
        """Version of the live model, None when only the fallback serves."""
        return self._live.version if self._live else None

    @property
    def candidate_version(self) -> str | None:
        """Version of the candidate in its canary, None when there is none."""
        return self._candidate.version if self._candidate else None

    def arm_version(self, arm: int) -> str | None:
        """The version serving ``arm`` (``canary.LIVE_ARM`` or ``CANDIDATE_ARM``)."""
        return self.candidate_version if arm == CANDIDATE_ARM else self.model_version

    def lineage_conflict(self, model: GRU4Rec) -> str | None:
        """Why ``model``'s item registry would misread the states written here (None: it would
        not): it must agree on every index with the newest vocabulary served of its lineage (a
        candidate's too, rolled back or not; see ``ItemRegistry.conflict_with``)."""
        known = self.vocabularies.get(model.registry.lineage, None)
        if known is None:
            return None
        shared = min(len(known.ids), model.n_items)
        if known.ids[:shared] == model.item_ids[:shared]:
            return None
        mismatch = next(i for i in range(shared) if known.ids[i] != model.item_ids[i])
        return (f"lineage {known.lineage:08x} is branched: index {mismatch} is {known.ids[mismatch]!r} "
                f"here and {model.item_ids[mismatch]!r} there")

    def prepare(self, model: GRU4Rec) -> LiveModel:
        """``model`` made ready to serve with these options. It changes nothing here, so it can
        run in another thread while batches are served."""
        return LiveModel(model, self.options)

    def install(self, live: LiveModel | None) -> None:
        """Make a prepared model live (None: popularity only). States catch up lazily, per user.
        The fallback counts and offers the model's items that are not retired."""
        self._live = live
        if live is None:
            self.popularity.use_catalogue(None)
            return
        self._remember(live)
        registry, counts = live.registry, live.model.item_counts
        self.popularity.use_catalogue((i for i in registry.ids if i not in registry.retired),
                                      dict(zip(registry.ids, counts, strict=True)) if counts else None)

    def swap_model(self, model: GRU4Rec | None) -> None:
        """``install(prepare(model))`` (None: popularity only)."""
        self.install(self.prepare(model) if model is not None else None)

    def install_candidate(self, candidate: LiveModel | None, share: float) -> None:
        """Serve ``candidate`` (prepared) to its ``share`` of users (None: end the canary)."""
        self._candidate, self._share = candidate, share
        if candidate is not None:
            self._remember(candidate)

    def promote(self) -> None:
        """The candidate becomes the live model for every user."""
        candidate, self._candidate = self._candidate, None
        self.install(candidate)

    def _remember(self, live: LiveModel) -> None:
        self.vocabularies.remember(live.vocab)
        self._versions[live.fp] = live.version
        while len(self._versions) > 8:
            del self._versions[next(iter(self._versions))]

    def split(self, events: Sequence[Event]) -> list[tuple[int, list[int]]]:
        """The sides of the canary: (arm, positions of its events), each user on one side."""
        candidate = self._candidate
        if candidate is None or self._live is None:
            return [(LIVE_ARM, list(range(len(events))))]
        sides: tuple[list[int], list[int]] = ([], [])
        for i, event in enumerate(events):
            sides[in_canary(event.user_id, candidate.version, self._share)].append(i)
        return [(arm, positions) for arm, positions in enumerate(sides) if positions]

    # --- the batch ------------------------------------------------------------------------
    def step_batch(
        self, events: Sequence[Event], states: Mapping[str, SessionState | None], now: float
    ) -> BatchResult:
        """Recommendations for ``events`` (in order) given their users' states before the batch."""
        parts = []
        for arm, positions in self.split(events):
            pending = self.begin_batch([events[i] for i in positions], states, now, arm)
            ranked = pending.live.top_k(*pending.query) if pending.query is not None else None
            parts.append((positions, self.finish_batch(pending, ranked)))
        return merged(len(events), parts)

    def begin_batch(
        self, events: Sequence[Event], states: Mapping[str, SessionState | None], now: float,
        arm: int = LIVE_ARM,
    ) -> PendingBatch:
        """``step_batch`` up to its top-K for the events of one ``arm`` of ``split``: the
        transitions and the GRU steps. The batch's ``query`` (None: nothing to rank) is then
        ranked by ``pending.live.top_k(*query)``, here or in the ranker child, and
        ``finish_batch`` makes the answers and the states."""
        live = self._candidate if arm == CANDIDATE_ARM and self._candidate is not None else self._live
        batch = plan_batch(events, states, now, live, self.options, self.vocabularies)
        pending = PendingBatch(batch.plans, batch.current, live, arm, now, time.perf_counter())
        if live is not None and any(p.use_model for p in batch.plans):
            pending.hidden, outputs = self._run_model(batch.plans, batch.starts, live)
            if self.options.explain == REPLAY:
                pending.tails = session_tails(batch.plans, batch.starts, self.options.explain_share)
            pending.history, masked = self._query([p for p in batch.plans if p.use_model])
            events = [p.event for p in batch.plans if p.use_model]
            pending.query = (outputs, self.exclusions.masked(masked, live, events))
        return pending

    def finish_batch(
        self, pending: PendingBatch, ranked: tuple[torch.Tensor, torch.Tensor] | None
    ) -> BatchResult:
        """The batch's answers and new states, given its ``query``'s top-K (values, indices)."""
        plans, live = pending.plans, pending.live
        answers = {}
        if ranked is not None:
            answers = self._answers([p for p in plans if p.use_model], *ranked, pending, live)
        inference = time.perf_counter() - pending.started
        recommendations = self._answer(plans, answers, live, pending.now)
        ranks = [self._rank(p, plans, live) for p in plans]
        judged = [self._judged(p, live) if r is not None else None for p, r in zip(plans, ranks, strict=True)]
        states = self._new_states(plans, pending.current, pending.hidden, live)
        return BatchResult(recommendations, states, ranks, judged, [pending.arm] * len(plans), inference)

    @torch.inference_mode()
    def _run_model(
        self, plans: list[Plan], starts: list[SessionState], live: LiveModel
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GRU steps for every wave: (final hidden rows, output vector per model event)."""
        size = live.state_size
        hidden = live.model.init_hidden(len(starts))
        loaded, replay = [], []
        for row, state in enumerate(starts):
            if not state.session_len:
                continue
            if state.model == live.fp and len(state.hidden) == 2 * size:
                loaded.append(row)
            else:
                replay.append(row)
        if loaded:
            raw = b"".join(starts[row].hidden for row in loaded)
            values = np.frombuffer(raw, dtype=np.float16).reshape(len(loaded), size)
            hidden[loaded] = torch.from_numpy(values.astype(np.float32))
        if replay:
            sequences = [starts[row].history[-starts[row].session_len :] for row in replay]
            hidden[replay] = self._replay(live, sequences)
        model_plans = [p for p in plans if p.use_model]
        for out, plan in enumerate(model_plans):
            plan.out = out
        outputs = torch.empty(len(model_plans), live.weight.shape[1])
        for wave in range(max(p.wave for p in plans) + 1):
            in_wave = [p for p in plans if p.wave == wave]
            reset = [p.row for p in in_wave if p.reset and wave > 0]
            if reset:
                hidden[reset] = 0.0
            stepping = [p for p in in_wave if p.item is not None]
            if stepping:
                rows = [p.row for p in stepping]
                items = torch.tensor([p.item for p in stepping])
                hidden[rows] = _as_stored(live.model.step(hidden[rows], items))
            answering = [p for p in in_wave if p.use_model]
            if answering:
                rows = [p.row for p in answering]
                outputs[[p.out for p in answering]] = live.model.output_of(hidden[rows])
        return hidden, outputs

    @staticmethod
    def _replay(live: LiveModel, sequences: list[tuple[int, ...]]) -> torch.Tensor:
        """Hidden states after feeding each sequence from the zero state, all at once."""
        longest = max(len(s) for s in sequences)
        items = torch.zeros(len(sequences), longest, dtype=torch.long)
        starts = torch.tensor([longest - len(s) for s in sequences])
        for i, seq in enumerate(sequences):
            items[i, longest - len(seq) :] = torch.tensor(seq)
        hidden = live.model.init_hidden(len(sequences))
        for t in range(longest):
            active = (starts <= t).nonzero()[:, 0]
            hidden[active] = _as_stored(live.model.step(hidden[active], items[active, t]))
        return hidden

    def _answer(
        self, plans: list[Plan], answers: dict[int, tuple[RecItem, ...]], live: LiveModel | None,
        now: float,
    ) -> list[Recommendation]:
        skipped = {id(p): self.exclusions.skipped(p.event) for p in plans if not p.use_model}
        widest = max((len(p.masked_ids) + len(skipped[id(p)]) for p in plans if not p.use_model), default=-1)
        candidates = self.popularity.top(self.options.k + widest, now) if widest >= 0 else []
        recommendations = []
        for plan in plans:
            if plan.use_model:
                items, strategy, version = answers[plan.out], MODEL, live.version
            else:
                unwanted = skipped[id(plan)]
                items = tuple(
                    RecItem(item, score, None) for item, score in candidates
                    if item not in plan.masked_ids and item not in unwanted
                )[: self.options.k]
                strategy, version = POPULAR, None
            event = plan.event
            recommendations.append(
                Recommendation(event.event_id, event.user_id, items, strategy, version, event.ts)
            )
        return recommendations

    def _query(self, plans: list[Plan]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The model events' histories, ``[m, longest]`` left-padded with each row's newest item
        (masking and argmax ignore repeats), and the part of them that is masked."""
        longest = max(len(p.history) for p in plans)
        padded = [(p.history[-1],) * (longest - len(p.history)) + p.history for p in plans]
        history = torch.from_numpy(np.array(padded, dtype=np.int64))
        return history, history[:, -self.options.mask_recent :] if self.options.mask_recent else None

    @torch.inference_mode()
    def _answers(
        self, plans: list[Plan], values: torch.Tensor, top: torch.Tensor, pending: PendingBatch,
        live: LiveModel,
    ) -> dict[int, tuple[RecItem, ...]]:
        """The model events' answers from their top-K, with explanations; sets ``plan.recs``."""
        explained = explain(self.options.explain, live, top, pending.tails, pending.history)
        ids, new = live.vocab.ids, tuple.__new__  # RecItems without a Python frame each
        masked_out = bool(torch.isinf(values).any())  # fewer than k items left for some rows
        answers = {}
        for row, (plan, vals, items) in enumerate(zip(plans, values.tolist(), top.tolist(), strict=True)):
            if masked_out:  # -inf scores sort last
                vals = vals[: sum(v != float("-inf") for v in vals)]
                items = items[: len(vals)]
            plan.recs = items
            n = len(items)
            found, weights = explained.get(row, (None, None))
            if found is None:
                why = weights = [None] * n
            else:
                found = found[:n]
                why = [None if i == NONE else ids[i] for i in found]
                weights = [None if i == NONE else w for i, w in zip(found, weights, strict=False)]
            fields = zip(map(ids.__getitem__, items), vals, why, weights, strict=True)
            answers[plan.out] = tuple(map(new, repeat(RecItem, n), fields))
        return answers

    def _rank(self, plan: Plan, plans: list[Plan], live: LiveModel | None) -> int | None:
        """Online evaluation of ``plan``'s event against the answer that preceded it."""
        if plan.ref is None:
            return None
        if isinstance(plan.ref, int):
            recs, item = plans[plan.ref].recs, plan.item
            if recs is None:
                return None
        else:
            recs, vocab_fp = plan.ref
            vocab = self.vocabularies.get(vocab_fp, live)
            if not recs or vocab is None:
                return None
            item = vocab.index.get(plan.event.item_id)
        return recs.index(item) + 1 if item in recs else 0

    def _judged(self, plan: Plan, live: LiveModel | None) -> str | None:
        """The version of the model whose answer ``plan``'s event is judged against."""
        if isinstance(plan.ref, int):
            return live.version if live is not None else None
        return self._versions.get(plan.ref_model)

    def canary_evaluations(self, result: BatchResult):
        """(position, arm, rank) of each evaluation that counts for the canary: judged against
        the answer of the model now serving that event's side."""
        versions = (self.model_version, self.candidate_version)
        for i, (rank, judged, arm) in enumerate(zip(result.ranks, result.judged, result.arms, strict=True)):
            if rank is not None and judged is not None and judged == versions[arm]:
                yield i, arm, rank

    def _new_states(self, plans, current, hidden, live) -> dict[str, SessionState]:
        last: dict[str, Plan] = {p.event.user_id: p for p in plans}
        if hidden is not None:
            packed = hidden.numpy().astype(np.float16)
        states = {}
        for user, plan in last.items():
            state = current[user]
            if live is not None:
                if state.session_len and hidden is not None:
                    state = state.with_hidden(packed[plan.row].tobytes(), live.fp)
                else:
                    state = state.with_hidden(b"", 0)
            states[user] = state.with_recs(plan.recs or ())
        return states
