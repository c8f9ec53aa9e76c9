"""The worker's side of the model-updates topic: serve what the rollout says (``rollout.py``),
and publish the canary's verdict (``canary.py``).

``ModelFollower`` keeps the recommender's live model and candidate where the topic's records
take them (``reach``): each checkpoint is verified and loaded as any announcement is
(``model_updates.load_update``: signature, models root, weights' sha256), and one whose item
registry would misread the states of the lineage is refused. A refused announcement is logged and
counted with its reason, and the models already serving go on. A promotion reuses the candidate
already prepared (no reload), and the ranker child is restarted for it. With a canary share of
0, a candidate goes live for everyone at once.

Loading and preparing a model run off the event loop; the swap itself happens between two
micro-batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream_recs.canary import CanaryCounts, Verdict
from stream_recs.config import Security
from stream_recs.kafka_clients import security_kwargs
from stream_recs.messages import (
    FULL,
    CanaryDecision,
    ModelUpdate,
    ModelUpdateError,
    decode_model_record,
    encode_canary_decision,
)
from stream_recs.model_updates import UNCHECKED, Refused, Trust, load_update
from stream_recs.rollout import PROMOTED, ROLLED_BACK, Rollout

Decoded = ModelUpdate | CanaryDecision | ModelUpdateError  # a record, or why it cannot be read

if TYPE_CHECKING:
    from stream_recs.live_model import LiveModel
    from stream_recs.metrics import Metrics
    from stream_recs.ranker_child import Ranker
    from stream_recs.scoring import Recommender

log = logging.getLogger(__name__)

CANARY_KEY = b"canary"  # the key of canary decisions on model-updates (announcements: b"model")


def serving(version: str | None, path: str = "") -> ModelUpdate | None:
    """A stand-in announcement for a model served without one (the command line's)."""
    return ModelUpdate(path, version, "") if version is not None else None


class ModelFollower:
    """Moves the recommender's models along the rollout; ``accepted`` is what it serves."""

    def __init__(
        self, recommender: Recommender, metrics: Metrics, ranker: Ranker | None = None,
        trust: Trust = UNCHECKED, share: float = 0.0, counts: CanaryCounts | None = None,
        live: ModelUpdate | None = None,
    ) -> None:
        self.recommender, self.metrics, self.ranker, self.trust = recommender, metrics, ranker, trust
        self.share, self.counts = share, counts
        self.accepted = Rollout(live or serving(recommender.model_version))
        self._candidate_meta: str | None = None

    async def apply(self, raw: bytes | None) -> bool:
        """Act on one model-updates record; False when (part of) it was refused."""
        return await self._act(_decoded(raw))

    async def apply_all(self, raws: list[bytes | None]) -> None:
        """Act on records read together, ending where acting on each in turn would. Of a run of
        announcements that each replace whatever serves (``FULL``, or any with no canary share),
        the newest is tried first and the older ones only while it and those after it are
        refused: a worker that fell behind a busy trainer catches up with one load, and a refused
        newest announcement never hides a good one before it."""
        records = [_decoded(raw) for raw in raws]
        start = 0
        while start < len(records):
            end = start
            while end < len(records) and self._replaces(records[end]):
                end += 1
            if end - start < 2:
                await self._act(records[start])
                start += 1
                continue
            for record in reversed(records[start:end]):
                if await self._act(record):
                    break
            start = end

    async def _act(self, record: Decoded) -> bool:
        if isinstance(record, ModelUpdateError):
            self._refused(Refused("malformed", str(record)))
            return False
        target, change = self.accepted.after(record)
        if change is None:
            return True
        return await self.reach(target, change)

    def _replaces(self, record: Decoded) -> bool:
        """Whether ``record`` is an announcement whose model serves everyone, whatever served
        before."""
        return isinstance(record, ModelUpdate) and (record.rollout == FULL or self.share <= 0)

    async def reach(self, target: Rollout, change: str | None = None) -> bool:
        """Serve ``target``'s live model and candidate; False when one of them was refused."""
        if self.share <= 0 and target.candidate is not None:
            target = Rollout(dataclasses.replace(target.candidate, rollout=FULL))
        had_candidate = self.recommender.candidate_version
        live, live_ok = await self._reach_live(target.live)
        candidate, candidate_ok = await self._reach_candidate(target.candidate)
        if change in (PROMOTED, ROLLED_BACK) and had_candidate is not None:
            decision = "promote" if change == PROMOTED else "rollback"
            self.metrics.record_canary_decision(decision)
            log.warning("canary of %s: %s", had_candidate, decision)
        self.accepted = Rollout(live, candidate)
        if self.counts is not None:
            self.counts.follow(self.recommender.candidate_version)
        self.metrics.set_model(self.recommender.model_version, self.recommender.candidate_version)
        return live_ok and candidate_ok

    async def _reach_live(self, update: ModelUpdate | None) -> tuple[ModelUpdate | None, bool]:
        current = self.accepted.live
        if update is None or (current is not None and update.version == current.version):
            return current, True
        rec = self.recommender
        if update.version == rec.candidate_version:
            rec.promote()
            meta_sha256 = self._candidate_meta
        else:
            loaded = await self._prepared(update)
            if loaded is None:
                return current, False
            live, meta_sha256 = loaded
            rec.install(live)
        self.metrics.record_reload(True)
        log.warning("model %s is live", update.version)
        if self.ranker is not None:
            await self.ranker.load(update.path, update.version, meta_sha256)
        return update, True

    async def _reach_candidate(self, update: ModelUpdate | None) -> tuple[ModelUpdate | None, bool]:
        rec = self.recommender
        if update is None or update.version == rec.model_version:
            rec.install_candidate(None, self.share)
            return None, True
        if update.version == rec.candidate_version:
            return self.accepted.candidate, True
        loaded = await self._prepared(update)
        if loaded is None:
            rec.install_candidate(None, self.share)
            return None, False
        rec.install_candidate(loaded[0], self.share)
        self._candidate_meta = loaded[1]
        self.metrics.record_reload(True)
        log.warning("model %s serves %.0f%% of users as a canary", update.version, 100 * self.share)
        return update, True

    async def _prepared(self, update: ModelUpdate) -> tuple[LiveModel, str] | None:
        """The announced model verified, loaded and made ready to serve (off the event loop),
        with its metadata's sha256; None when refused (logged, counted)."""
        rec = self.recommender
        try:
            model, meta_sha256 = await asyncio.to_thread(load_update, update, self.trust)
            conflict = rec.lineage_conflict(model)
            if conflict is not None:
                raise Refused("branched_lineage", f"{update.path}: {conflict}")
        except Refused as exc:
            self._refused(exc)
            return None
        return await asyncio.to_thread(rec.prepare, model), meta_sha256

    def _refused(self, exc: Refused) -> None:
        log.error("model update refused (%s), the old model keeps serving: %s", exc.reason, exc)
        self.metrics.record_refused_update(exc.reason)


async def follow_model_updates(
    bootstrap: str, security: Security, topic: str, follower: ModelFollower,
    should_stop: Callable[[], bool], start: tuple[Rollout, int] | None = None,
) -> None:
    """Reach ``start``'s rollout, then act on every record of ``topic`` from its offset on, until
    ``should_stop()``. Without ``start`` (the worker could not read the topic as it started),
    the rollout is first replayed from the topic's beginning."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **security_kwargs(security)
    )
    tp = TopicPartition(topic, 0)
    await consumer.start()
    try:
        consumer.assign([tp])
        if start is None:
            end = (await consumer.end_offsets([tp]))[tp]
            await consumer.seek_to_beginning(tp)
            values: list[bytes | None] = []
            while await consumer.position(tp) < end and not should_stop():
                records = await consumer.getmany(tp, timeout_ms=1000)
                values.extend(r.value for r in records.get(tp, []) if r.offset < end)
            start = Rollout.replay(values), end
        target, offset = start
        await follower.reach(target)
        consumer.seek(tp, offset)
        while not should_stop():
            records = await consumer.getmany(tp, timeout_ms=1000)
            await follower.apply_all([record.value for record in records.get(tp, [])])
    finally:
        await consumer.stop()


class DecisionPublisher:
    """Publishes a canary's verdict on model-updates, once per candidate from this worker."""

    def __init__(self, bootstrap: str, security: Security, topic: str) -> None:
        self._bootstrap, self._security, self._topic = bootstrap, security, topic
        self._producer: AIOKafkaProducer | None = None
        self._published: set[str] = set()

    async def publish(self, version: str, verdict: Verdict) -> None:
        if version in self._published:
            return
        if self._producer is None:
            self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all",
                                              **security_kwargs(self._security))
            await self._producer.start()
        decision = CanaryDecision(version, verdict.decision, verdict.evidence)
        await self._producer.send_and_wait(self._topic, encode_canary_decision(decision), key=CANARY_KEY)
        self._published.add(version)
        log.warning("canary of %s decided: %s (%s)", version, verdict.decision, verdict.evidence)

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()


def _decoded(raw: bytes | None) -> Decoded:
    """A model-updates record decoded, or the ``ModelUpdateError`` that says why it cannot be."""
    try:
        return decode_model_record(raw)
    except ModelUpdateError as exc:
        return exc
