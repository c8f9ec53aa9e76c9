"""Shared fixtures: one real Apache Kafka broker for the whole session, unique topic names.

Every topic a session creates (its own and its workers') starts with ``t-<session token>-``, and
the session deletes them at its end: a developer's local broker would otherwise gather thousands
of partitions over many runs and slow down every start and every topic creation.

The broker is the project's own embedded KRaft broker (started here unless one is already running,
e.g. by ``make test``), or the cluster named by ``STREAM_RECS_BOOTSTRAP_SERVERS`` /
``KAFKA_BOOTSTRAP_SERVERS``. Tests that never ask for ``kafka_bootstrap`` need no broker.
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from pathlib import Path

import pytest

from stream_recs.config import Topics, load_settings
from stream_recs.kafka_local import local_kafka

from .harness import Stream, Worker

_served: list[str] = []
SESSION_PREFIX = f"t-{uuid.uuid4().hex[:6]}-"  # every topic name of this session starts with it


@pytest.fixture(scope="session")
def kafka_bootstrap():
    """Bootstrap address ``127.0.0.1:PORT`` of a real, running Kafka broker."""
    settings = load_settings()
    if not settings.embedded:
        _served.append(f"external cluster {settings.bootstrap_servers}")
        yield settings.bootstrap_servers
        return
    broker = local_kafka(settings.home)
    started_here = broker.running() is None
    info = broker.start()
    _served.append(
        f"Apache Kafka {broker.served_version() or '?'} (pinned {info.version}, KRaft, pid {info.pid}) "
        f"at {info.bootstrap}, log {broker.log_file}"
    )
    yield info.bootstrap
    delete_topics(settings, info.bootstrap, SESSION_PREFIX)
    if started_here:
        broker.stop()


def delete_topics(settings, bootstrap: str, prefix: str) -> None:
    """Delete the topics whose names start with ``prefix`` (best effort: a test run's cleanup)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    from stream_recs.kafka_clients import client_kwargs

    admin = KafkaAdminClient(**client_kwargs(settings, bootstrap))
    try:
        names = sorted(t for t in admin.list_topics() if t.startswith(prefix))
        for start in range(0, len(names), 200):
            admin.delete_topics(names[start : start + 200], timeout_ms=60_000)
    except KafkaError as exc:
        print(f"could not delete this session's topics: {exc!r}")
    finally:
        admin.close()


@pytest.fixture
def new_topic_name(request):
    """Factory of fresh topic names for this test: ``new_topic_name("suffix")``."""
    base = re.sub(r"[^a-zA-Z0-9._-]", "-", request.node.name)[:60]

    def make(suffix: str = "") -> str:
        return f"{SESSION_PREFIX}{base}{'-' + suffix if suffix else ''}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def topic_name(new_topic_name) -> str:
    """A fresh topic name for this test."""
    return new_topic_name()


@pytest.fixture
def stream(kafka_bootstrap, new_topic_name) -> Stream:
    topics = Topics(*(new_topic_name(f.name) for f in dataclasses.fields(Topics)))
    env = {
        **os.environ,
        "STREAM_RECS_BOOTSTRAP_SERVERS": kafka_bootstrap,
        **topics.env(),
        "STREAM_RECS_APP_ID": new_topic_name("app"),
        "STREAM_RECS_K": "10",
        "STREAM_RECS_MASK_RECENT": "5",
    }
    return Stream(kafka_bootstrap, topics, env)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Remember which phases of a test failed (in its stash), for the fixtures' teardown."""
    report = yield
    if report.failed:
        item.stash.setdefault(_failed_phases, set()).add(report.when)
    return report


_failed_phases = pytest.StashKey[set]()


@pytest.fixture
def workers(stream, tmp_path, request):
    """Factory of workers for this test; all are stopped at the end, and when the test failed each
    one's log tail is printed (it shows in the failure's report)."""
    started: list[Worker] = []

    def make(name: str = "w", model: Path | None = None, module: str = "stream_recs") -> Worker:
        worker = Worker(stream, tmp_path / name, model, module)
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop()
    if request.node.stash.get(_failed_phases, set()):
        for worker in started:
            text = worker.log.read_text(errors="replace") if worker.log.exists() else ""
            print(f"--- log of worker {worker.data_dir.name} ({worker.log}) ---\n{log_digest(text)}")


_RECORD = re.compile(r"^\S*\[\d{4}-\d\d-\d\d [\d:,]+\] \[\d+\] \[([A-Z]+)\] ")  # time, pid, level


def log_digest(text: str, limit: int = 16_000) -> str:
    """A worker log without its repeats, so that a failure's report shows every distinct message
    (each recovery's tables included) rather than the tail of one warning repeated for minutes.

    An entry is a log record with the lines that follow it (a table). One that came before is left
    out (counted at the end): a warning or error differing only in its numbers, a table differing
    only in its time. Other records (a recovery's steps) are all kept. Its last ``limit``
    characters."""
    entries: list[list[str]] = []
    for line in text.splitlines():
        if _RECORD.match(line) or not entries:
            entries.append([line])
        else:
            entries[-1].append(line)
    seen: dict[str, int] = {}
    kept = []
    for entry in entries:
        record = _RECORD.match(entry[0])
        warning = record is not None and record.group(1) in ("WARNING", "ERROR")
        if not (warning or len(entry) > 1):
            kept.extend(entry)
            continue
        body = "\n".join([entry[0][record.end():] if record else entry[0], *entry[1:]])
        key = re.sub(r"\d+(\.\d+)?", "#", body) if warning else body
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 1:
            kept.extend(entry)
    repeated = sorted(((n, key) for key, n in seen.items() if n > 1), reverse=True)[:10]
    kept += [f"({n} times in all: {key.splitlines()[0][:160]})" for n, key in repeated]
    return "\n".join(kept)[-limit:]
