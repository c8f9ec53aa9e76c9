"""``stream-recs trainer``: the model learns from the stream it serves, with no one retraining by hand.

A process of its own, beside the workers:

- **Reads** the committed clicks (read_committed) and the forget requests, with offsets of its own
  consumer group (``<app id>-trainer``), assigned every partition (one trainer; no rebalances
  to stall a long cycle). Records are decoded as the worker decodes them (``events.decode_event``,
  user ids pseudonymised with the workers' key); a malformed one is skipped and counted by
  reason, never fatal.
- **Keeps** the clicks in a rolling window on local disk (``window.py``), bounded by count, age
  and bytes, with a replay sample of older clicks; a forget request erases the user's clicks from
  both. Offsets are committed only once the window that holds their records is on disk, so a
  restart (after ``kill -9`` too) resumes from its window and its committed offsets.
- **Cycles** every ``cycle_seconds`` or ``cycle_events`` new clicks: from the live checkpoint (the
  live model of the model-updates topic's rollout, ``rollout.py``, when it trusts it, else
  ``--model``), a candidate is trained and gated (``learning.py``). A candidate that passes is
  written under ``--models-dir`` atomically (``model_store.py``) and announced, signed when the
  signing key is set: as a canary (``canary.py``) unless the canary share is 0. No cycle starts
  while a canary is being decided: the next one starts from whichever model won. Every decision
  is logged and exported (``trainer_metrics.py``). The catalogue's items without clicks get
  their rows from their content (``content_rows.py``; the items topic is followed for that).
- **Item indices** of a candidate extend the newest announced registry of the lineage, a
  rolled-back candidate's included: the states that candidate served hold its indices.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stream_recs.catalogue_feed import CatalogueReader
from stream_recs.config import Settings
from stream_recs.content_rows import ContentOptions, ContentRows
from stream_recs.events import WRONG_TOPIC, Forget, Limits, Rejection, decode_event
from stream_recs.kafka_clients import client_kwargs
from stream_recs.learning import CycleOptions, run_cycle
from stream_recs.messages import CANARY, FULL, ModelUpdate
from stream_recs.model_store import ModelStore
from stream_recs.model_updates import Refused, Trust, announce, load_update, read_rollout
from stream_recs.models import GRU4Rec
from stream_recs.models.checkpoint import read_checkpoint
from stream_recs.models.registry import ItemRegistry
from stream_recs.privacy import load_pseudonymiser
from stream_recs.trainer_metrics import TrainerMetrics
from stream_recs.window import RollingWindow

log = logging.getLogger(__name__)

POLL_MS = 500
# the broker holds a fetch until it has this much or this long: a window append (two fsyncs) per
# second or per MiB of clicks, not per handful of them
FETCH_MIN_BYTES, FETCH_WAIT_MS = 1 << 20, 1000
GROUP_SUFFIX = "-trainer"
CANARY_RECHECK_S = 10.0  # while a canary is being decided, how often the trainer looks again


@dataclass
class Live:
    """The model cycles start from: its checkpoint directory, the model, its hyper-parameters."""

    path: Path
    model: GRU4Rec
    hyper: dict


def load_live(path: str | Path, model: GRU4Rec | None = None) -> Live:
    """The checkpoint at ``path`` (``model``: already loaded from it); ``CheckpointError`` when
    it does not load."""
    files = read_checkpoint(path)
    return Live(Path(path).resolve(), model or files.model(), files.meta().get("hyperparameters", {}))


class TrainerService:
    """The trainer's state and steps; ``run`` loops them until told to stop."""

    def __init__(self, settings: Settings, bootstrap: str, live: Live, models_dir: str | Path,
                 window_dir: str | Path, metrics: TrainerMetrics) -> None:
        from kafka import KafkaConsumer, KafkaProducer

        self.settings, self.bootstrap, self.live, self.metrics = settings, bootstrap, live, metrics
        t, w = settings.trainer, settings.worker
        self.options = CycleOptions(t.min_item_count, t.epochs, t.holdout, t.gate_tolerance,
                                    t.retire_after or None, t.learning_rate_scale)
        self.store = ModelStore(models_dir)
        for name in self.store.clean():
            log.warning("removed %s, a checkpoint a killed trainer left half-written", name)
        self.trust = Trust.of(w)
        self.pseudonym = load_pseudonymiser(w.pseudonymise_key, w.pseudonymise_key_file)
        self.limits = Limits(max_record_bytes=w.max_record_bytes)
        self.window = RollingWindow(window_dir, t.window_events, t.window_age, t.window_bytes,
                                    t.replay_events)
        self.content = ContentRows(ContentOptions(t.content_refit, t.content_fit_seconds)) \
            if t.content_refit else None
        self.catalogue = CatalogueReader(settings, bootstrap) if self.content else None
        kwargs = client_kwargs(settings, bootstrap)
        self.consumer = KafkaConsumer(**kwargs, group_id=w.app_id + GROUP_SUFFIX, enable_auto_commit=False,
                                      isolation_level="read_committed", auto_offset_reset="earliest",
                                      fetch_min_bytes=FETCH_MIN_BYTES, fetch_max_wait_ms=FETCH_WAIT_MS)
        self.producer = KafkaProducer(**kwargs, acks="all")
        self.since_cycle = 0  # clicks added since the last cycle
        self.last_cycle = time.monotonic()
        self.canary: ModelUpdate | None = None  # a candidate being decided by the workers' canary
        self.paused_until = 0.0  # monotonic: no cycle before (a canary is being decided)
        self.base: ItemRegistry = live.model.registry  # what a candidate's registry extends
        self._newest: tuple[str, ItemRegistry] | None = None  # the newest announcement's registry
        self._newest_path: str | None = None
        self._assign()
        metrics.set_live(live.model.version)
        self._report_window()

    # --- reading -------------------------------------------------------------------------------
    def _assign(self) -> None:
        """Every partition of clicks and forget, from the window's offsets where it has them (they
        may be ahead of the committed ones: a crash between the two), else the committed ones."""
        from kafka import TopicPartition

        topics = self.settings.topics
        parts = [TopicPartition(topic, p) for topic in (topics.clicks, topics.forget)
                 for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
        self.consumer.assign(parts)
        held = self.window.offsets
        for tp in parts:
            offset = held.get(f"{tp.topic}:{tp.partition}")
            if offset is not None:
                self.consumer.seek(tp, offset)

    def poll(self) -> int:
        """Take what the brokers have (at most ``POLL_MS`` of waiting) into the window; commit
        the offsets once it is on disk; apply the catalogue's new records. Returns the clicks
        added."""
        from kafka import OffsetAndMetadata

        if self.catalogue is not None:
            self.catalogue.update()
        batches = self.consumer.poll(timeout_ms=POLL_MS)
        if not batches:
            return 0
        rows, forgotten, offsets = [], set(), {}
        for tp, records in batches.items():
            for record in records:
                decoded = decode_event(record.value, record.key, topic=tp.topic, partition=tp.partition,
                                       offset=record.offset, broker_ts=record.timestamp / 1000.0,
                                       limits=self.limits)
                if not isinstance(decoded, Rejection) and isinstance(decoded, Forget) != (
                        tp.topic == self.settings.topics.forget):
                    decoded = Rejection(WRONG_TOPIC, "")
                if isinstance(decoded, Rejection):
                    self.metrics.skipped.labels(decoded.reason).inc()
                    continue
                user = self.pseudonym(decoded.user_id) if self.pseudonym else decoded.user_id
                if isinstance(decoded, Forget):
                    forgotten.add(user)
                else:
                    rows.append((user, decoded.item_id, decoded.ts, decoded.session_id))
            offsets[f"{tp.topic}:{tp.partition}"] = self.consumer.position(tp)
        if forgotten:  # first: once the offsets past a request are on disk, it is never read again
            self.window.forget(forgotten)
            self._report_window()  # before the count: a request seen applied is seen in the window
            self.metrics.forgotten.inc(len(forgotten))
            rows = [row for row in rows if row[0] not in forgotten]
        self.window.append(rows, offsets)
        self.consumer.commit({tp: OffsetAndMetadata(offsets[f"{tp.topic}:{tp.partition}"], "", -1)
                              for tp in batches})
        self.metrics.consumed.inc(len(rows))
        self.since_cycle += len(rows)
        self._report_window()
        return len(rows)

    def _report_window(self) -> None:
        self.metrics.set_window(len(self.window), self.window.size_bytes)

    # --- cycles ---------------------------------------------------------------------------------
    def cycle_due(self) -> bool:
        t, now = self.settings.trainer, time.monotonic()
        return now >= self.paused_until and (self.since_cycle >= t.cycle_events or (
            self.since_cycle > 0 and now - self.last_cycle >= t.cycle_seconds))

    def cycle(self) -> str | None:
        """Fine-tune, gate and (if it passes) publish a candidate; returns the result label, or
        None when a canary is still being decided (no cycle: it is due again soon after)."""
        started = time.perf_counter()
        try:
            self.follow_announcements()
            if self.canary is not None:
                log.info("waiting for the canary of %s to be decided", self.canary.version)
                self.paused_until = time.monotonic() + CANARY_RECHECK_S
                return None
            self.since_cycle, self.last_cycle = 0, time.monotonic()
            version = f"{self.live.model.version.split('+')[0]}+t{time.time_ns() // 1_000_000}"
            window = self.window.events()
            replay = self.window.replay(len(window), seed=int(time.time()))
            log.info("cycle: %d clicks in the window, %d replayed, from %s", len(window), len(replay),
                     self.live.model.version)
            outcome = run_cycle(self.live.model, self.live.hyper, window, replay, self.options, version,
                                self.base, self._content_rows if self.content is not None else None)
        except Exception:
            self.since_cycle, self.last_cycle = 0, time.monotonic()
            log.exception("the training cycle failed; the live model is untouched")
            self.metrics.record_cycle("failed", time.perf_counter() - started, {}, {}, 0)
            return "failed"
        verdict = outcome.verdict
        result = "published" if verdict.publish and outcome.candidate is not None else "rejected"
        if result == "published":
            try:
                self.publish(outcome.candidate, outcome.train_events)
            except Exception:
                log.exception("the candidate passed the gate but could not be published")
                result = "failed"
        log.warning("cycle %s: %s (%d held-out cases, %d clicks trained on, %d items added, %d content "
                    "rows, %.1f s)", result, verdict.reason, verdict.cases, outcome.train_events,
                    outcome.items_added, outcome.content_rows, time.perf_counter() - started)
        self.metrics.record_cycle(result, time.perf_counter() - started, verdict.candidate, verdict.live,
                                  outcome.items_added, outcome.content_rows)
        return result

    def _content_rows(self, candidate: GRU4Rec, sequences) -> tuple[GRU4Rec, int]:
        """``candidate`` with content rows for the catalogue's unclicked items (content rows on)."""
        return self.content.apply(candidate, sequences, self.catalogue.catalogue.records())

    def publish(self, candidate: GRU4Rec, trained_on: int) -> None:
        """Write ``candidate`` under the models directory atomically and announce it: as a canary
        (the live model stays the workers' until they promote it), or live at once."""
        hyper = {**self.live.hyper, "epochs": self.options.epochs}
        path = self.store.write(candidate, hyperparameters=hyper, metrics={"trained_on_events": trained_on})
        rollout = CANARY if self.settings.canary.share > 0 else FULL
        update = announce(self.producer, self.settings.topics.model_updates, path, self.trust.key, rollout)
        self.base, self._newest = candidate.registry, (update.version, candidate.registry)
        self._newest_path = update.path
        if rollout == CANARY:
            self.canary = update
        else:
            self.live = load_live(path, candidate)
            self.metrics.set_live(update.version)
        self._prune()

    def _prune(self) -> None:
        """Keep the newest checkpoints and the ones a worker may load."""
        protected = [self.live.path]
        protected += [Path(p) for p in (self._newest_path, self.canary.path if self.canary else None) if p]
        for name in self.store.prune(self.settings.trainer.keep_models, protected):
            log.info("removed the checkpoint %s (STREAM_RECS_TRAINER_KEEP_MODELS)", name)

    def follow_announcements(self) -> None:
        """Follow the model-updates topic's rollout: its live model, when trusted, is the one to
        fine-tune (a model published by hand, promoted or rolled back to is the live one for the
        workers: so it is for the trainer); a canary under way; the registry to extend."""
        read = read_rollout(self.settings, self.bootstrap)
        if read is None:
            return
        rollout = read[0]
        self.canary = rollout.candidate
        update = rollout.live
        if update is not None and update.version != self.live.model.version:
            try:
                model, _ = load_update(update, self.trust)
            except Refused as exc:
                log.warning("the announced live model is not followed: %s", exc)
            else:
                self.live = load_live(update.path, model)
                self.metrics.set_live(model.version)
                log.warning("fine-tuning from %s, the announced live model", model.version)
        self.base = self._extended(rollout.newest)
        self._newest_path = rollout.newest.path if rollout.newest is not None else self._newest_path

    def _extended(self, newest: ModelUpdate | None) -> ItemRegistry:
        """The registry a candidate extends: the newest announced one when it extends the live
        model's lineage (a rolled-back candidate's), else the live model's."""
        live = self.live.model.registry
        if newest is not None and (self._newest is None or self._newest[0] != newest.version):
            try:
                self._newest = newest.version, load_update(newest, self.trust)[0].registry
            except Refused as exc:
                log.warning("the newest announcement is not read: %s", exc)
                self._newest = newest.version, live
        registry = self._newest[1] if self._newest is not None else live
        extends = registry.lineage == live.lineage and len(registry.ids) > len(live.ids) \
            and live.conflict_with(registry) is None
        return registry if extends else live

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Read and cycle until ``should_stop()``."""
        while not should_stop():
            self.poll()
            if self.cycle_due():
                self.cycle()

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()
        if self.catalogue is not None:
            self.catalogue.close()
