"""Recommendations for a micro-batch of events: session transitions, one batched GRU step, scoring.

The wiring calls, per micro-batch of valid events::

    result = recommender.step_batch(events, {user: state_or_None, ...}, now=time.time())
    # result.recommendations[i] answers events[i]; result.states[user] is the state to write back;
    # result.ranks[i]: online evaluation of events[i] (None: not evaluated, 0: miss, r: rank)

or in three steps, so that the top-K can be found elsewhere (the worker's child process,
``ranker_child.py``) while the caller goes on::

    pending = recommender.begin_batch(events, states, now)  # transitions, GRU steps
    ranked = pending.live.top_k(*pending.query) if pending.query is not None else None
    result = recommender.finish_batch(pending, ranked)  # answers, explanations, new states

and on a hot swap ``recommender.swap_model(model)``, or ``prepare(model)`` in another thread then
``install`` (building the approximate index takes seconds). What happens to each event, in input
order (events of one user are applied one after the other, as if they came in separate batches):

1. a state idle longer than ``ttl`` (processing time) is ignored (a new user);
2. online evaluation: if the event continues a session whose last answer came from the model,
   its rank is the position of its item in that answer (0 when absent or unknown to the model);
3. a new session (gap longer than ``session_gap`` or another ``session_id``) resets the hidden
   state; history is kept for masking and explanations;
4. a state written under another vocabulary is re-indexed (the old vocabulary must be known: the
   previous live ones are kept, older ones can be given with ``register_vocabulary``; otherwise
   its history is dropped). A hidden state from another model version is rebuilt, lazily, by
   replaying the current session's history through the live model (all such users at once);
5. the item is appended to history (when the model knows it) and the GRU advances: one batched
   step per "wave" (the n-th events of all users in the batch), so usually one step per batch;
6. strategy ``model`` when a model is live and the session has at least one known item (a new
   user's first known item is enough): scores ``H @ E.T + b`` for all events of the batch in one
   ``addmm`` into a reused buffer (or one bfloat16 matmul, whose best ``2K`` are rescored exactly:
   ``BF16Screen``), the padding ids (``never_recommend``) and the user's recent items
   (``mask_recent``: True = whole history, n = last n, False = none) masked, exact top-K per row
   through block maxima (``top_k``), and for each item ``because`` = the history item
   with the most similar embedding (cosine). Otherwise ``popular``: the items with the largest
   exponentially decayed counts this worker saw (``popularity_half_life`` seconds), minus the
   event's item and the masked history, ``because`` None.

A hidden state is rounded to float16 after every step, as the state store keeps it, so answers
do not depend on where micro-batch boundaries fall (a replayed batch may be cut differently).
``install`` may be called from another thread: a batch in flight finishes with its model.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import torch

from stream_recs.events import Event
from stream_recs.messages import RecItem, Recommendation
from stream_recs.models.gru4rec import GRU4Rec
from stream_recs.state import (
    SessionState,
    fingerprint,
    session_fingerprint,
    vocabulary_fingerprint,
)
from stream_recs.topk import (
    BF16Screen,
    ann_top_k,
    bf16_screen_available,
    ivf_index,
    padded_multiple,
    top_k_scores,
)

MODEL = "model"
POPULAR = "popular"
DEFAULT_NEVER_RECOMMEND = ("[PAD]", "<pad>", "[UNK]", "<unk>")


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What ``step_batch`` produced, aligned with its input events."""

    recommendations: list[Recommendation]
    states: dict[str, SessionState]
    ranks: list[int | None]
    inference_seconds: float


