"""End-to-end benchmark on the real local broker: stream-recs against the ceiling and the naive
service, side by side in one run, one worker each.

    .venv/bin/python bench/e2e.py [--items 10000,100000] [--dims 64,256] [--repeats 3] [--json]

Throughput (events/s at saturation): a backlog of synthetic click sessions (``synthetic_sessions``,
keyed by user) is written to a fresh clicks topic, then the service starts and a separate consumer
process reads its output topic; the rate is taken between the 10th and 90th percentile of the
output records' timestamps (start-up and the tail do not count). Services, per catalogue size and d
(synthetic GRU4Rec of that shape, K=20):

1. ceiling: ``bench/services.py ceiling``, a do-nothing Faust agent forwarding each click;
2. naive: ``bench/services.py naive``, one event at a time, GRU over the whole recent history;
3. ours: ``stream-recs worker`` as shipped (RocksDB store, default settings: exact scoring, through
   the bfloat16 screen where the CPU has bfloat16 dot products); with ``--ann-lists``, also with
   the ``ann`` option at the largest catalogue, with ``--float32``, also with the screen off
   (``STREAM_RECS_BF16_SCREEN=off``) there, and with ``--inline``, also with the top-K ranked in
   the worker's own process (``STREAM_RECS_RANKER=inline``; shipped: in a child, ranker_child.py) there.

Returning users (``--returning-history N``): the throughput runs start with every user of the
backlog already holding N earlier clicks (random items, the last a minute before the backlog, in
the session of the user's first click), as after a warm-up: ours gets the states its own
``Recommender`` builds from those clicks, written to the sessions changelog before the worker
starts (it restores them as after a restart); naive gets the same histories in its dict. The
backlog is sent once the service answers a probe (the restore is not measured; the service still
falls behind at once). Without it every user is new, so the naive service's histories stay short
(3-4 items on average).

Latency (ours, 10k items, d=64): a running worker, clicks produced at a fixed rate (500 and 2,000
events/s) with their send time as ``ts``; the consumer process records when each recommendation
arrives; p50/p95/p99 of (arrival - ts) after a warm-up. CPU (``--measure cpu``; ceiling and ours,
10k items, d=64): the service's CPU time per event while it answers a burst of clicks, from /proc.
Every run uses its own topics, consumer group and data directory (unique names), deleted
afterwards; the shared broker is left running.
Medians over ``--repeats``; the services of one repeat run one after the other, interleaved.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import click
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit_json, free_port, save_synthetic_model, table

from stream_recs.config import Topics, load_settings

HERE = Path(__file__).resolve().parent
K = 20
BACKLOG = {"ceiling": 40_000, "ours": 20_000, "naive": 3_000}  # events at 10k items
BACKLOG_100K = {"ours": 10_000, "naive": 1_500}
WARMUP_S = 3.0
SESSION_SPAN_DAYS = 0.05  # 72 simulated minutes


def click_records(n_items: int, n_events: int, seed: int = 0) -> list[tuple[bytes, dict]]:
    """Synthetic click sessions over items i0..i{n-1}, in time order, keyed by user.

    Interleaved as in production: the sessions start within 72 simulated minutes and overlap, so
    100 consecutive clicks come from 76 to 93 users (backlogs of 10,000 to 40,000 clicks; one user
    per ten clicks, as before). Spread over the generator's default 30 days, the replay ran one
    session after another: 115 clicks came from about 14 users, one of them clicking 20 times, which
    spared the state store most of its reads and writes and cost the model extra GRU steps."""
    from stream_recs.datasets import synthetic_sessions

    events = synthetic_sessions(n_users=max(500, n_events // 10), n_items=n_items, n_events=n_events,
                                seed=seed, days=SESSION_SPAN_DAYS)  # fmt: skip
    return [(e["user_id"].encode(), e) for e in events.records()]


class Run:
    """One service run: unique topics, group and data directory; its processes; the cleanup."""

    def __init__(self, bootstrap: str, prefix: str, name: str, workdir: Path) -> None:
        self.bootstrap = bootstrap
        self.app_id = f"{prefix}-{name}-{uuid.uuid4().hex[:6]}"
        self.topics = Topics(*(f"{self.app_id}-{t}" for t in ("clicks", "recs", "dead", "models")))
        self.dir = workdir / self.app_id
        self.dir.mkdir(parents=True)
        self.procs: list[subprocess.Popen] = []
        self.metrics_port = free_port()
        self.env = {
            **os.environ, "STREAM_RECS_BOOTSTRAP_SERVERS": self.bootstrap,
            "STREAM_RECS_APP_ID": self.app_id, "STREAM_RECS_DATA_DIR": str(self.dir / "data"),
            "STREAM_RECS_METRICS_PORT": str(self.metrics_port),
            "STREAM_RECS_TOPIC_CLICKS": self.topics.clicks,
            "STREAM_RECS_TOPIC_RECOMMENDATIONS": self.topics.recommendations,
            "STREAM_RECS_TOPIC_DEAD_LETTERS": self.topics.dead_letters,
            "STREAM_RECS_TOPIC_MODEL_UPDATES": self.topics.model_updates,
        }  # fmt: skip

    def create_topics(self) -> None:
        from stream_recs.config import Settings
        from stream_recs.topology.topics import apply_topics, topic_specs

        settings = Settings(bootstrap_servers=self.bootstrap, topics=self.topics)
        apply_topics(settings, self.bootstrap, topic_specs(settings, app_id=self.app_id))

    def start(self, args: list[str], log: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            args, env=self.env, cwd=HERE.parent, stdout=(self.dir / log).open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
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
                "--out", str(out)]  # fmt: skip
        return self.start(args, "consumer.log"), out

    def wait_serving(self, timeout: float = 120.0) -> int:
        """Send probe clicks until the service answers one; returns how many were sent (each is
        answered once, before the measured events, and excluded from the percentiles)."""
        from kafka import KafkaConsumer, KafkaProducer

        consumer = KafkaConsumer(self.topics.recommendations, bootstrap_servers=self.bootstrap,
                                 auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
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


def _wait(proc: subprocess.Popen, run: Run, timeout: float) -> None:
    """Until ``proc`` (the consumer) exits; fails early when another process of the run died."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if any(p.poll() is not None for p in run.procs if p is not proc):
            raise RuntimeError(f"{run.app_id}: a service exited\n{run.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{run.app_id}: no result in {timeout:.0f} s\n{run.log_tail()}")
        time.sleep(0.2)


