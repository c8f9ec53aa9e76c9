"""Model benchmark: training throughput, per-event inference cost, and the scoring step's FLOP rate
against the machine's large-GEMM rate, all measured in the same run.

    .venv/bin/python bench/model.py [--items 10000,100000] [--dims 64,256] [--batches 64,256] [--json]

Scoring step = ``topk.top_k_scores`` as the worker runs it without the bfloat16 screen (scores
of a batch of users against every item written into a reused buffer, 50 items masked per user,
block-maxima top-K), and ``topk.BF16Screen.top_k``, as it runs where the CPU has bfloat16 dot
products (the same exact answer through a bfloat16 matmul; the shares of rows it settled from 4K
candidates or scored again in float32 are reported; its rate counts the same 2*m*n*d FLOP,
against both GEMM rates). Its parts
are timed as well: the matmul into a fresh matrix and into the buffer (``users x items``,
``addmm(b, H, E.T)``), in the other layout (``items x users``, ``addmm(b, E, H.T)``) and in numpy,
and top-K by ``torch.topk`` and by ``topk.top_k``.
FLOP rates count the matmul's 2*m*n*d only. Everything runs with the worker's thread count
(``--threads``, default ``Worker.torch_threads``); the GEMM reference is given at that count and at
the machine's core count; the bfloat16 GEMM rate (same size) is measured too. Per event:
``Recommender.step_batch`` (steady-state users, batch ``--event-batch``; with and without the
bfloat16 screen) against the naive way (GRU over the whole history, one event at a time).
Training: one epoch on synthetic sessions over the largest catalogue, per d. The ``ann`` option
(inverted file, ``4 sqrt(n)`` cells) is measured on that trained model and on the synthetic model
bench/e2e.py serves, with queries from real session prefixes: recall of the exact top-K and cost.
"""

from __future__ import annotations

import itertools
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

from stream_recs.config import ServingOptions, Worker
from stream_recs.devkit import naive_top_k
from stream_recs.events import Event
from stream_recs.scoring import Recommender
from stream_recs.topk import BF16Screen, top_k, top_k_scores

K = ServingOptions().k
VARIANTS = 4  # distinct inputs timed in turn: on one repeated input the branch predictor learns
# the top-K selection, which real traffic never allows, and the timing comes out too fast


