"""Clicks processed once, in order, never committed unprocessed (topology/offsets.py); no broker."""

from __future__ import annotations

import asyncio

import faust
import pytest
from faust.types import TP, Message

from stream_recs.topology import offsets
from stream_recs.topology.offsets import InOrder, guard_offset_commits, mark_processed

TOPIC = "clicks"
PART = TP(TOPIC, 0)


def consumer(guarantee: str = "at_least_once", log_start: int = 0):
    """An app and its consumer, no broker; the log of ``PART`` starts at ``log_start``."""
    guard_offset_commits()
    app = faust.App(f"offsets-{guarantee}", broker="kafka://127.0.0.1:1", processing_guarantee=guarantee)
    app.topics._acking_topics.add(TOPIC)  # acks are tracked for subscribed topics only
    app.flow_control.resume()

    async def earliest_offsets(*tps):
        return dict.fromkeys(tps, log_start)

    app.consumer.earliest_offsets = earliest_offsets
    return app, app.consumer


def message(app: faust.App, offset: int, generation: int | None = None) -> Message:
    generation = app.consumer_generation_id if generation is None else generation
    return Message(TOPIC, 0, offset, 0.0, 0, {}, b"u", b"{}", None, generation_id=generation)


def recorded_seeks(monkeypatch, c) -> list[int]:
    """The offsets the consumer ``c`` is told to seek to, from now on (it seeks nothing)."""
    sought = []

    async def seek(tp, offset):
        sought.append(offset)

    monkeypatch.setattr(c, "seek", seek)
    return sought


def processed(app: faust.App, *offsets: int) -> list[Message]:
    done = [message(app, o) for o in offsets]
    mark_processed(done)
    return done


async def test_only_acks_of_processed_messages_count():
    app, c = consumer()
    skipped = message(app, 4)
    c._waiting_for_ack = waiting = asyncio.get_running_loop().create_future()  # a rebalance's wait
    assert not c.ack(skipped) and skipped.acked  # nothing waits for it, its offset is not committed
    assert waiting.done()
    stale = processed(app, 5)[0]
    stale.generation_id -= 1
    app.flow_control.suspend()  # a batch finished during a rebalance or shutdown still commits
    assert c.ack(stale)
    assert c._acked[PART] == [5]


def test_a_commit_waits_for_the_message_at_the_committed_offset():
    app, c = consumer()
    c._committed_offset[PART] = 10
    done = processed(app, 11, 12)
    assert all(c.ack(m) for m in done)
    assert c._new_offset(PART) is None  # offset 10 was never processed: Faust would commit 13
    assert c.ack(processed(app, 10)[0])
    assert c._new_offset(PART) == 13


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_the_fetch_loop_declares_no_offset_skippable(guarantee):
    _, c = consumer(guarantee)
    await c._add_gap(PART, 5, 9)
    assert not c._gap[PART]


async def test_read_offset_is_held_while_a_partition_waits(monkeypatch):
    """Records fetched again after the seek back are not dropped as read (Faust drops a record
    below the read offset), though the batch still iterated moves the read offset on."""
    app, c = consumer()

    async def seek(tp, offset):
        c._read_offset[tp] = offset  # as Faust's seek does

    monkeypatch.setattr(c, "seek", seek)
    order = InOrder(app)
    c._committed_offset[PART] = 10
    assert not order.admit(message(app, 12))
    await asyncio.sleep(0)
    c._read_offset[PART] = 30  # the fetch loop delivered stale records up to 30
    assert c._read_offset[PART] == 10
    assert order.admit(message(app, 10))
    c._read_offset[PART] = 31
    assert c._read_offset[PART] == 31


async def test_records_are_admitted_once_in_order_and_lost_ones_fetched_again(monkeypatch):
    app, c = consumer()
    sought = []

    async def seek(tp, offset):
        sought.append((tp, offset))

    monkeypatch.setattr(c, "seek", seek)
    order = InOrder(app)
    c._committed_offset[PART] = 10
    assert [order.admit(message(app, o)) for o in (10, 11)] == [True, True]
    repeat = message(app, 10)
    assert not order.admit(repeat)  # fetched twice: skipped, and its ack counts
    assert c.ack(repeat)
    late = message(app, 14)
    assert not order.admit(late) and not order.admit(message(app, 15))  # 12, 13 never arrived
    await asyncio.sleep(0)
    assert sought == [(PART, 12)]  # once per RESEEK_EVERY_S
    assert not c.ack(late)
    assert [order.admit(message(app, o)) for o in (12, 13, 14)] == [True, True, True]
    order.revoked([PART])
    c._committed_offset[PART] = 20
    assert not order.admit(message(app, 14)) and order.admit(message(app, 20))


