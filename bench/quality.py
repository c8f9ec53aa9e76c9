"""Quality benchmark: our GRU4Rec against the baselines, medians over seeds, through the CLI.

    .venv/bin/python bench/quality.py [--protocol loo|session] [--seeds 0,1,2] [--json]

- ``loo``: MovieLens-100K, per-user leave-one-out, full ranking over all 1,682 items. The model is
  trained only on the training part written as an event log (``stream-recs train --events ...
  --session-gap none``) and evaluated with ``stream-recs evaluate --protocol loo``.
- ``session``: synthetic click sessions, global time split (last day test), every next item of a
  test session predicted from its prefix.

``--sasrec`` (loo only) also trains the SASRec-style reference model (``models/sasrec.py``) on the
same training part, once per seed, in this process, and evaluates it by the same code.

Prints the exact commands, a table (medians over seeds; train wall time and events/s from the
train command), and writes results.json and results.png under --out.
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
CLI = [str(ROOT / ".venv" / "bin" / "stream-recs")]
SYNTHETIC = ["--dataset", "synthetic", "--n-events", "300000", "--n-users", "20000",
             "--n-items", "3000"]


def run(args: list[str], log) -> tuple[str, float]:
    log("$ " + shlex.join(["stream-recs", *args]))
    started = time.perf_counter()
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"command failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout, time.perf_counter() - started


@click.command()
@click.option("--protocol", type=click.Choice(["loo", "session"]), default="loo")
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--loss", type=click.Choice(["xe", "bpr-max"]), default="xe", show_default=True)
@click.option("--param", "params", multiple=True, help="Passed to train as --param.")
@click.option("--out", "out_dir", default="artifacts/quality", show_default=True)
@click.option("--sasrec", is_flag=True, help="loo: also the SASRec-style model, per seed.")
@click.option("--json", "as_json", is_flag=True)
def main(protocol, seeds, loss, params, out_dir, as_json, sasrec):
    from stream_recs.models.report import table, write_chart, write_json

    out = ROOT / out_dir / protocol
    out.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        click.echo(line, err=True)

    if sasrec and protocol != "loo":
        raise click.UsageError("--sasrec needs --protocol loo")
    if protocol == "loo":
        from stream_recs.datasets import load_movielens_100k
        from stream_recs.models.evaluate import leave_one_out

        split = leave_one_out(load_movielens_100k())
        train_log = out / "ml100k-train.csv"
        split.train.write_csv(train_log)
        train_data = ["--events", str(train_log), "--session-gap", "none"]
        eval_data = ["--dataset", "movielens-100k", "--protocol", "loo"]
    else:
        train_data = [*SYNTHETIC, "--holdout", "session", "--session-gap", "1800"]
        eval_data = [*SYNTHETIC, "--protocol", "session", "--session-gap", "1800"]
    extra = [x for p in params for x in ("--param", p)]

    runs = []
    for seed in [int(s) for s in seeds.split(",")]:
        model_dir = out / f"model-seed{seed}"
        _, wall = run(["train", *train_data, "--out", str(model_dir), "--loss", loss,
                       "--seed", str(seed), "--quiet", *extra], log)
        meta = json.loads((model_dir / "meta.json").read_text())
        stdout, _ = run(["evaluate", "--model", str(model_dir), *eval_data, "--json",
                         "--no-baselines"], log)
        metrics = json.loads(stdout)["results"]["GRU4Rec (ours)"]
        runs.append({"seed": seed, "train_wall_s": wall,
                     "train_events_per_s": meta["metrics"]["train_events_per_s"], **metrics})
        log(f"seed {seed}: ndcg@10 {metrics['ndcg@10']:.4f} recall@10 {metrics['recall@10']:.4f}"
            f" train {wall:.1f}s, {meta['metrics']['train_events_per_s']:,} events/s")
    stdout, _ = run(["evaluate", "--model", str(out / f"model-seed{runs[0]['seed']}"),
                     *eval_data, "--json", "--report", str(out)], log)
    baselines = json.loads(stdout)["results"]
    baselines.pop("GRU4Rec (ours)")
    keys = [k for k in runs[0] if k != "seed"]
    median = {k: statistics.median(r[k] for r in runs) for k in keys}
    results = {f"GRU4Rec (ours, median of {len(runs)} seeds)": median, **baselines}
    payload = {"protocol": protocol, "hyperparameters": meta["hyperparameters"],
               "runs": runs, "results": results}
    if sasrec:
        reference = [_sasrec_run(split, r["seed"], log) for r in runs]
        results[f"SASRec-style (median of {len(reference)} seeds)"] = {
            k: statistics.median(r[k] for r in reference) for k in reference[0] if k != "seed"}
        payload["sasrec_runs"] = reference
    write_json(out / "results.json", payload)
    write_chart(out / "results.png", results, f"{protocol} protocol, test, full ranking")
    if as_json:
        click.echo(json.dumps(payload, indent=1))
        return
    click.echo(table(results))
    click.echo(f"ours: train wall {median['train_wall_s']:.1f}s (median), "
               f"{median['train_events_per_s']:,.0f} events/s; charts and JSON in {out}")


def _sasrec_run(split, seed: int, log) -> dict:
    """Train the SASRec-style model on ``split.train`` with ``seed``; its test metrics."""
    import dataclasses

    from stream_recs.datasets import to_sequences
    from stream_recs.models.evaluate import evaluate
    from stream_recs.models.sasrec import SASRec, SASRecConfig

    config = dataclasses.replace(SASRecConfig(), seed=seed)
    started = time.perf_counter()
    model = SASRec(to_sequences(split.train, None).items, len(split.train.item_ids), config)
    wall = time.perf_counter() - started
    metrics = evaluate(model, split.test)
    log(f"SASRec-style seed {seed}: ndcg@10 {metrics['ndcg@10']:.4f} recall@10 "
        f"{metrics['recall@10']:.4f} train {wall:.1f}s ({config.epochs} epochs)")
    return {"seed": seed, "train_wall_s": wall, **metrics}


if __name__ == "__main__":
    sys.exit(main())
