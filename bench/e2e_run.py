"""One service run of bench/e2e.py on the broker: its own topics, consumer group, data directory and
processes (``Run``), and what it is fed: synthetic click records, sent at a rate, and the states of
returning users written to the sessions changelog."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import orjson

from stream_recs.config import Topics
from stream_recs.devkit import free_port

HERE = Path(__file__).resolve().parent
SESSION_SPAN_DAYS = 0.05  # 72 simulated minutes


def click_records(n_items: int, n_events: int, seed: int = 0) -> list[tuple[bytes, dict]]:
    """Synthetic click sessions over items i0..i{n-1}, in time order, keyed by user, one user per
    ten clicks.

    Interleaved as in production: the sessions start within ``SESSION_SPAN_DAYS`` and overlap, so
    consecutive clicks come from many users. Spread over the generator's default 30 days, the
    sessions would replay one after another, a few users clicking many times in a row, which would
    spare the state store most of its reads and writes and cost the model extra GRU steps."""
    from stream_recs.datasets import synthetic_sessions

    events = synthetic_sessions(n_users=max(500, n_events // 10), n_items=n_items, n_events=n_events,
                                seed=seed, days=SESSION_SPAN_DAYS)
    return [(e["user_id"].encode(), e) for e in events.records()]


class Run:
    """One service run: unique topics, group and data directory; its processes; the cleanup."""

    def __init__(self, bootstrap: str, prefix: str, name: str, workdir: Path) -> None:
        self.bootstrap = bootstrap
        self.app_id = f"{prefix}-{name}-{uuid.uuid4().hex[:6]}"
        self.topics = Topics.tagged(self.app_id)
        self.dir = workdir / self.app_id
        self.dir.mkdir(parents=True)
        self.procs: list[subprocess.Popen] = []
        self.metrics_port = free_port()
        self.env = {
            **os.environ, "STREAM_RECS_BOOTSTRAP_SERVERS": self.bootstrap,
            "STREAM_RECS_APP_ID": self.app_id, "STREAM_RECS_DATA_DIR": str(self.dir / "data"),
            "STREAM_RECS_METRICS_PORT": str(self.metrics_port),
            **self.topics.env(),
        }

    def create_topics(self) -> None:
        from stream_recs.config import Settings
        from stream_recs.topology.topics import apply_topics, topic_specs

        settings = Settings(bootstrap_servers=self.bootstrap, topics=self.topics)
        apply_topics(settings, self.bootstrap, topic_specs(settings, app_id=self.app_id))

    def start(self, args: list[str], log: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            args, env=self.env, cwd=HERE.parent, stdout=(self.dir / log).open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def service(self, kind: str, model: Path | None, histories: dict | None = None) -> subprocess.Popen:
        if kind.startswith("ours"):
            args = [sys.executable, "-m", "stream_recs", "worker", "--model", str(model)]
        else:
            args = [sys.executable, str(HERE / "services.py"), kind]
            if kind != "ceiling":
                args += ["--model", str(model)]
            if histories:
                path = self.dir / "histories.json"
                path.write_bytes(orjson.dumps(histories))
                args += ["--histories", str(path)]
        return self.start(args, f"{kind}.log")

    def consumer(self, count: int, timeout: float) -> tuple[subprocess.Popen, Path]:
        out = self.dir / "consumed.json"
        args = [sys.executable, str(HERE / "services.py"), "consume", "--bootstrap", self.bootstrap,
                "--topic", self.topics.recommendations, "--count", str(count), "--timeout", str(timeout),
                "--out", str(out)]
        return self.start(args, "consumer.log"), out

    def wait_serving(self, timeout: float = 120.0) -> int:
        """Send probe clicks until the service answers one; returns how many were sent (each is
        answered once, before the measured events, and excluded from the percentiles)."""
        from kafka import KafkaConsumer, KafkaProducer

        consumer = KafkaConsumer(self.topics.recommendations, bootstrap_servers=self.bootstrap,
                                 auto_offset_reset="earliest", enable_auto_commit=False)
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        deadline, sent = time.monotonic() + timeout, 0
        try:
            while time.monotonic() < deadline and not any(p.poll() is not None for p in self.procs):
                probe = {"event_id": f"probe-{sent}", "user_id": "probe", "item_id": "i0", "ts": time.time()}
                producer.send(self.topics.clicks, key=b"probe", value=orjson.dumps(probe))
                producer.flush()
                sent += 1
                if consumer.poll(timeout_ms=1000):
                    return sent
        finally:
            producer.close()
            consumer.close()
        raise RuntimeError(f"{self.app_id}: service not answering\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(f.read_text(errors="replace")[-2000:] for f in self.dir.glob("*.log"))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            mine = [t for t in admin.list_topics() if t.startswith(self.app_id)]
            if mine:
                admin.delete_topics(mine)
        finally:
            admin.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for(proc: subprocess.Popen, run: Run, timeout: float) -> None:
    """Until ``proc`` (the consumer) exits; fails early when another process of the run died."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if any(p.poll() is not None for p in run.procs if p is not proc):
            raise RuntimeError(f"{run.app_id}: a service exited\n{run.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{run.app_id}: no result in {timeout:.0f} s\n{run.log_tail()}")
        time.sleep(0.2)


