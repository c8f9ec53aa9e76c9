"""kill -9 of a worker under steady load: nothing lost, duplicates bounded, sessions continue.

At-least-once (the default): the batch in flight and everything consumed since the last offset
commit is answered again after the restart, so duplicates are bounded by the commit interval.
Exactly-once (Kafka transactions): a read_committed consumer sees every answer once, and the
stored sessions hold every click once (topology/transactions.py corrects faust-streaming 0.15,
under which every click replayed after the crash was answered twice), and no click is lost
(topology/offsets.py: a click Faust's fetch loop skipped at the restart is fetched again).
"""

from __future__ import annotations

import signal
import time

import orjson
import pytest

from stream_recs.models import load_model
from stream_recs.state import SessionState
from stream_recs.topology.topics import changelog_topic
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
    only come from the changelog). Returns the tally, the answers, the two workers, the time of
    the kill and the load."""
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
    return tally, answers, first, second, killed_at, load


def continued_sessions(answers: list[dict], second, killed_at: float) -> tuple[int, int]:
    """(events the restarted worker answered, of which continued a stored session): the
    restarted worker scores an event online only when it found the user's previous answer in
    the state restored from the changelog; only users never answered before the kill are new."""
    before = {a["user_id"] for a in answers if a["produced_ts"] < killed_at}
    after = [a for a in answers if a["produced_ts"] >= killed_at]
    first_timers = {a["user_id"] for a in after} - before
    answered = second.value("stream_recs_events_total", outcome="recommended")
    evaluated = second.total("stream_recs_online_evaluated_total")
    assert answered == len(after)
    return int(answered) - len(first_timers), int(evaluated)


def test_kill_9_at_least_once_loses_nothing_and_sessions_continue(stream, workers, tmp_path):
    tally, answers, first, second, killed_at, _ = crash_and_restart(
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


def stored_histories(stream) -> dict[str, tuple[int, ...]]:
    """Every user's history in the sessions changelog as a read_committed consumer sees it."""
    topic = changelog_topic(stream.env["STREAM_RECS_APP_ID"])
    latest = {r.key: r.value for r in read_all(stream.bootstrap, topic, 1, isolation_level="read_committed")}
    return {key.decode(): SessionState.decode(value).history for key, value in latest.items() if value}


def clicked_histories(load: SteadyLoad, model_dir, history_len: int = 50) -> dict[str, tuple[int, ...]]:
    """Every user's last ``history_len`` clicked items (model indices), in partition order: what
    the stored history must hold if each of them was applied once (about 50 of 210 per user)."""
    model = load_model(model_dir)
    by_user: dict[str, list[tuple[tuple[int, int], int]]] = {}
    for event_id in load.acked:
        user, item = load.clicks[event_id]
        by_user.setdefault(user, []).append((load.placed[event_id], model.item_index(item)))
    return {
        user: tuple(item for _, item in sorted(clicks))[-history_len:] for user, clicks in by_user.items()
    }


def test_kill_9_exactly_once_answers_and_stores_every_click_once(stream, workers, tmp_path):
    tally, answers, _, second, killed_at, load = crash_and_restart(
        stream, workers, tmp_path, "exactly_once", read_committed=True
    )
    expected, evaluated = continued_sessions(answers, second, killed_at)
    stored, clicked = stored_histories(stream), clicked_histories(load, tmp_path / "m1")
    differ = sorted(user for user in clicked if stored.get(user) != clicked[user])
    tally.report(
        f"read_committed; after restart {evaluated} of {expected} continued sessions; "
        f"{len(clicked) - len(differ)} of {len(clicked)} stored histories hold every click once"
    )
    assert not tally.unexpected
    assert not tally.duplicated, f"{tally.duplicated} answers seen twice by a read_committed consumer"
    assert evaluated == expected
    assert not differ, f"{len(differ)} stored histories differ from the clicks, e.g. {differ[:5]}"
    assert not tally.lost, tally.lost_summary()
