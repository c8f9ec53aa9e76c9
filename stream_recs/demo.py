"""The main job on the embedded default, end to end: local Kafka, topics, MovieLens-100K's titles
and genres published as the item catalogue, a model trained on MovieLens-100K (cached), a worker
and a trainer beside it, the data replayed as a click stream, each training cycle's verdict and
each canary decision as they happen (``demo_learning.py``), sample recommendations with their
explanations (titles carried by the answers, and read back from the catalogue for "because") and
a live summary from /metrics; then everything stops.

Each step runs the same ``stream-recs`` command a user would type, as a subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from stream_recs.catalogue_feed import read_catalogue
from stream_recs.config import Settings
from stream_recs.demo_learning import Learning, demo_env
from stream_recs.devkit import free_port, scrape_metrics, scrape_samples, stop_process
from stream_recs.events import Forget
from stream_recs.kafka_clients import client_kwargs
from stream_recs.messages import because_of, encode_forget
from stream_recs.metrics import PREFIX, summarize

DEMO_EPOCHS = 5  # few, so that the first run trains quickly; `stream-recs train` defaults to the tuned 20
SCRAPE_TIMEOUT_S = 2.0
CYCLE_WAIT_S = 120.0  # after the replay, the longest the demo waits for the trainer's cycle in flight
QUIET_S = 45.0  # ... and it stops waiting once the trainer has said nothing for this long


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream_recs", *args]


def _run(*args: str) -> str:
    """Run a stream-recs command, echoing its output; fail loudly."""
    done = subprocess.run(_cli(*args), capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"`stream-recs {' '.join(args)}` failed with code {done.returncode}")
    return done.stdout


def cached_model(settings: Settings, say) -> Path:
    """The demo's MovieLens-100K checkpoint, trained once per training-code version and epochs."""
    import stream_recs.models as models_pkg

    code = hashlib.sha256(f"epochs={DEMO_EPOCHS}".encode())
    for source in sorted(Path(models_pkg.__file__).parent.glob("*.py")):
        code.update(source.read_bytes())
    path = settings.home / "models" / f"movielens-100k-{code.hexdigest()[:10]}"
    if (path / "meta.json").exists():
        say(f"reusing the trained model {path}")
        return path
    say("training a GRU4Rec model on MovieLens-100K (once; cached) ...")
    args = ("train", "--dataset", "movielens-100k", "--session-gap", "none", "--epochs", str(DEMO_EPOCHS),
            "--out", str(path))
    if subprocess.run(_cli(*args), check=False).returncode != 0:  # progress bar straight to the terminal
        raise SystemExit("training the demo model failed")
    return path


@contextlib.contextmanager
def _worker(model: Path, port: int, log: Path) -> Iterator[subprocess.Popen]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            _cli("worker", "--model", str(model), "--metrics-port", str(port)),
            stdout=out, stderr=subprocess.STDOUT, env=demo_env(),
        )
    try:
        yield proc
    finally:
        stop_process(proc)


def run_demo(settings: Settings, events: int, rate: float, say=print) -> None:
    """The whole demo; the broker is stopped at the end only if the demo started it."""
    say("== 1/5 local Kafka")
    was_running = subprocess.run(_cli("kafka", "status"), capture_output=True).returncode == 0
    say(_run("kafka", "up").strip())
    try:
        say("== 2/5 topics and the catalogue")
        say(_run("topics", "apply").strip())
        say(_run("items", "load", str(movielens_catalogue(settings.home / "demo-items.jsonl"))).strip()
            + " (MovieLens-100K titles and genres)")
        say("== 3/5 model")
        model = cached_model(settings, say)
        say(_run("publish-model", str(model)).strip() + " (every run starts from it)")
        say("== 4/5 worker and trainer")
        port = int(os.environ.get("STREAM_RECS_METRICS_PORT", 0)) or free_port()
        log = settings.home / "demo-worker.log"
        with _worker(model, port, log) as worker, _learning(settings, model, events, say) as learning:
            deadline = time.monotonic() + 120
            while "stream_recs_ready 1.0" not in (scrape_metrics(port, timeout=SCRAPE_TIMEOUT_S) or ""):
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the worker did not become ready; see {log}")
                time.sleep(0.5)
            say(f"worker ready, metrics on http://127.0.0.1:{port}/metrics (log {log})")
            _forget_replayed_users(settings, port, events, say)
            say(f"== 5/5 replaying {events} MovieLens-100K clicks at {rate:.0f} events/s")
            _replay_and_watch(settings, port, events, rate, learning, say)
            _last_cycle(learning, say)
    finally:
        if not was_running:
            say(_run("kafka", "down").strip())


@contextlib.contextmanager
def _learning(settings: Settings, model: Path, events: int, say) -> Iterator[Learning]:
    log = settings.home / "demo-trainer.log"
    learning = Learning(settings, _bootstrap(), model, events, log)
    say(f"trainer started: a cycle every {max(1000, events // 4)} clicks, each candidate a canary "
        f"(log {log})")
    try:
        yield learning
    finally:
        learning.close()


