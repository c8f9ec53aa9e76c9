"""The agents: clicks in, recommendations and dead letters out; model updates; metric timers.

Follow one click: ``recommend`` takes a micro-batch, ``events.decode_event`` validates each record
(rejections go to the dead-letter topic), ``tables.load_states`` fetches the users' states,
``Recommender.begin_batch`` (scoring.py) advances them, ``Ranker`` (ranker_child.py) finds their top-K,
in a child process while the event loop goes on, ``finish_batch`` makes the answers,
``tables.save_states`` writes the states back, and one Recommendation per event is produced,
keyed by user. A record without a key is first re-sent to the clicks topic keyed by its user (the
repartition step: a user's events and state must share a partition); its event id and time are
fixed then, so nothing changes on the way.
Offsets are committed after the batch body (at-least-once: a crash replays the batch; outputs
carry the event id). ``offsets.InOrder`` admits each partition's records once and in offset
order, and only the admitted ones are marked processed (only their acks count); under
exactly-once it asks ``first_record`` whether a gap in the offsets holds committed records. Under
exactly-once, a click's outputs go into its partition's transaction and commits wait for the
batch to end (transactions.py).

With a pseudonymisation key, user ids are replaced by their keyed hash right after decoding
(privacy.py), before state, logs and outputs. A ``forget`` control record deletes the user's state
(a tombstone in the changelog) after the user's earlier clicks of the batch are answered. A timer
deletes states idle for longer than the TTL (``tables.sweep_expired``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Sequence

import faust
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaError

from stream_recs.config import Security
from stream_recs.events import FORGET, Event, Forget, Limits, Rejection, decode_event
from stream_recs.messages import (
    ModelUpdate,
    ModelUpdateError,
    decode_model_update,
    encode_dead_letter,
    encode_event,
    encode_recommendation,
)
from stream_recs.metrics import Metrics
from stream_recs.models import CheckpointError, load_model
from stream_recs.models.checkpoint import read_meta
from stream_recs.privacy import load_pseudonymiser
from stream_recs.ranker_child import Ranker
from stream_recs.scoring import Recommender

from .app import Topology, aiokafka_security
from .offsets import RESEEK_EVERY_S, FirstRecord, InOrder, mark_processed, transactional
from .tables import StoredUsers, forget, load_states, save_states, sweep_expired
from .transactions import BatchGate, output_sender

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0
SESSIONS_INTERVAL_S = 15.0


def wire(
    topology: Topology, recommender: Recommender, metrics: Metrics, bootstrap: str,
    ranking: Ranker | None = None,
) -> None:  # fmt: skip
    """Attach the agents, the model-update watcher and the metric timers to the app. Without
    ``ranking``, batches are ranked in-process."""
    app, settings = topology.app, topology.settings
    ranking = ranking or Ranker(recommender.live_options(), enabled=False)
    w = settings.worker
    limits = Limits(max_record_bytes=w.max_record_bytes)
    pseudonym = load_pseudonymiser(w.pseudonymise_key, w.pseudonymise_key_file)
    order = InOrder(app, first_record(bootstrap, settings.security) if transactional(app) else None)
    send = output_sender(topology)
    gate = BatchGate(app)
    names = settings.topics
    stored = StoredUsers(topology.sessions)

    async def answer(
        valid: list[Event], sources: list, event_of_user: dict, received: float, taken: int
    ) -> None:
        """Step and score ``valid`` (read from the messages ``sources``), store, send the answers."""
        if not valid:
            return
        states, unstored = load_states(topology.sessions, event_of_user)
        pending = recommender.begin_batch(valid, states, now=received)
        ranked = None
        if pending.query is not None:
            ranked = await ranking.top_k(pending)
            metrics.set_ranker_child(ranking.child_ready)
        result = recommender.finish_batch(pending, ranked)
        save_states(topology.sessions, result.states, event_of_user)
        stored.created(unstored)
        produced = time.time()
        for rec, source in zip(result.recommendations, sources, strict=True):
            key, value = rec.user_id.encode(), encode_recommendation(rec, produced)
            await send(names.recommendations, key, value, source)
        metrics.record_batch(result, received_at=received, produced_at=produced, taken=taken)

    async def process(batch: Sequence[faust.types.EventT]) -> None:
        received = time.time()
        valid, sources, event_of_user, rekeyed, answered_upto, admitted = [], [], {}, 0, 0, []
        for index, event in enumerate(batch):
            msg = event.message
            if not order.admit(msg):  # processed already, or past records the fetch loop lost
                continue
            admitted.append(msg)
            decoded = decode_event(
                msg.value, msg.key, topic=msg.topic, partition=msg.partition, offset=msg.offset,
                broker_ts=msg.timestamp, now=received, limits=limits,
            )  # fmt: skip
            if isinstance(decoded, Rejection):
                await send(
                    names.dead_letters, msg.key,
                    encode_dead_letter(
                        decoded.reason, decoded.detail, msg.value, topic=msg.topic,
                        partition=msg.partition, offset=msg.offset, ts=received,
                    ),
                    msg,
                )  # fmt: skip
                metrics.record_dead_letter(decoded.reason)
                continue
            if msg.key is None:  # not keyed by user: its state may live on another partition
                await send(names.clicks, decoded.user_id.encode(), _encode(decoded), msg)
                rekeyed += 1
                continue
            if pseudonym is not None:
                decoded = dataclasses.replace(decoded, user_id=pseudonym(decoded.user_id))
            if isinstance(decoded, Forget):
                if decoded.user_id in event_of_user:  # the user's earlier clicks come first
                    await answer(valid, sources, event_of_user, received, index - answered_upto)
                    valid, sources, event_of_user, answered_upto = [], [], {}, index
                if forget(topology.sessions, decoded.user_id, event):
                    stored.deleted(1)
                metrics.record_forgotten()
                continue
            valid.append(decoded)
            sources.append(msg)
            event_of_user[decoded.user_id] = event
        if rekeyed:
            metrics.record_repartitioned(rekeyed)
        await answer(valid, sources, event_of_user, received, len(batch) - answered_upto)
        mark_processed(admitted)

    @app.agent(topology.clicks, concurrency=1, name="recommend")
    async def recommend(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(w.batch_size, within=w.batch_window):
            async with gate.batch():
                await process(batch)

    @app.task
    async def watch_model_updates() -> None:
        await follow_model_updates(
            bootstrap, settings.security, settings.topics.model_updates, recommender, metrics, app, ranking
        )

    app.task(ranking.start)

    @app.on_before_shutdown.connect
    async def stop_ranking(app: faust.App, **_: object) -> None:
        await ranking.close()

    @_timer(app, LAG_INTERVAL_S)
    async def report_lag() -> None:
        """Lag per partition, and readiness: partitions assigned AND the broker answering (an
        outage keeps the assignment but turns ``stream_recs_ready`` to 0 until it ends)."""
        assigned = app.consumer.assignment()
        clicks = [tp for tp in assigned if tp.topic == settings.topics.clicks]
        try:
            highwaters = (
                await asyncio.wait_for(app.consumer.highwaters(*clicks), LAG_INTERVAL_S) if clicks else {}
            )
        except (TimeoutError, KafkaError, ConsumerStoppedError) as exc:
            metrics.set_ready(False)
            log.warning("the broker does not answer (%s): not ready", type(exc).__name__)
            return
        metrics.set_ready(bool(clicks))
        for tp in clicks:
            try:
                position = await app.consumer.position(tp)
            except KafkaError:  # revoked by a rebalance since the assignment was read
                continue
            if position is not None and tp in highwaters:
                metrics.set_lag(tp.topic, tp.partition, max(0, highwaters[tp] - position))

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set, **_: object) -> None:
        order.revoked(revoked)
        for tp in revoked:
            metrics.clear_lag(tp.topic, tp.partition)

    @_timer(app, RESEEK_EVERY_S)
    async def refetch_lost() -> None:
        order.retry()

    @_timer(app, SESSIONS_INTERVAL_S)
    async def count_sessions() -> None:
        metrics.set_active_sessions(stored.value)

    @_timer(app, w.state_sweep_interval)
    async def expire_idle_states() -> None:
        removed = await sweep_expired(topology.sessions, settings.topics.clicks, time.time(), w.state_ttl)
        stored.deleted(removed)
        if removed:
            log.info("deleted %d session states idle for more than %.0f s", removed, w.state_ttl)


def _timer(app: faust.App, interval: float):
    """``app.timer`` whose failures are logged, never fatal: a metric probe or a sweep that hits a
    rebalance must not stop the stream (Faust crashes the worker on a timer's exception)."""

    def decorate(func):
        @functools.wraps(func)
        async def guarded() -> None:
            try:
                await func()
            except Exception:
                log.exception("%s failed; next try in %.0f s", func.__name__, interval)

        return app.timer(interval)(guarded)

    return decorate


def _encode(decoded: Event | Forget) -> bytes:
    """A validated record, every field explicit, to re-send keyed by its user."""
    if isinstance(decoded, Forget):
        return orjson.dumps({"event_id": decoded.event_id, "user_id": decoded.user_id, "type": FORGET})
    return encode_event(decoded)


def first_record(bootstrap: str, security: Security) -> FirstRecord:
    """``first(tp, offset)``: the offset of the first committed record at or after ``offset``, read
    by a short-lived read_committed consumer (None if none comes within 2 s): under exactly-once it
    tells transaction markers and aborted records from records the fetch loop lost."""

    async def first(tp, offset: int) -> int | None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", **aiokafka_security(security),
        )  # fmt: skip
        part = TopicPartition(tp.topic, tp.partition)
        try:
            await consumer.start()
            consumer.assign([part])
            consumer.seek(part, offset)
            found = (await consumer.getmany(part, timeout_ms=2000, max_records=1)).get(part)
            return found[0].offset if found else None
        finally:
            await consumer.stop()

    return first


