"""deploy/prometheus: promtool validates the config and rules and runs the rules' unit tests; every
alert is unit-tested both ways and documented."""

from __future__ import annotations

import subprocess

import yaml

from .conftest import DEPLOY

PROMETHEUS = DEPLOY / "prometheus"


def rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def promtool_ok(promtool: str, *args: str) -> str:
    done = subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_promtool_check_rules(promtool):
    out = promtool_ok(promtool, "check", "rules", "alerts.yml")
    assert f"SUCCESS: {len(rules())} rules found" in out


def test_promtool_check_config(promtool):
    out = promtool_ok(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in out


def test_promtool_test_rules(promtool):
    assert "SUCCESS" in promtool_ok(promtool, "test", "rules", "alerts_test.yml")


def test_every_alert_is_unit_tested_firing_and_quiet():
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for rule in rules():
        if "alert" not in rule:
            continue
        name = rule["alert"]
        fired = [case for case in cases if case["alertname"] == name and case["exp_alerts"]]
        quiet = [case for case in cases if case["alertname"] == name and not case["exp_alerts"]]
        assert fired and quiet, f"{name}: needs a unit test where it fires and one where it does not"


def test_alerts_are_labelled_and_explained():
    alerts = [rule for rule in rules() if "alert" in rule]
    assert len(alerts) >= 6
    for rule in alerts:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    records = [rule["record"] for rule in rules() if "record" in rule]
    assert len(records) == len(set(records))
