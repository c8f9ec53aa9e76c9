"""The live part of bench/drift.py: two arms on the real broker, fed the same stream at once.

- ``static``: a ``stream-recs worker`` serving the model trained on the stream's first part, never
  updated;
- ``continuous``: a ``stream-recs worker`` and a ``stream-recs trainer`` (``STREAM_RECS_CANARY_SHARE=0``:
  each candidate that passes the gate serves every user at once).

Each arm has its own app id, topics and data directory (``e2e_run.Run``). The bench process sends
every click to both clicks topics at a fixed rate (event ``ts``: the click's simulated time plus an
offset that puts the whole stream in the past), reads both recommendation topics, polls the
trainer's /metrics for its cycles and samples the trainer's CPU time from /proc.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
from e2e_run import Run

from stream_recs.devkit import free_port, scrape_samples

ARMS = ("static", "continuous")
CYCLES = "stream_recs_trainer_cycles_total"
CYCLE_SUM = "stream_recs_trainer_cycle_seconds_sum"


@dataclass
class Answer:
    """One recommendation as read back: its items, strategy, model version, when produced."""

    items: list[str]
    strategy: str
    version: str | None
    produced: float


@dataclass
class LiveResult:
    """What the live run recorded (wall times are epoch seconds)."""

    sent: np.ndarray  # per click row: when it was sent
    answers: dict[str, dict[int, Answer]]  # arm -> click row -> answer
    cycles: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, result)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (wall, trainer CPU seconds)
    segments: list[tuple[float, float, bool]] = field(default_factory=list)  # serving phase: trainer running?
    offset: float = 0.0  # event ts = simulated ts + offset
    published: list[tuple[float, str, set[str]]] = field(default_factory=list)  # (seen, version, items)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def probe(run: Run, ts: float, timeout: float = 180.0) -> int:
    """Send probe clicks (dated ``ts``: before the stream, so the trainer's window keeps its
    span) until the worker answers one; returns how many were sent."""
    from kafka import KafkaConsumer, KafkaProducer

    consumer = KafkaConsumer(run.topics.recommendations, bootstrap_servers=run.bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    producer = KafkaProducer(bootstrap_servers=run.bootstrap, acks="all")
    deadline, sent = time.monotonic() + timeout, 0
    try:
        while time.monotonic() < deadline and not any(p.poll() is not None for p in run.procs):
            body = {"event_id": f"probe-{sent}", "user_id": "probe", "item_id": "probe", "ts": ts}
            producer.send(run.topics.clicks, key=b"probe", value=orjson.dumps(body))
            producer.flush()
            sent += 1
            if consumer.poll(timeout_ms=1000):
                return sent
    finally:
        producer.close()
        consumer.close()
    raise RuntimeError(f"{run.app_id}: worker not answering\n{run.log_tail()}")


class TrainerWatch(threading.Thread):
    """Polls the trainer's /metrics (cycles and their seconds), its CPU time and its models
    directory (each checkpoint's item ids, when first seen: the trainer prunes old ones), twice a
    second."""

    def __init__(self, port: int, pid: int, models: Path) -> None:
        super().__init__(daemon=True)
        self.port, self.pid, self.models, self.stop = port, pid, models, threading.Event()
        self.cycles: list[tuple[float, float, str]] = []
        self.cpu: list[tuple[float, float]] = []
        self.published: dict[str, tuple[float, set[str]]] = {}

    def look(self) -> None:
        for meta in self.models.glob("[!.]*/meta.json"):
            if meta.parent.name not in self.published:
                try:
                    ids = set(orjson.loads(meta.read_bytes())["item_ids"])
                except (OSError, ValueError):
                    continue
                self.published[meta.parent.name] = (time.time(), ids)

    def run(self) -> None:
        seen: dict[str, float] = {}
        total = 0.0
        while not self.stop.wait(0.5):
            now = time.time()
            try:
                self.cpu.append((now, cpu_seconds(self.pid)))
            except OSError:
                return
            self.look()
            samples = scrape_samples(self.port, timeout=2.0)
            if not samples:
                continue
            spent = samples.get((CYCLE_SUM, frozenset()), total)
            for (name, labels), value in samples.items():
                if name != CYCLES:
                    continue
                result = dict(labels)["result"]
                if value > seen.get(result, 0.0):
                    self.cycles.append((now - (spent - total), now, result))
                seen[result] = value
            total = spent


async def _collect(bootstrap: str, topic: str, into: dict[int, Answer], want: int, done: asyncio.Event):
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        while not (done.is_set() and len(into) >= want):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    body = orjson.loads(record.value)
                    event = body["event_id"]
                    if event.startswith("e"):
                        into[int(event[1:])] = Answer([i["item_id"] for i in body["items"]], body["strategy"],
                                                      body["model_version"], body["produced_ts"])
    finally:
        await consumer.stop()


class Toggle:
    """The serving phase: from click row ``start`` on, the trainer is stopped (SIGSTOP) and let go
    on (SIGCONT) in turns of ``seconds``, stopped first; ``segments`` records (from, to, running)."""

    def __init__(self, pid: int, start: int, seconds: float) -> None:
        self.pid, self.start, self.seconds = pid, start, seconds
        self.segments: list[tuple[float, float, bool]] = []
        self.running, self.since = True, 0.0

    def at(self, row: int) -> None:
        now = time.time()
        if row < self.start or (self.since and now - self.since < self.seconds):
            return
        if self.since:
            self.segments.append((self.since, now, self.running))
        self.running = not self.running
        os.kill(self.pid, signal.SIGCONT if self.running else signal.SIGSTOP)
        self.since = now

    def end(self) -> None:
        if self.since:
            self.segments.append((self.since, time.time(), self.running))
        os.kill(self.pid, signal.SIGCONT)


async def paced(count: int, rate: float, sent: np.ndarray, send: Callable[[int], Awaitable[None]]) -> None:
    """``send(row)`` for rows 0 to ``count - 1``, ``rate`` a second on a fixed schedule (a late row
    goes at once), each row's wall time going into ``sent``."""
    started = time.monotonic()
    for row in range(count):
        delay = started + row / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[row] = time.time()
        await send(row)


async def _feed(bootstrap: str, runs: list[Run], records: list[tuple[bytes, dict]], rate: float,
                sent: np.ndarray, toggle: Toggle) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        async def send(row: int) -> None:
            toggle.at(row)
            key, value = records[row]
            for run in runs:
                await producer.send(run.topics.clicks, key=key, value=value)
            if row % 2000 == 0:
                print(f"  sent {row}/{len(records)}", file=sys.stderr, flush=True)

        await paced(len(records), rate, sent, send)
        await producer.flush()
    finally:
        toggle.end()
        await producer.stop()


async def _stream(bootstrap: str, runs: dict[str, Run], records, rate: float, drain_s: float,
                  toggle: Toggle):
    answers: dict[str, dict[int, Answer]] = {arm: {} for arm in runs}
    sent = np.zeros(len(records))
    done = asyncio.Event()
    readers = [asyncio.create_task(_collect(bootstrap, run.topics.recommendations, answers[arm],
                                            len(records), done)) for arm, run in runs.items()]
    await _feed(bootstrap, list(runs.values()), records, rate, sent, toggle)
    done.set()
    try:
        await asyncio.wait_for(asyncio.gather(*readers), drain_s)
    except TimeoutError:
        print("  not every click was answered in time", file=sys.stderr)
    return sent, answers


def live_run(bootstrap: str, workdir: Path, static_model: Path, records: list[tuple[bytes, dict]],
             offset: float, rate: float, trainer_args: list[str], serve_from: int, segment_s: float,
             drain_s: float = 90.0) -> LiveResult:
    """Both arms fed ``records`` (keyed click values, in order) at ``rate`` clicks/s; from row
    ``serve_from`` on, the serving phase (``Toggle``)."""
    prefix = f"bench-drift-{os.urandom(3).hex()}"
    runs = {arm: Run(bootstrap, prefix, arm, workdir) for arm in ARMS}
    try:
        for run in runs.values():
            run.create_topics()
            run.service("ours", static_model)
        cont = runs["continuous"]
        port = free_port()
        cont.env.update({"STREAM_RECS_CANARY_SHARE": "0", "STREAM_RECS_TRAINER_PORT": str(port)})
        trainer = cont.start([sys.executable, "-m", "stream_recs", "trainer", "--model", str(static_model),
                              "--models-dir", str(cont.dir / "models"),
                              "--window-dir", str(cont.dir / "window"), *trainer_args], "trainer.log")
        for run in runs.values():
            probe(run, offset - 1.0)
        deadline = time.monotonic() + 120
        while not scrape_samples(port) and time.monotonic() < deadline:
            if trainer.poll() is not None:
                raise RuntimeError(f"the trainer exited\n{cont.log_tail()}")
            time.sleep(0.5)
        watch = TrainerWatch(port, trainer.pid, cont.dir / "models")
        watch.start()
        toggle = Toggle(trainer.pid, serve_from, segment_s)
        sent, answers = asyncio.run(_stream(bootstrap, runs, records, rate, drain_s, toggle))
        watch.stop.set()
        watch.join()
        for arm, run in runs.items():
            if any(p.poll() is not None for p in run.procs):
                raise RuntimeError(f"{arm}: a process exited during the run\n{run.log_tail()}")
        return LiveResult(sent, answers, watch.cycles, watch.cpu, toggle.segments, offset,
                          sorted((t, v, ids) for v, (t, ids) in watch.published.items()))
    finally:
        for run in runs.values():
            run.close()
