"""Test harness for end-to-end tests: real ``stream-recs worker`` processes on the real broker,
each test with its own topics, consumer group, data directory and metrics port."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import torch
from kafka import KafkaConsumer, KafkaProducer

from stream_recs.config import Topics
from stream_recs.devkit import free_port, scrape_samples, stop_process
from stream_recs.models import GRU4Rec, load_model, save_model
from stream_recs.models.warm_start import warm_start

N_ITEMS = 300


def make_model(path: Path, version: str, seed: int, hidden: int = 16, seen_at: int = 0) -> Path:
    """A small, randomly initialised (hence deterministic) checkpoint over items i0..i299; with
    ``seen_at``, each item registered as last clicked then (else: never clicked)."""
    torch.manual_seed(seed)
    model = GRU4Rec([f"i{n}" for n in range(N_ITEMS)], hidden_size=hidden, version=version)
    if seen_at:
        model.use_registry(model.registry.seen(dict.fromkeys(model.item_ids, seen_at)))
    return save_model(model, path)


def make_child(path: Path, parent: Path, version: str, new_items: list[str], seed: int) -> Path:
    """A checkpoint warm-started from ``parent``'s, its item registry extended by ``new_items``
    (randomly initialised rows)."""
    old = load_model(parent)
    torch.manual_seed(seed)
    registry = old.registry.extend(new_items)
    model = GRU4Rec(registry.ids, hidden_size=old.hidden_size, version=version)
    model.use_registry(registry)
    warm_start(model, old)
    return save_model(model, path)


def replayed_top_k(model: GRU4Rec, items: list[str], k: int, mask: int) -> list[str]:
    """The top ``k`` a worker serves after ``items`` (the state's history, oldest first): the
    model stepped over them with the float16 rounding of a stored hidden state, the last ``mask``
    items excluded."""
    hidden = model.init_hidden(1)
    for item in items:
        hidden = model.step(hidden, torch.tensor([model.item_index(item)])).half().float()
    scores = model.score(hidden)[0].clone()
    scores[[model.item_index(i) for i in items[-mask:]]] = float("-inf")
    return [model.item_ids[i] for i in torch.topk(scores, k).indices.tolist()]


def numbered_clicks(start: int, count: int, users: int) -> list[dict]:
    """Clicks ``e<start>`` .. over items i0..i299, one of ``users`` users each in turn."""
    now = time.time()
    return [
        {"event_id": f"e{n}", "user_id": f"u{n % users}", "item_id": f"i{(n * 7) % N_ITEMS}", "ts": now}
        for n in range(start, start + count)
    ]


@dataclasses.dataclass
class Stream:
    """One test's topics and the environment that points workers and CLI commands at them."""

    bootstrap: str
    topics: Topics
    env: dict[str, str]

    def produce(self, records: list[tuple[bytes | None, bytes]], topic: str | None = None) -> None:
        """Send ``records`` (key, value) to ``topic`` (the clicks topic by default)."""
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks="all")
        for key, value in records:
            producer.send(topic or self.topics.clicks, key=key, value=value)
        producer.flush()
        producer.close()

    def produce_events(self, events: list[dict]) -> None:
        self.produce([(e["user_id"].encode(), orjson.dumps(e)) for e in events])

    def consume(
        self, topic: str, count: int, timeout_s: float = 90.0, settle_s: float = 2.0,
        isolation_level: str = "read_uncommitted",
    ) -> list:
        """Read ``topic`` from the start until ``count`` records arrived (and ``settle_s`` passed
        without more: extra records would be duplicates) or the timeout ends."""
        return self._read(topic, lambda records: len(records) >= count, timeout_s, settle_s,
                          isolation_level)

    def answers(self, topic: str, event_ids: set[str], timeout_s: float = 90.0) -> list[dict]:
        """Read recommendations from ``topic`` until every one of ``event_ids`` has one (a count
        would stop early when a replay repeated some) or the timeout ends; decoded, in order."""
        seen: set[str] = set()
        decoded: list[dict] = []

        def done(records: list) -> bool:
            for record in records[len(decoded):]:
                decoded.append(orjson.loads(record.value))
                seen.add(decoded[-1]["event_id"])
            return event_ids <= seen

        self._read(topic, done, timeout_s, settle_s=2.0)
        return decoded

    def _read(self, topic: str, done, timeout_s: float, settle_s: float,
              isolation_level: str = "read_uncommitted") -> list:
        """Read ``topic`` from the start until ``done(records)`` and ``settle_s`` passed without
        more, or the timeout ends."""
        consumer = KafkaConsumer(
            topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
            enable_auto_commit=False, consumer_timeout_ms=int(settle_s * 1000),
            isolation_level=isolation_level,
        )
        records, deadline = [], time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                before = len(records)
                records.extend(consumer)  # returns after settle_s without a message
                if done(records) and len(records) == before:
                    break
        finally:
            consumer.close()
        return records

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "stream_recs", *args], env=self.env, capture_output=True,
            text=True, timeout=timeout,
        )


