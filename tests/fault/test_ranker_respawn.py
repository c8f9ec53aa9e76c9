"""The ranker child killed under load: no click is lost (the batches are ranked in the worker
meanwhile), a new child is started and serves again."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson
import pytest

from tests.harness import make_model, numbered_clicks

pytestmark = pytest.mark.kafka

USERS = 400


def children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_a_killed_ranker_child_loses_nothing_and_is_replaced(stream, workers, tmp_path):
    stream.env["STREAM_RECS_RANKER"] = "process"
    worker = workers("w", make_model(tmp_path / "m1", "v1", seed=1)).start()
    stream.produce_events(numbered_clicks(0, 3000, USERS))  # a backlog: full batches, for the child
    worker.wait_until(lambda: worker.answered() >= 3000, "the first burst was not answered")
    assert worker.value("stream_recs_ranker_child") == 1
    (child,) = children(worker.proc.pid)
    os.kill(child, signal.SIGKILL)

    stream.produce_events(numbered_clicks(3000, 6000, USERS))
    worker.wait_until(lambda: worker.answered() >= 9000, "clicks after the kill were not answered")
    worker.wait_until(lambda: (worker.value("stream_recs_ranker_restarts_total") or 0) >= 1,
                      "no new child was started")
    worker.wait_until(lambda: len(children(worker.proc.pid) - {child}) == 1, "no new child process")

    stream.produce_events(numbered_clicks(9000, 3000, USERS))
    worker.wait_until(lambda: worker.answered() >= 12000, "the last burst was not answered")
    assert worker.value("stream_recs_ranker_child") == 1  # the new child ranks again
    records = stream.consume(stream.topics.recommendations, 12000, timeout_s=120)
    ids = {orjson.loads(record.value)["event_id"] for record in records}
    assert ids == {f"e{n}" for n in range(12000)}
    log = worker.log.read_text()
    assert "ranking in-process until a new child is ready" in log and "starting a new ranker child" in log