class Popularity:
    """Exponentially decayed item counts: the fallback when the model cannot answer.

    Each item seen at time t adds ``2 ** ((t - t_ref) / half_life)``; the weights are rescaled
    when they grow large, so nothing is touched per item on decay. At most ``max_items`` are
    tracked; when full, the less popular half is forgotten.
    """

    def __init__(self, half_life: float = 3600.0, max_items: int = 200_000) -> None:
        self.half_life = half_life
        self.max_items = max_items
        self._slot: dict[str, int] = {}
        self._ids: list[str] = []
        self._counts = np.zeros(1024)
        self._t_ref: float | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, item_ids: Sequence[str], now: float) -> None:
        """Count one occurrence of each of ``item_ids`` at time ``now``."""
        if not item_ids:
            return
        if self._t_ref is None:
            self._t_ref = now
        weight = 2.0 ** ((now - self._t_ref) / self.half_life)
        if weight > 1e100:
            self._counts /= weight
            self._t_ref, weight = now, 1.0
        slots = [self._slot_of(item) for item in item_ids]
        np.add.at(self._counts, slots, weight)

    def top(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` most popular items with their share of the decayed total, best first."""
        size = len(self._ids)
        if size == 0 or n <= 0:
            return []
        counts = self._counts[:size]
        n = min(n, size)
        best = np.argpartition(-counts, n - 1)[:n] if n < size else np.arange(size)
        best = best[np.argsort(-counts[best], kind="stable")]
        total = counts.sum()
        return [(self._ids[i], float(counts[i] / total)) for i in best.tolist()]

    def _slot_of(self, item: str) -> int:
        slot = self._slot.get(item)
        if slot is None:
            if len(self._ids) >= self.max_items:
                self._prune()
            slot = len(self._ids)
            if slot == len(self._counts):
                self._counts = np.concatenate([self._counts, np.zeros(slot)])
            self._slot[item] = slot
            self._ids.append(item)
        return slot

    def _prune(self) -> None:
        size = len(self._ids)
        keep = np.sort(np.argsort(-self._counts[:size], kind="stable")[: self.max_items // 2])
        self._ids = [self._ids[i] for i in keep.tolist()]
        kept = self._counts[keep]
        self._counts = np.zeros(max(1024, 2 * len(kept)))
        self._counts[: len(kept)] = kept
        self._slot = {item: i for i, item in enumerate(self._ids)}


def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 2-D index: one ``index_select`` (1.5-2x faster here than advanced
    indexing for the batch's top-K and history item vectors)."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[1])


def _as_stored(hidden: torch.Tensor) -> torch.Tensor:
    """Round a hidden state to what the state store keeps (float16)."""
    return hidden.half().float()


class _Vocabulary:
    __slots__ = ("fp", "ids", "index")

    def __init__(self, item_ids: Sequence[str]) -> None:
        self.ids = list(item_ids)
        self.index = {item: i for i, item in enumerate(self.ids)}
        self.fp = vocabulary_fingerprint(self.ids)


class LiveModel:
    """A model and what serving derives from it once per swap. The output matrices are padded
    to a multiple of ``padded_multiple(k)`` rows (zero vectors, bias -inf) so that
    ``top_k`` never copies the scores (of exact or ``BF16Screen`` scoring); a padding
    index is only ever returned with a -inf score."""

    def __init__(
        self,
        model: GRU4Rec,
        never_recommend: Collection[str],
        k: int,
        ann_lists: int = 0,
        ann_probes: int = 0,
        bf16_screen: bool = False,
    ) -> None:
        model.eval()
        self.model = model
        self.version = model.version
        self.fp = fingerprint(model.version)
        self.vocab = _Vocabulary(model.item_ids)
        weight, bias = (t.float() for t in model.output_embeddings())
        padding = -len(weight) % padded_multiple(k)
        self.weight = torch.cat([weight, weight.new_zeros(padding, weight.shape[1])]).contiguous()
        self.bias = torch.cat([bias, bias.new_full((padding,), float("-inf"))])
        for item in never_recommend:
            index = self.vocab.index.get(item)
            if index is not None:
                self.bias[index] = float("-inf")
        embedding = self.weight[:, : model.hidden_size]  # ``because`` compares item embeddings
        self.unit = embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.state_size = model.state_size
        self.index = ivf_index(self.weight, self.bias, ann_lists, ann_probes) if ann_lists else None
        self.screen = BF16Screen(self.weight, self.bias) if bf16_screen and not ann_lists else None
        self._scores = torch.empty(0, len(self.weight))  # reused: one batch at a time

    @torch.inference_mode()
    def top_k(
        self, outputs: torch.Tensor, k: int, masked: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` (values, indices) per row: from the approximate index, or exact (through
        the bfloat16 screen when it is on)."""
        if self.index is not None:
            return ann_top_k(self.index, outputs, k, masked)
        if self.screen is not None:
            return self.screen.top_k(outputs, k, masked)
        if len(self._scores) < len(outputs):
            self._scores = torch.empty(len(outputs), len(self.weight))
        out = self._scores[: len(outputs)]
        return top_k_scores(outputs, self.weight, self.bias, k, masked, out=out)


@dataclass(slots=True)
class _Plan:
    """One event after its Python-side transitions, before the tensor work."""

    event: Event
    row: int
    wave: int
    item: int | None  # index in the live vocabulary, None when unknown or no model
    reset: bool  # the hidden state starts from zero before this event
    use_model: bool
    history: tuple[int, ...]  # after this event, in the live vocabulary (masking, because)
    masked_ids: frozenset[str] = frozenset()  # popular fallback: ids not to recommend
    ref: int | tuple[tuple[int, ...], int] | None = None  # previous answer: batch pos or (recs, vocab)
    out: int = -1  # row in the batch's output matrix (model events)
    recs: list[int] | None = None  # model answer, live indices


@dataclass(slots=True)
class PendingBatch:
    """A batch between ``Recommender.begin_batch`` and ``finish_batch``: its top-K is to be found
    by ``live.top_k(*query)`` (``query`` is None when no event of the batch uses the model)."""

    plans: list[_Plan]
    current: dict[str, SessionState]
    live: LiveModel | None
    started: float  # perf_counter when the tensor work began (inference_seconds)
    hidden: torch.Tensor | None = None
    history: torch.Tensor | None = None
    query: tuple[torch.Tensor, int, torch.Tensor | None] | None = None


class Recommender:
    """Turns micro-batches of events and their users' states into recommendations and new states.

    Holds no per-user data: states come in and go out with each batch. ``ann_lists`` > 0 scores
    through an approximate inverted-file index (faiss, the ``ann`` extra) of that many cells,
    ``ann_probes`` of them scanned per event, instead of every item: the scores it returns are
    exact, but an item in a cell it did not scan is missed (``bench/model.py`` reports the recall
    of the exact top-K). 0 (the default) scores every item, exactly; ``bf16_screen`` (None: when
    the CPU has bfloat16 dot-product instructions, ``bf16_screen_available``) does that through
    ``BF16Screen``, 1.3-2.6x faster here (``bench/model.py``).
    """

    def __init__(
        self,
        model: GRU4Rec | None,
        *,
        k: int = 20,
        session_gap: float = 1800.0,
        history_len: int = 50,
        mask_recent: bool | int = True,
        ttl: float = 30 * 86400.0,
        popularity_half_life: float = 3600.0,
        never_recommend: Collection[str] = DEFAULT_NEVER_RECOMMEND,
        max_vocabularies: int = 4,
        ann_lists: int = 0,
        ann_probes: int = 32,
        bf16_screen: bool | None = None,
    ) -> None:
        if k < 1 or history_len < 1:
            raise ValueError("k and history_len must be positive")
        self.k = k
        self.session_gap = session_gap
        self.history_len = history_len
        self.mask_recent = history_len if mask_recent is True else int(mask_recent)
        self.ttl = ttl
        self.never_recommend = frozenset(never_recommend)
        self.popularity = Popularity(popularity_half_life)
        self.max_vocabularies = max_vocabularies
        self.ann_lists = ann_lists
        self.ann_probes = ann_probes
        self.bf16_screen = bf16_screen_available() if bf16_screen is None else bf16_screen
        self._vocabularies: OrderedDict[int, _Vocabulary] = OrderedDict()
        self._mappings: dict[tuple[int, int], np.ndarray] = {}
        self._live: LiveModel | None = None
        self.swap_model(model)

    # --- model management -----------------------------------------------------------------
    @property
    def model_version(self) -> str | None:
        """Version of the live model, None when only the fallback serves."""
        return self._live.version if self._live else None

    def prepare(self, model: GRU4Rec) -> LiveModel:
        """``model`` made ready to serve with this recommender's settings (35 ms for 100k items at
        d=64 here, 2.9 s with the approximate index of 1,264 cells). It changes nothing here, so it
        can run in another thread while batches are served."""
        return LiveModel(model, **self.live_options())

    def live_options(self) -> dict:
        """What ``prepare`` gives ``LiveModel`` besides the model (JSON: ``ranker_child.py``'s child
        builds the same ``LiveModel`` from them)."""
        return {
            "never_recommend": sorted(self.never_recommend), "k": self.k, "ann_lists": self.ann_lists,
            "ann_probes": self.ann_probes, "bf16_screen": self.bf16_screen,
        }  # fmt: skip

    def install(self, live: LiveModel | None) -> None:
        """Make a prepared model live (None: popularity only). States catch up lazily, per user."""
        self._live = live
        if live is not None:
            self._remember(live.vocab)

    def swap_model(self, model: GRU4Rec | None) -> None:
        """``install(prepare(model))`` (None: popularity only)."""
        self.install(self.prepare(model) if model is not None else None)

    def register_vocabulary(self, item_ids: Sequence[str]) -> None:
        """Make an older model's vocabulary known, so states written under it can be translated
        (e.g. at start-up, from the previous checkpoint's metadata)."""
        self._remember(_Vocabulary(item_ids))

    def _remember(self, vocab: _Vocabulary) -> None:
        self._vocabularies[vocab.fp] = vocab
        self._vocabularies.move_to_end(vocab.fp)
        while len(self._vocabularies) > self.max_vocabularies:
            self._vocabularies.popitem(last=False)

    def _mapping(self, old_fp: int, live: LiveModel) -> np.ndarray | None:
        old = self._vocabularies.get(old_fp)
        if old is None:
            return None
        key = (old_fp, live.vocab.fp)
        mapping = self._mappings.get(key)
        if mapping is None:
            index = live.vocab.index
            mapping = np.array([index.get(item, -1) for item in old.ids], dtype=np.int64)
            self._mappings = {key: mapping}  # one translation at a time is all a swap needs
        return mapping

    # --- the batch ------------------------------------------------------------------------
    def step_batch(
        self, events: Sequence[Event], states: Mapping[str, SessionState | None], now: float
    ) -> BatchResult:
        """Recommendations for ``events`` (in order) given their users' states before the batch."""
        pending = self.begin_batch(events, states, now)
        ranked = pending.live.top_k(*pending.query) if pending.query is not None else None
        return self.finish_batch(pending, ranked)

    def begin_batch(
        self, events: Sequence[Event], states: Mapping[str, SessionState | None], now: float
    ) -> PendingBatch:
        """``step_batch`` up to its top-K: the transitions and the GRU steps. The batch's
        ``query`` (None: nothing to rank) is then ranked by ``pending.live.top_k(*query)``, here
        or elsewhere (``ranker_child.py``), and ``finish_batch`` makes the answers and the states."""
        live = self._live
        self.popularity.add([e.item_id for e in events], now)
        plans, current, starts = self._plan(events, states, now, live)
        pending = PendingBatch(plans, current, live, time.perf_counter())
        if live is not None and any(p.use_model for p in plans):
            pending.hidden, outputs = self._run_model(plans, starts, live)
            pending.history, masked = self._query([p for p in plans if p.use_model])
            pending.query = (outputs, self.k, masked)
        return pending

    def finish_batch(
        self, pending: PendingBatch, ranked: tuple[torch.Tensor, torch.Tensor] | None
    ) -> BatchResult:
        """The batch's answers and new states, given its ``query``'s top-K (values, indices)."""
        plans, live = pending.plans, pending.live
        answers = {}
        if ranked is not None:
            answers = self._answers([p for p in plans if p.use_model], *ranked, pending.history, live)
        inference = time.perf_counter() - pending.started
        recommendations = self._answer(plans, answers, live)
        ranks = [self._rank(p, plans, live) for p in plans]
        states = self._new_states(plans, pending.current, pending.hidden, live)
        return BatchResult(recommendations, states, ranks, inference)

    def _plan(self, events, states, now, live):
        """Python-side transitions of every event; no tensor work."""
        current: dict[str, SessionState] = {}
        rows: dict[str, int] = {}
        last_pos: dict[str, int] = {}
        starts: list[SessionState] = []  # per row: the state its hidden row starts from
        plans: list[_Plan] = []
        live_vocab = live.vocab.fp if live else 0
        for pos, event in enumerate(events):
            user = event.user_id
            session = session_fingerprint(event.session_id)
            first = user not in rows
            state = states.get(user) if first else current[user]
            if first and state is not None and state.expired(now, self.ttl):
                state = None
            ref = None
            if state is None:
                state = SessionState(event.ts, int(now), session=session, vocab=live_vocab)
                reset = True
            elif state.is_new_session(event.ts, session, self.session_gap):
                state, reset = state.new_session(session), True
            else:
                reset = False
                ref = last_pos[user] if not first else (state.last_recs, state.vocab)
            if live is not None and state.vocab != live_vocab:
                state = state.translate(live_vocab, self._mapping(state.vocab, live))
            if first:
                rows[user] = len(starts)
                starts.append(state)
            item = live.vocab.index.get(event.item_id) if live else None
            if item is not None:
                state = state.append(item, event.ts, now, self.history_len)
            else:
                state = state.touch(event.ts, now)
            use_model = live is not None and state.session_len > 0
            plan = _Plan(
                event=event,
                row=rows[user],
                wave=0 if first else plans[last_pos[user]].wave + 1,
                item=item,
                reset=reset,
                use_model=use_model,
                history=state.history,
                ref=ref,
            )
            if not use_model:
                plan.masked_ids = self._masked_ids(event.item_id, state, live)
            plans.append(plan)
            current[user] = state
            last_pos[user] = pos
        return plans, current, starts

    def _vocabulary(self, fp: int, live: LiveModel | None) -> _Vocabulary | None:
        return live.vocab if live is not None and live.vocab.fp == fp else self._vocabularies.get(fp)

    def _masked_ids(self, item_id: str, state: SessionState, live: LiveModel | None) -> frozenset[str]:
        vocab = self._vocabulary(state.vocab, live)
        recent = state.history[-self.mask_recent :] if vocab and self.mask_recent else ()
        return frozenset((item_id, *(vocab.ids[i] for i in recent), *self.never_recommend))

    @torch.inference_mode()
    def _run_model(
        self, plans: list[_Plan], starts: list[SessionState], live: LiveModel
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
        self, plans: list[_Plan], answers: dict[int, tuple[RecItem, ...]], live: LiveModel | None
    ) -> list[Recommendation]:
        widest = max((len(p.masked_ids) for p in plans if not p.use_model), default=-1)
        candidates = self.popularity.top(self.k + widest) if widest >= 0 else []
        recommendations = []
        for plan in plans:
            if plan.use_model:
                items, strategy, version = answers[plan.out], MODEL, live.version
            else:
                items = tuple(
                    RecItem(item, score, None) for item, score in candidates if item not in plan.masked_ids
                )[: self.k]
                strategy, version = POPULAR, None
            event = plan.event
            recommendations.append(
                Recommendation(event.event_id, event.user_id, items, strategy, version, event.ts)
            )
        return recommendations

    def _query(self, plans: list[_Plan]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The model events' histories, ``[m, longest]`` left-padded with each row's newest item
        (masking and argmax ignore repeats), and the part of them that is masked."""
        longest = max(len(p.history) for p in plans)
        padded = [(p.history[-1],) * (longest - len(p.history)) + p.history for p in plans]
        history = torch.from_numpy(np.array(padded, dtype=np.int64))
        return history, history[:, -self.mask_recent :] if self.mask_recent else None

    @torch.inference_mode()
    def _answers(
        self, plans: list[_Plan], values: torch.Tensor, top: torch.Tensor, history: torch.Tensor,
        live: LiveModel,
    ) -> dict[int, tuple[RecItem, ...]]:
        """The model events' answers from their top-K, with explanations; sets ``plan.recs``."""
        similarity = torch.bmm(_rows(live.unit, top), _rows(live.unit, history).transpose(1, 2))
        because = history.gather(1, similarity.argmax(dim=2))
        name, new = live.vocab.ids.__getitem__, tuple.__new__  # RecItems without a Python frame each
        masked_out = bool(torch.isinf(values).any())  # fewer than k items left for some rows
        answers = {}
        for plan, vals, items, why in zip(
            plans, values.tolist(), top.tolist(), because.tolist(), strict=True
        ):
            if masked_out:  # -inf scores sort last
                n = sum(v != float("-inf") for v in vals)
                vals, items, why = vals[:n], items[:n], why[:n]
            plan.recs = items
            fields = zip(map(name, items), vals, map(name, why), strict=True)
            answers[plan.out] = tuple(map(new, repeat(RecItem, len(items)), fields))
        return answers

    def _rank(self, plan: _Plan, plans: list[_Plan], live: LiveModel | None) -> int | None:
        """Online evaluation of ``plan``'s event against the answer that preceded it."""
        if plan.ref is None:
            return None
        if isinstance(plan.ref, int):
            recs, item = plans[plan.ref].recs, plan.item
            if recs is None:
                return None
        else:
            recs, vocab_fp = plan.ref
            vocab = self._vocabulary(vocab_fp, live)
            if not recs or vocab is None:
                return None
            item = vocab.index.get(plan.event.item_id)
        return recs.index(item) + 1 if item in recs else 0

    def _new_states(self, plans, current, hidden, live) -> dict[str, SessionState]:
        last: dict[str, _Plan] = {p.event.user_id: p for p in plans}
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
