"""deploy/grafana: the dashboard is well formed, covers what the operator watches, reads only
metrics the worker and the trainer export, and is provisioned where the compose file mounts it."""

from __future__ import annotations

import re
from itertools import combinations

import yaml
from prometheus_client import CollectorRegistry

from stream_recs.metrics import Metrics

from .artefacts import (
    CANARY_SERIES,
    DASHBOARD,
    dashboard_queries,
    exported_series,
    load_dashboard,
    metric_names,
    panels,
    rules,
    series_names,
    worker_series,
)
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
    "Trainer cycles by result": "stream_recs_trainer_cycles_total",
    "Trainer cycle seconds": "stream_recs_trainer_cycle_seconds_bucket",
    "Trainer window events": "stream_recs_trainer_window_events",
    "Items added by the trainer": "stream_recs_trainer_items_added_total",
    "Trainer validation: candidate vs live": "stream_recs_trainer_validation",
    "Canary active": "stream_recs_canary_active",
    "Canary decisions": "stream_recs_canary_decisions_total",
    "Online HR@K by model version": "stream_recs_online_hits_total",
}
ROWS = {  # row title -> the panels under it, in order
    "Trainer": ["Trainer cycles by result", "Trainer cycle seconds", "Trainer live model",
                "Trainer window events", "Trainer input: clicks and skipped records",
                "Items added by the trainer", "Trainer validation: candidate vs live"],
    "Canary": ["Canary active", "Canary decisions", "Online HR@K by model version"],
}
ONLINE_RATE = re.compile(r"(?P<agg>sum(?: by \((?P<by>[^)]*)\))? ?\()?rate\((?P<name>stream_recs_online_\w+)")


def test_series_names_reads_declared_metrics():
    registry = CollectorRegistry()
    Metrics(registry)  # no lag reported: stream_recs_consumer_lag{topic,partition} has no child
    names = series_names(registry)
    assert {"stream_recs_events_total", "stream_recs_ready", "stream_recs_batch_size_bucket",
            "stream_recs_consumer_lag"} <= names
    assert "stream_recs_events" not in names and "stream_recs_ready_total" not in names


def test_canary_series_are_all_exported_once_any_is():
    exported = worker_series()
    assert not exported & CANARY_SERIES or exported >= CANARY_SERIES, (
        f"the worker exports {exported & CANARY_SERIES} but not {CANARY_SERIES - exported}"
    )


def test_dashboard_reads_only_exported_metrics():
    exported = exported_series()
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for name, expr in dashboard_queries().items():
        used = metric_names(expr)
        assert used, f"{name}: reads no stream_recs metric"
        assert used <= exported, f"{name}: {used - exported}: exported by neither worker nor trainer"
    for rule in rules():
        assert metric_names(rule["expr"]) <= exported | recorded, rule.get("record") or rule["alert"]


def test_online_metrics_are_summed_over_model_versions():
    """The online counters carry a ``model_version`` label: every query and rule sums them (by
    ``model_version`` only where it shows the versions side by side)."""
    exprs = {**dashboard_queries(), **{rule.get("record") or rule["alert"]: rule["expr"] for rule in rules()}}
    by_version = set()
    for name, expr in exprs.items():
        for found in ONLINE_RATE.finditer(expr):
            assert found["agg"], f"{name}: {found['name']} is not summed"
            if found["by"] is not None and "model_version" in found["by"]:
                by_version.add(name.split(" / ")[0])
    assert by_version == {"Online HR@K by model version"}


def test_dashboard_shows_what_the_operator_watches():
    by_title = {panel["title"]: panel for panel in panels(load_dashboard())}
    for title, metric in OPERATOR_VIEW.items():
        assert title in by_title, f"panel {title!r} missing"
        exprs = " ".join(target["expr"] for target in by_title[title]["targets"])
        assert metric in exprs, f"{title}: does not read {metric}"
    latency = [t["legendFormat"] for t in by_title["Processing latency"]["targets"]]
    assert latency == ["p50", "p95", "p99"]
    validation = by_title["Trainer validation: candidate vs live"]["targets"]
    assert [t["legendFormat"] for t in validation] == ["{{model}} {{metric}}"]  # both models, each figure
    assert "by (model, metric)" in validation[0]["expr"]
    decisions = by_title["Canary decisions"]["targets"][0]
    assert "by (decision)" in decisions["expr"] and decisions["legendFormat"] == "{{decision}}"


def test_rows_group_the_trainer_and_the_canary():
    dashboard = load_dashboard()
    under: dict[str, list[str]] = {}
    row = None
    for panel in sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if panel["type"] == "row":
            row = panel["title"]
        else:
            under.setdefault(row, []).append(panel["title"])
    for title, expected in ROWS.items():
        assert under.get(title) == expected, f"row {title!r}: {under.get(title)}"
    trainer_exprs = [t["expr"] for title in ROWS["Trainer"]
                     for panel in panels(dashboard) if panel["title"] == title for t in panel["targets"]]
    assert all("stream_recs_trainer_" in expr for expr in trainer_exprs)


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
