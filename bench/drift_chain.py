"""The trainer's cycles replayed offline over bench/drift.py's stream: no broker, no worker.

Each cycle is ``learning.run_cycle`` on the newest ``--window`` clicks plus a uniform sample of older
ones (as many as the window holds, like the trainer's replay sample), every ``--cycle-events``
clicks, from the static model on; a candidate the gate passes becomes the live model at once. Each
simulated hour is then judged, with the protocol of ``drift_eval.py``, on the model that was live
when the hour began, beside the oracle of that hour. Comparing these with the continuous arm of
bench/drift.py separates what the learning loses from what serving it live loses (the delay until a
worker serves a new model, the swaps).

    .venv/bin/python bench/drift_chain.py [--seed 0] [--tolerance 0.05]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table
from drift import HYPER
from drift_eval import replay, score, train_scratch, windows_of
from drift_stream import HOUR, StreamOptions, generate, serving_hours

from stream_recs.config import Trainer
from stream_recs.learning import CycleOptions, run_cycle
from stream_recs.models.train import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--static-hours", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--trainer-epochs", type=int, default=2)
    parser.add_argument("--cycle-events", type=int, default=500)
    parser.add_argument("--window", type=int, default=3_000, help="bench/drift.py's --window-hours 1.2")
    parser.add_argument("--min-item-count", type=int, default=5)
    parser.add_argument("--tolerance", type=float, default=0.05, help="The gate's tolerance.")
    parser.add_argument("--lr-scale", type=float, default=Trainer().learning_rate_scale,
                        help="The trainer's learning-rate scale (default: its setting's).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = StreamOptions(seed=args.seed)
    stream = generate(dataclasses.replace(options, extra_hours=serving_hours(options)))
    ev, hours = stream.events, options.hours
    end_of_hours = int(np.searchsorted(ev.ts, hours * HOUR))
    hyper = {**HYPER, "epochs": args.epochs, "seed": args.seed}
    static = train_scratch(ev.take(np.flatnonzero(ev.ts < args.static_hours * HOUR)), hyper, "static")
    saved = {**dataclasses.asdict(TrainConfig.from_dict(hyper)), "session_gap": None}
    cycle = CycleOptions(args.min_item_count, args.trainer_epochs, 0.1, args.tolerance,
                         learning_rate_scale=args.lr_scale)
    rng = np.random.default_rng(args.seed)
    live, at_hour, published, cycles = static, {0: static}, 0, 0
    for end in range(args.cycle_events, end_of_hours + 1, args.cycle_events):
        lo = max(0, end - args.window)
        older = ev.take(np.sort(rng.choice(lo, size=min(lo, end - lo), replace=False))) if lo else None
        outcome = run_cycle(live, saved, ev.take(np.arange(lo, end)), older, cycle, f"c{end}")
        cycles += 1
        if outcome.verdict.publish and outcome.candidate is not None:
            live, published = outcome.candidate, published + 1
        # the model live after this cycle serves every hour that begins before the next one ends
        upto = int(ev.ts[min(end + args.cycle_events, end_of_hours) - 1] // HOUR)
        for hour in range(int(ev.ts[end - 1] // HOUR) + 1, upto + 1):
            at_hour.setdefault(hour, live)
    window = windows_of(stream)
    rows, pooled = [], {"chain": [0.0, 0.0], "oracle": [0.0, 0.0]}
    for hour in range(args.static_hours, hours):
        oracle = train_scratch(ev.take(np.flatnonzero(ev.ts < hour * HOUR)), hyper, f"oracle-{hour}")
        row = {"hour": hour}
        for name, model in (("chain", at_hour[hour]), ("oracle", oracle)):
            got = score(stream, replay(stream, model, (hour + 1) * HOUR, 0.0), np.flatnonzero(window == hour))
            row[f"items_{name}"], row[f"HR_{name}"] = model.n_items, got.hr(hour)
            if hour >= hours // 2:
                pooled[name][0] += got.hits[hour]
                pooled[name][1] += got.cases[hour]
        rows.append(row)
    print(f"offline chain: {cycles} cycles, {published} published; gate tolerance {args.tolerance}, "
          f"learning-rate scale {args.lr_scale}")
    print(table(rows, ["hour", "items_chain", "HR_chain", "items_oracle", "HR_oracle"]))
    chain_hr, oracle_hr = (hits / max(cases, 1) for hits, cases in pooled.values())
    print(f"second half (hours {hours // 2}-{hours - 1}, pooled): HR@20 chain {chain_hr:.3f}, oracle "
          f"{oracle_hr:.3f}, chain/oracle {chain_hr / oracle_hr:.2f}")

if __name__ == "__main__":
    main()
