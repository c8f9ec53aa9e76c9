"""Each click processed once per worker, in offset order, and never committed unprocessed:
corrections to faust-streaming 0.15 under at-least-once.

Faust commits, per partition, the end of the run of acknowledged offsets, and several of its paths
let that run pass a message no agent processed (each lost clicks after a ``kill -9`` or a restart;
see tests/fault/test_crash.py and tests/topology/test_stream.py):

1. a stream *skips* a message fetched under an older consumer generation (or while a rebalance
   suspends the streams) and then *acks* it;
2. the fetch loop treats offsets it "jumped" over as skippable (as if they were transaction
   markers); a seek back to the committed offset (recovery does one) while a fetched batch is still
   being iterated makes it jump over real records, and drop the re-fetched ones as already read;
3. a commit may pass one missing offset right after the committed one;
4. records fetched before an assignment pauses its partitions still reach the agent, before table
   recovery has restored those partitions' states.

The corrections: an ack counts only for a message the agent reported processed
(``mark_processed``); the fetch loop declares no offset skippable; under at-least-once a commit
must start *at* the committed offset (or in a range ``InOrder`` declared skippable). ``InOrder``
lets the agent process each partition's records in offset order and once, and none during a
rebalance (refused; recovery's seek to the committed offsets brings them again, else they are
sought back to once it ends): a record behind the next expected offset was processed already
(Faust fetched it twice), and one past it waits (refused) until the records in between are
processed:
- under at-least-once they were lost by the fetch loop: the partition is sought back to them;
- under exactly-once they may also be transaction markers or aborted records, so a
  read_committed lookup first names the first committed record from there; the offsets before
  it are declared skippable and the partition is sought back to it. (Without the lookup, a
  restart could skip a click there.)
- either way, when that seek or lookup brings nothing and the log's start has passed them
  (retention, or deleted records), they are declared skippable, counted, and the partition goes
  on from the log's start (without that, it was sought back to them forever).
While a partition waits, Faust's read offset for it is held at the awaited offset, so the
records a seek back fetches again are not dropped as read by the batch still being iterated.
The agent may also put an admitted record back (``defer``: a forget request that must wait for
its user's clicks); its partition then waits for it in the same way.
Under at-least-once the clicks topic must not be written by transactional producers: their
markers would look like lost records, and that partition would stall.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from weakref import WeakSet

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.transport.consumer import Consumer
from faust.types import TP, Message
from faust.types.enums import ProcessingGuarantee

from stream_recs.config import Security
from stream_recs.kafka_clients import security_kwargs

log = logging.getLogger(__name__)

RESEEK_EVERY_S = 1.0  # a partition waiting for lost records is sought back at most this often
TRUNCATION_CHECK_S = 10.0  # the longest wait for the log's start offset

_PROCESSED: WeakSet[Message] = WeakSet()  # messages an agent processed: only their acks count


def mark_processed(messages: Iterable[Message]) -> None:
    """The agent is done with these messages (call before they are acked)."""
    _PROCESSED.update(messages)


class HeldReadOffsets(defaultdict):
    """Faust's read offset per partition (its fetch loop drops a record below it as read), capped
    at ``held[tp]`` while ``InOrder`` waits for that offset."""

    def __init__(self, offsets: dict) -> None:
        super().__init__(lambda: None, offsets)
        self.held: dict[TP, int] = {}

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        cap = self.held.get(tp)
        super().__setitem__(tp, offset if cap is None or offset is None else min(offset, cap))


def guard_offset_commits() -> None:
    """Install the corrections on Faust's consumer (once per process)."""
    if getattr(Consumer, "stream_recs_guarded", False):
        return
    init, ack, new_offset = Consumer.__init__, Consumer.ack, Consumer._new_offset

    def guarded_init(self: Consumer, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self._read_offset = HeldReadOffsets(self._read_offset)

    def guarded_ack(self: Consumer, message: Message) -> bool:
        if message not in _PROCESSED:
            message.acked = True  # nothing will wait for it any more ...
            self._unacked_messages.discard(message)
            waiting = self._waiting_for_ack  # a rebalance waiting for the acks goes on at once
            if waiting is not None and not waiting.done():
                waiting.set_result(None)
            return False  # ... but its offset is not committed
        return ack(self, message)

    async def no_gap(self: Consumer, tp: TP, offset_from: int, offset_to: int) -> None:
        """The fetch loop declares no offset skippable (``InOrder`` does, after its lookup)."""

    def guarded_new_offset(self: Consumer, tp: TP) -> int | None:
        if not transactional(self.app):
            acked, committed = self._acked[tp], self._committed_offset[tp]
            if acked and committed is not None:
                acked.sort()
                if acked[0] != committed and not self._gap[tp].overlaps(committed):
                    return None  # the message at the committed offset is not processed yet
        return new_offset(self, tp)

    Consumer.__init__ = guarded_init
    Consumer.ack = guarded_ack
    Consumer._add_gap = no_gap
    Consumer._new_offset = guarded_new_offset
    Consumer.stream_recs_guarded = True


FirstRecord = Callable[[TP, int], Awaitable[int | None]]  # offset of the first committed record


def first_record(bootstrap: str, security: Security) -> FirstRecord:
    """``first(tp, offset)``: the offset of the first committed record at or after ``offset``, read
    by a short-lived read_committed consumer (None if none comes within 2 s): under exactly-once it
    tells transaction markers and aborted records from records the fetch loop lost."""

    async def first(tp, offset: int) -> int | None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", **security_kwargs(security),
        )
        part = TopicPartition(tp.topic, tp.partition)
        try:
            await consumer.start()
            consumer.assign([part])
            consumer.seek(part, offset)
            found = (await consumer.getmany(part, timeout_ms=2000, max_records=1)).get(part)
            return found[0].offset if found else None
        finally:
            await consumer.stop()

    return first