def scoring_rows(n_items: int, d: int, batches: list[int], repeat: int) -> list[dict]:
    """Times of the scoring step and its parts for one catalogue, at each batch size."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(n_items, d, generator=gen)
    bias = torch.randn(n_items, generator=gen)
    rows = []
    for m in batches:
        outputs = [torch.randn(m, d, generator=gen) for _ in range(VARIANTS)]
        masked = [torch.randint(n_items, (m, 50), generator=gen) for _ in range(VARIANTS)]
        flops = 2.0 * m * n_items * d
        times, settled = _scoring_times(weight, bias, outputs, masked, repeat)
        row = {"items": n_items, "d": d, "batch": m, **settled}
        for name, seconds in times.items():
            row[f"{name}_ms"] = seconds * 1e3
            row[f"{name}_gflops"] = flops / seconds / 1e9 if "top" not in name else None
        rows.append(row)
    return rows


def in_turn(fn, inputs: list[tuple]):
    """A call of ``fn`` on the next of ``inputs`` (round robin) each time it is called."""
    turn = itertools.cycle(inputs)
    return lambda: fn(*next(turn))


def _scoring_times(weight, bias, outputs, masked, repeat: int) -> tuple[dict[str, float], dict]:
    """Median seconds of each part, and the shares of rows the bfloat16 screen settled late."""
    weight_np = weight.numpy()
    screen = BF16Screen(weight, bias)
    scores = [(torch.addmm(bias, o, weight.T),) for o in outputs]
    buffer = torch.empty_like(scores[0][0])
    each, each_np = [(o,) for o in outputs], [(o.numpy(),) for o in outputs]
    with_mask = list(zip(outputs, masked, strict=True))
    calls = {
        "mm_users_x_items": in_turn(lambda o: torch.addmm(bias, o, weight.T), each),
        "mm_into_buffer": in_turn(lambda o: torch.addmm(bias, o, weight.T, out=buffer), each),
        "mm_items_x_users": in_turn(lambda o: torch.addmm(bias[:, None], weight, o.T), each),
        "mm_numpy": in_turn(lambda o: o @ weight_np.T, each_np),
        "topk": in_turn(lambda s: torch.topk(s, K, dim=1), scores),
        "block_top_k": in_turn(lambda s: top_k(s, K), scores),
        "step": in_turn(lambda o, m: top_k_scores(o, weight, bias, K, m, out=buffer), with_mask),
        "step_bf16": in_turn(lambda o, m: screen.top_k(o, K, m), with_mask),
    }
    times = {name: median_time(call, repeat) for name, call in calls.items()}
    late = {"bf16_rows_widened": screen.rows_widened / screen.rows,
            "bf16_rows_rescored": screen.rows_rescored / screen.rows}
    return times, late


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
    rec = Recommender(model, ServingOptions(bf16_screen="off"))
    users = [f"u{i}" for i in range(batch)]
    states = steady_states(rec, users, model.item_ids, rng)
    now = time.time() + 10
    batches = [
        ([Event(f"e-{u}", u, model.item_ids[rng.integers(n_items)], "click", now) for u in users],)
        for _ in range(VARIANTS)
    ]
    ours = median_time(in_turn(lambda events: rec.step_batch(events, states, now), batches), repeat) / batch
    inference = statistics.median(rec.step_batch(b, states, now).inference_seconds for (b,) in batches)
    screened = Recommender(model, ServingOptions(bf16_screen="on"))
    ours_bf16 = median_time(
        in_turn(lambda events: screened.step_batch(events, states, now), batches), repeat
    ) / batch

    histories = [([rng.integers(n_items, size=50).tolist() for _ in range(8)],) for _ in range(VARIANTS)]

    def naive(eight: list[list[int]]) -> None:
        for history in eight:
            naive_top_k(model, history, K)

    naive_s = median_time(in_turn(naive, histories), max(3, repeat // 3), warmup=1) / 8
    return {
        "items": n_items, "d": d, "batch": batch, "ours_us_per_event": ours * 1e6,
        "ours_inference_us_per_event": inference / batch * 1e6, "naive_us_per_event": naive_s * 1e6,
        "naive_over_ours": naive_s / ours, "ours_bf16_us_per_event": ours_bf16 * 1e6,
        "naive_over_ours_bf16": naive_s / ours_bf16,
    }


def training_throughput(n_items: int, d: int, n_events: int):
    """Events/s of one training epoch (models/train.py) on synthetic sessions; also returns the
    trained model and its sequences (approximate-search recall is measured on them)."""
    from stream_recs.datasets import synthetic_sessions, to_sequences
    from stream_recs.models.train import TrainConfig, train_model

    events = synthetic_sessions(n_users=n_events // 20, n_items=n_items, n_events=n_events)
    sequences = to_sequences(events).items
    config = TrainConfig(hidden_size=d, epochs=1)
    model, history = train_model(sequences, events.item_ids, config, "bench", show_progress=False)
    row = {"items": n_items, "d": d, "events": history[0]["events"],
           "train_events_per_s": history[0]["events_per_s"]}
    return row, model, sequences


@torch.inference_mode()
def session_queries(model, sequences, n: int, rng) -> torch.Tensor:
    """Output vectors after random prefixes of real sessions: the queries the stream scores."""
    rows = []
    for s in rng.choice(len(sequences), n):
        seq = sequences[s]
        hidden = model.init_hidden(1)
        for item in seq[: rng.integers(1, len(seq) + 1)]:
            hidden = model.step(hidden, torch.tensor([int(item)]))
        rows.append(model.output_of(hidden)[0])
    return torch.stack(rows)


@torch.inference_mode()
def ann_rows(label: str, model, queries: torch.Tensor, probes: list[int], repeat: int) -> list[dict]:
    """Recall of the exact top-K and cost per event of the ``ann`` option against exact scoring."""
    lists = max(16, int(4 * model.n_items**0.5))
    weight, bias = (t.float().contiguous() for t in model.output_embeddings())
    _, exact = top_k_scores(queries, weight, bias, K)
    exact_s = median_time(lambda: top_k_scores(queries, weight, bias, K), repeat) / len(queries)
    rows = []
    for p in probes:
        started = time.perf_counter()
        live = Recommender(model, ServingOptions(ann_lists=lists, ann_probes=p))._live
        build = time.perf_counter() - started
        _, approx = live.top_k(queries, None)
        recall = statistics.mean(
            len(set(a) & set(e)) / K for a, e in zip(approx.tolist(), exact.tolist(), strict=True)
        )
        seconds = median_time(lambda live=live: live.top_k(queries, None), repeat) / len(queries)
        rows.append({"model": label, "items": model.n_items, "d": model.hidden_size, "lists": lists,
                     "probes": p, "recall_at_20": recall, "ann_us_per_event": seconds * 1e6,
                     "exact_us_per_event": exact_s * 1e6, "speedup": exact_s / seconds,
                     "build_s": build})
    return rows


@click.command()
@click.option("--items", default="10000,100000", show_default=True, help="Catalogue sizes.")
@click.option("--dims", default="64,256", show_default=True, help="Hidden sizes d.")
@click.option("--batches", default="64,256", show_default=True, help="Users per scoring step.")
@click.option("--event-batch", default=256, show_default=True, help="Micro-batch for per-event costs.")
@click.option("--threads", type=int, default=Worker.torch_threads, show_default=True)
@click.option("--repeat", default=15, show_default=True, help="Timings per measurement (median).")
@click.option("--train-events", default=400_000, show_default=True, help="At the largest catalogue.")
@click.option("--probes", default="8,16,32", show_default=True, help="ann: cells scanned per event.")
@click.option("--json", "as_json", is_flag=True, help="Last line: one JSON object with every result.")
def main(items, dims, batches, event_batch, threads, repeat, train_events, probes, as_json):
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
    gemm_bf16 = gemm_rate(dtype=torch.bfloat16)
    for row in scoring:
        for key in [k for k in row if k.endswith("_gflops")]:
            if row[key] is not None:
                row[key.replace("_gflops", "_of_gemm")] = row[key] * 1e9 / gemm_rate_t
        row["step_bf16_of_bf16_gemm"] = row["step_bf16_gflops"] * 1e9 / gemm_bf16
    print(f"large GEMM (1024^3 float32): {gemm_all[0] / 1e9:.1f} GFLOP/s on {cores} threads, "
          f"{gemm_rate_t / 1e9:.1f} GFLOP/s on {threads} (median of {len(gemm)} in this run); "
          f"bfloat16: {gemm_bf16 / 1e9:.1f} GFLOP/s on {threads}")
    print("\nscoring step (ms, and matmul GFLOP/s as a fraction of the GEMM rate on the same threads)")
    cols = ["items", "d", "batch", "mm_users_x_items_ms", "mm_into_buffer_ms", "mm_items_x_users_ms",
            "mm_numpy_ms", "topk_ms", "block_top_k_ms", "step_ms", "mm_into_buffer_of_gemm",
            "step_of_gemm"]
    print(table(scoring, cols))
    print("\nscoring step through the bfloat16 screen (same exact answer; shares of rows settled "
          "from 4K candidates, rescored in float32; rate against the float32, bfloat16 GEMM)")
    print(table(scoring, ["items", "d", "batch", "step_ms", "step_bf16_ms", "bf16_rows_widened",
                          "bf16_rows_rescored", "step_bf16_of_gemm", "step_bf16_of_bf16_gemm"]))
    costs = [per_event_costs(n, d, event_batch, repeat) for n in sizes for d in ds]
    print(f"\nper-event inference cost (micro-batch {event_batch} vs naive: 50-item history rerun)")
    print(table(costs, ["items", "d", "ours_us_per_event", "ours_inference_us_per_event",
                        "ours_bf16_us_per_event", "naive_us_per_event", "naive_over_ours",
                        "naive_over_ours_bf16"]))
    training, ann = [], []
    rng = np.random.default_rng(0)
    probe_list = [int(x) for x in probes.split(",")]
    for d in ds:
        row, model, sequences = training_throughput(max(sizes), d, train_events)
        training.append(row)
        if d == ds[0]:
            queries = session_queries(model, sequences, event_batch, rng)
            ann += ann_rows("trained 1 epoch", model, queries, probe_list, repeat)
            synthetic = synthetic_model(max(sizes), d)
            queries = session_queries(synthetic, sequences, event_batch, rng)
            ann += ann_rows("synthetic (bench/e2e.py)", synthetic, queries, probe_list, repeat)
    print("\ntraining throughput (one epoch, synthetic sessions)")
    print(table(training, ["items", "d", "events", "train_events_per_s"]))
    print(f"\napproximate scoring (ann option) against exact, {event_batch} session queries, K={K}")
    print(table(ann, ["model", "items", "d", "lists", "probes", "recall_at_20", "ann_us_per_event",
                      "exact_us_per_event", "speedup", "build_s"]))
    if as_json:
        emit_json({
            "threads": threads, "gemm_gflops": gemm_rate_t / 1e9, "gemm_gflops_all_cores": gemm_all[0] / 1e9,
            "gemm_bf16_gflops": gemm_bf16 / 1e9,
            "scoring": scoring, "per_event": costs, "training": training, "ann": ann,
        })


if __name__ == "__main__":
    main()
