"""The tables: the sessions table, one encoded ``SessionState`` per user id, and the shared-counts
table, one snapshot per kind of counts and clicks partition; both changelog-backed.

Faust's table and its RocksDB store pick the partition of a key (changelog partition, local
database) from the *current event*. A micro-batch from ``take_events`` spans several partitions,
so every read and write here runs as the user's own event (:class:`as_event`): the state then lives
on the same partition as the user's clicks, which is what makes recovery and rebalancing correct.

Deleting a state (:func:`forget`, :func:`sweep_expired`) writes a tombstone to the changelog
partition the state lives on, so a compacted changelog and every later restore drop it too.
:class:`StoredUsers` counts the states without scanning the store. :class:`SharedCounts` binds
the counts kept per clicks partition (the fallback's, ``popularity.py``; the canary's,
``canary.py``) to the shared-counts table, whose partition is the clicks partition they come from.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Iterable, Mapping
from types import SimpleNamespace

import faust
from faust.streams import _current_event

from stream_recs.counts_feed import PartitionCounts
from stream_recs.state import SessionState, idle_expired
from stream_recs.topology.topics import COUNTS_TABLE, SESSIONS_TABLE

# RocksDB sizing per partition database (Faust's defaults: 64 MiB write buffers, a 2 GiB block
# cache each): states are ~300 bytes, so small buffers flush and compact often enough that deleted
# (expired, forgotten) states leave the disk soon, and memory stays bounded by these numbers.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 4 << 20,
    "max_write_buffer_number": 2,
    "target_file_size_base": 8 << 20,
    "block_cache_size": 16 << 20,
    "block_cache_compressed_size": 0,
}


def sessions_table(app: faust.App, partitions: int) -> faust.Table:
    """User id (bytes) -> ``SessionState.encode()`` bytes."""
    return app.Table(
        SESSIONS_TABLE,
        partitions=partitions,
        key_type=bytes,  # bytes types mean the raw codec, both ways
        value_type=bytes,
        help="per-user session state (history, GRU hidden state, last recommendations)",
        options=ROCKSDB_OPTIONS,
    )


def counts_table(app: faust.App, partitions: int) -> faust.Table:
    """The shared-counts table: a kind's prefix and a clicks partition's number, as text -> that
    partition's counts of that kind (``SharedCounts``). A few keys: kept in memory, restored
    from the compacted changelog. Its name is the popularity counts' (they came first)."""
    return app.Table(
        COUNTS_TABLE,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        store="memory://",
        help="per clicks partition: the fallback's decayed item counts, the canary's online counts",
    )


class as_event:
    """Make ``event`` Faust's current event, so table access uses its partition. A class, not
    ``contextlib.contextmanager``: it runs twice per user and batch, and a generator costs more."""

    __slots__ = ("_event", "_token")

    def __init__(self, event: faust.types.EventT) -> None:
        self._event = event

    def __enter__(self) -> None:
        self._token = _current_event.set(weakref.ref(self._event))

    def __exit__(self, *exc: object) -> None:
        _current_event.reset(self._token)


class StoredUsers:
    """How many users have a state on the partitions this worker holds. ``len`` of a RocksDB
    table reads every key with the event loop blocked (``bench/state.py`` measures it), so the
    table is counted once each rebalance's recovery completes, and the callers of the functions
    below that create and delete states keep the count up to date in between."""

    def __init__(self, table: faust.Table) -> None:
        self.value = 0
        self._table = table
        table.on_recover(self._recount)

    async def _recount(self) -> None:
        self.value = len(self._table)

    def created(self, count: int) -> None:
        self.value += count

    def deleted(self, count: int) -> None:
        self.value -= count


def load_states(
    table: faust.Table, events_by_user: Mapping[str, faust.types.EventT]
) -> tuple[dict[str, SessionState | None], int]:
    """Each user's stored state (None: new user, or a state this version cannot read), and how
    many of the users have no stored record (``save_states`` creates theirs)."""
    states: dict[str, SessionState | None] = {}
    unstored = 0
    for user, event in events_by_user.items():
        with as_event(event):
            raw = table.get(user.encode())
        unstored += raw is None
        try:
            states[user] = SessionState.decode(raw) if raw else None
        except ValueError:
            states[user] = None
    return states, unstored


def save_states(
    table: faust.Table,
    states: Mapping[str, SessionState],
    events_by_user: Mapping[str, faust.types.EventT],
) -> None:
    """Write new states back (one changelog record per user and batch)."""
    for user, state in states.items():
        with as_event(events_by_user[user]):
            table[user.encode()] = state.encode()


