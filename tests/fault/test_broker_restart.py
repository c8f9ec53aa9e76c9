"""The broker stops and starts again under a running worker and a steady load (on a broker of the
test's own): the worker reconnects and resumes, nothing is lost, and the outage shows in /metrics
(``stream_recs_ready`` drops to 0 while the broker is away)."""

from __future__ import annotations

import os
import threading
import time
import uuid

import orjson
import pytest

from stream_recs.config import Topics
from tests.harness import Stream, Worker, make_model

from .load import SteadyLoad, Tally, read_all

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RATE, USERS, OUTAGE_S = 200.0, 100, 15.0


class ReadyWatch:
    """Scrapes ``stream_recs_ready`` twice a second; ``seen`` is every (time, value) read."""

    def __init__(self, worker: Worker) -> None:
        self.worker, self.seen = worker, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.seen.append((time.monotonic(), self.worker.value("stream_recs_ready")))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def test_broker_restart_under_load_loses_nothing(own_broker, tmp_path):
    broker = own_broker()
    info = broker.start()
    tag = uuid.uuid4().hex[:8]
    topics = Topics.tagged(tag)
    env = {
        **os.environ,
        "STREAM_RECS_BOOTSTRAP_SERVERS": info.bootstrap,
        "STREAM_RECS_APP_ID": f"app-{tag}",
        **topics.env(),
    }
    worker = Worker(
        Stream(info.bootstrap, topics, env), tmp_path / "w", make_model(tmp_path / "m", "v1", seed=1)
    )
    try:
        worker.start()
        load = SteadyLoad(info.bootstrap, topics.clicks, RATE, USERS, seed=5).start()
        load.wait_sent(int(RATE * 10))
        watch = ReadyWatch(worker)
        broker.stop()  # controlled shutdown; the same state dir and ports come back
        down_at = time.monotonic()
        time.sleep(OUTAGE_S)
        assert broker.start().bootstrap == info.bootstrap
        up_at = time.monotonic()
        sent_before = load.sent
        load.wait_sent(sent_before + int(RATE * 15))
        load.stop()
        records = read_all(info.bootstrap, topics.recommendations, len(load.acked), timeout_s=240)
        deadline = time.monotonic() + 60
        while worker.value("stream_recs_ready") != 1.0:
            assert time.monotonic() < deadline, "the worker never became ready again"
            time.sleep(0.5)
        watch.stop()
        assert worker.running, worker.log.read_text()[-3000:]
    finally:
        worker.stop()
    answers = [orjson.loads(r.value)["event_id"] for r in records]
    tally = Tally.of("broker restart", load.acked, answers, placed=load.placed)
    outage = [v for t, v in watch.seen if down_at <= t <= up_at]
    tally.report(
        f"{OUTAGE_S:.0f} s outage, {len(load.failed)} sends refused; stream_recs_ready during it: "
        f"{sorted({v for v in outage if v is not None})}, {sum(v is None for v in outage)} scrapes unanswered"
    )
    assert not load.failed
    assert not tally.lost, tally.lost_summary()
    assert not tally.unexpected
    assert 0.0 in outage, "the outage does not show in stream_recs_ready"
