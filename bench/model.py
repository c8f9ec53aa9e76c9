"""Model benchmark: training throughput, per-event inference cost, and the scoring step's FLOP rate
against the machine's large-GEMM rate, all measured in the same run.

    .venv/bin/python bench/model.py [--items 10000,100000] [--dims 64,256] [--batches 64,256] [--json]

Scoring step = ``scoring.top_k_scores`` (scores of a batch of users against every item, mask, top-K),
in both layouts: ``users x items`` (``addmm(b, H, E.T)``) and ``items x users`` (``addmm(b, E, H.T)``
read transposed); the matmuls alone (torch both ways, numpy) and ``torch.topk`` are timed as well.
FLOP rates count the matmul's 2*m*n*d only. Everything runs with the worker's thread count
(``--threads``, default ``Worker.torch_threads``); the GEMM reference is given at that count and at
the machine's core count. Per event: ``Recommender.step_batch`` (steady-state users, batch
``--event-batch``) against the naive way (GRU over the whole history, one event at a time).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit_json, gemm_rate, median_time, synthetic_model, table

from stream_recs.config import Worker
from stream_recs.events import Event
from stream_recs.scoring import Recommender, top_k_scores

K = 20


def scoring_rows(n_items: int, d: int, batches: list[int], repeat: int) -> list[dict]:
    """Times of the scoring step and its parts for one catalogue, at each batch size."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(n_items, d, generator=gen)
    bias = torch.randn(n_items, generator=gen)
    rows = []
    for m in batches:
        outputs = torch.randn(m, d, generator=gen)
        masked = torch.randint(n_items, (m, 50), generator=gen)
        scores = torch.addmm(bias, outputs, weight.T)
        flops = 2.0 * m * n_items * d
        times = _scoring_times(weight, bias, outputs, masked, scores, repeat)
        row = {"items": n_items, "d": d, "batch": m}
        for name, seconds in times.items():
            row[f"{name}_ms"] = seconds * 1e3
            row[f"{name}_gflops"] = flops / seconds / 1e9 if name != "topk" else None
        rows.append(row)
    return rows


def _scoring_times(weight, bias, outputs, masked, scores, repeat: int) -> dict[str, float]:
    weight_np, outputs_np = weight.numpy(), outputs.numpy()
    return {
        "mm_users_x_items": median_time(lambda: torch.addmm(bias, outputs, weight.T), repeat),
        "mm_items_x_users": median_time(lambda: torch.addmm(bias[:, None], weight, outputs.T), repeat),
        "mm_numpy": median_time(lambda: outputs_np @ weight_np.T, repeat),
        "topk": median_time(lambda: torch.topk(scores, K, dim=1), repeat),
        "step_users_x_items": median_time(
            lambda: top_k_scores(outputs, weight, bias, K, masked, item_major=False), repeat
        ),
        "step_items_x_users": median_time(
            lambda: top_k_scores(outputs, weight, bias, K, masked, item_major=True), repeat
        ),
    }


def steady_states(rec: Recommender, users: list[str], ids: list[str], rng, rounds: int = 3) -> dict:
    """States of ``users`` after ``rounds`` events each (so the timed batch continues sessions)."""
    states: dict = {}
    now = time.time()
    for r in range(rounds):
        events = [Event(f"w{r}-{u}", u, ids[rng.integers(len(ids))], "click", now + r) for u in users]
        states = {**states, **rec.step_batch(events, states, now + r).states}
    return states


