"""Counts kept per clicks partition and shared by every worker (the fallback's popularity, the
canary's online counts), read by every worker from the shared-counts table's changelog, outside
the consumer group: a worker counts only the partitions it holds, and sees the counts of all of
them (``observe``).

Each kind of counts has its key prefix in the table (``POPULARITY``: ``<p>``, ``CANARY``:
``canary/<p>``) and the same ownership protocol (``PartitionCounts``). The changelog is
compacted, about one snapshot per key, so reading it from its start is quick; read_committed, so
under exactly-once a snapshot counts only once its clicks' offsets are committed with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_recs.config import Security
from stream_recs.kafka_clients import security_kwargs

POPULARITY, CANARY = "", "canary/"  # the key prefixes of the kinds of counts


class PartitionCounts(Protocol):
    """Counts kept per clicks partition (``popularity.Popularity``, ``canary.CanaryCounts``)."""

    def take(self, partition: int, stored: bytes | None, now: float) -> None:
        """Count ``partition`` from now on, from its stored snapshot (None: none)."""

    def release(self, partitions: Iterable[int]) -> None:
        """Stop counting ``partitions`` (revoked)."""

    def observe(self, partition: int, snapshot: bytes | None) -> None:
        """A snapshot of ``partition`` read from the changelog."""

    def snapshots(self, partitions: Iterable[int]) -> dict[int, bytes]:
        """The snapshots of ``partitions`` due to be written."""


def kind_of(key: bytes | None, kinds: Mapping[str, PartitionCounts]) -> PartitionCounts | None:
    """The counts a changelog key belongs to (None: no known kind)."""
    text = key.decode(errors="replace") if key else ""
    for prefix in sorted(kinds, key=len, reverse=True):
        if text.startswith(prefix) and text[len(prefix):].isdigit():
            return kinds[prefix]
    return None


async def follow_counts(
    bootstrap: str, security: Security, topic: str, partitions: int,
    kinds: Mapping[str, PartitionCounts], should_stop: Callable[[], bool],
) -> None:
    """Hand every snapshot on ``topic``'s ``partitions`` to the counts of its kind, from the
    start, until ``should_stop()``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level="read_committed", **security_kwargs(security),
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not should_stop():
            for tp, records in (await consumer.getmany(*tps, timeout_ms=1000)).items():
                for record in records:
                    counts = kind_of(record.key, kinds)
                    if counts is not None:
                        counts.observe(tp.partition, record.value)
    finally:
        await consumer.stop()
