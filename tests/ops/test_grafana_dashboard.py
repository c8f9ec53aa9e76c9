"""deploy/grafana: the dashboard is well formed, covers what the operator watches, reads only
metrics the worker exports, and is provisioned where the compose file mounts it."""

from __future__ import annotations

from itertools import combinations

import yaml

from stream_recs.metrics import Metrics

from .artefacts import DASHBOARD, dashboard_queries, load_dashboard, metric_names, panels, rules
from .conftest import DEPLOY

GRAFANA = DEPLOY / "grafana"
OPERATOR_VIEW = {  # what the issue asks the dashboard to show -> a metric that panel must read
    "Throughput in: events by outcome": "stream_recs_events_total",
    "Throughput out: recommendations by strategy": "stream_recs_recommendations_total",
    "Processing latency": "stream_recs_processing_seconds_bucket",
    "End-to-end latency": "stream_recs_end_to_end_seconds_bucket",
    "Consumer lag per partition": "stream_recs_consumer_lag",
    "Dead letters by reason": "stream_recs_dead_letters_total",
    "Batch size": "stream_recs_batch_size_bucket",
    "Inference time per batch": "stream_recs_inference_seconds_bucket",
    "Active sessions": "stream_recs_active_sessions",
    "Online HR@K and MRR": "stream_recs_online_hits_total",
    "Model version": "stream_recs_model_info",
}


def exported_series() -> set[str]:
    """Every sample name a worker's /metrics carries (histogram and counter suffixes included)."""
    metrics = Metrics()
    metrics.set_model("v")
    metrics.set_lag("clicks", 0, 1)
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


def test_dashboard_reads_only_exported_metrics():
    exported = exported_series()
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for name, expr in dashboard_queries().items():
        used = metric_names(expr)
        assert used, f"{name}: reads no stream_recs metric"
        assert used <= exported, f"{name}: {used - exported} are not exported by the worker"
    for rule in rules():
        assert metric_names(rule["expr"]) <= exported | recorded, rule.get("record") or rule["alert"]


def test_dashboard_shows_what_the_operator_watches():
    by_title = {panel["title"]: panel for panel in panels(load_dashboard())}
    for title, metric in OPERATOR_VIEW.items():
        assert title in by_title, f"panel {title!r} missing"
        exprs = " ".join(target["expr"] for target in by_title[title]["targets"])
        assert metric in exprs, f"{title}: does not read {metric}"
    latency = [t["legendFormat"] for t in by_title["Processing latency"]["targets"]]
    assert latency == ["p50", "p95", "p99"]


def test_dashboard_is_well_formed():
    dashboard = load_dashboard()
    assert dashboard["uid"] == "stream-recs" and dashboard["schemaVersion"] >= 36
    rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
    ids = [panel["id"] for panel in panels(dashboard) + rows]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    boxes = []
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        boxes.append((panel["title"], grid))
    for (a, ga), (b, gb) in combinations(boxes, 2):
        apart = (ga["x"] + ga["w"] <= gb["x"] or gb["x"] + gb["w"] <= ga["x"]
                 or ga["y"] + ga["h"] <= gb["y"] or gb["y"] + gb["h"] <= ga["y"])
        assert apart, f"panels {a!r} and {b!r} overlap"
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    for panel in panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and panel.get("description"), panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_provisioning_points_at_the_dashboard():
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/stream-recs.yml").read_text())
    (provider,) = providers["providers"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["grafana"]["volumes"]}
    assert (DEPLOY / mounts[provider["options"]["path"]]).resolve() == DASHBOARD.parent.resolve()