async def produce_at_rate(bootstrap: str, topic: str, records: list[tuple[bytes, dict]],
                          rate: float | None = None) -> float:
    """Send ``records`` at ``rate`` per second (None: as fast as they go), each stamped with its
    send time as ``ts``; returns the rate achieved. Paced in 1 ms ticks, every record due is sent
    at each tick. aiokafka, not kafka-python: it costs a fraction of the CPU per record, on the
    cores the service uses."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        started, sent = time.monotonic(), 0
        while sent < len(records):
            elapsed = time.monotonic() - started
            due = len(records) if rate is None else min(len(records), int(elapsed * rate) + 1)
            for key, event in records[sent:due]:
                await producer.send(topic, key=key, value=orjson.dumps({**event, "ts": time.time()}))
            sent = due
            if sent < len(records):
                await asyncio.sleep(max(0.001, started + sent / rate - time.monotonic()))
        await producer.flush()
        return len(records) / (time.monotonic() - started)
    finally:
        await producer.stop()


def returning_histories(records, model_dir: Path, history: int, seed: int = 0) -> dict[str, list[str]]:
    """``history`` random item ids per user of ``records`` (seeded: the same for every service)."""
    from stream_recs.models.checkpoint import read_meta

    item_ids = read_meta(model_dir)["item_ids"]
    users = sorted({event["user_id"] for _, event in records})
    picks = np.random.default_rng(seed).integers(len(item_ids), size=(len(users), history))
    return {user: [item_ids[i] for i in row] for user, row in zip(users, picks, strict=True)}


async def produce_states(bootstrap: str, run: Run, model_dir: Path, records, histories) -> None:
    """Write to the run's sessions changelog the state each user has after its ``histories``
    clicks, as the worker's ``Recommender`` builds it, keyed and partitioned like the clicks."""
    from aiokafka import AIOKafkaProducer

    from stream_recs.events import Event
    from stream_recs.models import load_model
    from stream_recs.scoring import Recommender
    from stream_recs.topology.topics import changelog_topic

    recommender = Recommender(load_model(model_dir))  # the worker's default options
    session = {}
    for _, event in records:
        session.setdefault(event["user_id"], event.get("session_id"))
    users, now = sorted(histories), time.time()
    length = len(histories[users[0]])  # the same for every user
    states: dict = {}
    for start in range(0, len(users), 256):  # 256 users per micro-batch, one click each
        part = users[start : start + 256]
        for j in range(length):
            ts = now - 60 - length + j
            events = [Event(f"warm-{u}-{j}", u, histories[u][j], "click", ts, session[u]) for u in part]
            states.update(recommender.step_batch(events, states, now).states)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        for user, state in states.items():
            await producer.send(changelog_topic(run.app_id), key=user.encode(), value=state.encode())
        await producer.flush()
    finally:
        await producer.stop()
