"""Load and accounting for fault tests: a steady click producer and the reconciliation of what
came out (recommendations, dead letters) against what went in."""

from __future__ import annotations

import itertools
import random
import threading
import time
from dataclasses import dataclass, field

import orjson
from kafka import KafkaConsumer, KafkaProducer

from stream_recs.state import SessionState
from stream_recs.topology.topics import changelog_topic
from tests.harness import N_ITEMS

FIGURES: list[str] = []  # one line per fault test, shown in the terminal summary


class SteadyLoad:
    """Clicks at a fixed rate from a thread, keyed by user, ``ts`` = send time, on one of
    ``items`` (i0..i299; a test may replace the list mid-run); keeps the ids of the events the
    broker acknowledged (``acked``, with their ``placed`` partition and offset) and of those it
    never did (``failed``), and every event's user and item (``clicks``)."""

    def __init__(self, bootstrap: str, topic: str, rate: float, users: int, seed: int = 0,
                 prefix: str = "e", **client: object) -> None:
        self.topic, self.rate, self.users, self.prefix = topic, rate, users, prefix
        self.rng = random.Random(seed)
        self.items = [f"i{n}" for n in range(N_ITEMS)]
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5, retries=1_000_000,
            delivery_timeout_ms=300_000, max_block_ms=300_000, **client,
        )
        self.acked: list[str] = []
        self.failed: list[str] = []
        self.placed: dict[str, tuple[int, int]] = {}
        self.clicks: dict[str, tuple[str, str]] = {}
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def start(self) -> SteadyLoad:
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            delay = started + self.sent / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event_id = f"{self.prefix}{self.sent}"
            user = f"u{self.rng.randrange(self.users)}"
            item = self.rng.choice(self.items)
            body = {"event_id": event_id, "user_id": user, "item_id": item, "type": "click",
                    "ts": time.time()}
            self.clicks[event_id] = (user, item)
            future = self.producer.send(self.topic, key=user.encode(), value=orjson.dumps(body))
            future.add_callback(lambda meta, e=event_id: self._done(self.acked, e, meta))
            future.add_errback(lambda _exc, e=event_id: self._done(self.failed, e))
            self.sent += 1

    def _done(self, into: list[str], event_id: str, meta: object = None) -> None:
        with self._lock:
            into.append(event_id)
            if meta is not None:
                self.placed[event_id] = (meta.partition, meta.offset)

    def wait_sent(self, count: int, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.sent < count:
            assert time.monotonic() < deadline, f"only {self.sent} of {count} events sent"
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop sending and wait until every send is acknowledged or failed."""
        self.halt()
        assert len(self.acked) + len(self.failed) == self.sent

    def halt(self) -> None:
        """Stop sending (also when a test failed mid-load: the thread must not outlive it)."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join()
            self.producer.flush()
            self.producer.close()


def read_all(bootstrap: str, topic: str, count: int, timeout_s: float = 120.0, settle_s: float = 3.0,
             **client: object) -> list:
    """Every record of ``topic`` from the start: until ``count`` arrived and ``settle_s`` passed
    without more (later ones would be duplicates), or the timeout."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        consumer_timeout_ms=int(settle_s * 1000), **client,
    )
    records, deadline = [], time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            before = len(records)
            records.extend(consumer)
            if len(records) >= count and len(records) == before:
                break
    finally:
        consumer.close()
    return records


def shrunk_histories(stream) -> tuple[int, list[str]]:
    """(states in the sessions changelog, users one of whose states holds less history than the
    one before it: a session that restarted or lost items)."""
    topic = changelog_topic(stream.env["STREAM_RECS_APP_ID"])
    lengths: dict[bytes, list[int]] = {}
    records = read_all(stream.bootstrap, topic, 1)
    for record in records:
        assert record.value, f"a state of {record.key!r} was deleted"
        lengths.setdefault(record.key, []).append(len(SessionState.decode(record.value).history))
    shrunk = sorted(key.decode() for key, seq in lengths.items()
                    if any(b < a for a, b in itertools.pairwise(seq)))
    return len(records), shrunk


@dataclass
class Tally:
    """What happened to every event sent: answered, dead-lettered, duplicated, lost."""

    name: str
    sent: int
    answered: int
    dead_lettered: int
    duplicated: int
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # answers to events never sent
    placed: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, name: str, sent_ids: list[str], answer_ids: list[str], dead_ids: list[str] = (),
           placed: dict[str, tuple[int, int]] | None = None) -> Tally:
        sent, answered, dead = set(sent_ids), set(answer_ids), set(dead_ids)
        assert len(sent) == len(sent_ids), "event ids must be unique"
        return cls(
            name=name, sent=len(sent), answered=len(answered & sent), dead_lettered=len(dead & sent),
            duplicated=len(answer_ids) - len(answered), lost=sorted(sent - answered - dead),
            unexpected=sorted(answered - sent), placed=dict(placed or {}),
        )

    def lost_summary(self, shown: int = 8) -> str:
        """How many were lost, and where the first ones were (partition:offset), to tell a
        partition's skipped offsets from a lost answer."""
        where = [f"{e}@{':'.join(map(str, self.placed[e]))}" if e in self.placed else e for e in self.lost]
        return f"{len(self.lost)} events lost, e.g. {', '.join(where[:shown])}"

    def report(self, extra: str = "") -> Tally:
        FIGURES.append(
            f"{self.name}: sent {self.sent}, answered {self.answered}, dead-lettered "
            f"{self.dead_lettered}, duplicated {self.duplicated}, lost {len(self.lost)}"
            + (f"; {extra}" if extra else "")
        )
        return self