async def test_a_partition_is_sought_back_again_while_records_stay_lost(monkeypatch):
    app, c = consumer()
    sought = recorded_seeks(monkeypatch, c)
    monkeypatch.setattr(offsets, "RESEEK_EVERY_S", 0.0)
    order = InOrder(app)
    c._committed_offset[PART] = 3
    order.admit(message(app, 5))
    order.retry()  # no later record has to arrive for another try
    await asyncio.sleep(0)
    assert sought == [3, 3]
    assert order.admit(message(app, 3))
    order.retry()
    await asyncio.sleep(0)
    assert sought == [3, 3]


async def test_records_that_come_during_a_rebalance_wait_for_its_end(monkeypatch):
    """Until a rebalance's recovery is done the sessions table may lack the partition's states
    (a restart on an empty data dir): records that come then are refused, and fetched again
    unless recovery's seek to the committed offset already brought them back."""
    app, c = consumer()
    sought = recorded_seeks(monkeypatch, c)
    monkeypatch.setattr(c, "assignment", lambda: {PART})
    order = InOrder(app)
    app.rebalancing = True
    early = message(app, 10)
    assert not order.admit(early) and not order.admit(message(app, 11))
    assert not c.ack(early)  # refused, not processed: its offset is not committed
    order.retry()
    await asyncio.sleep(0)
    assert sought == []  # no seek during the rebalance: recovery seeks to the committed offsets
    app.rebalancing = False
    c._committed_offset[PART] = 10
    assert [order.admit(message(app, o)) for o in (10, 11)] == [True, True]  # came again
    order.retry()
    await asyncio.sleep(0)
    assert sought == []
    app.in_recovery = True  # the next rebalance: refused after its seek, they never come again
    assert not order.admit(message(app, 12))
    app.in_recovery = False
    order.retry()
    await asyncio.sleep(0)
    assert sought == [12]
    assert order.admit(message(app, 12))


async def test_records_refused_before_any_commit_are_fetched_from_the_lowest(monkeypatch):
    app, c = consumer()
    sought = recorded_seeks(monkeypatch, c)
    monkeypatch.setattr(c, "assignment", lambda: {PART})
    order = InOrder(app)
    app.rebalancing = True
    assert not any(order.admit(message(app, o)) for o in (4, 3, 5))
    app.rebalancing = False
    order.retry()
    await asyncio.sleep(0)
    assert sought == [3]
    assert [order.admit(message(app, o)) for o in (3, 4, 5)] == [True, True, True]


def test_exactly_once_counts_only_processed_acks():
    """A record never processed is never committed; one missing offset right after the committed
    one (a transaction marker) does not hold commits."""
    app, c = consumer("exactly_once")
    c._committed_offset[PART] = 10
    assert not c.ack(message(app, 11))  # refused by InOrder, say: not committed
    assert c.ack(processed(app, 11)[0])
    assert c._new_offset(PART) == 12


def exactly_once_order(monkeypatch, committed: dict[int, int | None], log_start: int = 0):
    """An exactly-once InOrder whose lookup answers from ``committed`` (asked offset -> first
    committed record from there) and whose seeks are recorded."""
    app, c = consumer("exactly_once", log_start)
    asked, sought = [], recorded_seeks(monkeypatch, c)

    async def first_record(tp, offset):
        asked.append(offset)
        return committed[offset]

    c._committed_offset[PART] = 10
    return app, InOrder(app, first_record), asked, sought


async def test_exactly_once_gap_of_transaction_markers_is_skipped_after_the_lookup(monkeypatch):
    app, order, asked, sought = exactly_once_order(monkeypatch, {11: 13})
    assert order.admit(message(app, 10))
    late = [message(app, o) for o in (13, 14)]
    assert [order.admit(m) for m in late] == [False, False]  # wait for the lookup
    await asyncio.sleep(0)
    assert asked == [11] and sought == [13]  # 11 and 12 hold no committed record
    assert not app.consumer.ack(late[0])  # not processed: not committed
    assert [order.admit(message(app, o)) for o in (13, 14, 15)] == [True, True, True]
    assert all(app.consumer.ack(m) for m in processed(app, 13, 14))
    assert app.consumer._new_offset(PART) == 15  # commits pass the skippable 11 and 12
    repeat = message(app, 14)
    assert not order.admit(repeat) and app.consumer.ack(repeat)  # fetched twice: skipped, acked


