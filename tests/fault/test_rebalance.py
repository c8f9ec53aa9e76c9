"""Rebalances under steady load: a second and a third worker join, then the first leaves.

Nothing is lost, duplicates (at-least-once replays of what moved partitions consumed since their
last commit) stay within a bound per rebalance, and no user's session restarts: every state a
worker writes to the sessions changelog holds at least as much history as the user's state before
it, whichever worker wrote that (a worker that answered from a state it had not restored yet would
write a short history). Settings come from the environment, so the test runs under any of them
(``STREAM_RECS_STANDBY_REPLICAS=1``, for one).
"""

from __future__ import annotations

import signal

import orjson
import pytest

from tests.harness import make_model

from .load import SteadyLoad, Tally, read_all, shrunk_histories
from .test_crash import wait_answered

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RATE = 500.0
USERS = 200
SETTLE = 1_500  # clicks each worker answers after it joined, before the next change
AFTER_LEAVE = 5_000  # clicks sent after the first worker left


def test_workers_join_and_leave_under_load_losing_nothing(stream, workers, tmp_path):
    stream.env["STREAM_RECS_RANKER"] = "inline"  # three workers on two cores
    model = make_model(tmp_path / "m1", "v1", seed=1)
    first = workers("first", model).start()
    load = SteadyLoad(stream.bootstrap, stream.topics.clicks, RATE, USERS, seed=7).start()
    try:
        wait_answered(first, SETTLE)
        joined = []
        for name in ("second", "third"):
            worker = workers(name, model).start(timeout_s=240)
            wait_answered(worker, SETTLE, timeout_s=240)
            joined.append(worker)
        left_at = load.sent
        first.stop(signal.SIGTERM)
        assert first.proc.returncode == 0, "the leaving worker did not stop cleanly"
        load.wait_sent(left_at + AFTER_LEAVE)
        load.stop()
    finally:
        load.halt()
    assert not load.failed

    records = read_all(stream.bootstrap, stream.topics.recommendations, len(load.acked), timeout_s=240)
    tally = Tally.of("join, join, leave", load.acked,
                     [orjson.loads(r.value)["event_id"] for r in records], placed=load.placed)
    commit_interval, batch = 1.0, 256  # Worker defaults: broker_commit_interval, batch_size
    bound = 3 * (int(RATE * (commit_interval + 1.0)) + batch)  # three rebalances
    states, shrunk = shrunk_histories(stream)
    answered = [int(w.answered()) for w in joined]
    tally.report(f"duplicate bound {bound}; the two that joined answered {answered}; "
                 f"{states} states written, {len(shrunk)} users with a shrunk history")
    assert not tally.lost, tally.lost_summary()
    assert not tally.unexpected
    assert tally.duplicated <= bound
    assert not shrunk, f"{len(shrunk)} users lost history, e.g. {shrunk[:5]}"
    assert all(w.running for w in joined)
    # each restore is in the log (FaustWorker), for a stalled one to be diagnosed from it
    assert all("Highwater for active changelog partitions" in w.log.read_text() for w in joined)
