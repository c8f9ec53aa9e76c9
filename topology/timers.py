"""The worker's periodic work: the event loop's heartbeat, consumer lag and readiness, the count of
stored users, deletion of states idle past the TTL, the re-fetch of records the fetch loop lost,
the writes of the shared counts (popularity, canary) of the clicks partitions the worker holds,
and the canary's judge after each.

Readiness (``stream_recs_ready``) is 1 only with clicks partitions assigned, the broker answering
and no rebalance or table recovery under way; it drops at once when partitions are revoked.

Each runs on an ``app.timer`` whose failures are logged, never fatal: a metric probe or a sweep
that hits a rebalance must not stop the stream (Faust crashes the worker on a timer's exception).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

import faust
from aiokafka.errors import ConsumerStoppedError, KafkaError

from stream_recs.metrics import Metrics

from .app import Topology
from .offsets import RESEEK_EVERY_S, InOrder
from .tables import SharedCounts, StoredUsers, sweep_expired

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0
LAG_INTERVAL_S = 5.0
SESSIONS_INTERVAL_S = 15.0


def start_timers(
    topology: Topology, metrics: Metrics, order: InOrder, stored: StoredUsers, counts: SharedCounts,
    judge_canary: Callable[[], Awaitable[None]],
) -> None:
    """Attach the timers (and the revocation handler that goes with the lag gauges and the
    shared counts) to the app."""
    app, settings = topology.app, topology.settings
    clicks_topic = settings.topics.clicks

    @guarded_timer(app, HEARTBEAT_INTERVAL_S)
    async def heartbeat() -> None:
        """The loop runs timers: it is alive (``health.py`` reads the time of the last beat)."""
        metrics.beat()

    @guarded_timer(app, LAG_INTERVAL_S)
    async def report_lag() -> None:
        """Lag per partition, and readiness: partitions assigned AND the broker answering (an
        outage keeps the assignment but turns ``stream_recs_ready`` to 0 until it ends) AND no
        rebalance or recovery under way."""
        clicks = [tp for tp in app.consumer.assignment() if tp.topic == clicks_topic]
        try:
            highwaters = (
                await asyncio.wait_for(app.consumer.highwaters(*clicks), LAG_INTERVAL_S) if clicks else {}
            )
        except (TimeoutError, KafkaError, ConsumerStoppedError) as exc:
            metrics.set_ready(False)
            log.warning("the broker does not answer (%s): not ready", type(exc).__name__)
            return
        metrics.set_ready(bool(clicks) and not (app.rebalancing or app.in_recovery))
        for tp in clicks:
            try:
                position = await app.consumer.position(tp)
            except KafkaError:  # revoked by a rebalance since the assignment was read
                continue
            if position is not None and tp in highwaters:
                metrics.set_lag(tp.topic, tp.partition, max(0, highwaters[tp] - position))

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set, **_: object) -> None:
        metrics.set_ready(False)  # until the next lag report after the rebalance
        order.revoked(revoked)
        counts.release(tp.partition for tp in revoked if tp.topic == clicks_topic)
        for tp in revoked:
            metrics.clear_lag(tp.topic, tp.partition)

    @guarded_timer(app, RESEEK_EVERY_S)
    async def refetch_lost() -> None:
        order.retry()

    @guarded_timer(app, SESSIONS_INTERVAL_S)
    async def count_sessions() -> None:
        metrics.set_active_sessions(stored.value)

    ttl = settings.serving.state_ttl

    @guarded_timer(app, settings.worker.state_sweep_interval)
    async def expire_idle_states() -> None:
        removed = await sweep_expired(topology.sessions, clicks_topic, time.time(), ttl)
        stored.deleted(removed)
        if removed:
            log.info("deleted %d session states idle for more than %.0f s", removed, ttl)

    @guarded_timer(app, settings.worker.popularity_interval)
    async def save_counts() -> None:
        counts.save()
        await judge_canary()


def guarded_timer(app: faust.App, interval: float):
    """``app.timer`` whose failures are logged, never fatal."""

    def decorate(func):
        @functools.wraps(func)
        async def guarded() -> None:
            try:
                await func()
            except Exception:
                log.exception("%s failed; next try in %.0f s", func.__name__, interval)

        return app.timer(interval)(guarded)

    return decorate
