"""The catalogue in the workers: every worker's own copy of the whole ``items`` topic, and the
dead letters of its bad records, each sent once.

- ``follow_catalogue`` reads the compacted topic from its start, outside any consumer group, into
  a ``catalogue.Catalogue`` (the topic is the table: a global table of our own, not Faust's,
  whose global tables can miss records fetched after their recovery, faust-streaming issue 212).
  Bad records are skipped there.
- ``catalogue_intake`` reads it in a consumer group of its own (``<app id>-catalogue``), so one
  worker takes each record: a bad one goes to the dead-letter topic with its reason, and the
  group's committed offsets keep a restart from sending it again.
- ``read_catalogue`` reads it once, for a command; ``CatalogueReader`` follows it without an
  event loop (the trainer, for the content rows of items without clicks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream_recs.catalogue import Catalogue, decode_item
from stream_recs.config import Security, Settings
from stream_recs.events import Rejection
from stream_recs.kafka_clients import client_kwargs, read_to_end, security_kwargs
from stream_recs.messages import encode_dead_letter

log = logging.getLogger(__name__)

POLL_MS = 1000
GROUP_SUFFIX = "-catalogue"


async def follow_catalogue(
    bootstrap: str, security: Security, topic: str, catalogue: Catalogue, on_change: Callable[[], None],
    should_stop: Callable[[], bool],
) -> None:
    """Apply every record of ``topic`` to ``catalogue``, from the start, until ``should_stop()``;
    ``on_change()`` after each poll that applied a record."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                **security_kwargs(security))
    tp = TopicPartition(topic, 0)  # one partition (``topics.py``)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        while not should_stop():
            applied = False
            for record in (await consumer.getmany(tp, timeout_ms=POLL_MS)).get(tp, []):
                applied = _apply(catalogue, record) or applied
            if applied:
                on_change()
    finally:
        await consumer.stop()


async def catalogue_intake(
    bootstrap: str, security: Security, topic: str, app_id: str, dead_letters: str,
    on_rejected: Callable[[str], None], should_stop: Callable[[], bool],
) -> None:
    """Dead-letter each bad record of ``topic`` once (``on_rejected(reason)`` counts it), in the
    group ``<app_id>-catalogue``, until ``should_stop()``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=app_id + GROUP_SUFFIX,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                **security_kwargs(security))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **security_kwargs(security))
    await consumer.start()
    await producer.start()
    try:
        while not should_stop():
            batches = await consumer.getmany(timeout_ms=POLL_MS)
            for tp, records in batches.items():
                for record in records:
                    item = decode_item(record.value, record.key)
                    if isinstance(item, Rejection):
                        value = encode_dead_letter(item.reason, item.detail, record.value,
                                                   topic=tp.topic, partition=tp.partition,
                                                   offset=record.offset, ts=time.time())
                        await producer.send_and_wait(dead_letters, value, key=record.key)
                        on_rejected(item.reason)
                        log.warning("catalogue record %s:%d:%d dead-lettered (%s): %s", tp.topic,
                                    tp.partition, record.offset, item.reason, item.detail)
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def read_catalogue(settings: Settings, bootstrap: str) -> Catalogue:
    """The catalogue the items topic holds now (for commands: ``items set``, the demo)."""
    catalogue = Catalogue()
    records, _ = read_to_end(settings, bootstrap, settings.topics.items)
    for record in records:
        _apply(catalogue, record)
    return catalogue


class CatalogueReader:
    """The items topic followed into ``catalogue`` by a process without an event loop (the
    trainer): from the start, outside any consumer group; bad records are skipped (the workers
    dead-letter them). Without the topic, the catalogue stays empty."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.catalogue = Catalogue()
        self._consumer = KafkaConsumer(**client_kwargs(settings, bootstrap), enable_auto_commit=False)
        if self._consumer.partitions_for_topic(settings.topics.items):
            tp = TopicPartition(settings.topics.items, 0)  # one partition (``topics.py``)
            self._consumer.assign([tp])
            self._consumer.seek_to_beginning(tp)

    def update(self) -> int:
        """Apply what the broker has fetched (no waiting); returns the records applied."""
        if not self._consumer.assignment():
            return 0
        applied = 0
        while batches := self._consumer.poll(timeout_ms=0):
            applied += sum(_apply(self.catalogue, r) for records in batches.values() for r in records)
        return applied

    def close(self) -> None:
        self._consumer.close()


def _apply(catalogue: Catalogue, record) -> bool:
    """Apply one record of the items topic (a tombstone removes the entry); False when bad."""
    item = decode_item(record.value, record.key)
    if isinstance(item, Rejection):
        return False
    catalogue.apply(item.item_id if item is not None else record.key.decode(errors="replace"), item)
    return True
