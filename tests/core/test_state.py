"""Session state transitions and its binary encoding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_recs.models.registry import vocabulary_fingerprint
from stream_recs.state import (
    SessionState,
    fingerprint,
    session_fingerprint,
)

T0 = 1_700_000_000.0


def test_size_at_d64_history50_k20():
    state = SessionState(
        last_ts=T0,
        touched=int(T0),
        session=session_fingerprint("s"),
        model=fingerprint("v1"),
        vocab=vocabulary_fingerprint(["a"]),
        hidden=np.zeros(64, np.float16).tobytes(),
        history=tuple(range(1000, 1050)),
        session_len=12,
        last_recs=tuple(range(20)),
    )
    assert len(state.encode()) == 37 + 64 * 2 + 50 * 2 + 20 * 2 == 305
    wide = SessionState(**{**_fields(state), "history": tuple(range(70_000, 70_050))})
    assert len(wide.encode()) == 37 + 128 + 50 * 4 + 20 * 4 == 445


def _fields(state: SessionState) -> dict:
    return state._asdict()


states = st.builds(
    SessionState,
    last_ts=st.floats(0, 4e9),
    touched=st.integers(0, 2**32 - 1),
    session=st.integers(0, 2**64 - 1),
    model=st.integers(0, 2**32 - 1),
    vocab=st.integers(0, 2**32 - 1),
    hidden=st.lists(st.integers(0, 255), max_size=64).map(lambda b: bytes(b[: len(b) // 2 * 2])),
    history=st.lists(st.integers(0, 2**32 - 1), max_size=60).map(tuple),
    last_recs=st.lists(st.integers(0, 2**32 - 1), max_size=30).map(tuple),
).map(lambda s: SessionState(**{**_fields(s), "session_len": len(s.history) // 2}))


@given(states)
def test_encoding_round_trips(state):
    assert SessionState.decode(state.encode()) == state
    assert SessionState.touched_of(state.encode()) == state.touched


@pytest.mark.parametrize("data", [b"", b"\x01" * 10, b"\x09" + bytes(36)])
def test_decode_rejects_foreign_bytes(data):
    with pytest.raises(ValueError):
        SessionState.decode(data)
    with pytest.raises(ValueError):
        SessionState.touched_of(data)


def test_decode_rejects_truncated_state():
    data = SessionState(last_ts=T0, touched=0, history=(1, 2, 3)).encode()
    with pytest.raises(ValueError, match="length"):
        SessionState.decode(data[:-1])
    with pytest.raises(ValueError, match="length"):
        SessionState.touched_of(data[:-1])


def test_fingerprints_are_stable_and_nonzero():
    assert fingerprint("v1") == fingerprint("v1") != fingerprint("v2")
    assert session_fingerprint(None) == 0 and session_fingerprint("") != 0
    assert vocabulary_fingerprint(["a", "bc"]) != vocabulary_fingerprint(["ab", "c"])
    assert vocabulary_fingerprint(["a", "b"]) != vocabulary_fingerprint(["b", "a"])


def test_session_boundaries():
    s = SessionState(last_ts=T0, touched=0, session=7)
    assert not s.is_new_session(T0 + 1800, 0, gap=1800)
    assert s.is_new_session(T0 + 1800.5, 0, gap=1800)
    assert not s.is_new_session(T0 + 10, 7, gap=1800)
    assert s.is_new_session(T0 + 10, 8, gap=1800)
    assert not s.is_new_session(T0 - 500, 0, gap=1800)  # out of order


def test_expiry_uses_processing_time():
    s = SessionState(last_ts=900_000_000.0, touched=int(T0))
    assert not s.expired(T0 + 3600, ttl=3600)
    assert s.expired(T0 + 3601, ttl=3600)


def test_append_bounds_history_and_session():
    s = SessionState(last_ts=T0, touched=0)
    for i in range(7):
        s = s.append(i, T0 + i, now=T0 + 100 + i, history_len=5)
    assert s.history == (2, 3, 4, 5, 6)
    assert s.session_len == 5
    assert (s.last_ts, s.touched) == (T0 + 6, int(T0 + 106))
    s = s.append(9, T0, now=T0 + 200, history_len=5)  # late event keeps last_ts
    assert s.last_ts == T0 + 6


def test_new_session_keeps_history_only():
    s = SessionState(
        last_ts=T0,
        touched=0,
        session=1,
        model=5,
        hidden=b"\x00\x3c",
        history=(1, 2, 3),
        session_len=2,
        last_recs=(4,),
    )
    n = s.new_session(9)
    assert (n.session, n.model, n.hidden, n.history, n.session_len, n.last_recs) == (
        9,
        0,
        b"",
        (1, 2, 3),
        0,
        (),
    )
    assert n.append(8, T0, T0, 50).session_len == 1


def test_translate_drops_missing_items_and_counts_session():
    s = SessionState(
        last_ts=T0,
        touched=0,
        model=5,
        vocab=1,
        hidden=b"\x00\x3c",
        history=(0, 1, 2, 3),
        session_len=3,
        last_recs=(2,),
    )
    mapping = np.array([10, -1, 12, -1])
    t = s.translate(2, mapping)
    assert (t.vocab, t.history, t.session_len, t.hidden, t.last_recs) == (2, (10, 12), 1, b"", ())
    assert s.translate(2, np.array([10, 11])).history == (10, 11)  # 2, 3: past the old vocabulary
    lost = s.translate(2, None)
    assert (lost.history, lost.session_len, lost.vocab) == ((), 0, 2)
