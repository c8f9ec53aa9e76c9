"""The Faust application factory: app, topics and tables built from ``Settings``.

Everything Faust-specific about configuration lives here (broker URL and credentials, store,
commit cadence, processing guarantee); the agents in ``agents.py`` only wire logic together.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path

import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from stream_recs.config import Settings, Worker
from stream_recs.kafka_clients import faust_credentials

from .offsets import guard_offset_commits
from .tables import counts_table, sessions_table

RECOVERY_LOGGER = "faust.tables.recovery"  # logged at INFO by FaustWorker


@dataclass
class Topology:
    """The app and the channels the agents read and write."""

    app: faust.App
    settings: Settings
    inputs: faust.TopicT  # clicks and forget requests: co-partitioned, read by one agent
    recommendations: faust.TopicT
    sessions: faust.Table
    counts: faust.Table  # the shared counts per clicks partition (popularity, canary)


def data_dir(settings: Settings) -> Path:
    """Where this worker keeps its tables (RocksDB) between runs."""
    configured = settings.worker.data_dir
    return Path(configured) if configured else settings.home / "worker" / settings.worker.app_id


async def _skip_unemitted_logs() -> None:
    """Once the worker runs, stop Faust, mode and aiokafka from building DEBUG log records.

    The Faust worker leaves the root logger at DEBUG (for its start-up spinner) with WARNING
    output handlers, so these libraries built a log record for every message sent and received,
    a measurable share of the worker's CPU (docs/performance.md), only for the handlers to drop
    it."""
    for name in ("faust", "mode", "aiokafka"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def bound_fetch_wait() -> None:
    """Let the app's ``stream_recs_fetch_max_wait`` (seconds) bound how long the broker may hold
    a fetch of the worker's consumer (Faust fixes it at 1.5 s). Installed once per process.

    That consumer also reads the app's leader-election topic (``<app id>-__assignor-__leader``),
    which never has records, and aiokafka leaves a partition out of a fetch while records fetched
    for it are still unconsumed. So under load a fetch could hold only that idle partition: the
    broker kept it the full wait and no click was fetched meanwhile; each round trip then
    brought a whole wait's worth of clicks, as fast as they came, so a backlog, once formed,
    never drained and every later answer stayed late (docs/performance.md)."""
    if getattr(AIOKafkaConsumerThread, "stream_recs_bounded", False):
        return
    create = AIOKafkaConsumerThread._create_worker_consumer

    def create_bounded(self: AIOKafkaConsumerThread, transport):
        consumer = create(self, transport)
        wait = getattr(self.app, "stream_recs_fetch_max_wait", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = max(1, round(wait * 1000))  # read when it starts
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create_bounded
    AIOKafkaConsumerThread.stream_recs_bounded = True


PRODUCER_BATCH_BYTES = 256 << 10


def producer_batch_bytes(w: Worker) -> int | None:
    """The producer's batch size: the configured one, else 256 KiB under at-least-once. Faust's
    16 KiB batches hold only about a dozen of our recommendation records, so every produce request
    carried few (docs/performance.md). Exactly-once keeps Faust's default (None), the size its
    kill -9 tests are run with (docs/reliability.md)."""
    if w.producer_batch_bytes:
        return w.producer_batch_bytes
    return None if w.processing_guarantee == "exactly_once" else PRODUCER_BATCH_BYTES


GC_THRESHOLDS = (10_000, 50, 100)  # Python's defaults: (700, 10, 10)


async def _tune_gc() -> None:
    """Once the worker runs: exempt the objects start-up built (modules, Faust, aiokafka, torch,
    the model's vocabulary) from garbage collection, and collect the young ones less often.

    With Python's defaults, a full collection rescanned that heap every second or two under load,
    each a long pause (docs/performance.md), and the many small ones ran every 700 new objects,
    which one micro-batch makes several times over. Cyclic garbage is still collected, only
    later."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_app(settings: Settings, bootstrap: str) -> Topology:
    """A configured Faust app with the project's topics and tables."""
    w = settings.worker
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    datadir = data_dir(settings)
    datadir.mkdir(parents=True, exist_ok=True)
    guard_offset_commits()
    bound_fetch_wait()
    app = faust.App(
        w.app_id,
        broker=[f"kafka://{host}" for host in bootstrap.split(",")],
        broker_credentials=faust_credentials(settings.security),
        store=w.store,
        datadir=str(datadir),
        processing_guarantee=w.processing_guarantee,
        broker_commit_interval=w.commit_interval,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        web_enabled=False,
        producer_linger=w.producer_linger,
        producer_max_batch_size=producer_batch_bytes(w),
        producer_acks=-1,
        stream_wait_empty=True,  # a rebalance waits for the batch in flight
        table_standby_replicas=w.standby_replicas,
    )
    app.stream_recs_fetch_max_wait = w.fetch_max_wait
    app.task(_skip_unemitted_logs)
    app.task(_tune_gc)
    topics = settings.topics
    return Topology(
        app=app,
        settings=settings,
        inputs=app.topic(topics.clicks, topics.forget, partitions=settings.partitions, **raw),
        recommendations=app.topic(topics.recommendations, **raw),
        sessions=sessions_table(app, partitions=settings.partitions),
        counts=counts_table(app, partitions=settings.partitions),
    )


class FaustWorker(faust.Worker):
    """Faust's worker, quiet (warnings and errors) except for table recovery, logged at INFO: after
    a rebalance, which changelog partitions it restores, from and to which offsets, and what remains
    (every few seconds), is what tells a slow or stuck restore apart from an idle worker."""

    def __init__(self, app: faust.App) -> None:
        super().__init__(app, loglevel="WARNING", quiet=True)

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        recovery = logging.getLogger(RECOVERY_LOGGER)
        handler = logging.StreamHandler()
        if logger.handlers:
            handler.setFormatter(logger.handlers[0].formatter)
        recovery.addHandler(handler)
        recovery.setLevel(logging.INFO)
        recovery.propagate = False  # its warnings would reach the root's handler a second time