async def test_exactly_once_records_lost_by_the_fetch_loop_are_fetched_again(monkeypatch):
    app, order, asked, sought = exactly_once_order(monkeypatch, {10: 10})
    assert not order.admit(message(app, 12))  # 10 and 11 never arrived (a restart's fetch loop)
    await asyncio.sleep(0)
    assert asked == [10] and sought == [10]
    assert [order.admit(message(app, o)) for o in (10, 11, 12)] == [True, True, True]


async def test_exactly_once_lookup_without_answer_is_asked_again(monkeypatch):
    app, order, asked, sought = exactly_once_order(monkeypatch, {11: None})
    monkeypatch.setattr(offsets, "RESEEK_EVERY_S", 0.0)
    assert order.admit(message(app, 10)) and not order.admit(message(app, 12))
    await asyncio.sleep(0)
    assert asked == [11] and sought == []  # nothing known yet: no seek
    order.retry()
    await asyncio.sleep(0)
    assert asked == [11, 11]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_records_no_longer_in_the_log_are_skipped_and_counted(monkeypatch, guarantee):
    """The committed offset fell out of the log (retention, deleted records): seeking back to it
    would never end; the partition goes on from the log's start, and commits pass the gap."""
    app, c = consumer(guarantee, log_start=15)
    sought, truncated = recorded_seeks(monkeypatch, c), []

    async def first_record(tp, offset):
        return None  # the lookup finds no record there

    c._committed_offset[PART] = 10
    lookup = first_record if guarantee == "exactly_once" else None
    order = InOrder(app, lookup, on_truncated=lambda tp, count: truncated.append((tp, count)))
    assert not order.admit(message(app, 16))  # 10-15 missing: the log now starts at 15
    for _ in range(5):
        await asyncio.sleep(0)
    # at-least-once seeks back first, as for records the fetch loop lost; then the log's start
    assert sought == ([15] if guarantee == "exactly_once" else [10, 15]) and truncated == [(PART, 5)]
    assert [order.admit(message(app, o)) for o in (15, 16)] == [True, True]
    assert all(c.ack(m) for m in processed(app, 15, 16))
    assert c._new_offset(PART) == 17


async def test_a_deferred_record_and_those_after_it_come_again(monkeypatch):
    app, c = consumer()
    sought = recorded_seeks(monkeypatch, c)
    order = InOrder(app)
    c._committed_offset[PART] = 10
    request = message(app, 10)
    assert order.admit(request)
    order.defer(request)  # not ready yet: it is fetched again, and so is what follows it
    assert not order.admit(message(app, 11))
    await asyncio.sleep(0)
    assert sought == [10] and order.expected(PART) == 10
    assert not c.ack(request)  # never processed: not committed
    assert [order.admit(message(app, o)) for o in (10, 11)] == [True, True]


async def test_a_forget_request_waits_until_its_clicks_partition_passes_the_barrier(monkeypatch):
    from stream_recs.topology.forgetting import ForgetBarriers, barrier_passed

    assert barrier_passed(5, 5, 0) and not barrier_passed(5, 4, 0)
    assert barrier_passed(5, None, 5) and not barrier_passed(5, None, 0)  # nothing admitted yet
    app, c = consumer()
    recorded_seeks(monkeypatch, c)
    ends = {TP("clicks", 0): 12}

    async def highwaters(*tps):
        return {tp: ends[tp] for tp in tps}

    monkeypatch.setattr(c, "highwaters", highwaters)
    order = InOrder(app)
    c._committed_offset[PART] = 10
    c._committed_offset[TP("forget", 0)] = 0
    barriers = ForgetBarriers(app, order, "clicks")
    request = Message("forget", 0, 0, 0.0, 0, {}, b"u", b"{}", None,
                      generation_id=app.consumer_generation_id)
    assert order.admit(request) and not await barriers.ready(request)  # clicks 10, 11 first
    assert order.expected(TP("forget", 0)) == 0  # deferred
    ends[TP("clicks", 0)] = 500  # newer clicks do not move the barrier of a request seen before
    assert [order.admit(message(app, o)) for o in (10, 11)] == [True, True]
    assert order.admit(request) and await barriers.ready(request)
