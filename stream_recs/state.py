"""Per-user session state: its transitions and its compact binary encoding.

A ``SessionState`` is immutable; each transition returns a new one. What it holds:

- ``history``: the last ``history_len`` item indices the user interacted with (oldest first,
  across sessions), in the item-registry lineage tagged ``vocab``; ``session_len`` of its newest entries are
  the current session (what a hidden state is rebuilt from after a model swap);
- ``hidden``: the GRU state after the last event, float16 bytes (GRU states lie in [-1, 1], where
  float16 keeps about 3 decimal digits), tagged ``model``; empty when the session has no model
  step yet (the model's zero state);
- ``last_recs``: item indices (same vocabulary) the model recommended after the last event, best
  first, so the next event can be scored online (hit or not, at which rank);
- ``last_ts`` (event time, drives the session gap), ``touched`` (processing time, whole seconds,
  drives the TTL: replayed old events must not expire at once), ``session`` (fingerprint of the
  producer's session_id, 0 when none was given).

Version tags are fingerprints, not strings: ``model`` = ``fingerprint(model.version)``, ``vocab``
= ``model.registry.lineage`` (``models/registry.py``), so a state stays small whatever the names.
Every model of a lineage keeps the indices of its parents, so ``history`` stays valid across their
versions (only ``hidden`` is rebuilt; ``within`` drops the items a model lacks); a state of
another lineage needs that lineage's vocabulary to be translated (``live_model.Vocabularies``).

Encoding (little-endian): a 37-byte header (format, index width, last_ts f64, session u64, model
u32, vocab u32, touched u32, hidden/history/session/recs lengths), the hidden state as float16,
then history and last_recs as uint16 (uint32 when an index exceeds 65535). At d=64, history 50
and K=20 that is 37 + 128 + 100 + 40 = 305 bytes (445 with uint32 indices).

Forgetting a user is deleting their key from the sessions table: nothing else in the process
keeps per-user data (popularity counts are per item).
"""

from __future__ import annotations

import array
import hashlib
import struct
import sys
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

FORMAT = 1
_new = tuple.__new__  # builds a SessionState from its fields without _replace's keyword handling
_HEADER = struct.Struct("<BBdQIIIHHHB")
_MAX_RECS = 255
_SWAP = sys.byteorder == "big"  # the encoding is little-endian; ``array`` uses the host's order
assert array.array("H").itemsize == 2 and array.array("I").itemsize == 4