def _last_cycle(learning: Learning, say) -> None:
    """Give the cycle the replay's last clicks started time to end (until the trainer has been
    quiet for ``QUIET_S``, at most ``CYCLE_WAIT_S``), then say what learning did."""
    quiet_until, deadline = time.monotonic() + QUIET_S, time.monotonic() + CYCLE_WAIT_S
    while learning.proc.poll() is None and time.monotonic() < min(deadline, quiet_until):
        lines = learning.news()
        for line in lines:
            say(line)
        if lines:
            quiet_until = time.monotonic() + QUIET_S
        time.sleep(1)
    counts = ", ".join(f"{n} {result}" for result, n in learning.verdicts.items())
    say(f"\nlearning: {sum(learning.verdicts.values())} trainer cycles ({counts}), "
        f"{len(learning.decisions)} canary decisions")


def _forget_replayed_users(settings: Settings, port: int, events: int, say) -> None:
    """Delete the state earlier demo runs left for the users about to be replayed (the worker's
    table and its changelog outlive a run): a rerun would otherwise meet users whose histories
    already hold the films they are about to click, masked from their answers, and online HR
    would fall run after run on the same model."""
    from kafka import KafkaProducer

    from stream_recs.datasets import load_dataset, sort_by_time

    clicks = sort_by_time(load_dataset("movielens-100k")).records()
    users = list(dict.fromkeys(event["user_id"] for event in itertools.islice(clicks, events)))
    before = _forgotten(port)
    producer = KafkaProducer(**client_kwargs(settings, _bootstrap()), acks="all")
    run = time.time_ns()
    for user in users:  # control records: each is handled after its user's earlier clicks
        request = Forget(f"demo-forget-{run}-{user}", user)
        producer.send(settings.topics.forget, key=user.encode(), value=encode_forget(request))
    producer.flush()
    producer.close()
    deadline = time.monotonic() + 60  # so that the replay's summary counts clicks only
    while _forgotten(port) < before + len(users) and time.monotonic() < deadline:
        time.sleep(0.2)
    say(f"forgot the state of the {len(users)} users about to be replayed (each run starts afresh)")


def _forgotten(port: int) -> float:
    """``forget`` requests the worker has handled, from its /metrics."""
    samples = scrape_samples(port, timeout=SCRAPE_TIMEOUT_S)
    return samples.get((f"{PREFIX}events_total", frozenset({("outcome", "forgotten")})), 0.0)


def _replay_and_watch(settings: Settings, port: int, events: int, rate: float, learning: Learning,
                      say) -> None:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        settings.topics.recommendations, **client_kwargs(settings, _bootstrap()),
        auto_offset_reset="latest", enable_auto_commit=False,
    )
    consumer.poll(timeout_ms=1000)  # join now, so "latest" is before the replay
    producer = subprocess.Popen(
        _cli("produce", "--dataset", "movielens-100k", "--rate", str(rate), "--limit", str(events), "--quiet")
    )
    first = previous = scrape_metrics(port, timeout=SCRAPE_TIMEOUT_S) or ""
    started = last = progress_at = time.monotonic()
    answered, samples = 0, []
    # until every replayed click is answered (or nothing arrives for 15 s after the replay)
    while answered < events and (producer.poll() is None or time.monotonic() - progress_at < 15):
        for records in consumer.poll(timeout_ms=200).values():
            answered += len(records)
            progress_at = time.monotonic()
            for record in records:
                rec = orjson.loads(record.value)
                if rec["strategy"] == "model" and len(samples) < 3 and rec["user_id"] not in {
                    s["user_id"] for s in samples
                } and any(because_of(item) for item in rec["items"]):  # a session of 2+ clicks
                    samples.append(rec)
        for line in learning.news():
            say(line)
        if time.monotonic() - last >= 2:
            current = scrape_metrics(port, timeout=SCRAPE_TIMEOUT_S) or previous
            say("live: " + summarize(current, previous, time.monotonic() - last).format())
            previous, last = current, time.monotonic()
    say(f"{answered} of {events} replayed clicks answered")
    consumer.close()
    catalogue = read_catalogue(settings, _bootstrap())  # the titles come from the items topic

    def title(item_id: str) -> str:
        record = catalogue.get(item_id)
        return record.title if record is not None and record.title else item_id

    say("\nsample recommendations (top 5 of each; 'because' = the movie of the session whose removal "
        "lowers the score most, and its share of the drops; '-': not explained, see the README):")
    for rec in samples:
        say(f"  user {rec['user_id']} (model {rec['model_version']}):")
        for item in rec["items"][:5]:
            because = because_of(item)
            why = "-" if because is None else title(because[0]) + (
                "" if because[1] is None else f" ({because[1]:.2f})")
            name = item.get("title", item["item_id"])[:45]
            say(f"    {name:<45} score {item['score']:6.2f}  because {why}")
    final = scrape_metrics(port, timeout=SCRAPE_TIMEOUT_S) or previous
    say("\nsummary over the replay: " + summarize(final, first, time.monotonic() - started).format())


def _bootstrap() -> str:
    """The address ``kafka status`` names (the local broker or the configured cluster)."""
    out = subprocess.run(_cli("kafka", "status"), capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


def movielens_catalogue(path: Path) -> Path:
    """MovieLens-100K's items as catalogue records (``datasets.movielens_items``), written to
    ``path`` as JSONL for ``stream-recs items load``."""
    from stream_recs.datasets import movielens_items

    path.write_bytes(b"\n".join(record.encode() for record in movielens_items()) + b"\n")
    return path
