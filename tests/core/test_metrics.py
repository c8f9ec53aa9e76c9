"""Metrics: names and values after calls, the HTTP endpoint, and the summary maths."""

from __future__ import annotations

import urllib.request

import pytest

from stream_recs.batch_result import BatchResult
from stream_recs.health import start_server
from stream_recs.messages import Recommendation
from stream_recs.metrics import (
    Metrics,
    histogram_quantile,
    online_counts,
    parse_scrape,
    summarize,
)


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def result(event_ts: list[float], strategies: list[str], ranks, inference: float = 0.004,
           judged: list[str | None] | None = None):
    recs = [
        Recommendation(f"e{i}", "u", (), strategy, None, ts)
        for i, (ts, strategy) in enumerate(zip(event_ts, strategies, strict=True))
    ]
    judged = judged or ["v1"] * len(recs)
    return BatchResult(recs, {}, list(ranks), judged, [0] * len(recs), inference)


def test_online_counts():
    assert online_counts([None, 0, 1, 4, None, 2]) == (4, 3, pytest.approx(1 + 0.25 + 0.5))
    assert online_counts([]) == (0, 0, 0.0)


def test_record_batch():
    m = Metrics()
    m.set_model("v1")
    batch = result([100.0, 99.0, 98.0], ["model", "model", "popular"], [None, 3, 0])
    m.record_batch(batch, received_at=100.5, produced_at=100.52, taken=5)
    assert value(m, "stream_recs_events_total", outcome="recommended") == 3
    assert value(m, "stream_recs_recommendations_total", strategy="model") == 2
    assert value(m, "stream_recs_recommendations_total", strategy="popular") == 1
    assert value(m, "stream_recs_batch_size_sum") == 5
    assert value(m, "stream_recs_inference_seconds_sum") == pytest.approx(0.004)
    assert value(m, "stream_recs_processing_seconds_count") == 3
    assert value(m, "stream_recs_processing_seconds_sum") == pytest.approx(0.06)
    assert value(m, "stream_recs_end_to_end_seconds_sum") == pytest.approx(0.52 + 1.52 + 2.52)
    assert value(m, "stream_recs_end_to_end_seconds_bucket", le="1.0") == 1
    assert value(m, "stream_recs_online_evaluated_total", model_version="v1") == 2
    assert value(m, "stream_recs_online_hits_total", model_version="v1") == 1
    assert value(m, "stream_recs_online_reciprocal_rank_total", model_version="v1") == pytest.approx(1 / 3)


def test_online_counts_per_model_version_and_the_series_of_versions_gone():
    m = Metrics()
    m.set_model("v1", "v2")
    assert value(m, "stream_recs_canary_active") == 1
    judged = ["v1", "v2", "v0", None, "v2"]
    m.record_batch(result([1.0] * 5, ["model"] * 5, [1, 0, 2, 1, 5], judged=judged),
                   received_at=1.0, produced_at=1.0)
    assert value(m, "stream_recs_online_evaluated_total", model_version="v1") == 1
    assert value(m, "stream_recs_online_evaluated_total", model_version="v2") == 2
    assert value(m, "stream_recs_online_hits_total", model_version="v2") == 1
    assert value(m, "stream_recs_online_evaluated_total", model_version="previous") == 2  # v0, unknown
    m.set_model("v2")  # promoted: v1's series go, v2's stay
    assert value(m, "stream_recs_canary_active") == 0
    assert value(m, "stream_recs_online_evaluated_total", model_version="v1") is None
    assert value(m, "stream_recs_online_evaluated_total", model_version="v2") == 2
    m.record_canary_decision("promote")
    assert value(m, "stream_recs_canary_decisions_total", decision="promote") == 1
    assert value(m, "stream_recs_canary_decisions_total", decision="rollback") == 0