def throughput(bootstrap, prefix, workdir, kind, model, records, timeout, env=None, history=0) -> float:
    """Events/s at saturation: backlog first, then the service; 10th-90th percentile of outputs.
    ``history`` > 0: the backlog's users return with that many earlier clicks (module docstring);
    the service starts first and the backlog is sent once it answers, so the worker's restore of
    the states (a restart's) is not measured."""
    run = Run(bootstrap, prefix, kind, workdir)
    run.env.update(env or {})
    try:
        run.create_topics()
        if history and kind != "ceiling":
            histories = returning_histories(records, model, history)
            if kind.startswith("ours"):
                asyncio.run(produce_states(bootstrap, run, model, records, histories))
            run.service(kind, model, histories if kind == "naive" else None)
            consumer, out = run.consumer(run.wait_serving() + len(records), timeout)
            asyncio.run(produce_at_rate(bootstrap, run.topics.clicks, records))
        else:
            asyncio.run(produce_at_rate(bootstrap, run.topics.clicks, records))
            consumer, out = run.consumer(len(records), timeout)
            run.service(kind, model)
        _wait(consumer, run, timeout + 30)
        stamps = np.sort(np.array([row[1] for row in orjson.loads(out.read_bytes())]))
        if len(stamps) < 0.9 * len(records):
            raise RuntimeError(f"{run.app_id}: {len(stamps)} of {len(records)} outputs\n{run.log_tail()}")
        lo, hi = int(0.1 * len(stamps)), int(0.9 * len(stamps))
        return (hi - lo) / max(stamps[hi] - stamps[lo], 1e-6)
    finally:
        run.close()


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

    recommender = Recommender(load_model(model_dir), k=K)
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


