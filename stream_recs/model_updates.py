"""Model updates: follow the model-updates topic, verify and load each announced checkpoint, swap
it in between two micro-batches.

Every worker reads every announcement (no consumer group), starting with the latest one. An
announcement names a checkpoint directory, its version and the sha256 of its weights
(``messages.ModelUpdate``); ``load_announced`` is the one place a checkpoint is verified and
loaded, by the worker at start-up and on each announcement, and by its ranker child. A bad
announcement is logged and counted (``stream_recs_model_reloads_total{result="failure"}``), and
the old model keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_recs.config import Security
from stream_recs.kafka_clients import security_kwargs
from stream_recs.messages import ModelUpdateError, decode_model_update
from stream_recs.models import CheckpointError, GRU4Rec, load_model
from stream_recs.models.checkpoint import read_meta

if TYPE_CHECKING:  # the ranker child imports load_announced, and needs none of these
    from stream_recs.metrics import Metrics
    from stream_recs.ranker_child import Ranker
    from stream_recs.scoring import Recommender

log = logging.getLogger(__name__)


def load_announced(path: str | Path, version: str | None = None, sha256: str | None = None) -> GRU4Rec:
    """The checkpoint at ``path``, if it is of this ``version`` and its weights have this
    ``sha256`` (each checked when given). Any failure, also an unreadable or odd path (a file, a
    NUL byte), is a ``CheckpointError``."""
    try:
        if sha256 is not None and read_meta(path)["weights_sha256"] != sha256:
            raise CheckpointError(f"{path}: the weights' sha256 is not the announced one")
        model = load_model(path)  # which checks the weights against the sha256 of its meta.json
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path!r} cannot be read: {exc}") from exc
    if version is not None and model.version != version:
        raise CheckpointError(f"{path}: version {model.version} is not the expected {version}")
    return model


async def apply_model_update(
    raw: bytes | None, recommender: Recommender, metrics: Metrics, ranker: Ranker | None = None
) -> bool:
    """Load, verify and swap in the announced checkpoint; False (logged, counted) on failure.
    Loading and preparing (seconds with the approximate index) run off the event loop; then
    ``ranker`` starts a child for the new model (batches are ranked in-process meanwhile)."""
    try:
        update = decode_model_update(raw)
        if update.version == recommender.model_version:
            return True
        model = await asyncio.to_thread(load_announced, update.path, update.version, update.sha256)
    except (ModelUpdateError, CheckpointError) as exc:
        log.error("model update rejected, the old model keeps serving: %s", exc)
        metrics.record_reload(False)
        return False
    recommender.install(await asyncio.to_thread(recommender.prepare, model))
    metrics.set_model(model.version)
    metrics.record_reload(True)
    log.warning("model %s is live (%d items)", model.version, model.n_items)
    if ranker is not None:
        await ranker.load(update.path, model.version, update.sha256)
    return True


async def follow_model_updates(
    bootstrap: str, security: Security, topic: str, recommender: Recommender, metrics: Metrics,
    should_stop: Callable[[], bool], ranker: Ranker | None = None,
) -> None:
    """Apply every announcement on ``topic`` from the latest one on, until ``should_stop()``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **security_kwargs(security)
    )
    tp = TopicPartition(topic, 0)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, max(0, end - 1))
        while not should_stop():
            records = await consumer.getmany(tp, timeout_ms=1000)
            for record in records.get(tp, []):
                await apply_model_update(record.value, recommender, metrics, ranker)
    finally:
        await consumer.stop()
