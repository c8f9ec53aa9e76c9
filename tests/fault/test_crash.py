"""kill -9 of a worker under steady load: nothing lost, duplicates bounded, sessions continue.

At-least-once (the default): the batch in flight and everything consumed since the last offset
commit is answered again after the restart, so duplicates are bounded by the commit interval.
Exactly-once (Kafka transactions) should let a read_committed consumer see every answer once;
faust-streaming 0.15 does not achieve it (README, "Reliability and security"): the test still
requires no loss and restored sessions, and reports the duplicates as an expected failure.
"""

from __future__ import annotations

import signal
import time

import orjson
import pytest

from tests.harness import make_model

from .load import SteadyLoad, Tally, read_all

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RATE = 500.0
USERS = 200
TOTAL = 12_000  # 24 s of load
KILL_AFTER = 4_000  # answered by the first worker before kill -9 (every user has a stored state)


def wait_answered(worker, count: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (worker.value("stream_recs_events_total", outcome="recommended") or 0) < count:
        assert worker.running, f"worker exited:\n{worker.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"worker never answered {count} events"
        time.sleep(0.2)


def crash_and_restart(stream, workers, tmp_path, guarantee: str, read_committed: bool) -> tuple:
    """Run the load, kill -9 the worker mid-stream, restart it on an EMPTY data dir (its state can
    only come from the changelog). Returns the tally, the answers and the two workers."""
    stream.env["STREAM_RECS_PROCESSING_GUARANTEE"] = guarantee
    model = make_model(tmp_path / "m1", "v1", seed=1)
    first = workers("first", model).start()
    load = SteadyLoad(stream.bootstrap, stream.topics.clicks, RATE, USERS, seed=3).start()
    wait_answered(first, KILL_AFTER)
    first.stop(signal.SIGKILL)
    killed_at = time.time()
    second = workers("second", model).start(timeout_s=240)  # waits out the killed member's session
    load.wait_sent(TOTAL)
    load.stop()
    assert not load.failed
    client = {"isolation_level": "read_committed"} if read_committed else {}
    records = read_all(stream.bootstrap, stream.topics.recommendations, len(load.acked), **client)
    answers = [orjson.loads(r.value) for r in records]
    wait_answered(second, 1)
    answered = [a["event_id"] for a in answers]
    tally = Tally.of(f"kill -9 ({guarantee})", load.acked, answered, placed=load.placed)
    return tally, answers, first, second, killed_at


def continued_sessions(answers: list[dict], second, killed_at: float) -> tuple[int, int]:
    """(events the restarted worker answered, of which continued a stored session): the
    restarted worker scores an event online only when it found the user's previous answer in
    the state restored from the changelog; only users never answered before the kill are new."""
    before = {a["user_id"] for a in answers if a["produced_ts"] < killed_at}
    after = [a for a in answers if a["produced_ts"] >= killed_at]
    first_timers = {a["user_id"] for a in after} - before
    answered = second.value("stream_recs_events_total", outcome="recommended")
    evaluated = second.value("stream_recs_online_evaluated_total")
    assert answered == len(after)
    return int(answered) - len(first_timers), int(evaluated)


def test_kill_9_at_least_once_loses_nothing_and_sessions_continue(stream, workers, tmp_path):
    tally, answers, first, second, killed_at = crash_and_restart(
        stream, workers, tmp_path, "at_least_once", read_committed=False
    )
    commit_interval, batch = 1.0, 256  # Worker defaults: broker_commit_interval, batch_size
    bound = int(RATE * (commit_interval + 1.0)) + batch
    expected, evaluated = continued_sessions(answers, second, killed_at)
    tally.report(f"duplicate bound {bound}; after restart {evaluated} of {expected} continued sessions")
    assert not tally.lost, tally.lost_summary()
    assert not tally.unexpected
    assert tally.duplicated <= bound
    assert first.proc.returncode == -signal.SIGKILL
    assert evaluated == expected, "a restored user started a fresh session"


def test_kill_9_exactly_once_no_duplicates_for_read_committed(stream, workers, tmp_path):
    tally, answers, _, second, killed_at = crash_and_restart(
        stream, workers, tmp_path, "exactly_once", read_committed=True
    )
    expected, evaluated = continued_sessions(answers, second, killed_at)
    tally.report(f"read_committed; after restart {evaluated} of {expected} continued sessions")
    assert not tally.lost, tally.lost_summary()
    assert not tally.unexpected
    assert evaluated == expected
    if tally.duplicated:  # the documented limit of faust-streaming's transactions (README)
        pytest.xfail(f"exactly_once: {tally.duplicated} duplicates seen by a read_committed consumer")
