"""Do the training defaults work on data they were not chosen on? GRU4Rec trained with default
flags only (``stream-recs train --events LOG``) against Markov and session-kNN, masked and unmasked.

    .venv/bin/python bench/defaults.py [--data journey,shopping,movielens-100k,...] [--seed 0]
                                       [--param NAME=VALUE ...] [--out artifacts/defaults]

Each data set is written as event logs under --out: the whole log, and the training part of
its evaluation split (session logs: the sessions before the last two days, as
``evaluate --protocol session`` trains its baselines; MovieLens: all but each user's last two
ratings, as ``--protocol loo`` does). The model is trained on that training part with
``stream-recs train --events TRAIN.csv`` and nothing else (``--param`` exists for diagnosis
only: a run with it does not test the defaults), then ``stream-recs evaluate`` scores it and the
baselines on the test part. ``evaluate`` warns that it cannot rule out leakage, since an event
log numbers its items in another order than the data set: the training log is the training part.

Data: ``journey`` and ``shopping`` (``stream_recs/generators.py``), ``synthetic`` (the built-in
generator, the one the session defaults were examined on), ``movielens-100k``, ``movielens-1m``.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
CLI = str(ROOT / ".venv" / "bin" / "stream-recs")
SESSION_GAP = "1800"
SIZES = {"synthetic": {"n_events": 100_000, "n_users": 5_000, "n_items": 2_000}}
SHOWN = ("recall@20", "mrr@20", "ndcg@20")


def _logs(name: str, seed: int, folder: Path) -> tuple[Path, Path, str]:
    """Write ``name``'s whole log and its training part; returns them and the protocol."""
    from stream_recs.datasets import load_dataset, synthetic_sessions
    from stream_recs.generators import GENERATORS
    from stream_recs.models.evaluate import leave_one_out, session_split

    folder.mkdir(parents=True, exist_ok=True)
    whole, train = folder / "events.csv", folder / "train.csv"
    if name.startswith("movielens"):
        events = load_dataset(name)
        part, protocol = leave_one_out(events).train, "loo"
    else:
        maker = GENERATORS.get(name) or synthetic_sessions
        events = maker(seed=seed, **SIZES.get(name, {}))
        part, protocol = session_split(events, session_gap=float(SESSION_GAP)).train, "session"
    events.write_csv(whole)
    part.write_csv(train)
    return whole, train, protocol


def _run(args: list[str], log) -> str:
    log("$ " + shlex.join(["stream-recs", *args]))
    done = subprocess.run([CLI, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"command failed ({done.returncode}):\n{done.stderr[-3000:]}")
    for line in done.stderr.splitlines():
        if not line.startswith("warning:"):
            log("  " + line)
    return done.stdout


@click.command()
@click.option("--data", default="journey,shopping,movielens-100k", show_default=True)
@click.option("--seed", default=0, show_default=True, help="Generator seed (models use seed 0).")
@click.option("--param", "params", multiple=True, help="Diagnosis only: passed to train.")
@click.option("--out", "out_dir", default="artifacts/defaults", show_default=True)
def main(data, seed, params, out_dir):
    from stream_recs.models.report import table

    def log(line: str) -> None:
        print(line, flush=True)

    extra = [x for p in params for x in ("--param", p)]
    for name in data.split(","):
        folder = ROOT / out_dir / name
        whole, train, protocol = _logs(name, seed, folder)
        started = time.perf_counter()
        _run(["train", "--events", str(train.relative_to(ROOT)), "--out",
              str((folder / "model").relative_to(ROOT)), "--quiet", *extra], log)
        wall = time.perf_counter() - started
        source = (["--dataset", name] if protocol == "loo" else
                  ["--events", str(whole.relative_to(ROOT)), "--session-gap", SESSION_GAP])
        payload = json.loads(_run(["evaluate", "--model", str((folder / "model").relative_to(ROOT)),
                                   *source, "--protocol", protocol, "--json"], log))
        meta = json.loads((folder / "model" / "meta.json").read_text())
        hyper = meta["hyperparameters"]
        log(f"{name}: {protocol} protocol, {payload['cases']} test cases, {payload['items']:,} items, "
            f"{payload['targets_in_input']} targets in their input; trained {wall:.0f}s, "
            f"{hyper['epochs']} epochs ({hyper['epoch_choice']['how']}), seen memory "
            f"{hyper['seen_size'] or 'off'} (validation: {hyper['epoch_choice'].get('seen_memory')})")
        for masking in ("masked", "unmasked"):
            rows = {m: {k: r[masking][k] for k in SHOWN} for m, r in payload["results"].items()}
            log(f"{masking}:\n{table(rows, SHOWN)}")
        log("")


if __name__ == "__main__":
    sys.exit(main())
