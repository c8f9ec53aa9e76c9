"""End-to-end benchmark on the real local broker: stream-recs against the ceiling and the naive
service, side by side in one run, one worker each.

    .venv/bin/python bench/e2e.py [--items 10000,100000] [--dims 64,256] [--repeats 3] [--json]

Throughput (events/s at saturation): a backlog of synthetic click sessions (``synthetic_sessions``,
keyed by user) is written to a fresh clicks topic, then the service starts and a separate consumer
process reads its output topic; the rate is taken between the 10th and 90th percentile of the
output records' timestamps (start-up and the tail do not count). Services, per catalogue size and d
(synthetic GRU4Rec of that shape, K=20):

1. ceiling: ``bench/services.py ceiling``, a do-nothing Faust agent forwarding each click;
2. naive: ``bench/services.py naive``, one event at a time, GRU over the whole recent history;
3. ours: ``stream-recs worker`` as shipped (RocksDB store, default settings: exact scoring, through
   the bfloat16 screen where the CPU has bfloat16 dot products); with ``--ann-lists``, also with
   the ``ann`` option at the largest catalogue, with ``--float32``, also with the screen off
   (``STREAM_RECS_BF16_SCREEN=off``) there, with ``--inline``, also with the top-K ranked in
   the worker's own process (``STREAM_RECS_RANKER=inline``; shipped: in a child, ranker_child.py)
   there, and with ``--similarity``, also with each ``because`` the most similar history item
   (``STREAM_RECS_EXPLAIN=similarity``; shipped: the leave-one-out replay of a share of the
   answers, explain.py) there: what the explanations cost.

Returning users (``--returning-history N``): the throughput runs start with every user of the
backlog already holding N earlier clicks (random items, the last a minute before the backlog, in
the session of the user's first click), as after a warm-up: ours gets the states its own
``Recommender`` builds from those clicks, written to the sessions changelog before the worker
starts (it restores them as after a restart); naive gets the same histories in its dict. The
backlog is sent once the service answers a probe (the restore is not measured; the service still
falls behind at once). Without it every user is new, so the naive service's histories stay short
(a few items).

Latency (ours, 10k items, d=64): a running worker, clicks produced at a fixed rate (500 and 2,000
events/s) with their send time as ``ts``; the consumer process records when each recommendation
arrives; p50/p95/p99 of (arrival - ts) after a warm-up. CPU (``--measure cpu``; ceiling and ours,
10k items, d=64): the service's CPU time per event while it answers a burst of clicks, from /proc.
Every run uses its own topics, consumer group and data directory (unique names), deleted
afterwards; the shared broker is left running.
Medians over ``--repeats``; the services of one repeat run one after the other, interleaved.

This file is the command line and the report; a run's processes, topics and feeds are in
``e2e_run.py``, the measurements in ``e2e_measure.py``.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import click
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit_json, save_synthetic_model, table
from e2e_measure import cpu_per_event, latency, throughput
from e2e_run import click_records

from stream_recs.config import load_settings

BACKLOG = {"ceiling": 40_000, "ours": 20_000, "naive": 3_000}  # events at 10k items
BACKLOG_100K = {"ours": 10_000, "naive": 1_500}


@click.command()
@click.option("--items", default="10000,100000", show_default=True)
@click.option("--dims", default="64,256", show_default=True)
@click.option("--rates", default="500,2000", show_default=True, help="Offered loads for latency.")
@click.option("--latency-seconds", default=20.0, show_default=True)
@click.option("--latency-services", default="ours", show_default=True, help="Also: ceiling, naive.")
@click.option("--measure", default="throughput,latency", show_default=True, help="Also: cpu.")
@click.option("--ann-lists", default=0, show_default=True,
              help="Also run stream-recs with the ann option (this many cells) at the largest catalogue.")
@click.option("--ann-probes", default=32, show_default=True)
@click.option("--inline", "inline", is_flag=True,
              help="Also run stream-recs ranking in its own process (no child) at the largest catalogue.")
@click.option("--float32", "float32", is_flag=True,
              help="Also run stream-recs with the bfloat16 screen off at the largest catalogue.")
@click.option("--similarity", "similarity", is_flag=True,
              help="Also run stream-recs with similarity explanations at the largest catalogue.")
@click.option("--repeats", default=3, show_default=True)
@click.option("--scale", default=1.0, show_default=True, help="Multiplies every backlog size.")
@click.option("--returning-history", "history", default=0, show_default=True,
              help="Throughput with returning users: each holds this many earlier clicks.")
@click.option("--json", "as_json", is_flag=True, help="Last line: one JSON object with the results.")
@click.option("--report", "saved", type=click.Path(exists=True, dir_okay=False),
              help="Only print the tables of a saved --json output (its last line), with these options.")
def main(
    items, dims, rates, latency_seconds, latency_services, measure, ann_lists, ann_probes, inline, float32,
    similarity, repeats, scale, history, as_json, saved,
):
    settings = load_settings()
    if saved:
        runs = orjson.loads(Path(saved).read_text().strip().splitlines()[-1])["runs"]
        report(runs, [int(x) for x in items.split(",")], [int(x) for x in dims.split(",")],
               [float(x) for x in rates.split(",")], latency_services.split(","), len(runs["ceiling_eps"]),
               settings.partitions)
        return
    from stream_recs.cli.kafka import resolve_bootstrap

    bootstrap = resolve_bootstrap(settings, start=False)
    sizes = [int(x) for x in items.split(",")]
    ds = [int(x) for x in dims.split(",")]
    loads = [float(x) for x in rates.split(",")]
    prefix = f"bench-e2e-{uuid.uuid4().hex[:6]}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    try:
        models = {(n, d): save_synthetic_model(workdir / f"model-{n}-{d}", n, d) for n in sizes for d in ds}
        backlog = {}
        for n in sizes:
            counts = BACKLOG if n < 100_000 else {**BACKLOG, **BACKLOG_100K}
            backlog[n] = {kind: max(500, int(c * scale)) for kind, c in counts.items()}
        data = {n: click_records(n, max(backlog[n].values())) for n in sizes}
        base = sizes[0]
        lat_records = click_records(base, int(max(loads) * latency_seconds), seed=1)
        results: dict[str, list[float]] = {}
        variants = {
            "ours_ann": {"STREAM_RECS_ANN_LISTS": str(ann_lists), "STREAM_RECS_ANN_PROBES": str(ann_probes)},
            "ours_f32": {"STREAM_RECS_BF16_SCREEN": "off"},
            "ours_inline": {"STREAM_RECS_RANKER": "inline"},
            "ours_similarity": {"STREAM_RECS_EXPLAIN": "similarity"},
        }
        options = (("ours_inline", inline), ("ours_f32", float32), ("ours_ann", ann_lists),
                   ("ours_similarity", similarity))
        chosen = [kind for kind, on in options if on]

        def add(key: str, value: float) -> None:
            results.setdefault(key, []).append(value)
            print(f"  {key}: {value:,.1f}", file=sys.stderr, flush=True)

        for rep in range(repeats):
            print(f"repeat {rep + 1}/{repeats}", file=sys.stderr, flush=True)
            recs = data[base][: backlog[base]["ceiling"]]
            if "throughput" in measure:
                add("ceiling_eps", throughput(bootstrap, prefix, workdir, "ceiling", None, recs, 300))
            for n in sizes if "throughput" in measure else ():
                for d in ds:
                    for kind in ("ours", "naive"):
                        recs = data[n][: backlog[n][kind]]
                        eps = throughput(bootstrap, prefix, workdir, kind, models[n, d], recs, 400,
                                         history=history)
                        add(f"{kind}_eps_{n}_{d}", eps)
                    for kind in chosen if n == sizes[-1] else ():
                        recs = data[n][: backlog[n]["ours"]]
                        eps = throughput(bootstrap, prefix, workdir, kind, models[n, d], recs, 400,
                                         variants[kind], history)
                        add(f"{kind}_eps_{n}_{d}", eps)
            for kind in ("ceiling", "ours") if "cpu" in measure else ():
                recs = data[base][: backlog[base]["ours"]]
                add(f"{kind}_cpu_us", cpu_per_event(bootstrap, prefix, workdir, kind,
                                                    models[base, ds[0]], recs))
            for kind in latency_services.split(",") if "latency" in measure else ():
                for rate in loads:
                    recs = lat_records[: int(rate * latency_seconds)]
                    got = latency(bootstrap, prefix, workdir, kind, models[base, ds[0]], recs, rate)
                    tag = "" if kind == "ours" else f"_{kind}"
                    for q in ("p50", "p95", "p99"):
                        add(f"{q}_ms_at_{int(rate)}{tag}", got[f"{q}_ms"])
                    add(f"offered_eps_at_{int(rate)}{tag}", got["offered_eps"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = report(results, sizes, ds, loads, latency_services.split(","), repeats, settings.partitions)
    if ann_lists:
        summary["ann_lists"], summary["ann_probes"] = ann_lists, ann_probes
    if history:
        summary["returning_history"] = history
    if as_json:
        emit_json({**summary, "runs": results, "repeats": repeats})


def report(results, sizes, ds, loads, latency_kinds, repeats, partitions) -> dict:
    """Print the tables and ratios; the summary figures for the JSON line. Figures are medians over
    the repeats; ratios are medians of the ratios measured side by side within each repeat."""
    med = {key: statistics.median(values) for key, values in results.items()}

    def ratio(num: str, den: str) -> float:
        return statistics.median(a / b for a, b in zip(results[num], results[den], strict=True))

    summary: dict[str, float] = {}
    base, big, d0 = sizes[0], sizes[-1], ds[0]
    if "ceiling_eps" in med:
        ceiling = med["ceiling_eps"]
        rows = [{"service": "ceiling (forward)", "items": "-", "d": "-", "events_per_s": ceiling,
                 "of_ceiling": 1.0}]
        for n in sizes:
            for d in ds:
                naive = med[f"naive_eps_{n}_{d}"]
                rows.append({"service": "naive", "items": n, "d": d, "events_per_s": naive,
                             "of_ceiling": ratio(f"naive_eps_{n}_{d}", "ceiling_eps")})
                for kind, name in (("ours", "stream-recs"), ("ours_inline", "stream-recs inline"),
                                   ("ours_f32", "stream-recs float32"),
                                   ("ours_ann", "stream-recs ann"),
                                   ("ours_similarity", "stream-recs similarity")):
                    key = f"{kind}_eps_{n}_{d}"
                    if key in med:
                        rows.append({"service": name, "items": n, "d": d, "events_per_s": med[key],
                                     "of_ceiling": ratio(key, "ceiling_eps"),
                                     "ours_over_naive": ratio(key, f"naive_eps_{n}_{d}")})
        print(f"throughput at saturation, median of {repeats} (events/s; one worker, {partitions} partitions;"
              " ratios: median of the side-by-side ratios of each repeat)")
        print(table(rows, ["service", "items", "d", "events_per_s", "of_ceiling", "ours_over_naive"]))
        summary = {
            "ceiling_eps": ceiling, "ours_eps": med[f"ours_eps_{base}_{d0}"],
            "ours_eps_100k": med[f"ours_eps_{big}_{d0}"], "naive_eps_100k": med[f"naive_eps_{big}_{d0}"],
            "naive_eps": med[f"naive_eps_{base}_{d0}"],
        }
        summary["ours_over_ceiling"] = ratio(f"ours_eps_{base}_{d0}", "ceiling_eps")
        summary["ours_over_naive_100k"] = ratio(f"ours_eps_{big}_{d0}", f"naive_eps_{big}_{d0}")
        for kind in ("ours_inline", "ours_f32", "ours_ann", "ours_similarity"):
            if f"{kind}_eps_{big}_{d0}" in med:
                summary[f"{kind}_eps_100k"] = med[f"{kind}_eps_{big}_{d0}"]
                summary[f"{kind}_over_naive_100k"] = ratio(f"{kind}_eps_{big}_{d0}", f"naive_eps_{big}_{d0}")
        variants = "".join(
            f"   {label}: {summary[f'{kind}_over_naive_100k']:.1f}x"
            for kind, label in (("ours_inline", "inline"), ("ours_f32", "float32"), ("ours_ann", "with ann"),
                                ("ours_similarity", "similarity"))
            if f"{kind}_eps_100k" in summary
        )
        print(f"\nours/ceiling ({base} items, d={d0}): {summary['ours_over_ceiling']:.2f}   "
              f"ours/naive ({big} items, d={d0}): {summary['ours_over_naive_100k']:.1f}x{variants}")
        if f"ours_similarity_eps_{big}_{d0}" in med:
            summary["ours_over_similarity"] = ratio(f"ours_eps_{big}_{d0}", f"ours_similarity_eps_{big}_{d0}")
            print(f"explanations, replay (shipped) / similarity throughput ({big} items, d={d0}): "
                  f"{summary['ours_over_similarity']:.2f}")
    if "ours_cpu_us" in med:
        print(f"\nCPU per event ({base} items, d={d0}; service process, all threads), median of {repeats}: "
              f"ceiling {med['ceiling_cpu_us']:.0f} us, stream-recs {med['ours_cpu_us']:.0f} us")
        summary["ceiling_cpu_us"], summary["ours_cpu_us"] = med["ceiling_cpu_us"], med["ours_cpu_us"]
    for kind in latency_kinds:
        tag = "" if kind == "ours" else f"_{kind}"
        if f"p50_ms_at_{int(loads[0])}{tag}" not in med:
            continue
        rows = [{"offered_eps": rate, "achieved_eps": med[f"offered_eps_at_{int(rate)}{tag}"],
                 **{f"{q}_ms": med[f"{q}_ms_at_{int(rate)}{tag}"] for q in ("p50", "p95", "p99")}}
                for rate in loads]
        name = "stream-recs" if kind == "ours" else kind
        print(f"\nend-to-end latency, {name}, {base} items, d={d0}, median of {repeats} (ms)")
        print(table(rows, ["offered_eps", "achieved_eps", "p50_ms", "p95_ms", "p99_ms"]))
        for rate in loads:
            for q in ("p50", "p95", "p99"):
                summary[f"{q}_ms_at_{int(rate)}{tag}"] = med[f"{q}_ms_at_{int(rate)}{tag}"]
    return summary


if __name__ == "__main__":
    main()
