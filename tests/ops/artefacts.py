"""Reading the deployed artefacts (every PromQL query of the Grafana dashboard and the rules) and
the series names the worker and the trainer export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from stream_recs.metrics import Metrics
from stream_recs.trainer_metrics import TrainerMetrics

from .conftest import DEPLOY, PROMETHEUS_DIR

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "stream-recs.json"
# what Grafana puts in place of its variables when the dashboard shows every job and worker
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__range": "2m", "$job": ".*", "$instance": ".*"}
LABEL_VALUES = re.compile(r"^label_values\((?P<match>.+),\s*(?P<label>[a-zA-Z_]\w*)\)$")
SELECTOR_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# The workers' canary metrics (docs/lifecycle.md), which the dashboard and the rules may read before
# the worker exports them; once it exports one of them it must export them all.
CANARY_SERIES = {"stream_recs_canary_active", "stream_recs_canary_decisions_total"}
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def load_dashboard(path: Path = DASHBOARD) -> dict:
    return json.loads(path.read_text())


def panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows included (rows themselves excluded)."""
    out = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def substitute(expr: str) -> str:
    """``expr`` as Grafana sends it with "All" selected; fails on a variable it does not define."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"unknown variable in {expr}"
    return expr


def dashboard_queries(dashboard: dict | None = None) -> dict[str, str]:
    """``"panel title / refId"`` -> the PromQL it runs (variables substituted)."""
    dashboard = dashboard if dashboard is not None else load_dashboard()
    return {
        f"{panel['title']} / {target['refId']}": substitute(target["expr"])
        for panel in panels(dashboard)
        for target in panel["targets"]
    }


def variable_queries(dashboard: dict | None = None) -> dict[str, tuple[str, str]]:
    """Template variable -> (series selector, label) of its ``label_values`` query."""
    dashboard = dashboard if dashboard is not None else load_dashboard()
    out = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        found = LABEL_VALUES.match(var["query"]["query"])
        assert found, f"variable {var['name']}: only label_values(selector, label) is supported"
        out[var["name"]] = (substitute(found["match"]), found["label"])
    return out


def rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The project's series names an expression reads (raw metrics and recorded series)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return {name for name in SELECTOR_NAME.findall(without_strings) if "stream_recs" in name}


def series_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name ``registry`` can carry, labelled metrics with no child yet included."""
    names = set()
    for family in registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def worker_series() -> set[str]:
    metrics = Metrics()
    metrics.set_model("v")
    metrics.set_lag("clicks", 0, 1)
    return series_names(metrics.registry)


def exported_series() -> set[str]:
    """What the worker's and the trainer's /metrics carry, and the canary's awaited series."""
    return worker_series() | series_names(TrainerMetrics().registry) | CANARY_SERIES
