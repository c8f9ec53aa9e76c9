"""The sessions table: one encoded ``SessionState`` per user id, changelog-backed.

Faust's table and its RocksDB store pick the partition of a key (changelog partition, local
database) from the *current event*. A micro-batch from ``take_events`` spans several partitions,
so every read and write here runs as the user's own event (:func:`as_event`): the state then lives
on the same partition as the user's clicks, which is what makes recovery and rebalancing correct.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping

import faust
from faust.streams import _current_event

from stream_recs.state import SessionState
from stream_recs.topology.topics import SESSIONS_TABLE


def sessions_table(app: faust.App, partitions: int) -> faust.Table:
    """User id (bytes) -> ``SessionState.encode()`` bytes."""
    return app.Table(
        SESSIONS_TABLE,
        partitions=partitions,
        key_type=bytes,  # bytes types mean the raw codec, both ways
        value_type=bytes,
        help="per-user session state (history, GRU hidden state, last recommendations)",
    )


@contextlib.contextmanager
def as_event(event: faust.types.EventT) -> Iterator[None]:
    """Make ``event`` Faust's current event, so table access uses its partition."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def load_states(
    table: faust.Table, events_by_user: Mapping[str, faust.types.EventT]
) -> dict[str, SessionState | None]:
    """Each user's stored state (None: new user, or a state this version cannot read)."""
    states: dict[str, SessionState | None] = {}
    for user, event in events_by_user.items():
        with as_event(event):
            raw = table.get(user.encode())
        try:
            states[user] = SessionState.decode(raw) if raw else None
        except ValueError:
            states[user] = None
    return states


def save_states(
    table: faust.Table,
    states: Mapping[str, SessionState],
    events_by_user: Mapping[str, faust.types.EventT],
) -> None:
    """Write new states back (one changelog record per user and batch)."""
    for user, state in states.items():
        with as_event(events_by_user[user]):
            table[user.encode()] = state.encode()
