"""Items without clicks, ranked from their content: the content tower (``models/content.py``)
measured on MovieLens.

Leave-one-out split (each user's last rating is the test case). A tenth of the items (drawn per
seed) is held out: all their clicks leave the training part. GRU4Rec, with the CLI's default
hyper-parameters for ``xe`` but a fixed number of epochs, is trained on the rest; the tower is fitted
on it and the catalogue (genres, year, title words), and the held-out items get content rows.
Test cases whose target is a held-out item ("new") are ranked over all items, the case's input
items masked as the worker serves, by:

- ``content``: the model with the held-out items' content rows;
- ``popularity``: training counts *with* the held-out items' clicks (an oracle of their popularity;
  without them, popularity ranks them last);
- ``random``: uniform random scores;
- ``clicks learned``: the same hyper-parameters trained on the whole training part, held-out
  items' clicks included: where the items stand once their clicks are learned;
- ``no row``: the model without rows for the held-out items (they rank last);
- ``content + 1 epoch`` / ``no row + 1 epoch``: continuous learning, one warm-started epoch on the
  whole training part (the held-out items' clicks included) from the content rows, or from fresh
  rows (``--no-refine``: skipped).

``all`` is every test case, to see that the content rows do not hurt the rest. Medians over seeds,
with the lowest and highest value. Models and each seed's figures are cached under ``--cache``.

    .venv/bin/python bench/content.py --dataset movielens-100k [--seeds 0,1,2] [--epochs 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from stream_recs.datasets import history_len, load_movielens, movielens_items, to_sequences
from stream_recs.models import load_model, save_model
from stream_recs.models.baselines import MostPopular
from stream_recs.models.content import fit_tower, with_content_rows
from stream_recs.models.evaluate import ModelPredictor, evaluate, leave_one_out
from stream_recs.models.train import TrainConfig, train_model, training_sequences
from stream_recs.models.tune import defaults_for

ROWS = ("content", "popularity", "random", "clicks learned", "no row", "content + 1 epoch",
        "no row + 1 epoch")
METRICS = ("recall@20", "ndcg@20")


class RandomScores:
    name = "random"

    def __init__(self, n_items: int, seed: int):
        self.n_items, self.rng = n_items, np.random.default_rng(seed)

    def score_prefixes(self, prefixes, users=None) -> np.ndarray:
        return self.rng.random((len(prefixes), self.n_items))


def trained(events, path: Path, config: TrainConfig, version: str):
    """The model of ``events`` (cached at ``path``) and its training sequences."""
    registry, sequences = training_sequences(events, None)
    if (path / "meta.json").exists():
        return load_model(path), sequences
    started = time.perf_counter()
    model, _ = train_model(sequences, registry, config, version, show_progress=False)
    save_model(model, path)
    print(f"  trained {version}: {config.epochs} epochs in {time.perf_counter() - started:.0f}s",
          flush=True)
    return model, sequences


def one_seed(dataset: str, seed: int, epochs: int, cache: Path, fit_options: dict,
             train_only: bool = False, refine: bool = True) -> dict | None:
    events = load_movielens(dataset)
    max_len = history_len(dataset)
    split = leave_one_out(events, max_len)
    rng = np.random.default_rng(seed)
    held = rng.choice(len(events.item_ids), size=len(events.item_ids) // 10, replace=False)
    is_held = np.zeros(len(events.item_ids), bool)
    is_held[held] = True
    config = TrainConfig.from_dict({**defaults_for("xe"), "epochs": epochs, "seed": seed,
                                    "max_len": max_len})
    tag = f"{dataset}-e{epochs}-seed{seed}"
    fit_key = ",".join(f"{k}={v}" for k, v in sorted(fit_options.items())) or "default"
    saved = cache / f"result-{tag}-{'refine' if refine else 'plain'}-{fit_key}.json"
    if saved.exists() and not train_only:
        print(f"seed {seed}: from {saved}", flush=True)
        return json.loads(saved.read_text())
    part = split.train.take(np.flatnonzero(~is_held[split.train.item]))
    model, sequences = trained(part, cache / f"held-{tag}", config, f"held-{tag}")
    full, _ = trained(split.train, cache / f"full-{tag}", config, f"full-{tag}")
    if train_only:
        return None
    catalogue = {r.item_id: r for r in movielens_items(dataset)}
    started = time.perf_counter()
    tower = fit_tower(model, sequences, catalogue, seed=seed, **fit_options)
    fitted = time.perf_counter() - started
    content = with_content_rows(model, tower, [catalogue[events.item_ids[c]] for c in held])
    new = is_held[split.test.targets]
    on_new = split.test.take(new)
    # continuous learning: a warm-started epoch on the whole training part (held-out clicks
    # included), from the content rows or from fresh rows
    tuned = {}
    if refine:
        one = dataclasses.replace(config, epochs=1)
        for name, parent in (("content + 1 epoch", content), ("no row + 1 epoch", model)):
            registry, all_sequences = training_sequences(split.train, None, parent.registry)
            tuned[name] = train_model(all_sequences, registry, one, name, show_progress=False,
                                      parent=parent)[0]
    predictors = {
        "content": ModelPredictor(content, events.item_ids),
        "popularity": MostPopular(to_sequences(split.train).items, len(events.item_ids)),
        "random": RandomScores(len(events.item_ids), seed),
        "clicks learned": ModelPredictor(full, events.item_ids),
        "no row": ModelPredictor(model, events.item_ids),
        **{name: ModelPredictor(m, events.item_ids) for name, m in tuned.items()},
    }
    result = {name: {part: evaluate(p, cases)["masked"]
                     for part, cases in (("new", on_new), ("all", split.test))}
              for name, p in predictors.items()}
    print(f"seed {seed}: {len(held)} items held out, {len(on_new)} of {len(split.test)} test cases "
          f"target one; tower fitted in {fitted:.0f}s ({len(tower.vocabulary) - 1} tokens); "
          + ", ".join(f"{n} new ndcg@20 {r['new']['ndcg@20']:.4f}" for n, r in result.items()),
          flush=True)
    saved.write_text(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="movielens-100k",
                        choices=("movielens-100k", "movielens-1m"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10, help="GRU epochs (fixed)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default="artifacts/content")
    parser.add_argument("--no-refine", action="store_true", help="skip the warm-started epoch")
    parser.add_argument("--train-only", action="store_true", help="only train and cache the models")
    parser.add_argument("--fit", action="append", default=[], metavar="NAME=VALUE",
                        help="fit_tower option (diagnosis)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fit_options = {k: type_of(v) for k, v in (f.split("=", 1) for f in args.fit)}
    runs = [one_seed(args.dataset, int(s), args.epochs, Path(args.cache), fit_options, args.train_only,
                     not args.no_refine)
            for s in args.seeds.split(",")]
    if args.train_only:
        return
    print(f"\n{args.dataset}: medians over seeds {args.seeds} [lowest, highest]; "
          f"masked, full ranking; GRU {args.epochs} epochs")
    cols = [f"{part} {m.replace('recall', 'HR')}" for m in METRICS for part in ("new", "all")]
    print(f"{'rows of held-out items':<24}" + "".join(f"{c:>26}" for c in cols))
    for name in ROWS:
        if name not in runs[0]:
            continue
        cells = []
        for m in METRICS:
            for part in ("new", "all"):
                values = [r[name][part][m] for r in runs]
                cells.append(f"{statistics.median(values):.4f} [{min(values):.4f}, {max(values):.4f}]")
        print(f"{name:<24}" + "".join(f"{c:>26}" for c in cells))


def type_of(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


if __name__ == "__main__":
    main()
