"""The SASRec-style reference (``models/sasrec.py``) on MovieLens-1M, leave-one-out as
``bench/quality.py --sasrec`` runs it (training part only; test cases, input <= 200 items, full
ranking over 3,706 items, both maskings), but bounded: at most ``--epochs`` epochs and, after any
epoch, no new one once ``--budget`` seconds of training have passed (the model's own default is
50 epochs, hours at one thread). Prints one JSON line.

    .venv/bin/python bench/ml1m_sasrec.py [--seed 0] [--epochs 50] [--budget 900] [--threads 1]
"""

from __future__ import annotations

import dataclasses
import json
import time

import click


@click.command()
@click.option("--seed", default=0, show_default=True)
@click.option("--epochs", default=50, show_default=True)
@click.option("--budget", default=900.0, show_default=True, help="Training seconds.")
@click.option("--threads", default=1, show_default=True)
def main(seed, epochs, budget, threads):
    import torch

    torch.set_num_threads(threads)
    from stream_recs.datasets import history_len, load_dataset, to_sequences
    from stream_recs.models.evaluate import MASKINGS, evaluate, leave_one_out
    from stream_recs.models.sasrec import SASRec, SASRecConfig

    split = leave_one_out(load_dataset("movielens-1m"), history_len("movielens-1m"))
    config = dataclasses.replace(SASRecConfig(), seed=seed, epochs=epochs, max_seconds=budget)
    started = time.perf_counter()
    model = SASRec(to_sequences(split.train, None).items, len(split.train.item_ids), config)
    wall = time.perf_counter() - started
    scored = evaluate(model, split.test)
    print(json.dumps({"seed": seed, "epochs_run": len(model.losses), "config": dataclasses.asdict(config),
                      "train_wall_s": round(wall, 1),
                      **{m: {k: round(scored[m][k], 4) for k in ("ndcg@10", "recall@10", "ndcg@20",
                                                                  "recall@20")} for m in MASKINGS}}))


if __name__ == "__main__":
    main()
