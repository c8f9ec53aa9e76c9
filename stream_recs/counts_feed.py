"""Every clicks partition's popularity counts, read by every worker from the popularity table's
changelog, outside the consumer group: a worker counts only the partitions it holds, and offers
the counts of all of them (``Popularity.observe``).

The changelog is compacted, about one snapshot per partition, so reading it from its start is
quick; read_committed, so under exactly-once a snapshot counts only once its clicks' offsets
are committed with it.
"""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_recs.config import Security
from stream_recs.kafka_clients import security_kwargs
from stream_recs.popularity import Popularity


async def follow_popularity(
    bootstrap: str, security: Security, topic: str, partitions: int, popularity: Popularity,
    should_stop: Callable[[], bool],
) -> None:
    """Hand every snapshot on ``topic``'s ``partitions`` to ``popularity``, from the start, until
    ``should_stop()``."""
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
                    popularity.observe(tp.partition, record.value)
    finally:
        await consumer.stop()