def test_dead_letters_and_gauges():
    m = Metrics()
    assert value(m, "stream_recs_dead_letters_total", reason="bad_json") == 0  # pre-created
    m.record_dead_letter("bad_ts")
    m.record_dead_letter("bad_ts")
    assert value(m, "stream_recs_dead_letters_total", reason="bad_ts") == 2
    assert value(m, "stream_recs_events_total", outcome="dead_lettered") == 2
    m.set_lag("clicks", 3, 17)
    assert value(m, "stream_recs_consumer_lag", topic="clicks", partition="3") == 17
    m.clear_lag("clicks", 3)
    m.clear_lag("clicks", 3)
    assert value(m, "stream_recs_consumer_lag", topic="clicks", partition="3") is None
    m.set_model("v1")
    m.set_model("v2")
    assert value(m, "stream_recs_model_info", version="v1") is None
    assert value(m, "stream_recs_model_info", version="v2") == 1
    m.set_model(None)
    assert value(m, "stream_recs_model_info", version="v2") is None
    m.record_reload(True)
    m.record_reload(False)
    m.record_reload(False)
    assert value(m, "stream_recs_model_reloads_total", result="failure") == 2
    m.set_active_sessions(42)
    m.set_ready(True)
    assert value(m, "stream_recs_active_sessions") == 42
    assert value(m, "stream_recs_ready") == 1


def test_registries_are_independent():
    a, b = Metrics(), Metrics()
    a.record_dead_letter("empty")
    assert value(b, "stream_recs_dead_letters_total", reason="empty") == 0


def test_http_endpoint_serves_the_registry():
    m = Metrics()
    m.record_dead_letter("not_utf8")
    server = start_server(m, port=0, host="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.stop()
    assert 'stream_recs_dead_letters_total{reason="not_utf8"} 1.0' in text


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.5, 0.15),  # rank 50: bucket (0.1, 0.2] holds ranks 40..60 -> 0.1 + 0.1 * 10/20
        (0.2, 0.05),  # rank 20: first bucket (0, 0.1] holds 0..40 -> 0.1 * 20/40
        (0.75, 0.35),  # rank 75: (0.2, 0.5] holds 60..90 -> 0.2 + 0.3 * 15/30
        (0.95, 0.5),  # rank 95: +Inf bucket -> largest finite bound
    ],
)
def test_histogram_quantile(q, expected):
    buckets = [(float("inf"), 100), (0.5, 90), (0.2, 60), (0.1, 40)]  # any order
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_histogram_quantile_without_observations():
    assert histogram_quantile(0.5, [(0.1, 0), (float("inf"), 0)]) is None
    assert histogram_quantile(0.5, []) is None


def test_summarize_window_between_two_scrapes():
    m = Metrics()
    m.record_batch(result([0.0], ["model"], [1]), received_at=10.0, produced_at=10.004)
    before = m.scrape()
    ranks = [0, 2, None, 4]
    m.record_batch(result([9.9] * 4, ["model"] * 4, ranks), received_at=10.0, produced_at=10.03)
    m.record_dead_letter("bad_json")
    summary = summarize(m.scrape(), before, interval_s=2.0)
    assert summary.events == 5 and summary.events_per_s == 2.5
    assert summary.dead_letters == 1
    # 4 observations of 0.03 s in (0.025, 0.05]: p50 rank 2 -> 0.025 + 0.025 * 2/4
    assert summary.processing_p50 == pytest.approx(0.0375)
    assert summary.end_to_end_p50 == pytest.approx(0.1 + 0.15 * 2 / 4)  # 0.13 s in (0.1, 0.25]
    assert summary.evaluated == 3
    assert summary.hit_rate == pytest.approx(2 / 3)
    assert summary.mrr == pytest.approx((0.5 + 0.25) / 3)
    line = summary.format()
    assert "events 5 (2/s)" in line and "HR@K 0.667" in line and "p50 37.5ms" in line
    whole = summarize(m.scrape())
    assert whole.events == 6 and whole.events_per_s is None and whole.hit_rate == 0.75


def test_parse_scrape_keys_samples_by_labels():
    samples = parse_scrape('a_total{x="1"} 2\na_total{x="2"} 3\n')
    assert samples[("a_total", frozenset({("x", "1")}))] == 2.0


def test_every_metric_is_documented_once():
    """The operations guide's metric table names each metric the worker and the trainer declare."""
    import re
    from pathlib import Path

    from stream_recs.trainer_metrics import TrainerMetrics

    guide = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    rows = [line for line in guide.splitlines() if line.startswith("| `stream_recs_")]
    documented = [name for row in rows for name in re.findall(r"`(stream_recs_\w+)", row.split(" | ")[0])]
    registries = (Metrics().registry, TrainerMetrics().registry)
    declared = {family.name + ("_total" if family.type == "counter" else "")
                for registry in registries for family in registry.collect()}
    assert sorted(set(documented)) == sorted(documented), "a metric has two rows"
    assert declared == set(documented)
