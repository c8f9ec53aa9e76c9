"""Fault tests: crashes, broker restarts, hostile input, privacy and security on real brokers.

Tests marked ``slow`` (minutes each: kill -9 under load, broker restarts, exactly-once, SASL)
run only when ``STREAM_RECS_SLOW_TESTS=1`` (``make test-fault``); ``make test`` skips them.
Tests that stop or reconfigure a broker start their OWN broker (``own_broker``): the shared
session broker is never touched. Each test reports its figures (sent, answered, dead-lettered,
duplicated, lost) in the terminal summary.
"""

from __future__ import annotations

import os

import pytest

from stream_recs.config import load_settings
from stream_recs.devkit import free_port
from stream_recs.kafka_local import ExtraListener, LocalKafka

from .load import FIGURES

SLOW_ENV = "STREAM_RECS_SLOW_TESTS"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes-long fault test, run by `make test-fault`")


def pytest_collection_modifyitems(config, items):
    if os.environ.get(SLOW_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"slow fault test: `make test-fault` (or {SLOW_ENV}=1) runs it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def own_broker(tmp_path):
    """Factory of private brokers (own state dir and port, shared jar cache); all stopped at the end."""
    started: list[LocalKafka] = []

    def make(
        name: str = "kafka", extra_listener: ExtraListener | None = None, **overrides: str
    ) -> LocalKafka:
        broker = LocalKafka(
            state_dir=tmp_path / name, cache_dir=load_settings().home / "jars", port=free_port(),
            heap="384m", overrides=overrides, extra_listener=extra_listener,
        )
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop(kill=True)


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("fault test figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