def fingerprint(text: str) -> int:
    """Stable non-zero 32-bit tag of a string (0 means "none" in a state)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little") or 1


def session_fingerprint(session_id: str | None) -> int:
    """64-bit tag of a producer session id; 0 when the event carried none."""
    if session_id is None:
        return 0
    digest = hashlib.blake2b(session_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class SessionState(NamedTuple):
    """One user's state; see the module docstring for the meaning of each field.

    A named tuple rather than a dataclass: transitions run several times per event and tuple
    construction is several times cheaper (the per-event ones build the tuple directly)."""

    last_ts: float
    touched: int
    session: int = 0
    model: int = 0
    vocab: int = 0
    hidden: bytes = b""
    history: tuple[int, ...] = ()
    session_len: int = 0
    last_recs: tuple[int, ...] = ()

    # --- transitions ----------------------------------------------------------------------
    def is_new_session(self, ts: float, session: int, gap: float) -> bool:
        """Does an event at ``ts`` with session tag ``session`` open a new session?

        Yes after more than ``gap`` seconds of inactivity, or when the event names a session
        different from this one. An event without a session id continues the current one.
        Out-of-order events (``ts`` before ``last_ts``) continue the session.
        """
        if session and session != self.session:
            return True
        return ts - self.last_ts > gap

    def expired(self, now: float, ttl: float) -> bool:
        """Has the user been idle (processing time) for more than ``ttl`` seconds?"""
        return idle_expired(self.touched, now, ttl)

    def new_session(self, session: int) -> SessionState:
        """Start a session: the hidden state and last recommendations go, history stays."""
        return self._replace(session=session, model=0, hidden=b"", session_len=0, last_recs=())

    def append(self, item: int, ts: float, now: float, history_len: int) -> SessionState:
        """Record an interaction with vocabulary index ``item``; history keeps the newest N."""
        history = (*self.history, item)[-history_len:]
        last_ts, _, session, model, vocab, hidden, _, session_len, last_recs = self
        return _new(SessionState, (max(last_ts, ts), int(now), session, model, vocab, hidden, history,
                                   min(session_len + 1, len(history)), last_recs))

    def touch(self, ts: float, now: float) -> SessionState:
        """Record an event whose item has no index (unknown to the model): times only."""
        return self._replace(last_ts=max(self.last_ts, ts), touched=int(now))

    def with_hidden(self, hidden: bytes, model: int) -> SessionState:
        """The GRU state (float16 bytes) after the last event, by the model tagged ``model``."""
        last_ts, touched, session, _, vocab, _, history, session_len, last_recs = self
        fields = (last_ts, touched, session, model, vocab, hidden, history, session_len, last_recs)
        return _new(SessionState, fields)

    def with_recs(self, recs: Sequence[int]) -> SessionState:
        """Remember what was recommended (model indices, best first; empty for a fallback)."""
        return _new(SessionState, (*self[:-1], tuple(recs[:_MAX_RECS])))

    def within(self, n_items: int) -> SessionState:
        """Only the history items a model of ``n_items`` items has (indices below it): a state
        written by a newer model of the lineage, read by an older one."""
        if not self.history or max(self.history) < n_items:
            return self
        keep = [i < n_items for i in self.history]
        in_session = sum(keep[len(keep) - self.session_len :]) if self.session_len else 0
        history = tuple(i for i in self.history if i < n_items)
        return self._replace(model=0, hidden=b"", history=history, session_len=in_session)

    def translate(self, vocab: int, mapping: np.ndarray | None) -> SessionState:
        """Re-index ``history`` into vocabulary ``vocab``.

        ``mapping[old] = new`` index, -1 for an item the new vocabulary lacks (dropped; the
        current session shrinks accordingly). ``mapping=None`` means the old vocabulary is
        unknown: history is lost. The hidden state and last recommendations are dropped: they
        belong to another model.
        """
        if mapping is None:
            return self._replace(vocab=vocab, model=0, hidden=b"", history=(), session_len=0, last_recs=())
        old = np.asarray(self.history, dtype=np.int64)
        known = old < len(mapping)  # an index past the old vocabulary is dropped, not an error
        new = np.where(known, mapping[np.where(known, old, 0)], -1) if len(old) else old
        keep = new >= 0
        in_session = int(keep[len(keep) - self.session_len :].sum()) if self.session_len else 0
        return self._replace(
            vocab=vocab,
            model=0,
            hidden=b"",
            history=tuple(new[keep].tolist()),
            session_len=in_session,
            last_recs=(),
        )

    # --- encoding -------------------------------------------------------------------------
    def encode(self) -> bytes:
        """Compact bytes for the sessions table (see the module docstring for the layout)."""
        try:  # history then last_recs, one array: cheaper than numpy for ~70 small ints
            packed = array.array("H", self.history + self.last_recs)
        except OverflowError:  # an index above 65535
            packed = array.array("I", self.history + self.last_recs)
        if _SWAP:
            packed.byteswap()
        header = _HEADER.pack(
            FORMAT,
            packed.itemsize,
            self.last_ts,
            self.session,
            self.model,
            self.vocab,
            self.touched,
            len(self.hidden) // 2,
            len(self.history),
            self.session_len,
            len(self.last_recs),
        )
        return b"".join((header, self.hidden, packed.tobytes()))

    @classmethod
    def decode(cls, data: bytes) -> SessionState:
        """Inverse of ``encode``; raises ``ValueError`` for bytes it did not produce."""
        header = _checked_header(data)
        _, width, last_ts, session, model, vocab, touched, n_hidden, n_hist, n_sess, _ = header
        end_hidden = _HEADER.size + 2 * n_hidden
        indices = array.array("I" if width == 4 else "H", data[end_hidden:])
        if _SWAP:
            indices.byteswap()
        hidden = bytes(data[_HEADER.size : end_hidden])
        history, last_recs = tuple(indices[:n_hist]), tuple(indices[n_hist:])
        return _new(cls, (last_ts, touched, session, model, vocab, hidden, history, n_sess, last_recs))

    @staticmethod
    def touched_of(data: bytes) -> int:
        """``decode(data).touched`` from the header alone (the TTL sweep reads every stored
        state); raises ``ValueError`` where ``decode`` does."""
        return _checked_header(data)[6]


def idle_expired(touched: float, now: float, ttl: float) -> bool:
    """The TTL rule, for a state last touched at ``touched`` (also read from its header alone)."""
    return now - touched > ttl


def _checked_header(data: bytes) -> tuple:
    """The header fields of an encoded state, once they are known to describe ``data``."""
    if len(data) < _HEADER.size:
        raise ValueError(f"session state is {len(data)} bytes, shorter than its header")
    header = _HEADER.unpack_from(data)
    fmt, width, *_, n_hidden, n_hist, n_sess, n_recs = header
    if fmt != FORMAT or width not in (2, 4):
        raise ValueError(f"unknown session state format {fmt} (index width {width})")
    if len(data) != _HEADER.size + 2 * n_hidden + width * (n_hist + n_recs) or n_sess > n_hist:
        raise ValueError("session state length does not match its header")
    return header
