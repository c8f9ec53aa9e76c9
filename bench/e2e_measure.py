"""The measurements of bench/e2e.py, each on a ``Run`` of its own: throughput at saturation, CPU
time per event, end-to-end latency at a fixed offered load."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import orjson
from e2e_run import Run, produce_at_rate, produce_states, returning_histories, wait_for

WARMUP_S = 3.0


def throughput(bootstrap, prefix, workdir, kind, model, records, timeout, env=None, history=0) -> float:
    """Events/s at saturation: backlog first, then the service; 10th-90th percentile of outputs.
    ``history`` > 0: the backlog's users return with that many earlier clicks (see bench/e2e.py);
    the service starts first and the backlog is sent once it answers, so the worker's restore of
    the states (a restart's) is not measured."""
    run = Run(bootstrap, prefix, kind, workdir)
    run.env.update(env or {})
    try:
        run.create_topics()
        if history and kind != "ceiling":
            histories = returning_histories(records, model, history)
            if kind.startswith("ours"):
                asyncio.run(produce_states(bootstrap, run, model, records, histories))
            run.service(kind, model, histories if kind == "naive" else None)
            consumer, out = run.consumer(run.wait_serving() + len(records), timeout)
            asyncio.run(produce_at_rate(bootstrap, run.topics.clicks, records))
        else:
            asyncio.run(produce_at_rate(bootstrap, run.topics.clicks, records))
            consumer, out = run.consumer(len(records), timeout)
            run.service(kind, model)
        wait_for(consumer, run, timeout + 30)
        stamps = np.sort(np.array([row[1] for row in orjson.loads(out.read_bytes())]))
        if len(stamps) < 0.9 * len(records):
            raise RuntimeError(f"{run.app_id}: {len(stamps)} of {len(records)} outputs\n{run.log_tail()}")
        lo, hi = int(0.1 * len(stamps)), int(0.9 * len(stamps))
        return (hi - lo) / max(stamps[hi] - stamps[lo], 1e-6)
    finally:
        run.close()


def cpu_per_event(bootstrap, prefix, workdir, kind, model, records) -> float:
    """Microseconds of the service's CPU time (all its threads, from /proc) per event: a running
    service, then ``records`` sent as fast as they go, until the consumer has every answer. Less
    sensitive to other jobs on the machine than events/s, though a busy cache still costs."""
    run = Run(bootstrap, prefix, f"{kind}-cpu", workdir)
    try:
        run.create_topics()
        service = run.service(kind, model)
        probes = run.wait_serving()
        consumer, _ = run.consumer(probes + len(records), timeout=300)
        time.sleep(1.0)  # the consumer process starts before the clock does
        before = _cpu_seconds(service.pid)
        asyncio.run(produce_at_rate(bootstrap, run.topics.clicks, records))
        wait_for(consumer, run, 330)
        return (_cpu_seconds(service.pid) - before) / len(records) * 1e6
    finally:
        run.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency(bootstrap, prefix, workdir, kind, model, records, rate) -> dict:
    """End-to-end latency percentiles (ms) of a running service fed at ``rate`` events/s."""
    run = Run(bootstrap, prefix, f"{kind}-lat{int(rate)}", workdir)
    try:
        run.create_topics()
        run.service(kind, model)
        probes = run.wait_serving()
        consumer, out = run.consumer(probes + len(records), timeout=len(records) / rate + 120)
        wall_start = time.time()
        achieved = asyncio.run(produce_at_rate(bootstrap, run.topics.clicks, records, rate))
        wait_for(consumer, run, 150)
        rows = orjson.loads(out.read_bytes())
        lat = np.array([(r[0] - r[2]) * 1e3 for r in rows if r[2] >= wall_start + WARMUP_S])
        if len(lat) < 0.99 * (len(records) - WARMUP_S * rate):
            raise RuntimeError(f"{run.app_id}: {len(rows)} of {len(records)} outputs\n{run.log_tail()}")
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        return {"rate": rate, "offered_eps": achieved, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
                "max_ms": float(lat.max()), "events": len(lat)}
    finally:
        run.close()