def per_event_costs(n_items: int, d: int, batch: int, repeat: int) -> dict:
    """Seconds per event: ``step_batch`` on a full micro-batch, and the naive per-event rerun."""
    model = synthetic_model(n_items, d)
    rng = np.random.default_rng(0)
    rec = Recommender(model, k=K)
    users = [f"u{i}" for i in range(batch)]
    states = steady_states(rec, users, model.item_ids, rng)
    now = time.time() + 10
    events = [Event(f"e-{u}", u, model.item_ids[rng.integers(n_items)], "click", now) for u in users]
    ours = median_time(lambda: rec.step_batch(events, states, now), repeat) / batch
    inference = statistics.median(rec.step_batch(events, states, now).inference_seconds for _ in range(5))

    histories = [rng.integers(n_items, size=50).tolist() for _ in range(8)]

    @torch.inference_mode()
    def naive() -> None:
        for history in histories:
            hidden = model.init_hidden(1)
            for item in history:
                hidden = model.step(hidden, torch.tensor([item]))
            scores = model.score(hidden)[0]
            scores[history] = float("-inf")
            torch.topk(scores, K)

    naive_s = median_time(naive, max(3, repeat // 3), warmup=1) / len(histories)
    return {
        "items": n_items, "d": d, "batch": batch, "ours_us_per_event": ours * 1e6,
        "ours_inference_us_per_event": inference / batch * 1e6, "naive_us_per_event": naive_s * 1e6,
        "naive_over_ours": naive_s / ours,
    }  # fmt: skip


def training_throughput(n_items: int, d: int, n_events: int) -> dict:
    """Events/s of one training epoch (models/train.py) on synthetic sessions."""
    from stream_recs.datasets import synthetic_sessions, to_sequences
    from stream_recs.models.train import TrainConfig, train_model

    events = synthetic_sessions(n_users=n_events // 20, n_items=n_items, n_events=n_events)
    sequences = to_sequences(events).items
    config = TrainConfig(hidden_size=d, epochs=1)
    _, history = train_model(sequences, events.item_ids, config, "bench", show_progress=False)
    return {"items": n_items, "d": d, "events": history[0]["events"],
            "train_events_per_s": history[0]["events_per_s"]}  # fmt: skip


@click.command()
@click.option("--items", default="10000,100000", show_default=True, help="Catalogue sizes.")
@click.option("--dims", default="64,256", show_default=True, help="Hidden sizes d.")
@click.option("--batches", default="64,256", show_default=True, help="Users per scoring step.")
@click.option("--event-batch", default=256, show_default=True, help="Micro-batch for per-event costs.")
@click.option("--threads", type=int, default=Worker.torch_threads, show_default=True)
@click.option("--repeat", default=15, show_default=True, help="Timings per measurement (median).")
@click.option("--train-events", default=100_000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Last line: one JSON object with every result.")
def main(items, dims, batches, event_batch, threads, repeat, train_events, as_json):
    sizes = [int(x) for x in items.split(",")]
    ds = [int(x) for x in dims.split(",")]
    ms = [int(x) for x in batches.split(",")]
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    gemm_all = [gemm_rate()]
    torch.set_num_threads(threads)
    gemm = [gemm_rate()]
    scoring = []
    for n in sizes:
        for d in ds:
            scoring += scoring_rows(n, d, ms, repeat)
            gemm.append(gemm_rate())  # re-measured between configurations: the machine is shared
    gemm_rate_t = statistics.median(gemm)
    for row in scoring:
        for key in [k for k in row if k.endswith("_gflops")]:
            if row[key] is not None:
                row[key.replace("_gflops", "_of_gemm")] = row[key] * 1e9 / gemm_rate_t
    print(f"large GEMM (1024^3 float32): {gemm_all[0] / 1e9:.1f} GFLOP/s on {cores} threads, "
          f"{gemm_rate_t / 1e9:.1f} GFLOP/s on {threads} (median of {len(gemm)} in this run)")  # fmt: skip
    print("\nscoring step (ms, and matmul GFLOP/s as a fraction of the GEMM rate on the same threads)")
    cols = ["items", "d", "batch", "mm_users_x_items_ms", "mm_items_x_users_ms", "mm_numpy_ms", "topk_ms",
            "step_users_x_items_ms", "step_items_x_users_ms", "step_users_x_items_of_gemm",
            "step_items_x_users_of_gemm", "mm_items_x_users_of_gemm"]  # fmt: skip
    print(table(scoring, cols))
    costs = [per_event_costs(n, d, event_batch, repeat) for n in sizes for d in ds]
    print(f"\nper-event inference cost (micro-batch {event_batch} vs naive: 50-item history rerun)")
    print(table(costs, ["items", "d", "ours_us_per_event", "ours_inference_us_per_event",
                        "naive_us_per_event", "naive_over_ours"]))  # fmt: skip
    training = [training_throughput(min(sizes), d, train_events) for d in ds]
    print("\ntraining throughput (one epoch, synthetic sessions)")
    print(table(training, ["items", "d", "events", "train_events_per_s"]))
    if as_json:
        emit_json({
            "threads": threads, "gemm_gflops": gemm_rate_t / 1e9, "gemm_gflops_all_cores": gemm_all[0] / 1e9,
            "scoring": scoring, "per_event": costs, "training": training,
        })  # fmt: skip


if __name__ == "__main__":
    main()
