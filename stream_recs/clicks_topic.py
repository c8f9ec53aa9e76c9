"""The clicks topic read as a training log: what ``train --from-topic`` learns from."""

from __future__ import annotations

from collections import Counter

from stream_recs.datasets import Events, events_from_dicts


def read_kafka_clicks(
    topic: str, bootstrap_servers: str, timeout_s: float = 30.0, skipped: Counter | None = None,
    since: float | None = None, **client_kwargs,
) -> Events:
    """Read a clicks topic's committed records (read_committed: never a transaction that aborted)
    from the beginning, or from the first record appended at or after ``since`` (epoch seconds,
    by broker timestamp), to the end offsets seen at the start.

    Each record is decoded as the worker decodes it (``events.decode_event``: the event contract,
    a missing ts from the broker timestamp). Records it rejects, and forget requests, are left
    out; ``skipped`` (when given) counts them by reason (``forget`` for forget requests).
    """
    import time

    from kafka import KafkaConsumer, TopicPartition

    from stream_recs.events import Event, Forget, decode_event

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None,
        isolation_level="read_committed", **client_kwargs,
    )
    skipped = Counter() if skipped is None else skipped
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        ends = consumer.end_offsets(assigned)
        starts = consumer.offsets_for_times(dict.fromkeys(assigned, int(since * 1000))) if since else {}
        for tp in assigned:
            found = starts.get(tp)
            if since is None:
                consumer.seek_to_beginning(tp)
            else:  # no record that recent: nothing to read there
                consumer.seek(tp, found.offset if found is not None else ends[tp])
        remaining = {tp for tp in assigned if ends[tp] > consumer.position(tp)}
        rows: list[dict] = []
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=500).items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        continue
                    decoded = decode_event(
                        message.value, message.key, topic=tp.topic, partition=tp.partition,
                        offset=message.offset, broker_ts=message.timestamp / 1000.0,
                    )
                    if not isinstance(decoded, Event):
                        skipped["forget" if isinstance(decoded, Forget) else decoded.reason] += 1
                        continue
                    rows.append({"user_id": decoded.user_id, "item_id": decoded.item_id, "ts": decoded.ts,
                                 "session_id": decoded.session_id})
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        if remaining:
            raise TimeoutError(f"could not read {topic!r} to its end within {timeout_s}s")
    finally:
        consumer.close()
    if any(r["session_id"] is None for r in rows):
        for r in rows:
            r.pop("session_id")
    return events_from_dicts(rows)
