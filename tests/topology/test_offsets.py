"""Offset commits never pass an unprocessed click (topology/offsets.py), without a broker."""

from __future__ import annotations

import faust
from faust.types import TP, Message

from stream_recs.topology.offsets import Redeliveries, guard_offset_commits

TOPIC = "clicks"
PART = TP(TOPIC, 0)


def consumer(guarantee: str = "at_least_once"):
    guard_offset_commits()
    app = faust.App(f"offsets-{guarantee}", broker="kafka://127.0.0.1:1", processing_guarantee=guarantee)
    app.topic(TOPIC)  # acks are tracked for subscribed topics only
    app.topics._acking_topics.add(TOPIC)
    app.flow_control.resume()
    return app, app.consumer


def message(app: faust.App, offset: int, generation: int | None = None) -> Message:
    generation = app.consumer_generation_id if generation is None else generation
    return Message(TOPIC, 0, offset, 0.0, 0, {}, b"u", b"{}", None, generation_id=generation)


def test_a_commit_waits_for_the_message_at_the_committed_offset(caplog):
    app, c = consumer()
    c._committed_offset[PART] = 10
    for offset in (11, 12):
        assert c.ack(message(app, offset))
    assert c._new_offset(PART) is None  # offset 10 was never processed: Faust would commit 13
    assert "wait for offset 10" in caplog.text
    assert c.ack(message(app, 10))
    assert c._new_offset(PART) == 13


def test_a_commit_covers_the_acknowledged_run_only():
    app, c = consumer()
    c._committed_offset[PART] = 10
    for offset in (10, 11, 12, 14):
        c.ack(message(app, offset))
    assert c._new_offset(PART) == 13


def test_the_fetch_loop_never_knows_a_read_offset():
    """Then it neither drops a re-fetched record as already read nor declares offsets skippable."""
    _, c = consumer()
    c._read_offset[PART] = 42
    assert c._read_offset[PART] is None
    assert dict(c._read_offset) == {PART: 42}


def test_an_ack_from_an_older_generation_or_a_suspended_flow_is_refused():
    app, c = consumer()
    stale = message(app, 5, generation=app.consumer_generation_id - 1)
    assert not c.ack(stale) and stale.acked
    app.flow_control.suspend()
    assert not c.ack(message(app, 6))
    assert not c._acked[PART]


def test_exactly_once_keeps_faust_rules():
    """Transaction markers leave real gaps there: one missing offset does not hold commits."""
    app, c = consumer("exactly_once")
    c._committed_offset[PART] = 10
    c.ack(message(app, 11))
    assert c._new_offset(PART) == 12
    assert c._read_offset[PART] is None  # Faust's own default, not ours
    c._read_offset[PART] = 3
    assert c._read_offset[PART] == 3


def test_redeliveries_know_what_was_processed_since_the_commit():
    app, c = consumer()
    seen = Redeliveries(app)
    c._committed_offset[PART] = 10
    seen.processed(PART, [10, 11, 13])
    assert [o for o in range(8, 15) if seen.repeated(PART, o)] == [8, 9, 10, 11, 13]
    c._committed_offset[PART] = 12  # a commit: offsets below are forgotten, still repeated
    seen.processed(PART, [14])
    assert seen._done[PART] == {13, 14}
    assert not seen.repeated(PART, 12) and seen.repeated(PART, 11)
    seen.revoked([PART])
    c._committed_offset[PART] = None
    assert not seen.repeated(PART, 13)


def test_redeliveries_stay_off_under_exactly_once():
    app, c = consumer("exactly_once")
    seen = Redeliveries(app)
    c._committed_offset[PART] = 10
    seen.processed(PART, [10])
    assert not seen.repeated(PART, 5) and not seen.repeated(PART, 10)
