"""Forget requests arrive on a topic of their own, yet act after the user's earlier clicks.

The forget topic has the clicks topic's partition count and the same key (the user), so Faust's
assignor gives partition p of both to one worker, whose sessions table holds partition p's
states. Records of two topics come in no agreed order, though: a request could be handled
before clicks the user sent earlier, still unread on clicks, which would then rebuild the state.
So a request waits for a **barrier**: the end offset of its clicks partition when the worker
first looked at the request. Every click appended before the request lies below it. The request
is handled once the worker has admitted the clicks partition up to the barrier (those clicks are
answered first, in the same batch or an earlier one), and is deferred until then
(``InOrder.defer``: its partition is sought back to it, and the requests behind it wait too).
A click appended after the request but below the barrier is forgotten with it: the request
takes effect when it is handled, not when it was sent.

A request names its user, so it must leave the forget topic within ``forget_within`` like every
other record; yet Kafka rolls (and so deletes) a segment by time only on an append, and forget
requests may stop coming for days. So every ``forget_within / 8`` each worker deletes the
requests of its partitions below their committed offsets: handled ones (``purge_handled``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import faust
from faust.types import TP, Message

from stream_recs.config import Settings
from stream_recs.kafka_clients import client_kwargs

from .app import Topology
from .offsets import InOrder
from .timers import guarded_timer

log = logging.getLogger(__name__)


def barrier_passed(barrier: int, next_offset: int | None, log_start: int) -> bool:
    """Has a clicks partition been admitted up to ``barrier``? ``next_offset``: the next offset
    the worker will admit (None before it admitted or committed any: it starts at ``log_start``)."""
    return (log_start if next_offset is None else next_offset) >= barrier


class ForgetBarriers:
    """The barrier of each forget request seen (kept until it is handled, so that a request
    deferred again and again waits for the same clicks, not for the newest ones)."""

    def __init__(self, app: faust.App, order: InOrder, clicks_topic: str) -> None:
        self._app, self._order, self._clicks = app, order, clicks_topic
        self._barriers: dict[tuple[TP, int], int] = {}

    async def ready(self, message: Message) -> bool:
        """May the forget request ``message`` be handled now? If not, it is deferred."""
        clicks = TP(self._clicks, message.partition)
        key = (message.tp, message.offset)
        barrier = self._barriers.get(key)
        if barrier is None:
            barrier = self._barriers[key] = (await self._app.consumer.highwaters(clicks))[clicks]
        next_offset = self._order.expected(clicks)
        log_start = 0
        if next_offset is None:
            log_start = (await self._app.consumer.earliest_offsets(clicks))[clicks]
        if barrier_passed(barrier, next_offset, log_start):
            del self._barriers[key]
            return True
        self._order.defer(message)
        return False

    def revoked(self, tps) -> None:
        """Partitions taken away: their requests will be read again by their next owner."""
        gone = set(tps)
        for key in [key for key in self._barriers if key[0] in gone]:
            del self._barriers[key]


def purge_handled(settings: Settings, bootstrap: str, committed: Mapping[TP, int]) -> None:
    """Delete each forget partition's records below its committed offset (they are handled)."""
    from kafka import KafkaAdminClient, TopicPartition

    if not committed:
        return
    admin = KafkaAdminClient(**client_kwargs(settings, bootstrap))
    try:
        admin.delete_records({TopicPartition(tp.topic, tp.partition): offset
                              for tp, offset in committed.items()})
    finally:
        admin.close()


def start_forgetting(topology: Topology, order: InOrder, bootstrap: str) -> ForgetBarriers:
    """The barriers of the recommend agent's forget requests, released with their partitions,
    and the timer that purges the handled requests."""
    app, settings = topology.app, topology.settings
    topic = settings.topics.forget
    barriers = ForgetBarriers(app, order, settings.topics.clicks)
    purged: dict[TP, int] = {}

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set, **_: object) -> None:
        barriers.revoked(revoked)

    @guarded_timer(app, settings.forget_within / 8)
    async def purge_forget_requests() -> None:
        committed = {tp: offset for tp, offset in app.consumer._committed_offset.items()
                     if tp.topic == topic and offset and offset > purged.get(tp, 0)}
        await asyncio.to_thread(purge_handled, settings, bootstrap, committed)
        purged.update(committed)
        if committed:
            log.info("deleted the handled forget requests below offsets %s",
                     {tp.partition: offset for tp, offset in committed.items()})

    return barriers