class InOrder:
    """Per assigned partition, the next offset to process; a record past it waits until the ones
    before it are processed. ``first_record(tp, offset)`` (exactly-once only): the offset of the
    first committed record at or after ``offset``, None if not known yet.

    Missing records that are no longer in the log (retention, or deleted records, past a stopped
    worker's committed offset) can never arrive: the partition goes on from the earliest offset
    still there, and ``on_truncated(tp, count)`` is told how many were skipped."""

    def __init__(
        self, app: faust.App, first_record: FirstRecord | None = None,
        on_truncated: Callable[[TP, int], None] | None = None,
    ) -> None:
        if transactional(app) != (first_record is not None):
            raise ValueError("first_record is for exactly-once, which needs it (gaps may be markers)")
        self._app = app
        self._first_record = first_record
        self._on_truncated = on_truncated
        self._next: dict[TP, int] = {}
        self._sought: dict[TP, float] = {}
        self._waiting: dict[TP, int] = {}  # partitions whose records from this offset are missing
        self._early: dict[TP, tuple[int, int]] = {}  # lowest, highest offset refused in a rebalance
        self._tasks: set[asyncio.Future] = set()
        self._deferred: set[TP] = set()  # partitions waiting for a record ``defer`` put back

    def admit(self, message: Message) -> bool:
        """Process this record now? A repeat is marked processed (its ack may count); a record
        past missing ones is neither (it comes again after the seek back), nor is one that comes
        during a rebalance (the sessions table may not hold its partition's states yet)."""
        tp, offset = message.tp, message.offset
        if self._rebalancing():
            low, high = self._early.get(tp, (offset, offset))
            self._early[tp] = (min(low, offset), max(high, offset))
            return False
        expected = self.expected(tp)
        if expected is None or offset == expected:
            self._next[tp] = offset + 1
            self._stop_waiting(tp)
            return True
        if offset < expected:
            _PROCESSED.add(message)
            return False
        self._wait_for(tp, expected)
        return False

    def defer(self, message: Message) -> None:
        """Process this admitted record later, not now (a forget request whose user may still
        have clicks to process): its partition is sought back to it, and the records after it
        wait as behind a missing one."""
        tp = message.tp
        self._next[tp] = message.offset
        self._deferred.add(tp)
        self._wait_for(tp, message.offset)

    def retry(self) -> None:
        """Seek back again where missing records have still not arrived (call periodically: a seek
        can be undone by the fetch loop, and no later record may come to trigger another). After a
        rebalance, a partition whose records were refused during it is sought back to them unless
        they came again (recovery's seek to the committed offsets brings those it preceded)."""
        if self._rebalancing():
            return
        assigned = self._app.consumer.assignment() if self._early else set()
        for tp, (low, high) in list(self._early.items()):
            del self._early[tp]
            expected = self.expected(tp)
            if expected is None:
                expected = low  # no commit yet: the fetch began at the reset position
            if tp in assigned and expected <= high:
                self._wait_for(tp, expected)
        for tp, expected in list(self._waiting.items()):
            self._seek_back(tp, expected)

    def revoked(self, tps: Iterable[TP]) -> None:
        """Partitions taken away: whoever gets one next starts at its committed offset."""
        for tp in tps:
            self._next.pop(tp, None)
            self._sought.pop(tp, None)
            self._early.pop(tp, None)
            self._stop_waiting(tp)

    def _rebalancing(self) -> bool:
        """A rebalance, or its table recovery, is under way."""
        return self._app.rebalancing or self._app.in_recovery

    def expected(self, tp: TP) -> int | None:
        """The next offset ``tp`` should deliver: after the last admitted one, else the committed
        one (None before any commit)."""
        expected = self._next.get(tp)
        return self._app.consumer._committed_offset[tp] if expected is None else expected

    def _wait_for(self, tp: TP, expected: int) -> None:
        """``tp`` waits for the record at ``expected``: hold the read offset there, seek back."""
        if self._waiting.get(tp) != expected:
            self._waiting[tp] = expected
            self._hold(tp, expected)
        self._seek_back(tp, expected)

    def _hold(self, tp: TP, offset: int) -> None:
        """Cap Faust's read offset for ``tp`` at ``offset``."""
        self._app.consumer._read_offset.held[tp] = offset

    def _stop_waiting(self, tp: TP) -> None:
        """``tp`` waits for no offset any more: its read offset is released."""
        self._deferred.discard(tp)
        if self._waiting.pop(tp, None) is not None:
            self._app.consumer._read_offset.held.pop(tp, None)

    def _seek_back(self, tp: TP, expected: int) -> None:
        now = time.monotonic()
        if now - self._sought.get(tp, -RESEEK_EVERY_S) < RESEEK_EVERY_S:
            return
        self._sought[tp] = now
        task = asyncio.ensure_future(self._recover(tp, expected))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recover(self, tp: TP, expected: int) -> None:
        """Fetch the records from ``expected`` on again (exactly-once: from the first committed
        one); where that brings nothing yet, see whether the log's start has passed them."""
        try:
            if self._first_record is None:
                await self._seek(tp, expected)
                first = None
            else:
                first = await self._first_record(tp, expected)
            if first is None:
                await self._skip_truncated(tp, expected)
                return
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("%s: no answer on offset %d (%r); asking again", tp, expected, exc)
            return
        if self._waiting.get(tp) != expected:
            return  # the partition moved on
        if first == expected:
            await self._seek(tp, first)
            return
        log.info("%s: no committed record at offsets %d-%d, going on from %d", tp, expected, first - 1, first)
        await self._skip_to(tp, expected, first)

    async def _skip_truncated(self, tp: TP, expected: int) -> None:
        """Go on from the log's start if it has passed ``expected`` (retention, deleted records):
        those records can never arrive. Asked after the seek back, never in its way."""
        starts = await asyncio.wait_for(self._app.consumer.earliest_offsets(tp), TRUNCATION_CHECK_S)
        earliest = starts.get(tp)
        if earliest is None or earliest <= expected or self._waiting.get(tp) != expected:
            return
        log.warning("%s: offsets %d-%d are no longer in the log (retention or deleted records); "
                    "going on from %d", tp, expected, earliest - 1, earliest)
        if self._on_truncated is not None:
            self._on_truncated(tp, earliest - expected)
        await self._skip_to(tp, expected, earliest)

    async def _skip_to(self, tp: TP, expected: int, offset: int) -> None:
        """Go on from ``offset``: the offsets from ``expected`` up to it are declared skippable
        (commits may pass them), and the partition is sought there."""
        gaps = self._app.consumer._gap[tp]
        gaps.addi(expected, offset)
        gaps.merge_overlaps()
        self._next[tp] = self._waiting[tp] = offset
        self._hold(tp, offset)
        await self._app.consumer.seek(tp, offset)

    async def _seek(self, tp: TP, offset: int) -> None:
        if tp in self._deferred:
            log.debug("%s: offset %d was deferred, fetching again from it", tp, offset)
        else:
            log.warning("%s: offset %d never arrived, fetching again from it", tp, offset)
        await self._app.consumer.seek(tp, offset)


def transactional(app: faust.App) -> bool:
    """Does the app run under exactly-once (Kafka transactions)?"""
    return app.conf.processing_guarantee == ProcessingGuarantee.EXACTLY_ONCE
