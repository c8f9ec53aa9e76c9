"""Results output: a plain-text table, a JSON file and a PNG bar chart of metrics per model."""

from __future__ import annotations

import json
from pathlib import Path

COLUMNS = ("recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20", "mrr@20")


def table(results: dict[str, dict], columns=COLUMNS) -> str:
    """``results``: model name -> metrics; one row per model."""
    width = max([len("model"), *(len(name) for name in results)])
    lines = [f"{'model':<{width}}  " + "  ".join(f"{c:>9}" for c in columns)]
    for name, metrics in results.items():
        cells = [f"{metrics[c]:>9.4f}" if c in metrics else f"{'-':>9}" for c in columns]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict) -> None:
    Path(path).write_text(json.dumps(payload, indent=1, sort_keys=True))


def write_chart(path: str | Path, results: dict[str, dict], title: str, columns=COLUMNS) -> None:
    """Grouped bars: one group per metric, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    n = max(len(results), 1)
    width = 0.8 / n
    for k, (name, metrics) in enumerate(results.items()):
        xs = [i + (k - (n - 1) / 2) * width for i in range(len(columns))]
        ax.bar(xs, [metrics.get(c, 0.0) for c in columns], width, label=name)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel("score (full ranking)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
