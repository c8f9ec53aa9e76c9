"""Helpers shared by the benchmarks: synthetic production-shaped models, timing, tables."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from stream_recs.models import GRU4Rec, save_model


def item_ids(n_items: int) -> list[str]:
    """The synthetic catalogue: ``i0 .. i{n-1}`` (what ``synthetic_sessions`` names items)."""
    return [f"i{n}" for n in range(n_items)]


def synthetic_model(n_items: int, d: int, seed: int = 0, clustered: bool = True) -> GRU4Rec:
    """An untrained GRU4Rec of the production shape with random weights.

    Item vectors have about unit norm (as trained ones do) and small random biases. ``clustered``:
    each vector is its topic's centroid plus noise (one topic per 40 items, like
    ``synthetic_sessions``), the structure trained embeddings have; otherwise isotropic noise,
    the worst case for approximate search. Exact scoring costs the same either way."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = GRU4Rec(item_ids(n_items), hidden_size=d, version=f"bench-{n_items}-{d}")
    vectors = torch.randn(n_items, d, generator=gen)
    if clustered:
        centroids = torch.randn(max(4, n_items // 40), d, generator=gen)
        vectors = centroids[torch.randint(len(centroids), (n_items,), generator=gen)] + 0.5 * vectors
    with torch.no_grad():
        model.item_embedding.weight.copy_(vectors / vectors.norm(dim=1, keepdim=True))
        model.item_bias.weight.normal_(0.0, 0.1, generator=gen)
    return model.eval()


def save_synthetic_model(path: Path, n_items: int, d: int) -> Path:
    """``synthetic_model`` written as a checkpoint under ``path`` (reused when already there)."""
    if not (path / "meta.json").exists():
        save_model(synthetic_model(n_items, d), path)
    return path


def median_time(fn: Callable[[], object], repeat: int = 15, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def gemm_rate(size: int = 1024, repeat: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """The machine's large-GEMM rate: FLOP/s of a ``size``^3 matmul (float32 unless ``dtype``)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    out = torch.empty(size, size, dtype=dtype)
    seconds = median_time(lambda: torch.mm(a, b, out=out), repeat)
    return 2 * size**3 / seconds


def table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A plain-text table of ``rows`` (dicts) restricted to ``columns``."""
    def fmt(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def emit_json(payload: dict) -> None:
    """The machine-readable result: one JSON object on the last line of stdout."""
    print(json.dumps(payload, sort_keys=True), flush=True)

