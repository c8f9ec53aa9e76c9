"""Bench-only processes for bench/e2e.py: the two alternatives we are compared with, and the
separate consumer that measures what comes out.

    python bench/services.py ceiling            # forward each click to the output topic
    python bench/services.py naive --model DIR  # one event at a time, GRU over the whole history
    python bench/services.py consume --topic T --count N --out results.json

The services read their topics, app id and data directory from the same ``STREAM_RECS_*``
variables as ``stream-recs worker`` and are built by the same ``create_app`` (same broker,
producer and consumer settings, same raw serialisation). ``ceiling`` does no work: it takes the
same micro-batches as the worker, parses each click (orjson) and forwards it. ``naive`` is what a
tutorial service does: per event, decode and validate, append the item to the user's history (kept
in a Python dict, which favours it: no store round trip), run the GRU over that whole history
(up to ``history_len`` items) from the zero state, score every item, mask the history, top-K
(``devkit.naive_top_k``), and send one recommendation.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import orjson


def _topology():
    from stream_recs.cli.kafka import resolve_bootstrap
    from stream_recs.config import load_settings
    from stream_recs.topology.app import create_app

    settings = load_settings()
    return create_app(settings, resolve_bootstrap(settings, start=False))


def _run(app) -> None:
    import faust

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


@click.group()
def main() -> None:
    """Bench-only services."""


@main.command()
def ceiling() -> None:
    """Forward every click, parsed and re-serialised, to the recommendations topic."""
    topology = _topology()
    w, out = topology.settings.worker, topology.recommendations

    @topology.app.agent(topology.inputs, concurrency=1, name="forward")
    async def forward(stream) -> None:
        async for batch in stream.take_events(w.batch_size, within=w.batch_window):
            for event in batch:
                msg = event.message
                await out.send(key=msg.key, value=orjson.dumps(orjson.loads(msg.value)))

    _run(topology.app)


@main.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--histories", "histories_path", type=click.Path(exists=True, dir_okay=False),
              help="JSON {user: [item ids]}: the users' earlier clicks (returning users).")
def naive(model_dir, histories_path) -> None:
    """Per event: GRU over the user's whole recent history, full scoring, top-K, send."""
    import torch

    from stream_recs.devkit import naive_top_k
    from stream_recs.events import Rejection, decode_event
    from stream_recs.messages import RecItem, Recommendation, encode_recommendation
    from stream_recs.models import load_model

    topology = _topology()
    w, out = topology.settings.serving, topology.recommendations
    torch.set_num_threads(topology.settings.worker.torch_threads)
    model = load_model(model_dir).eval()
    histories: dict[str, list[int]] = {}
    if histories_path:
        for user, items in orjson.loads(Path(histories_path).read_bytes()).items():
            histories[user] = [model.item_index(i) for i in items][-w.history_len :]

    @topology.app.agent(topology.inputs, concurrency=1, name="naive")
    async def serve(stream) -> None:
        async for event in stream.events():
            msg = event.message
            decoded = decode_event(msg.value, msg.key, topic=msg.topic, partition=msg.partition,
                                   offset=msg.offset, broker_ts=msg.timestamp)
            if isinstance(decoded, Rejection):
                continue
            history = histories.setdefault(decoded.user_id, [])
            index = model.item_index(decoded.item_id)
            if index is not None:
                history.append(index)
                del history[: -w.history_len]
            if not history:
                continue
            values, top = naive_top_k(model, history, w.k)
            items = tuple(RecItem(model.item_ids[i], v, None)
                          for v, i in zip(values.tolist(), top.tolist(), strict=True))
            rec = Recommendation(decoded.event_id, decoded.user_id, items, "model", model.version, decoded.ts)
            await out.send(key=msg.key, value=encode_recommendation(rec, time.time()))

    _run(topology.app)


@main.command()
@click.option("--bootstrap", required=True)
@click.option("--topic", required=True)
@click.option("--count", type=int, required=True, help="Stop after this many records.")
@click.option("--timeout", type=float, default=600.0, help="Stop after this many seconds in all.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False))
def consume(bootstrap, topic, count, timeout, out_path) -> None:
    """Read ``topic`` from the start; write [received, record timestamp, event ts] per record.

    aiokafka, not kafka-python: it costs a fraction of the CPU per record, and this process
    shares the cores with the service it measures."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def read() -> list[tuple[float, float, float]]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
            fetch_max_wait_ms=5,
        )
        rows: list[tuple[float, float, float]] = []
        deadline = time.monotonic() + timeout
        await consumer.start()
        try:
            while len(rows) < count and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    received = time.time()
                    for record in records:
                        body = orjson.loads(record.value)
                        event_ts = body.get("event_ts", body.get("ts"))
                        rows.append((received, record.timestamp / 1000.0, event_ts))
        finally:
            await consumer.stop()
        return rows[:count]

    rows = asyncio.run(read())
    with open(out_path, "wb") as f:
        f.write(orjson.dumps(rows))


if __name__ == "__main__":
    main()