def forget(table: faust.Table, user: str, event: faust.types.EventT) -> bool:
    """Delete ``user``'s state: always a tombstone on the event's changelog partition (also when
    the local store has no state, e.g. when a crash replays the request), then the local copy.
    True if there was a stored state."""
    key = user.encode()
    with as_event(event):
        stored = table.get(key) is not None
        with contextlib.suppress(KeyError):
            del table[key]
    return stored


class PartitionEvent:
    """A stand-in for an event of ``topic``/``partition``, for table writes made outside a stream
    (the TTL sweep): Faust reads only ``message.topic`` and ``message.partition``."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = SimpleNamespace(topic=topic, partition=partition)


def _expired(raw: bytes | None, now: float, ttl: float) -> bool:
    try:
        return raw is not None and idle_expired(SessionState.touched_of(raw), now, ttl)
    except ValueError:  # a state this version cannot read is not ours to judge
        return False


async def sweep_expired(
    table: faust.Table, source_topic: str, now: float, ttl: float, chunk: int = 250,
    scan_chunk: int = 10_000,
) -> int:
    """Delete the states idle (processing time) for more than ``ttl`` seconds on the partitions
    this worker holds; returns how many. Needs the RocksDB store (one database per partition:
    the partition of a key is known); with another store nothing is swept.

    A partition's candidates are found in one pass, ``scan_chunk`` states at a time between
    yields to the agent (only the headers are read: ``SessionState.touched_of``); each is
    checked again just before it is deleted (a user active meanwhile stays), ``chunk`` at a
    time between yields."""
    store = table.data
    databases = getattr(store, "_dbs", None)
    if databases is None:
        return 0
    changelog = table.changelog_topic.get_topic_name()
    removed = 0
    for partition in sorted(databases):
        if not _holds(table, changelog, partition):
            continue
        candidates = []
        for seen, (key, raw) in enumerate(store._visible_items(databases[partition]), 1):
            if _expired(raw, now, ttl):
                candidates.append(key)
            if seen % scan_chunk == 0:
                await asyncio.sleep(0)
                if not _holds(table, changelog, partition):  # revoked (its database closed)
                    candidates = []
                    break
        event = PartitionEvent(source_topic, partition)
        for start in range(0, len(candidates), chunk):
            if not _holds(table, changelog, partition):  # revoked while we yielded
                break
            with as_event(event):
                for key in candidates[start : start + chunk]:
                    if _expired(table.get(key), now, ttl):
                        del table[key]
                        removed += 1
            await asyncio.sleep(0)
    return removed


def _holds(table: faust.Table, changelog: str, partition: int) -> bool:
    actives = table.app.assignor.assigned_actives()
    return any(tp.topic == changelog and tp.partition == partition for tp in actives) and (
        partition in table.data._dbs
    )


class SharedCounts:
    """The counts kept per clicks partition in the shared-counts table, each kind under its key
    prefix (``COUNT_KINDS``: the fallback's popularity under ``<p>``, the canary's under
    ``canary/<p>``). Once each rebalance's recovery completes (before any click of it is
    processed), the worker takes the partitions it holds, each from its stored snapshot
    (``take``); ``save`` writes the snapshot of each held partition counted since the last one,
    to that partition's changelog."""

    def __init__(self, table: faust.Table, kinds: Mapping[str, PartitionCounts], clicks_topic: str) -> None:
        self._table, self._kinds, self._clicks = table, kinds, clicks_topic
        table.on_recover(self._take_held)

    def held(self) -> list[int]:
        changelog = self._table.changelog_topic.get_topic_name()
        actives = self._table.app.assignor.assigned_actives()
        return sorted(tp.partition for tp in actives if tp.topic == changelog)

    def release(self, partitions: Iterable[int]) -> None:
        """Stop counting ``partitions`` (revoked)."""
        partitions = list(partitions)
        for counts in self._kinds.values():
            counts.release(partitions)

    async def _take_held(self) -> None:
        now = time.time()
        for partition in self.held():
            for prefix, counts in self._kinds.items():
                with as_event(PartitionEvent(self._clicks, partition)):
                    stored = self._table.get(f"{prefix}{partition}".encode())
                counts.take(partition, stored, now)

    def save(self) -> None:
        held = self.held()
        for prefix, counts in self._kinds.items():
            for partition, snapshot in counts.snapshots(held).items():
                with as_event(PartitionEvent(self._clicks, partition)):
                    self._table[f"{prefix}{partition}".encode()] = snapshot
