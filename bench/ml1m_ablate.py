"""ML-1M ablations on a cheap proxy: a fixed random quarter of the users, the leave-one-out
protocol of ``bench/quality.py`` (input <= 200 items, full ranking over all 3,706 items, input items
masked), scored on the validation cases (each user's second-to-last item) after every epoch so one
run also gives the epoch curve; the test cases of the quarter are scored once at the end.

    .venv/bin/python bench/ml1m_ablate.py [--fraction 0.25] [--epochs 6] [--param name=value ...]

One JSON line per run on stdout (the config, per-epoch valid masked NDCG@10/HR@10, test, seconds).
"""

from __future__ import annotations

import json
import sys
import time

import click
import numpy as np


@click.command()
@click.option("--fraction", default=0.25, show_default=True)
@click.option("--epochs", default=6, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--param", "params", multiple=True)
@click.option("--threads", default=1, show_default=True)
def main(fraction, epochs, seed, params, threads):
    import torch

    torch.set_num_threads(threads)
    from stream_recs.datasets import history_len, load_dataset
    from stream_recs.models.evaluate import ModelPredictor, evaluate, leave_one_out
    from stream_recs.models.train import TrainConfig, train_model, training_sequences
    from stream_recs.models.tune import defaults_for

    max_len = history_len("movielens-1m")
    events = load_dataset("movielens-1m")
    split = leave_one_out(events, max_len)
    users = np.unique(events.user)
    chosen = np.zeros(users.max() + 1, bool)
    chosen[np.random.default_rng(12345).choice(users, int(len(users) * fraction), replace=False)] = True
    train = split.train.take(np.flatnonzero(chosen[split.train.user]))

    valid, test = (cases.take(chosen[cases.users]) for cases in (split.valid, split.test))
    overrides = {}
    for p in params:
        name, value = p.split("=", 1)
        overrides[name] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    config = TrainConfig.from_dict({**defaults_for("xe"), **overrides, "epochs": epochs,
                                    "seed": seed, "max_len": max_len})
    registry, sequences = training_sequences(train, None)
    curve = []

    def on_epoch(epoch, model, stats):
        scored = evaluate(ModelPredictor(model, events.item_ids), valid)["masked"]
        curve.append({"epoch": epoch + 1, "ndcg@10": round(scored["ndcg@10"], 4),
                      "hr@10": round(scored["recall@10"], 4), "train_s": round(stats["seconds"], 1)})
        print(f"  epoch {epoch + 1}: valid {curve[-1]}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    model, history = train_model(sequences, registry, config, "ablate", show_progress=False,
                                 on_epoch=on_epoch)
    wall = time.perf_counter() - started
    scored = evaluate(ModelPredictor(model, events.item_ids), test)["masked"]
    print(json.dumps({"params": overrides, "epochs": epochs, "fraction": fraction, "seed": seed,
                      "train_events": int(sum(len(s) - 1 for s in sequences if len(s) > 1)),
                      "valid": curve, "test_last": {"ndcg@10": round(scored["ndcg@10"], 4),
                                                    "hr@10": round(scored["recall@10"], 4)},
                      "wall_s": round(wall, 1), "train_s": round(sum(h["seconds"] for h in history), 1)}),
          flush=True)


if __name__ == "__main__":
    main()
