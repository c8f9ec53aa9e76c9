"""Soak: a worker under a fixed click rate for minutes while users churn; resident memory and store
size must level off because idle sessions expire by TTL (``tables.sweep_expired``). Not in CI.

    .venv/bin/python bench/soak.py --minutes 10 --rate 300 --out soak.csv

Users come and go: at time t the active users are ``u{k}`` for k in [t*churn, t*churn + active),
so ``churn`` new users arrive (and as many go idle) every second. Every ``--every`` seconds the
worker's resident memory (VmRSS), its data directory's size, the active sessions, the answered
events and the lag are sampled, printed and written to ``--out`` (CSV). Topics, consumer group
and data directory are the run's own; the broker is the configured one or the local broker.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
import torch
from kafka import KafkaProducer

from stream_recs.cli.kafka import resolve_bootstrap
from stream_recs.config import Topics, load_settings
from stream_recs.devkit import free_port, scrape_samples, stop_process
from stream_recs.models import GRU4Rec, save_model

FIELDS = ("elapsed_s", "rss_mib", "store_mib", "active_sessions", "answered", "sent", "lag", "users_seen")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


class Clicks(threading.Thread):
    """Clicks at ``rate`` per second from churning users."""

    def __init__(self, bootstrap: str, topic: str, rate: float, active: int, churn: float, n_items: int):
        super().__init__(daemon=True)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
        self.topic, self.rate, self.active, self.churn, self.n_items = topic, rate, active, churn, n_items
        self.sent, self.highest_user = 0, 0
        self.halt = threading.Event()

    def run(self) -> None:
        rng, started = random.Random(0), time.monotonic()
        while not self.halt.is_set():
            elapsed = time.monotonic() - started
            delay = self.sent / self.rate - elapsed
            if delay > 0:
                time.sleep(delay)
            user = int(elapsed * self.churn) + rng.randrange(self.active)
            self.highest_user = max(self.highest_user, user)
            item = f"i{rng.randrange(self.n_items)}"
            body = {"event_id": f"s{self.sent}", "user_id": f"u{user}", "item_id": item, "ts": time.time()}
            self.producer.send(self.topic, key=body["user_id"].encode(), value=orjson.dumps(body))
            self.sent += 1
        self.producer.flush()
        self.producer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=300.0, help="clicks per second")
    parser.add_argument("--active", type=int, default=2000, help="users active at any time")
    parser.add_argument("--churn", type=float, default=20.0, help="new users per second")
    parser.add_argument("--ttl", type=float, default=60.0, help="STREAM_RECS_STATE_TTL, seconds")
    parser.add_argument("--sweep", type=float, default=15.0, help="STREAM_RECS_STATE_SWEEP_INTERVAL")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("soak.csv"))
    args = parser.parse_args()

    settings = load_settings()
    bootstrap = resolve_bootstrap(settings)
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    torch.manual_seed(0)
    model = save_model(
        GRU4Rec([f"i{n}" for n in range(args.items)], hidden_size=64, version="soak"), workdir / "m"
    )
    tag, port = uuid.uuid4().hex[:8], free_port()
    topics = Topics.tagged(f"soak-{tag}")
    env = {
        **os.environ,
        "STREAM_RECS_BOOTSTRAP_SERVERS": bootstrap,
        "STREAM_RECS_APP_ID": f"soak-{tag}",
        **topics.env(),
        "STREAM_RECS_STATE_TTL": str(args.ttl),
        "STREAM_RECS_STATE_SWEEP_INTERVAL": str(args.sweep),
    }
    data_dir = workdir / "data"
    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "stream_recs", "worker", "--model", str(model), "--data-dir", str(data_dir),
         "--metrics-port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    clicks = None
    try:
        while scrape_samples(port).get(("stream_recs_ready", frozenset())) != 1.0:
            if worker.poll() is not None:
                sys.exit(f"the worker exited: see {workdir / 'worker.log'}")
            time.sleep(0.5)
        clicks = Clicks(
            bootstrap, topics.clicks, args.rate, args.active, args.churn, args.items
        )
        clicks.start()
        started, rows = time.monotonic(), []
        print(" ".join(f"{name:>15}" for name in FIELDS))
        with args.out.open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(FIELDS)
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(args.every)
                samples = scrape_samples(port)
                lag = sum(v for (name, _), v in samples.items() if name == "stream_recs_consumer_lag")
                row = (
                    round(time.monotonic() - started),
                    round(rss_mib(worker.pid), 1),
                    round(size_mib(data_dir), 2),
                    samples.get(("stream_recs_active_sessions", frozenset())),
                    samples.get(("stream_recs_events_total", frozenset({("outcome", "recommended")}))),
                    clicks.sent,
                    lag,
                    clicks.highest_user + 1,
                )
                rows.append(row)
                out.writerow(row)
                handle.flush()
                print(" ".join(f"{value!s:>15}" for value in row), flush=True)
        third = max(1, len(rows) // 3)
        middle, last = rows[third : 2 * third], rows[-third:]
        print(
            f"RSS MiB: first {rows[0][1]}, max of middle third {max(r[1] for r in middle or rows)}, "
            f"max of last third {max(r[1] for r in last)}; store MiB: max {max(r[2] for r in rows)}, "
            f"last {rows[-1][2]}; users seen {rows[-1][7]}, active sessions at the end {rows[-1][3]}"
        )
    finally:
        if clicks is not None:
            clicks.halt.set()
            clicks.join()
        stop_process(worker)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
