"""Model swaps alone: a worker's answer latency while checkpoints are announced every few seconds,
against the turns when none is, with no trainer running. Not in CI.

    .venv/bin/python bench/swaps.py [--every 5] [--grow 10] [--clicks 6000]

It separates what a swap costs the worker (verifying and loading the checkpoint, preparing it,
the ranker child's reload, each user's next click rebuilding the session's hidden state) from what
the trainer's CPU costs it, which bench/drift.py measures together. One worker on the real local
broker serves bench/drift.py's stream (hours 2 on, at ``--rate`` clicks/s, simulated times as
``ts``) from a model trained on its first 2 hours; a chain of children, each warm-started from the
one before with ``--grow`` new items and its weights nudged (a new version, the same lineage, as
the trainer publishes), is announced one every ``--every`` seconds in every other ``--turn``.
Printed: latency (the answer's production time less the send time) by turn, the first 5 s left out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import numpy as np
import orjson
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from drift import HYPER
from drift_eval import train_scratch
from drift_run import _collect, paced, probe
from drift_stream import HOUR, StreamOptions, generate
from e2e_run import Run

from stream_recs.models import GRU4Rec, load_model, save_model
from stream_recs.models.warm_start import warm_start

WARMUP_S = 5.0


def children(root: Path, count: int, grow: int, into: Path) -> list[Path]:
    """``count`` checkpoints, each warm-started from the one before (``root`` first), ``grow``
    new items each, every weight nudged."""
    out, parent = [], root
    for n in range(1, count + 1):
        model = load_model(parent)
        torch.manual_seed(n)
        registry = model.registry.extend([f"new{n}-{j}" for j in range(grow)])
        child = GRU4Rec(registry.ids, hidden_size=model.hidden_size, version=f"swap{n}")
        child.use_registry(registry)
        warm_start(child, model)
        with torch.no_grad():
            for param in child.parameters():
                param.add_(0.01 * torch.randn_like(param))
        parent = save_model(child, into / f"swap{n}")
        out.append(parent)
    return out


async def _run(run: Run, records, rate: float, announce_one, turn: float, every: float):
    from aiokafka import AIOKafkaProducer

    answers, sent, done = {}, np.zeros(len(records)), asyncio.Event()
    reader = asyncio.create_task(_collect(run.bootstrap, run.topics.recommendations, answers,
                                          len(records), done))
    stop, swaps = threading.Event(), []
    started = time.time()

    def swapper() -> None:
        while not stop.is_set():
            if int((time.time() - started) // turn) % 2 == 1 and announce_one():
                swaps.append(time.time())
                stop.wait(every)
            else:
                stop.wait(0.2)

    thread = threading.Thread(target=swapper)
    producer = AIOKafkaProducer(bootstrap_servers=run.bootstrap, linger_ms=5, acks="all")
    await producer.start()
    thread.start()
    try:
        async def send(row: int) -> None:
            key, value = records[row]
            await producer.send(run.topics.clicks, key=key, value=value)

        await paced(len(records), rate, sent, send)
        await producer.flush()
    finally:
        stop.set()
        thread.join()
        await producer.stop()
    done.set()
    await asyncio.wait_for(reader, 90)
    return started, sent, answers, swaps


@click.command()
@click.option("--clicks", default=6000, show_default=True)
@click.option("--rate", default=100.0, show_default=True, help="Clicks/s.")
@click.option("--every", default=5.0, show_default=True, help="Seconds between announcements.")
@click.option("--turn", default=10.0, show_default=True, help="Seconds of a turn with or without them.")
@click.option("--grow", default=10, show_default=True, help="New items in each child.")
def main(clicks, rate, every, turn, grow) -> None:
    from kafka import KafkaProducer

    from stream_recs.cli.kafka import resolve_bootstrap
    from stream_recs.config import load_settings
    from stream_recs.model_updates import announce

    torch.set_num_threads(1)
    print(f"$ .venv/bin/python bench/swaps.py --clicks {clicks} --rate {rate:g} --every {every:g} "
          f"--turn {turn:g} --grow {grow}\n# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    bootstrap = resolve_bootstrap(load_settings(), start=False)
    options = StreamOptions(seed=0)
    hours = 3 + math.ceil(clicks / options.events_per_hour)  # 2 to train on, then the clicks
    events = generate(dataclasses.replace(options, hours=hours)).events
    work = Path(tempfile.mkdtemp(prefix="bench-swaps-"))
    run = None
    try:
        hyper = {**HYPER, "epochs": 2}
        root = save_model(train_scratch(events.take(np.flatnonzero(events.ts < 2 * HOUR)), hyper, "swap0"),
                          work / "models" / "swap0")
        chain = children(root, int(clicks / rate / every) + 2, grow, work / "models")
        offset = time.time() - (hours + 1) * HOUR
        first = int(np.searchsorted(events.ts, 2 * HOUR))
        records = [(e["user_id"].encode(), orjson.dumps({**e, "event_id": f"e{n}", "ts": e["ts"] + offset}))
                   for n, e in enumerate(events.take(np.arange(first, first + clicks)).records())]
        run = Run(bootstrap, "bench-swaps", "w", work)
        run.create_topics()
        run.service("ours", root)
        probe(run, offset - 1.0)
        producer, pending = KafkaProducer(bootstrap_servers=bootstrap, acks="all"), list(chain)

        def announce_one() -> bool:
            if not pending:
                return False
            announce(producer, run.topics.model_updates, pending.pop(0), None)
            return True

        try:
            started, sent, answers, swaps = asyncio.run(_run(run, records, rate, announce_one, turn, every))
        finally:
            producer.close()
        rows = np.array(sorted(answers))
        latency = np.array([(answers[r].produced - sent[r]) * 1e3 for r in rows])
        since = sent[rows] - started
        with_swaps = (since // turn).astype(int) % 2 == 1
        versions = len({answers[r].version for r in rows})
        print(f"{len(rows)} of {clicks} clicks answered at {rate:g}/s; {len(swaps)} announcements "
              f"(one every {every:g} s in every other {turn:g} s turn, {grow} new items each); "
              f"{versions} model versions answered")
        print("turn             answers  p50_ms  p90_ms  p99_ms")
        for label, chosen in (("no announcement", ~with_swaps), ("announcements", with_swaps)):
            got = latency[chosen & (since > WARMUP_S)]
            p50, p90, p99 = np.percentile(got, [50, 90, 99])
            print(f"{label:<16} {len(got):>7}  {p50:6.1f}  {p90:6.1f}  {p99:6.1f}")
    finally:
        if run is not None:
            run.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
