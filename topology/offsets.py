"""Offset commits that never pass an unprocessed click: corrections to faust-streaming 0.15.

Faust commits, per partition, the end of the run of acknowledged offsets. Three of its paths let
that run pass a message no agent processed, and each lost clicks after a ``kill -9`` (see
tests/fault/test_crash.py):

1. A stream *skips* a message fetched under an older consumer generation (or while a rebalance
   suspends the streams) and then *acks* it. Such acks are refused here: the offset stays
   uncommitted and the message is fetched again.
2. The fetch loop compares each record with the last offset it read; a seek back to the committed
   offset (recovery does one) while a fetched batch is still being iterated makes the loop drop
   the re-fetched records as already read, and declare the offsets it "jumped" over skippable
   (as if they were transaction markers). Under at-least-once the read offsets are kept unknown,
   so no record is dropped (a re-fetched one is processed again: a duplicate) and no offset is
   declared skippable.
3. A commit may pass one missing offset right after the committed one. Under at-least-once the
   run must start *at* the committed offset; otherwise the commit waits (logged once) until that
   message is processed.

Exactly-once keeps Faust's own rules: there, transaction markers really do leave offset gaps.
Under at-least-once the clicks topic must therefore not be written by transactional producers
(their markers would hold the commits back: nothing lost, more replayed after a restart).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

import faust
from faust.transport.consumer import Consumer
from faust.types import TP, Message
from faust.types.enums import ProcessingGuarantee

log = logging.getLogger(__name__)


class _UnknownReadOffsets(dict):
    """Read offsets the fetch loop always finds unknown (it writes them; it never reads one)."""

    def __getitem__(self, tp: TP) -> None:
        return None


def guard_offset_commits() -> None:
    """Install the three corrections on Faust's consumer (once per process)."""
    if getattr(Consumer, "stream_recs_guarded", False):
        return
    ack, reset_state, new_offset = Consumer.ack, Consumer._reset_state, Consumer._new_offset

    def guarded_ack(self: Consumer, message: Message) -> bool:
        if message.generation_id != self.app.consumer_generation_id or not self.app.flow_control.is_active():
            message.acked = True  # nothing will wait for it any more ...
            self._unacked_messages.discard(message)
            return False  # ... but its offset is not committed
        return ack(self, message)

    def guarded_reset_state(self: Consumer) -> None:
        reset_state(self)
        if not _transactional(self):
            self._read_offset = _UnknownReadOffsets(self._read_offset)

    def guarded_new_offset(self: Consumer, tp: TP) -> int | None:
        if not _transactional(self):
            acked, committed = self._acked[tp], self._committed_offset[tp]
            if acked and committed is not None:
                acked.sort()
                if acked[0] != committed:
                    _log_held(self, tp, committed, acked[0])
                    return None
        return new_offset(self, tp)

    Consumer.ack = guarded_ack
    Consumer._reset_state = guarded_reset_state
    Consumer._new_offset = guarded_new_offset
    Consumer.stream_recs_guarded = True


class Redeliveries:
    """Which offsets of each assigned partition were processed and not yet committed (at-least-once;
    under exactly-once Faust's own read-offset check stays on and this knows nothing)."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._active = app.conf.processing_guarantee != ProcessingGuarantee.EXACTLY_ONCE
        self._done: defaultdict[TP, set[int]] = defaultdict(set)
        self._pruned_at: dict[TP, int | None] = {}

    def repeated(self, tp: TP, offset: int) -> bool:
        """Was the record at ``offset`` processed already (committed, or done since)?"""
        if not self._active:
            return False
        committed = self._app.consumer._committed_offset[tp]
        return (committed is not None and offset < committed) or offset in self._done[tp]

    def processed(self, tp: TP, offsets: Iterable[int]) -> None:
        """Record processed offsets; forget those the partition's commits have passed."""
        if not self._active:
            return
        done = self._done[tp]
        done.update(offsets)
        committed = self._app.consumer._committed_offset[tp]
        if committed is not None and self._pruned_at.get(tp) != committed:
            self._pruned_at[tp] = committed
            done.difference_update([offset for offset in done if offset < committed])

    def revoked(self, tps: Iterable[TP]) -> None:
        """A partition taken away: whoever gets it next starts from its committed offset."""
        for tp in tps:
            self._done.pop(tp, None)
            self._pruned_at.pop(tp, None)


def _transactional(consumer: Consumer) -> bool:
    return consumer.app.conf.processing_guarantee == ProcessingGuarantee.EXACTLY_ONCE


def _log_held(consumer: Consumer, tp: TP, committed: int, first_acked: int) -> None:
    """One warning per held offset: commits of ``tp`` wait for the message at ``committed``."""
    held = consumer.__dict__.setdefault("_stream_recs_held", {})
    if held.get(tp) != committed:
        held[tp] = committed
        log.warning(
            "%s: offset commits wait for offset %d (processed from %d on); it is replayed, never "
            "skipped (a transactional producer's marker would also hold commits here)",
            tp, committed, first_acked,
        )  # fmt: skip
