"""Training speed of the number formats and of ``mask_seen``, side by side in one process: one
epoch of the default ``xe`` training on the first users' MovieLens histories, for each variant in
turn, repeated; reports events/s and each variant's ratio to float32 without ``mask_seen`` (the
median over rounds of the ratio within a round, so the machine's drift cancels).

    .venv/bin/python bench/train_speed.py [--dataset movielens-1m] [--users 1000] [--rounds 3]
                                          [--threads 2] [--json]

bfloat16 needs a CPU that multiplies it natively to be faster (``models/precision.py``); the run
says whether this one does.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json, table

VARIANTS = (("float32", False), ("bfloat16", False), ("float32", True), ("bfloat16", True))


@click.command()
@click.option("--dataset", default="movielens-1m", show_default=True)
@click.option("--users", default=1000, show_default=True, help="Histories trained on (the first).")
@click.option("--rounds", default=3, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Last line: one JSON object.")
def main(dataset, users, rounds, threads, as_json):
    from stream_recs.datasets import load_dataset
    from stream_recs.models.precision import native_bf16
    from stream_recs.models.train import TrainConfig, train_model, training_sequences
    from stream_recs.models.tune import defaults_for

    torch.set_num_threads(threads)
    registry, sequences = training_sequences(load_dataset(dataset), None)
    sequences = sequences[:users]
    rates: dict[tuple[str, bool], list[float]] = {v: [] for v in VARIANTS}
    for round_ in range(rounds):
        for precision, mask_seen in VARIANTS:
            config = TrainConfig.from_dict({**defaults_for("xe"), "precision": precision,
                                            "mask_seen": mask_seen, "seed": round_, "epochs": 1})
            _, (stats,) = train_model(sequences, registry, config, "speed", show_progress=False)
            rates[precision, mask_seen].append(stats["events_per_s"])
            print(f"round {round_ + 1}: {precision}, mask_seen {mask_seen}: "
                  f"{stats['events_per_s']:,.0f} events/s", file=sys.stderr, flush=True)
    base = rates[VARIANTS[0]]
    rows = [{"precision": p, "mask_seen": m, "events/s": statistics.median(r),
             "ratio": statistics.median(x / b for x, b in zip(r, base, strict=True))}
            for (p, m), r in rates.items()]
    events = sum(len(s) - 1 for s in sequences if len(s) > 1)
    print(f"{dataset}: {len(sequences)} histories, {events:,} events an epoch, {threads} threads, "
          f"{rounds} rounds; native bfloat16: {native_bf16()}")
    print(table(rows, ["precision", "mask_seen", "events/s", "ratio"]))
    if as_json:
        emit_json({"dataset": dataset, "users": len(sequences), "events": events, "threads": threads,
                   "native_bf16": native_bf16(), "rows": rows})


if __name__ == "__main__":
    main()