def cpu_per_event(bootstrap, prefix, workdir, kind, model, records) -> float:
    """Microseconds of the service's CPU time (all its threads, from /proc) per event: a running
    service, then ``records`` sent as fast as they go, until the consumer has every answer. Less
    sensitive to other jobs on the machine than events/s, though a busy cache still costs."""
    run = Run(bootstrap, prefix, f"{kind}-cpu", workdir)
    try:
        run.create_topics()
        service = run.service(kind, model)
        probes = run.wait_serving()
        consumer, _ = run.consumer(probes + len(records), timeout=300)
        time.sleep(1.0)  # the consumer process starts before the clock does
        before = _cpu_seconds(service.pid)
        asyncio.run(produce_at_rate(bootstrap, run.topics.clicks, records))
        _wait(consumer, run, 330)
        return (_cpu_seconds(service.pid) - before) / len(records) * 1e6
    finally:
        run.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def produce_at_rate(bootstrap: str, topic: str, records: list[tuple[bytes, dict]],
                          rate: float | None = None) -> float:
    """Send ``records`` at ``rate`` per second (None: as fast as they go), each stamped with its
    send time as ``ts``; returns the rate achieved. Paced in 1 ms ticks, every record due is sent
    at each tick. aiokafka, not kafka-python: about 13 us of CPU per record here against 45, on the
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


def latency(bootstrap, prefix, workdir, kind, model, records, rate) -> dict:
    """End-to-end latency percentiles (ms) of a running service fed at ``rate`` events/s."""
    run = Run(bootstrap, prefix, f"{kind}-lat{int(rate)}", workdir)
    try:
        run.create_topics()
        run.service(kind, model)
        probes = run.wait_serving()
        consumer, out = run.consumer(probes + len(records), timeout=len(records) / rate + 120)
        wall_start = time.time()
        achieved = asyncio.run(produce_at_rate(bootstrap, run.topics.clicks, records, rate))
        _wait(consumer, run, 150)
        rows = orjson.loads(out.read_bytes())
        lat = np.array([(r[0] - r[2]) * 1e3 for r in rows if r[2] >= wall_start + WARMUP_S])
        if len(lat) < 0.99 * (len(records) - WARMUP_S * rate):
            raise RuntimeError(f"{run.app_id}: {len(rows)} of {len(records)} outputs\n{run.log_tail()}")
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        return {"rate": rate, "offered_eps": achieved, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
                "max_ms": float(lat.max()), "events": len(lat)}  # fmt: skip
    finally:
        run.close()


@click.command()
@click.option("--items", default="10000,100000", show_default=True)
@click.option("--dims", default="64,256", show_default=True)
@click.option("--rates", default="500,2000", show_default=True, help="Offered loads for latency.")
@click.option("--latency-seconds", default=20.0, show_default=True)
@click.option("--latency-services", default="ours", show_default=True, help="Also: ceiling, naive.")
@click.option("--measure", default="throughput,latency", show_default=True, help="Also: cpu.")
@click.option("--ann-lists", default=0, show_default=True,
              help="Also run stream-recs with the ann option (this many cells) at the largest catalogue.")
@click.option("--ann-probes", default=32, show_default=True)
@click.option("--inline", "inline", is_flag=True,
              help="Also run stream-recs ranking in its own process (no child) at the largest catalogue.")
@click.option("--float32", "float32", is_flag=True,
              help="Also run stream-recs with the bfloat16 screen off at the largest catalogue.")
@click.option("--repeats", default=3, show_default=True)
@click.option("--scale", default=1.0, show_default=True, help="Multiplies every backlog size.")
@click.option("--returning-history", "history", default=0, show_default=True,
              help="Throughput with returning users: each holds this many earlier clicks.")
@click.option("--json", "as_json", is_flag=True, help="Last line: one JSON object with the results.")
@click.option("--report", "saved", type=click.Path(exists=True, dir_okay=False),
              help="Only print the tables of a saved --json output (its last line), with these options.")
def main(
    items, dims, rates, latency_seconds, latency_services, measure, ann_lists, ann_probes, inline, float32,
    repeats, scale, history, as_json, saved,
):
    settings = load_settings()
    if saved:
        runs = orjson.loads(Path(saved).read_text().strip().splitlines()[-1])["runs"]
        report(runs, [int(x) for x in items.split(",")], [int(x) for x in dims.split(",")],
               [float(x) for x in rates.split(",")], latency_services.split(","), len(runs["ceiling_eps"]),
               settings.partitions)  # fmt: skip
        return
    from stream_recs.cli.kafka import resolve_bootstrap

    bootstrap = resolve_bootstrap(settings, start=False)
    sizes = [int(x) for x in items.split(",")]
    ds = [int(x) for x in dims.split(",")]
    loads = [float(x) for x in rates.split(",")]
    prefix = f"bench-e2e-{uuid.uuid4().hex[:6]}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    try:
        models = {(n, d): save_synthetic_model(workdir / f"model-{n}-{d}", n, d) for n in sizes for d in ds}
        backlog = {}
        for n in sizes:
            counts = BACKLOG if n < 100_000 else {**BACKLOG, **BACKLOG_100K}
            backlog[n] = {kind: max(500, int(c * scale)) for kind, c in counts.items()}
        data = {n: click_records(n, max(backlog[n].values())) for n in sizes}
        base = sizes[0]
        lat_records = click_records(base, int(max(loads) * latency_seconds), seed=1)
        results: dict[str, list[float]] = {}
        variants = {
            "ours_ann": {"STREAM_RECS_ANN_LISTS": str(ann_lists), "STREAM_RECS_ANN_PROBES": str(ann_probes)},
            "ours_f32": {"STREAM_RECS_BF16_SCREEN": "off"},
            "ours_inline": {"STREAM_RECS_RANKER": "inline"},
        }
        options = (("ours_inline", inline), ("ours_f32", float32), ("ours_ann", ann_lists))
        chosen = [kind for kind, on in options if on]

        def add(key: str, value: float) -> None:
            results.setdefault(key, []).append(value)
            print(f"  {key}: {value:,.1f}", file=sys.stderr, flush=True)

        for rep in range(repeats):
            print(f"repeat {rep + 1}/{repeats}", file=sys.stderr, flush=True)
            recs = data[base][: backlog[base]["ceiling"]]
            if "throughput" in measure:
                add("ceiling_eps", throughput(bootstrap, prefix, workdir, "ceiling", None, recs, 300))
            for n in sizes if "throughput" in measure else ():
                for d in ds:
                    for kind in ("ours", "naive"):
                        recs = data[n][: backlog[n][kind]]
                        eps = throughput(bootstrap, prefix, workdir, kind, models[n, d], recs, 400,
                                         history=history)  # fmt: skip
                        add(f"{kind}_eps_{n}_{d}", eps)
                    for kind in chosen if n == sizes[-1] else ():
                        recs = data[n][: backlog[n]["ours"]]
                        eps = throughput(bootstrap, prefix, workdir, kind, models[n, d], recs, 400,
                                         variants[kind], history)  # fmt: skip
                        add(f"{kind}_eps_{n}_{d}", eps)
            for kind in ("ceiling", "ours") if "cpu" in measure else ():
                recs = data[base][: backlog[base]["ours"]]
                add(f"{kind}_cpu_us", cpu_per_event(bootstrap, prefix, workdir, kind,
                                                    models[base, ds[0]], recs))  # fmt: skip
            for kind in latency_services.split(",") if "latency" in measure else ():
                for rate in loads:
                    recs = lat_records[: int(rate * latency_seconds)]
                    got = latency(bootstrap, prefix, workdir, kind, models[base, ds[0]], recs, rate)
                    tag = "" if kind == "ours" else f"_{kind}"
                    for q in ("p50", "p95", "p99"):
                        add(f"{q}_ms_at_{int(rate)}{tag}", got[f"{q}_ms"])
                    add(f"offered_eps_at_{int(rate)}{tag}", got["offered_eps"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = report(results, sizes, ds, loads, latency_services.split(","), repeats, settings.partitions)
    if ann_lists:
        summary["ann_lists"], summary["ann_probes"] = ann_lists, ann_probes
    if history:
        summary["returning_history"] = history
    if as_json:
        emit_json({**summary, "runs": results, "repeats": repeats})


def report(results, sizes, ds, loads, latency_kinds, repeats, partitions) -> dict:
    """Print the tables and ratios; the summary figures for the JSON line. Figures are medians over
    the repeats; ratios are medians of the ratios measured side by side within each repeat."""
    med = {key: statistics.median(values) for key, values in results.items()}

    def ratio(num: str, den: str) -> float:
        return statistics.median(a / b for a, b in zip(results[num], results[den], strict=True))

    summary: dict[str, float] = {}
    base, big, d0 = sizes[0], sizes[-1], ds[0]
    if "ceiling_eps" in med:
        ceiling = med["ceiling_eps"]
        rows = [{"service": "ceiling (forward)", "items": "-", "d": "-", "events_per_s": ceiling,
                 "of_ceiling": 1.0}]  # fmt: skip
        for n in sizes:
            for d in ds:
                naive = med[f"naive_eps_{n}_{d}"]
                rows.append({"service": "naive", "items": n, "d": d, "events_per_s": naive,
                             "of_ceiling": ratio(f"naive_eps_{n}_{d}", "ceiling_eps")})  # fmt: skip
                for kind, name in (("ours", "stream-recs"), ("ours_inline", "stream-recs inline"),
                                   ("ours_f32", "stream-recs float32"),
                                   ("ours_ann", "stream-recs ann")):  # fmt: skip
                    key = f"{kind}_eps_{n}_{d}"
                    if key in med:
                        rows.append({"service": name, "items": n, "d": d, "events_per_s": med[key],
                                     "of_ceiling": ratio(key, "ceiling_eps"),
                                     "ours_over_naive": ratio(key, f"naive_eps_{n}_{d}")})  # fmt: skip
        print(f"throughput at saturation, median of {repeats} (events/s; one worker, {partitions} partitions;"
              " ratios: median of the side-by-side ratios of each repeat)")
        print(table(rows, ["service", "items", "d", "events_per_s", "of_ceiling", "ours_over_naive"]))
        summary = {
            "ceiling_eps": ceiling, "ours_eps": med[f"ours_eps_{base}_{d0}"],
            "ours_eps_100k": med[f"ours_eps_{big}_{d0}"], "naive_eps_100k": med[f"naive_eps_{big}_{d0}"],
            "naive_eps": med[f"naive_eps_{base}_{d0}"],
        }  # fmt: skip
        summary["ours_over_ceiling"] = ratio(f"ours_eps_{base}_{d0}", "ceiling_eps")
        summary["ours_over_naive_100k"] = ratio(f"ours_eps_{big}_{d0}", f"naive_eps_{big}_{d0}")
        for kind in ("ours_inline", "ours_f32", "ours_ann"):
            if f"{kind}_eps_{big}_{d0}" in med:
                summary[f"{kind}_eps_100k"] = med[f"{kind}_eps_{big}_{d0}"]
                summary[f"{kind}_over_naive_100k"] = ratio(f"{kind}_eps_{big}_{d0}", f"naive_eps_{big}_{d0}")
        variants = "".join(
            f"   {label}: {summary[f'{kind}_over_naive_100k']:.1f}x"
            for kind, label in (("ours_inline", "inline"), ("ours_f32", "float32"), ("ours_ann", "with ann"))
            if f"{kind}_eps_100k" in summary
        )
        print(f"\nours/ceiling ({base} items, d={d0}): {summary['ours_over_ceiling']:.2f}   "
              f"ours/naive ({big} items, d={d0}): {summary['ours_over_naive_100k']:.1f}x{variants}")
    if "ours_cpu_us" in med:
        print(f"\nCPU per event ({base} items, d={d0}; service process, all threads), median of {repeats}: "
              f"ceiling {med['ceiling_cpu_us']:.0f} us, stream-recs {med['ours_cpu_us']:.0f} us")
        summary["ceiling_cpu_us"], summary["ours_cpu_us"] = med["ceiling_cpu_us"], med["ours_cpu_us"]
    for kind in latency_kinds:
        tag = "" if kind == "ours" else f"_{kind}"
        if f"p50_ms_at_{int(loads[0])}{tag}" not in med:
            continue
        rows = [{"offered_eps": rate, "achieved_eps": med[f"offered_eps_at_{int(rate)}{tag}"],
                 **{f"{q}_ms": med[f"{q}_ms_at_{int(rate)}{tag}"] for q in ("p50", "p95", "p99")}}
                for rate in loads]  # fmt: skip
        name = "stream-recs" if kind == "ours" else kind
        print(f"\nend-to-end latency, {name}, {base} items, d={d0}, median of {repeats} (ms)")
        print(table(rows, ["offered_eps", "achieved_eps", "p50_ms", "p95_ms", "p99_ms"]))
        for rate in loads:
            for q in ("p50", "p95", "p99"):
                summary[f"{q}_ms_at_{int(rate)}{tag}"] = med[f"{q}_ms_at_{int(rate)}{tag}"]
    return summary

if __name__ == "__main__":
    main()
