"""A real Prometheus server scrapes a real worker and a real trainer during a test stream and
evaluates every query of the Grafana dashboard and every rule of deploy/prometheus/alerts.yml
through its HTTP API: each returns data, so the dashboard, the rules and the metric names of the
worker and the trainer agree. Queries of the canary's series are left out until the worker
exports them (tests/ops/test_grafana_dashboard.py: CANARY_SERIES)."""

from __future__ import annotations

import math
import random
import threading
import time
from types import SimpleNamespace

import orjson
import pytest
from kafka import KafkaProducer

from tests.harness import N_ITEMS, TrainerProcess, make_model

from .artefacts import CANARY_SERIES, dashboard_queries, metric_names, rules, variable_queries, worker_series
from .conftest import SCRAPE_JOB

pytestmark = pytest.mark.kafka

RATE_EVENTS = 200  # per second, 5% of them garbage (dead letters)
USERS = 80
PROVOKED = {  # alerts the test stream must set off, and in which state
    "StreamRecsDeadLetterRateHigh": "pending",  # 5% > 1%; fires after 10 minutes
    "StreamRecsModelReloadFailed": "firing",  # an announced checkpoint that is not there
}
QUIET = ("StreamRecsNoReadyWorker", "StreamRecsNoRecommendations", "StreamRecsModelVersionsDiffer",
         "StreamRecsTrainerDown", "StreamRecsTrainerCyclesFailing")
# a cycle within the test: its gate sets the validation figures, its duration the cycle histogram
TRAINER_FLAGS = ("--cycle-events", "1500", "--cycle-seconds", "600", "--epochs", "1")


class Feeder(threading.Thread):
    """Produces clicks (and a little garbage) at ``RATE_EVENTS``/s until stopped."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        self.topic, self.done, self.sent = topic, threading.Event(), 0

    def run(self) -> None:
        rng = random.Random(5)
        while not self.done.wait(0.1):
            for n in range(RATE_EVENTS // 10):
                user = f"u{rng.randrange(USERS)}"
                if n % 20 == 0:
                    value = b"{not json"
                else:
                    item = f"i{rng.randrange(N_ITEMS)}"
                    value = orjson.dumps({"user_id": user, "item_id": item, "ts": time.time()})
                self.producer.send(self.topic, key=user.encode(), value=value)
                self.sent += 1

    def stop(self) -> None:
        self.done.set()
        self.join(10)
        self.producer.close(5)


def has_data(result: list[dict]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def test_every_dashboard_query_and_rule_returns_data(stream, workers, prometheus, tmp_path):
    v1 = make_model(tmp_path / "m1", "v1", seed=1)
    worker = workers("w", v1).start()
    # the trainer announces on a topic of its own: the worker keeps serving v1 (asserted below)
    apart = SimpleNamespace(env={**stream.env, "STREAM_RECS_TOPIC_MODEL_UPDATES": stream.topics.model_updates
                                 + "-trainer"})
    trainer = TrainerProcess(apart, tmp_path / "trainer", v1, tmp_path / "models", *TRAINER_FLAGS).start()
    prom = prometheus([f"127.0.0.1:{worker.port}"], trainers=[f"127.0.0.1:{trainer.port}"])
    announcement = {"path": str(tmp_path / "not-mounted"), "version": "v2", "sha256": "0" * 64}
    producer = KafkaProducer(bootstrap_servers=stream.bootstrap)
    producer.send(stream.topics.model_updates, key=b"model", value=orjson.dumps(announcement))
    producer.close(10)

    panel_queries = dashboard_queries()
    recorded = {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}
    alerts = {rule["alert"]: rule["expr"] for rule in rules() if "alert" in rule}
    assert len(panel_queries) >= 15 and len(recorded) >= 8 and len(alerts) >= 6
    awaited = CANARY_SERIES - worker_series()

    def judged(expr: str) -> bool:
        return not metric_names(expr) & awaited

    pending = {f"panel {name}": expr for name, expr in panel_queries.items() if judged(expr)}
    pending |= {f"rule {name}": expr for name, expr in recorded.items() if judged(expr)}  # the expression
    pending |= {f"recorded {name}": name for name, expr in recorded.items() if judged(expr)}  # evaluated
    for alert, expr in alerts.items():
        for name in metric_names(expr) - awaited:  # each signal an alert compares
            pending[f"alert {alert}: {name}"] = name
    assert any(name.startswith("panel Trainer") for name in pending)
    for alert, state in PROVOKED.items():
        pending[f"alert {alert} is {state}"] = f'ALERTS{{alertname="{alert}", alertstate="{state}"}}'

    feeder = Feeder(stream.bootstrap, stream.topics.clicks)
    feeder.start()
    try:
        deadline = time.monotonic() + 150  # the trainer's first cycle comes after 1,500 clicks
        while pending and time.monotonic() < deadline:
            for key, expr in list(pending.items()):
                if has_data(prom.query(expr)):
                    del pending[key]
            time.sleep(1)
        assert not pending, f"no data after 150 s ({feeder.sent} events sent) for:\n" + "\n".join(
            f"  {key}: {expr}" for key, expr in pending.items()
        ) + f"\ntrainer log:\n{trainer.tail()}"
        for expr in alerts.values():
            prom.query(expr)  # valid PromQL (data only when the alert's condition holds)
        for name, (match, label) in variable_queries().items():
            body = prom.api(f"label/{label}/values", **{"match[]": match})
            assert body["status"] == "success" and body["data"], f"variable {name} has no values"
            assert (SCRAPE_JOB if label == "job" else f"127.0.0.1:{worker.port}") in body["data"]
        by_partition = prom.query(panel_queries["Consumer lag per partition / A"])
        assert {s["metric"]["partition"] for s in by_partition} == {"0", "1", "2", "3"}
        versions = prom.query(panel_queries["Model version / A"])
        assert [(s["metric"]["version"], s["value"][1]) for s in versions] == [("v1", "1")]
        quiet = prom.query(f'ALERTS{{alertname=~"{"|".join(QUIET)}"}}')
        assert not quiet, f"alerts active on a healthy stream: {[s['metric'] for s in quiet]}"
        groups = prom.api("rules")["data"]["groups"]
        evaluated = [rule for group in groups for rule in group["rules"]]
        unhealthy = [(rule["name"], rule.get("lastError")) for rule in evaluated if rule["health"] != "ok"]
        assert not unhealthy and len(evaluated) == len(recorded) + len(alerts)
        figures = prom.query(panel_queries["Trainer validation: candidate vs live / A"])
        assert {s["metric"]["model"] for s in figures} == {"candidate", "live"}
    finally:
        feeder.stop()
        trainer.stop()
