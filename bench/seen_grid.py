"""The grid that chose the seen-memory defaults: MovieLens-100K leave-one-out, validation NDCG@10
(input items not masked).

    .venv/bin/python bench/seen_grid.py [--sizes 64,128,256] [--decays 0.97,0.99] [--seeds 0,1,2]
                                        [--epochs 20] [--every 5] [--jobs 2] [--json]

Each (width, decay, seed) trains the tuned ``xe`` defaults with that seen memory, on the training
part only, and is scored on the validation and the test cases every ``--every`` epochs (full
ranking). Rows are medians over seeds; the choice is the row with the best validation median
(test figures are shown, never used to choose). ``--jobs`` runs trainings in parallel, one torch
thread each.
"""

from __future__ import annotations

import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from itertools import product

import click


def _train(size: int, decay: float, seed: int, epochs: int, every: int) -> list[dict]:
    import torch

    from stream_recs.datasets import load_movielens
    from stream_recs.models.evaluate import ModelPredictor, evaluate, leave_one_out
    from stream_recs.models.train import TrainConfig, train_model, training_sequences
    from stream_recs.models.tune import defaults_for

    torch.set_num_threads(1)
    split = leave_one_out(load_movielens("movielens-100k"))
    registry, sequences = training_sequences(split.train, None)
    config = TrainConfig.from_dict({**defaults_for("xe"), "seen_size": size, "seen_decay": decay,
                                    "epochs": epochs, "seed": seed})
    rows = []

    def on_epoch(epoch: int, model, stats: dict) -> None:
        if (epoch + 1) % every == 0:
            predictor = ModelPredictor(model, split.train.item_ids)
            valid, test = (evaluate(predictor, cases)["unmasked"] for cases in (split.valid, split.test))
            rows.append({"seen_size": size, "seen_decay": decay, "seed": seed, "epoch": epoch + 1,
                         "valid_ndcg@10": valid["ndcg@10"], "test_ndcg@10": test["ndcg@10"],
                         "test_recall@10": test["recall@10"]})

    train_model(sequences, registry, config, "grid", show_progress=False, on_epoch=on_epoch)
    return rows


@click.command()
@click.option("--sizes", default="64,128,256", show_default=True)
@click.option("--decays", default="0.97,0.99", show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True)
@click.option("--epochs", default=20, show_default=True)
@click.option("--every", default=5, show_default=True, help="Score every this many epochs.")
@click.option("--jobs", default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def main(sizes, decays, seeds, epochs, every, jobs, as_json):
    points = list(product([int(s) for s in sizes.split(",")],
                          [float(d) for d in decays.split(",")],
                          [int(s) for s in seeds.split(",")]))
    with ProcessPoolExecutor(jobs) as pool:
        done = [pool.submit(_train, size, decay, seed, epochs, every)
                for size, decay, seed in points]
        runs = [r for future in done for r in future.result()]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["seen_size"], r["seen_decay"], r["epoch"]), []).append(r)
    table = []
    for (size, decay, epoch), rows in sorted(groups.items()):
        median = {k: statistics.median(r[k] for r in rows)
                  for k in ("valid_ndcg@10", "test_ndcg@10", "test_recall@10")}
        table.append({"seen_size": size, "seen_decay": decay, "epochs": epoch, "seeds": len(rows),
                      **median,
                      "valid_ndcg@10_mean": statistics.fmean(r["valid_ndcg@10"] for r in rows)})
    best = max(table, key=lambda row: row["valid_ndcg@10"])
    click.echo("width  decay  epochs  valid NDCG@10 (median, mean)  test NDCG@10  test Recall@10")
    for row in table:
        mark = "  <- chosen" if row is best else ""
        click.echo(f"{row['seen_size']:5d}  {row['seen_decay']:5.2f}  {row['epochs']:6d}  "
                   f"{row['valid_ndcg@10']:.4f}, {row['valid_ndcg@10_mean']:.4f}{'':14s}  "
                   f"{row['test_ndcg@10']:12.4f}  {row['test_recall@10']:14.4f}{mark}")
    if as_json:
        click.echo(json.dumps({"table": table, "best": best, "runs": runs}))


if __name__ == "__main__":
    main()
