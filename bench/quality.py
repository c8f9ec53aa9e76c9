"""Quality benchmark: our GRU4Rec against the baselines, medians over seeds, through the CLI.

    .venv/bin/python bench/quality.py [--protocol loo|session] [--dataset movielens-100k|movielens-1m]
                                      [--seeds 0,1,2] [--param NAME=VALUE ...] [--json]

- ``loo``: a MovieLens data set, per-user leave-one-out, full ranking over all its items, each
  case's input the data set's history length. The model is trained only on the training part
  (``stream-recs train --dataset ... --holdout loo --session-gap none``) and evaluated with
  ``stream-recs evaluate --protocol loo``, which checks that by the data fingerprints.
- ``session``: synthetic click sessions, global time split (last day test), every next item of a
  test session predicted from its prefix.

Training uses ``train``'s defaults: without ``--param epochs=N`` the epochs and the seen memory
are chosen on a validation part cut from the training part (``docs/model.md``, "Defaults on
anyone's data"); ``--param epochs=10`` reproduces the earlier fixed defaults.

Both maskings are reported: ``masked`` (each case's input items never recommended, as the worker
serves; the headline) and ``unmasked``. ``--sasrec`` (loo only) also trains the SASRec-style
reference model (``models/sasrec.py``) on the same training part, once per seed, in this process,
and evaluates it by the same code.

Prints the exact commands, a table per masking (medians over seeds; train wall time and events/s
from the train command), and writes results.json and results.png under --out.
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
MOVIELENS = ("movielens-100k", "movielens-1m")


def run(args: list[str], log) -> tuple[str, float]:
    log("$ " + shlex.join(["stream-recs", *args]))
    started = time.perf_counter()
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"command failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout, time.perf_counter() - started


@click.command()
@click.option("--protocol", type=click.Choice(["loo", "session"]), default="loo")
@click.option("--dataset", type=click.Choice(MOVIELENS), default=MOVIELENS[0], show_default=True,
              help="loo: the data set.")
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--loss", type=click.Choice(["xe", "bpr-max"]), default="xe", show_default=True)
@click.option("--param", "params", multiple=True, help="Passed to train as --param.")
@click.option("--out", "out_dir", default="artifacts/quality", show_default=True)
@click.option("--sasrec", is_flag=True, help="loo: also the SASRec-style model, per seed.")
@click.option("--json", "as_json", is_flag=True)
def main(protocol, dataset, seeds, loss, params, out_dir, as_json, sasrec):
    from stream_recs.models.evaluate import MASKINGS
    from stream_recs.models.report import table, write_chart, write_json

    out = ROOT / out_dir / (f"loo-{dataset}" if protocol == "loo" else protocol)
    out.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        click.echo(line, err=True)

    if sasrec and protocol != "loo":
        raise click.UsageError("--sasrec needs --protocol loo")
    if protocol == "loo":
        train_data = ["--dataset", dataset, "--holdout", "loo", "--session-gap", "none"]
        eval_data = ["--dataset", dataset, "--protocol", "loo"]
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
        scored = json.loads(stdout)["results"]["GRU4Rec (ours)"]
        runs.append({"seed": seed, "train_wall_s": wall,
                     "train_events_per_s": meta["metrics"]["train_events_per_s"], **scored})
        log(f"seed {seed}: " + ", ".join(
            f"{m} ndcg@10 {scored[m]['ndcg@10']:.4f} recall@10 {scored[m]['recall@10']:.4f}"
            for m in MASKINGS) + f"; train {wall:.1f}s, {meta['metrics']['train_events_per_s']:,} events/s")
    stdout, _ = run(["evaluate", "--model", str(out / f"model-seed{runs[0]['seed']}"),
                     *eval_data, "--json", "--report", str(out)], log)
    evaluated = json.loads(stdout)
    baselines = evaluated["results"]
    baselines.pop("GRU4Rec (ours)")
    wall = {k: statistics.median(r[k] for r in runs) for k in ("train_wall_s", "train_events_per_s")}
    ours = f"GRU4Rec (ours, median of {len(runs)} seeds)"
    results = {m: {ours: _median([r[m] for r in runs]), **{n: b[m] for n, b in baselines.items()}}
               for m in MASKINGS}
    payload = {"protocol": protocol, "dataset": dataset if protocol == "loo" else "synthetic",
               "cases": evaluated["cases"], "items": evaluated["items"], "max_len": evaluated["max_len"],
               "targets_in_input": evaluated["targets_in_input"],
               "hyperparameters": meta["hyperparameters"], "runs": runs, "train": wall,
               "results": results}
    if sasrec:
        reference = [_sasrec_run(dataset, evaluated["max_len"], r["seed"], log) for r in runs]
        for m in MASKINGS:
            results[m][f"SASRec-style (median of {len(reference)} seeds)"] = _median(
                [r[m] for r in reference])
        payload["sasrec_runs"] = reference
    write_json(out / "results.json", payload)
    for m in MASKINGS:
        write_chart(out / ("results.png" if m == MASKINGS[0] else f"results-{m}.png"), results[m],
                    f"{payload['dataset']}: {protocol} protocol, test, full ranking, {m}")
    if as_json:
        click.echo(json.dumps(payload, indent=1))
        return
    click.echo(f"{payload['dataset']}: {protocol} protocol, test part, {payload['cases']} cases, input "
               f"<= {payload['max_len']} items, full ranking over {payload['items']:,} items; "
               f"{payload['targets_in_input']} targets occur in their input")
    for m in MASKINGS:
        click.echo(f"\n{m}:\n{table(results[m])}")
    click.echo(f"\nours: train wall {wall['train_wall_s']:.1f}s (median), "
               f"{wall['train_events_per_s']:,.0f} events/s; charts and JSON in {out}")


def _median(metrics: list[dict]) -> dict:
    return {k: statistics.median(m[k] for m in metrics) for k in metrics[0]}


def _sasrec_run(dataset: str, max_len: int, seed: int, log) -> dict:
    """Train the SASRec-style model on the leave-one-out training part of ``dataset`` with
    ``seed``; its test metrics, both maskings."""
    import dataclasses

    from stream_recs.datasets import load_dataset, to_sequences
    from stream_recs.models.evaluate import MASKINGS, evaluate, leave_one_out
    from stream_recs.models.sasrec import SASRec, SASRecConfig

    split = leave_one_out(load_dataset(dataset), max_len)
    config = dataclasses.replace(SASRecConfig(), seed=seed)
    started = time.perf_counter()
    model = SASRec(to_sequences(split.train, None).items, len(split.train.item_ids), config)
    wall = time.perf_counter() - started
    scored = evaluate(model, split.test)
    log(f"SASRec-style seed {seed}: " + ", ".join(
        f"{m} ndcg@10 {scored[m]['ndcg@10']:.4f} recall@10 {scored[m]['recall@10']:.4f}"
        for m in MASKINGS) + f"; train {wall:.1f}s ({config.epochs} epochs)")
    return {"seed": seed, "train_wall_s": wall, **{m: scored[m] for m in MASKINGS}}


if __name__ == "__main__":
    sys.exit(main())