async def follow_model_updates(
    bootstrap: str, security: Security, topic: str, recommender: Recommender, metrics: Metrics,
    app: faust.App, ranking: Ranker | None = None,
) -> None:
    """Every worker reads every announcement (no consumer group), starting with the latest one,
    and swaps the model in between batches; a bad announcement keeps the old model."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        **aiokafka_security(security),
    )  # fmt: skip
    tp = TopicPartition(topic, 0)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, max(0, end - 1))
        while not app.should_stop:
            records = await consumer.getmany(tp, timeout_ms=1000)
            for record in records.get(tp, []):
                await apply_model_update(record.value, recommender, metrics, ranking)
    finally:
        await consumer.stop()


async def apply_model_update(
    raw: bytes | None, recommender: Recommender, metrics: Metrics, ranking: Ranker | None = None
) -> bool:
    """Load, verify and swap in the announced checkpoint; False (logged, counted) on failure.
    Loading and preparing (seconds with the approximate index) run off the event loop; then
    ``ranking`` starts a child for the new model (batches are ranked in-process meanwhile)."""
    try:
        update = decode_model_update(raw)
        if update.version == recommender.model_version:
            return True
        model = await asyncio.to_thread(_load_verified, update)
    except (ModelUpdateError, CheckpointError) as exc:
        log.error("model update rejected, the old model keeps serving: %s", exc)
        metrics.record_reload(False)
        return False
    recommender.install(await asyncio.to_thread(recommender.prepare, model))
    metrics.set_model(model.version)
    metrics.record_reload(True)
    log.warning("model %s is live (%d items)", model.version, model.n_items)
    if ranking is not None:
        await ranking.load(update.path, model.version, update.sha256)
    return True


def _load_verified(update: ModelUpdate):
    """The checkpoint at ``update.path``, if its weights are those the announcement names.
    Any failure (also an unreadable or odd path: a file, a NUL byte) is a ``CheckpointError``."""
    try:
        if read_meta(update.path)["weights_sha256"] != update.sha256:
            raise CheckpointError(f"{update.path}: weights sha256 differs from the announced one")
        model = load_model(update.path)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{update.path!r} cannot be read: {exc}") from exc
    if model.version != update.version:
        raise CheckpointError(f"{update.path}: version {model.version} is not the announced {update.version}")
    return model
