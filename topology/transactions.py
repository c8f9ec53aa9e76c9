"""Exactly-once: what a click makes (its answer, dead letter, re-keyed copy, state) commits in
one Kafka transaction with the click's offset, or not at all. Corrections to faust-streaming 0.15.

Faust runs one transactional producer per input partition and, on a timer, commits each one's
transaction with the partition's acknowledged offsets. Two gaps let answers commit apart from
their clicks' offsets (tests/fault/test_crash.py: ``kill -9``, a read_committed consumer):

1. ``Topic.send`` picks the transaction by the record's own partition as the worker's consumer
   knows it, and that consumer knows no partitions of topics it does not read: answers and dead
   letters went out outside any transaction (the log segments showed non-transactional batches),
   and every click replayed after a crash was answered twice (docs/reliability.md).
   ``output_sender`` sends into the transaction of the click's partition instead.
2. The commit timer runs whenever the agent yields, also in the middle of a batch: the answers
   sent so far commit, their clicks' offsets do not (acks come after the batch). And the batch's
   changelog writes wait in Faust's producer buffer, so they could reach the next transaction.
   ``BatchGate`` keeps commits between batches and flushes that buffer first (Faust's flush
   gives up when no record leaves the buffer for 0.1 s: a stalled producer is not waited out).
"""

from __future__ import annotations

import asyncio
import contextlib

import faust
from faust.transport.consumer import Consumer

from .app import Topology
from .offsets import transactional


def output_sender(topology: Topology):
    """``send(topic, key, value, source)`` for what the click ``source`` (its Faust message) makes.

    At-least-once: straight to the app's producer, which Faust flushes before every offset commit
    (``Topic.send`` builds futures, sensor calls and callbacks per record on the way).
    Exactly-once: into the transaction of the source's partition, the one that commits its offset."""
    app = topology.app
    if not transactional(app):
        return lambda topic, key, value, source: app.producer.send(topic, key, value, None, None, None)

    def send(topic: str, key: bytes | None, value: bytes, source: faust.types.Message):
        transaction = f"{app.conf.id}-{app.assignor.group_for_topic(source.topic)}-{source.partition}"
        return app.producer.send(topic, key, value, None, None, None, transactional_id=transaction)

    return send


class BatchGate:
    """``async with gate.batch():`` around a batch's processing; Faust's offset commits wait for
    the batch to end. The batch's acks follow its body with no yield in between (Faust's
    ``take_events`` acks as it resumes), so a commit sees all of a batch or none of it.
    Exactly-once only: under at-least-once ``batch()`` does nothing and commits are not held."""

    def __init__(self, app: faust.App) -> None:
        self._lock = asyncio.Lock() if transactional(app) else None
        if self._lock is not None:
            _hold_commits()
            app.stream_recs_batch_gate = self._lock

    def batch(self) -> contextlib.AbstractAsyncContextManager:
        return self._lock if self._lock is not None else contextlib.nullcontext()


def _hold_commits() -> None:
    """Make Faust's consumer commit only through the app's gate (installed once per process)."""
    if getattr(Consumer, "stream_recs_gated", False):
        return
    force_commit = Consumer.force_commit

    async def gated_commit(self: Consumer, topics=None, start_new_transaction: bool = True) -> bool:
        gate = getattr(self.app, "stream_recs_batch_gate", None)
        if gate is None:
            return await force_commit(self, topics, start_new_transaction=start_new_transaction)
        async with gate:
            await self.app.producer.buffer.flush()  # the changelog writes join their transaction
            return await force_commit(self, topics, start_new_transaction=start_new_transaction)

    Consumer.force_commit = gated_commit
    Consumer.stream_recs_gated = True
