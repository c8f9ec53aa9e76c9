"""How a new item's row should start when the trainer adds it: measured, not assumed.

A parent model learns the first 70% of a synthetic click log (by time) with 10% of the items held
out of it entirely; the rest of the log is the trainer's window, in which those items appear. A
child warm-starts from the parent, registers the items clicked at least ``--min-count`` times in
the window's training part, and starts their rows either ``fresh`` (the child's own random
initialisation) or from their ``neighbours`` (the mean of the known items clicked right before and
after them, ``models/warm_start.py``); then it fine-tunes 0, 1 or 2 epochs. Every model is scored
on the window's newest 20% (next item, full ranking, earlier items masked): on the cases whose
target is a new item, and on all cases. Medians over seeds.

    .venv/bin/python bench/new_items.py [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from stream_recs.datasets import synthetic_sessions
from stream_recs.models.evaluate import ModelPredictor, evaluate
from stream_recs.models.gate import newest_slice
from stream_recs.models.train import TrainConfig, train_model, training_sequences

HYPER = {"hidden_size": 64, "batch_size": 64, "learning_rate": 0.05, "n_sample": 0, "max_len": 50}
INITS = ("fresh", "neighbours")
EPOCHS = (0, 1, 2)
METRICS = ("recall@20", "ndcg@20")


def one_seed(seed: int, min_count: int, parent_epochs: int) -> dict[tuple[str, int], dict]:
    events = synthetic_sessions(n_users=3000, n_items=400, n_events=80_000, seed=seed, days=20)
    cut = float(np.quantile(events.ts, 0.7))
    rng = np.random.default_rng(seed)
    new_codes = rng.choice(len(events.item_ids), size=len(events.item_ids) // 10, replace=False)
    is_new = np.isin(events.item, new_codes)
    past = events.take(np.flatnonzero((events.ts < cut) & ~is_new))
    window = events.take(np.flatnonzero(events.ts >= cut))
    registry, sequences = training_sequences(past, None)
    parent, _ = train_model(sequences, registry, TrainConfig.from_dict({**HYPER, "epochs": parent_epochs}),
                            "parent", show_progress=False)
    holdout = newest_slice(window, 0.2, HYPER["max_len"])
    new_ids = {events.item_ids[c] for c in new_codes.tolist()}
    targets_new = np.array([window.item_ids[t] in new_ids for t in holdout.cases.targets])
    on_new = holdout.cases.take(targets_new)
    grown, child_sequences = training_sequences(holdout.train, None, parent.registry, min_count)
    def scores(model) -> dict:
        predictor = ModelPredictor(model, window.item_ids)
        return {part: evaluate(predictor, cases)["masked"]
                for part, cases in (("new", on_new), ("all", holdout.cases))}

    results = {("parent", 0): scores(parent)}
    for init in INITS:
        for epochs in EPOCHS:
            torch.manual_seed(seed)
            config = TrainConfig.from_dict({**HYPER, "epochs": epochs})
            child, _ = train_model(child_sequences, grown, config, f"{init}-{epochs}", show_progress=False,
                                   parent=parent, from_neighbours=init == "neighbours")
            results[(init, epochs)] = scores(child)
    print(f"seed {seed}: {len(grown.ids) - parent.n_items} items added, {len(on_new)} of "
          f"{len(holdout.cases)} held-out cases target a new item", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--parent-epochs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    runs = [one_seed(int(s), args.min_count, args.parent_epochs) for s in args.seeds.split(",")]
    print(f"\nmedians over seeds {args.seeds}; masked, full ranking")
    header = "".join(f"{'new ' + m:>16}{'all ' + m:>16}" for m in METRICS)
    print(f"{'rows of new items':<22}{'epochs':>7}{header}")
    for key in [("parent", 0)] + [(i, e) for i in INITS for e in EPOCHS]:
        cells = "".join(f"{statistics.median(r[key][part][m] for r in runs):>16.4f}"
                        for m in METRICS for part in ("new", "all"))
        print(f"{key[0] if key[0] != 'parent' else 'parent (none)':<22}{key[1]:>7}{cells}")


if __name__ == "__main__":
    main()