class Worker:
    """A ``stream-recs worker`` subprocess with its own data dir and metrics port; ``module``: the
    one run with ``python -m`` (a test's variant of the CLI)."""

    def __init__(
        self, stream: Stream, data_dir: Path, model: Path | None = None, module: str = "stream_recs"
    ) -> None:
        self.stream, self.data_dir, self.model, self.module = stream, data_dir, model, module
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.with_suffix(f".{uuid.uuid4().hex[:6]}.log")

    def start(self, timeout_s: float = 90.0) -> Worker:
        args = [sys.executable, "-m", self.module, "worker", "--data-dir", str(self.data_dir),
                "--metrics-port", str(self.port)]
        if self.model:
            args += ["--model", str(self.model)]
        self.proc = subprocess.Popen(
            args, env=self.stream.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout_s
        while self.value("stream_recs_ready") != 1.0:
            assert self.proc.poll() is None, f"worker exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"worker not ready:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.5)
        return self

    def scrape(self) -> dict:
        return scrape_samples(self.port)

    def value(self, name: str, **labels: str) -> float | None:
        return self.scrape().get((name, frozenset(labels.items())))

    def total(self, name: str) -> float | None:
        """The sum of ``name``'s series, whatever their labels (None: none exported)."""
        values = [v for (sample, _), v in self.scrape().items() if sample == name]
        return sum(values) if values else None

    def wait_until(self, check, what: str, timeout_s: float = 120.0) -> None:
        """Poll ``check()`` until it is true; fail with ``what`` and the log's tail otherwise (or
        when the worker exits)."""
        deadline = time.monotonic() + timeout_s
        while not check():
            assert self.running, f"worker exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{what}:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def answered(self) -> float:
        """Clicks this worker answered so far."""
        return self.value("stream_recs_events_total", outcome="recommended") or 0

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> None:
        if self.proc:
            stop_process(self.proc, timeout_s, sig)

    def lag_partitions(self) -> set[int]:
        """Clicks partitions this worker reports lag for, i.e. holds."""
        return {
            int(dict(labels)["partition"])
            for name, labels in self.scrape()
            if name == "stream_recs_consumer_lag"
        }

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class TrainerProcess:
    """A ``stream-recs -v trainer`` subprocess (its INFO log shows each cycle's start) with its own
    window directory and metrics port; ``flags``: the trainer's command-line flags; ``model``
    None: it starts from the announced live model."""

    def __init__(self, stream: Stream, directory: Path, model: Path | None, models_dir: Path,
                 *flags: str) -> None:
        self.stream, self.directory, self.port = stream, directory, free_port()
        self.args = [sys.executable, "-m", "stream_recs", "-v", "trainer",
                     *(["--model", str(model)] if model is not None else []),
                     "--models-dir", str(models_dir), "--window-dir", str(directory / "window"),
                     "--port", str(self.port), *flags]
        self.proc: subprocess.Popen | None = None
        self.log = directory / "trainer.log"

    def start(self) -> TrainerProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.args, env=self.stream.env, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT)
        return self

    def value(self, name: str, **labels: str) -> float | None:
        return scrape_samples(self.port).get((name, frozenset(labels.items())))

    def wait_for(self, check, what: str, timeout_s: float = 180.0) -> None:
        """Poll ``check()`` until true; fail with ``what`` and the log's tail otherwise."""
        deadline = time.monotonic() + timeout_s
        while not check():
            assert self.proc is not None and self.proc.poll() is None, f"trainer exited:\n{self.tail()}"
            assert time.monotonic() < deadline, f"{what}:\n{self.tail()}"
            time.sleep(0.2)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc:
            stop_process(self.proc, 60.0, sig)
