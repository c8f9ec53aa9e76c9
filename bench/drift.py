"""Drift benchmark (issue #22): a static model, continuous learning and an oracle, side by side on a
churning stream, on the real broker with real worker and trainer processes.

    .venv/bin/python bench/drift.py [--hours 12] [--events-per-hour 2500] [--rate 100] [--seed 0]

The stream (``drift_stream.py``): sessions over a catalogue where every simulated hour a batch of
new items appears and older ones fade, with the topics' popularity reversed halfway; replayed
time-compressed at ``--rate`` clicks/s with each click's simulated time as its ``ts``. Arms:

(a) static: a worker serving a model trained on the first ``--static-hours`` hours, never updated;
(b) continuous: a worker started from the same model, with ``stream-recs trainer`` beside it (short
    cycles, ``STREAM_RECS_CANARY_SHARE=0``: a candidate that passes the gate serves everyone);
(c) oracle: per window, a model trained from scratch on every click before it (offline).

Reported (``drift_eval.py`` holds the protocol): HR@20 and MRR@20 per simulated hour; the second
half's ratios b/a and b/c; for new items that reach 20 clicks, the time and the trainer cycles from
their first (and 20th) click to the first continuous-arm model answer holding them; the trainer's
CPU share; the continuous worker's answer latency while a cycle runs against while none does
(the static worker's as a control). The text goes to stdout, ``--out`` and the plot to ``--plot``.
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from drift_report import Report
from drift_stream import HOUR, StreamOptions, generate, serving_hours

HERE = Path(__file__).resolve().parent
HYPER = {"hidden_size": 48, "batch_size": 32, "learning_rate": 0.05, "n_sample": 0, "loss": "xe",
         "max_len": 50}


@click.command()
@click.option("--hours", default=12, show_default=True, help="Simulated hours (one window each).")
@click.option("--events-per-hour", default=2500, show_default=True)
@click.option("--new-per-hour", default=30, show_default=True, help="New items each simulated hour.")
@click.option("--users", default=400, show_default=True)
@click.option("--rate", default=100.0, show_default=True, help="Clicks/s the stream is replayed at.")
@click.option("--static-hours", default=2, show_default=True, help="The first part the static model learns.")
@click.option("--epochs", default=5, show_default=True, help="Epochs of the static and oracle models.")
@click.option("--trainer-epochs", default=2, show_default=True)
@click.option("--cycle-seconds", default=15.0, show_default=True)
@click.option("--cycle-fraction", default=0.2, show_default=True,
              help="--cycle-events as a share of a simulated hour's clicks.")
@click.option("--window-hours", default=1.2, show_default=True,
              help="--window-events as simulated hours of clicks (bench/drift_chain.py compares).")
@click.option("--min-item-count", default=5, show_default=True,
              help="The trainer's; the new-item target counts from an item's 20th click regardless.")
@click.option("--serving-seconds", default=120.0, show_default=True,
              help="The serving phase after the measured hours: the trainer stopped and running in turns.")
@click.option("--segment-seconds", default=10.0, show_default=True, help="One turn of the serving phase.")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", default=str(HERE / "results" / "drift.txt"), show_default=True)
@click.option("--plot", default=str(HERE / "results" / "drift.png"), show_default=True)
def main(hours, events_per_hour, new_per_hour, users, rate, static_hours, epochs, trainer_epochs,
         cycle_seconds, cycle_fraction, window_hours, min_item_count, serving_seconds, segment_seconds, seed,
         out, plot) -> None:
    import torch
    from drift_eval import oracle, train_scratch
    from drift_run import live_run

    from stream_recs.config import load_settings
    from stream_recs.models import save_model
    from stream_recs.models.train import TrainConfig

    torch.set_num_threads(1)
    report = Report(" ".join([".venv/bin/python bench/drift.py", *map(shlex.quote, sys.argv[1:])]))
    serving_clicks = int(serving_seconds * rate)
    options = StreamOptions(hours=hours, events_per_hour=events_per_hour, new_per_hour=new_per_hour,
                            n_users=users, seed=seed)
    options = dataclasses.replace(options, extra_hours=serving_hours(options, serving_seconds, rate))
    stream = generate(options)
    ev = stream.events
    serve_from = int(np.searchsorted(ev.ts, hours * HOUR))
    hyper = {**HYPER, "epochs": epochs, "seed": seed}
    cycle_events = max(50, int(cycle_fraction * events_per_hour))
    window_events = int(window_hours * events_per_hour)
    trainer_args = ["--cycle-seconds", str(cycle_seconds), "--cycle-events", str(cycle_events),
                    "--min-item-count", str(min_item_count), "--window-events", str(window_events),
                    "--epochs", str(trainer_epochs)]
    report.setup(stream, rate, hyper, trainer_args, static_hours)

    workdir = Path(tempfile.mkdtemp(prefix="bench-drift-"))
    try:
        started = time.perf_counter()
        static = train_scratch(ev.take(np.flatnonzero(ev.ts < static_hours * HOUR)), hyper, "static")
        saved = {**dataclasses.asdict(TrainConfig.from_dict(hyper)), "session_gap": None}
        static_dir = save_model(static, workdir / "static", hyperparameters=saved)
        report.log(f"static model: {static.n_items} items, trained in {time.perf_counter() - started:.1f} s")
        offset = time.time() - (hours + options.extra_hours) * HOUR - 600.0  # the whole stream in the past
        records = []
        for row, event in enumerate(ev.records()):
            if row >= serve_from + serving_clicks:
                break
            body = {**event, "event_id": f"e{row}", "ts": event["ts"] + offset}
            records.append((event["user_id"].encode(), orjson.dumps(body)))
        settings = load_settings()
        from stream_recs.cli.kafka import resolve_bootstrap

        bootstrap = resolve_bootstrap(settings, start=False)
        report.log(f"live run: {len(records)} clicks at {rate:g}/s to both arms (about "
                   f"{len(records) / rate / 60:.1f} min)")
        live = live_run(bootstrap, workdir, static_dir, records, offset, rate, trainer_args, serve_from,
                        segment_seconds)
        report.log("oracle: one model per window, trained from scratch on every click before it")
        oracle_scores = oracle(stream, hyper, static_hours, offset, log=report.log)
        report.results(stream, live, oracle_scores, static_hours, serve_from)
        report.save(Path(out))
        report.plot(Path(plot))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
