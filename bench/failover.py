"""Failover: how long a leaving worker's users go unanswered, with table standby replicas off and
on (``STREAM_RECS_STANDBY_REPLICAS``), side by side in one run. Not in CI.

    .venv/bin/python bench/failover.py --users 20000 --prefill 100000 --rate 300

Per setting: two workers share the clicks; ``--prefill`` clicks build ``--users`` users' states
(the changelog a worker restores when it takes a partition over), then clicks come at ``--rate``
per second; after ``--warm`` seconds one worker stops (SIGTERM: it leaves the group, as in a
rolling update), and the clicks go on for ``--after`` seconds. Printed per setting: how long the
survivor was unready (a rebalance and the restore of the leaver's partitions), the answer latency
(the answer's production time less the click's time) of clicks sent after the stop, and how many
of them had no answer ``--drain`` seconds after the last was sent.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson
from kafka import KafkaConsumer, KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save_synthetic_model, table
from e2e_run import Run

from stream_recs.cli.kafka import resolve_bootstrap
from stream_recs.config import load_settings
from stream_recs.devkit import free_port, scrape_samples

N_ITEMS = 1000


def clicks(producer: KafkaProducer, topic: str, prefix: str, count: int, users: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for n, (user, item) in enumerate(zip(rng.integers(users, size=count), rng.integers(N_ITEMS, size=count),
                                         strict=True)):
        body = {"event_id": f"{prefix}{n}", "user_id": f"u{user}", "item_id": f"i{item}", "ts": time.time()}
        producer.send(topic, key=body["user_id"].encode(), value=orjson.dumps(body))


def paced(producer: KafkaProducer, topic: str, rate: float, users: int, stop: threading.Event,
          sent: list[float]) -> None:
    """Clicks ``live-<n>`` at ``rate`` per second until ``stop``; ``sent[n]``: when each left."""
    rng = np.random.default_rng(1)
    started = time.monotonic()
    while not stop.is_set():
        wait = started + len(sent) / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        now = time.time()
        body = {"event_id": f"live-{len(sent)}", "user_id": f"u{rng.integers(users)}",
                "item_id": f"i{rng.integers(N_ITEMS)}", "ts": now}
        producer.send(topic, key=body["user_id"].encode(), value=orjson.dumps(body))
        sent.append(now)


def answered(ports: list[int]) -> float:
    return sum(scrape_samples(port).get(("stream_recs_events_total",
                                         frozenset({("outcome", "recommended")})), 0.0) for port in ports)


def collect(bootstrap: str, topic: str, out: dict[str, float], stop: threading.Event) -> None:
    """event id -> production time of its first answer (a replay answers some twice), until stop."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    try:
        while not stop.is_set():
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    rec = orjson.loads(record.value)
                    out.setdefault(rec["event_id"], rec["produced_ts"])
    finally:
        consumer.close()


def measure(args: argparse.Namespace, bootstrap: str, model: Path, workdir: Path, standby: int) -> dict:
    run = Run(bootstrap, "failover", f"standby{standby}", workdir)
    run.env["STREAM_RECS_STANDBY_REPLICAS"] = str(standby)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    try:
        run.create_topics()
        ports = [free_port(), free_port()]
        workers = [
            run.start([sys.executable, "-m", "stream_recs", "worker", "--model", str(model),
                       "--data-dir", str(run.dir / f"w{n}"), "--metrics-port", str(port)], f"w{n}.log")
            for n, port in enumerate(ports)
        ]
        clicks(producer, run.topics.clicks, "pre-", args.prefill, args.users, seed=0)
        producer.flush()
        deadline = time.monotonic() + 600
        while answered(ports) < args.prefill:
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                raise RuntimeError(f"prefill not answered:\n{run.log_tail()}")
            time.sleep(1.0)
        stop, done, sent, answers = threading.Event(), threading.Event(), [], {}
        feeder = threading.Thread(target=paced, args=(producer, run.topics.clicks, args.rate, args.users,
                                                      stop, sent), daemon=True)
        reader = threading.Thread(target=collect, args=(bootstrap, run.topics.recommendations, answers,
                                                        done), daemon=True)
        feeder.start()
        reader.start()
        time.sleep(args.warm)
        first_after = len(sent)
        stopped_at = time.monotonic()
        workers[1].send_signal(signal.SIGTERM)
        unready = 0.0
        while time.monotonic() - stopped_at < args.after:
            ready = scrape_samples(ports[0]).get(("stream_recs_ready", frozenset()))
            unready += 0.1 if ready != 1.0 else 0.0
            time.sleep(0.1)
        stop.set()
        feeder.join()
        producer.flush()
        after = [f"live-{n}" for n in range(first_after, len(sent))]
        deadline = time.monotonic() + args.drain
        while any(e not in answers for e in after) and time.monotonic() < deadline:
            time.sleep(1.0)
        done.set()
        reader.join()
        latency = 1000 * np.array([answers[e] - sent[n] for n, e in enumerate(after, first_after)
                                   if e in answers])
        return {
            "standby": standby, "unready_s": round(unready, 1), "p50_ms": np.percentile(latency, 50),
            "p99_ms": np.percentile(latency, 99), "max_ms": latency.max(), "sent_after": len(after),
            "unanswered": sum(e not in answers for e in after),
        }
    finally:
        producer.close()
        run.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--prefill", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--warm", type=float, default=20.0, help="seconds of paced clicks before the stop")
    parser.add_argument("--after", type=float, default=40.0, help="seconds of paced clicks after it")
    parser.add_argument("--drain", type=float, default=120.0,
                        help="most seconds to wait for the last answers (the rest count as unanswered)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per setting, interleaved")
    args = parser.parse_args()
    bootstrap = resolve_bootstrap(load_settings())
    with tempfile.TemporaryDirectory(prefix="failover-") as tmp:
        workdir = Path(tmp)
        model = save_synthetic_model(workdir / "model", N_ITEMS, 32)
        rows = [measure(args, bootstrap, model, workdir, standby)
                for _ in range(args.rounds) for standby in (0, 1)]
    print(table(rows, ["standby", "unready_s", "p50_ms", "p99_ms", "max_ms", "sent_after", "unanswered"]))


if __name__ == "__main__":
    main()
