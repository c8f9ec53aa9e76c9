"""Event decoding: every valid shape accepted, every invalid one rejected with its reason."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_recs import events
from stream_recs.events import Event, Limits, Rejection, decode_event
from stream_recs.messages import encode_event

NOW = 1_700_000_000.0


def decode(body: object, key: bytes | str | None = b"u1", *, raw: bytes | None = None, **kw):
    value = raw if raw is not None else orjson.dumps(body)
    args = {"topic": "clicks", "partition": 3, "offset": 42, "broker_ts": NOW - 5, "now": NOW}
    args.update(kw)
    return decode_event(value, key, **args)


def reason(body: object, **kw) -> str:
    out = decode(body, **kw)
    assert isinstance(out, Rejection), out
    return out.reason


def test_full_event():
    body = {
        "event_id": "e9",
        "user_id": "u1",
        "item_id": "i7",
        "type": "cart",
        "ts": NOW - 1,
        "session_id": "s1",
        "extra": {"ignored": [1, 2]},
    }
    assert decode(body) == Event("e9", "u1", "i7", "cart", NOW - 1, "s1")


def test_excluded_categories_are_kept_and_checked():
    body = {"user_id": "u1", "item_id": "i7", "exclude_categories": ["Horror", "War"]}
    assert decode(body).exclude_categories == ("Horror", "War")
    assert reason({**body, "exclude_categories": "Horror"}) == "wrong_type"
    assert reason({**body, "exclude_categories": ["x"] * 21}) == "wrong_type"
    assert reason({**body, "exclude_categories": [""]}) == "bad_id"
    assert reason({**body, "exclude_categories": [7]}) == "wrong_type"
    again = decode(None, raw=encode_event(decode(body)))
    assert again.exclude_categories == ("Horror", "War")  # a re-keyed click keeps them


def test_defaults_event_id_from_position_ts_from_broker_type_click():
    out = decode({"user_id": "u1", "item_id": "i7"})
    assert out == Event("clicks:3:42", "u1", "i7", "click", NOW - 5, None)


def test_nulls_are_absent_and_int_ts_accepted():
    out = decode(
        {
            "user_id": "u1",
            "item_id": "i7",
            "ts": 1_699_999_000,
            "event_id": None,
            "session_id": None,
            "type": None,
        }
    )
    assert out == Event("clicks:3:42", "u1", "i7", "click", 1_699_999_000.0, None)


def test_no_broker_timestamp_uses_now():
    assert decode({"user_id": "u1", "item_id": "i"}, broker_ts=-1).ts == NOW
    assert decode({"user_id": "u1", "item_id": "i"}, broker_ts=None).ts == NOW


def test_missing_key_uses_body_user_and_str_key_accepted():
    assert decode({"user_id": "u2", "item_id": "i"}, key=None).user_id == "u2"
    assert decode({"user_id": "u2", "item_id": "i"}, key="u2").user_id == "u2"


def test_long_pseudonymised_user_ids_accepted():
    user = "h" * 256
    assert decode({"user_id": user, "item_id": "i"}, key=user.encode()).user_id == user


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", events.EMPTY),
        (b'{"user_id": "u1", "item_id": "\xff"}', events.NOT_UTF8),
        (b'{"user_id": "u1",', events.BAD_JSON),
        (b'{"user_id": "u1", "item_id": "i", "ts": NaN}', events.BAD_JSON),
        (b'{"user_id": "u1", "item_id": "i", "ts": 1e999}', events.BAD_JSON),
        (b'"\\ud800"', events.BAD_JSON),
        (b"[" * 2000 + b"]" * 2000, events.TOO_DEEP),
        (b"[1, 2]", events.NOT_OBJECT),
        (b"null", events.NOT_OBJECT),
        (b'"u1"', events.NOT_OBJECT),
    ],
)
def test_raw_rejections(raw, expected):
    assert reason(None, raw=raw, key=None) == expected


def test_none_value_is_empty():
    assert decode_event(None, b"u1", topic="t", partition=0, offset=0, broker_ts=NOW).reason == (events.EMPTY)


def test_record_size_limit():
    body = {"user_id": "u1", "item_id": "i", "pad": "x" * 5000}
    out = decode(body)
    assert out.reason == events.TOO_LARGE and "limit 4096" in out.detail
    assert isinstance(decode(body, limits=Limits(max_record_bytes=10_000)), Event)


def test_nesting_limit_on_extra_fields():
    ok = {"user_id": "u1", "item_id": "i", "meta": {"a": {"b": {"c": 1}}}}  # depth 4 with body
    assert isinstance(decode(ok), Event)
    deep = {"user_id": "u1", "item_id": "i", "meta": {"a": {"b": {"c": [1]}}}}
    assert reason(deep) == events.TOO_DEEP


@pytest.mark.parametrize(
    ("body", "expected", "detail"),
    [
        ({"item_id": "i"}, events.MISSING_FIELD, "user_id is missing"),
        ({"user_id": "u1"}, events.MISSING_FIELD, "item_id is missing"),
        ({"user_id": "u1", "item_id": 7}, events.WRONG_TYPE, "item_id must be a string, got number"),
        ({"user_id": ["u1"], "item_id": "i"}, events.WRONG_TYPE, "got array"),
        ({"user_id": "u1", "item_id": "i", "session_id": True}, events.WRONG_TYPE, "got boolean"),
        ({"user_id": "u1", "item_id": ""}, events.BAD_ID, "item_id is empty"),
        ({"user_id": "u1", "item_id": "a\nb"}, events.BAD_ID, "U+000A at 1"),
        ({"user_id": "u1", "item_id": "a\x85"}, events.BAD_ID, "U+0085"),
        ({"user_id": "u1", "item_id": "i", "event_id": "\x00"}, events.BAD_ID, "event_id"),
        ({"user_id": "u1", "item_id": "i" * 257}, events.TOO_LARGE, "item_id is 257 characters"),
        ({"user_id": "u1", "item_id": "i", "type": "like"}, events.BAD_EVENT_TYPE, "'like'"),
        ({"user_id": "u1", "item_id": "i", "type": 1}, events.WRONG_TYPE, "type must be a string"),
        ({"user_id": "u1", "item_id": "i", "ts": "1700000000"}, events.WRONG_TYPE, "got string"),
        ({"user_id": "u1", "item_id": "i", "ts": True}, events.WRONG_TYPE, "got boolean"),
        ({"user_id": "u1", "item_id": "i", "ts": -1}, events.BAD_TS, "negative"),
        ({"user_id": "u1", "item_id": "i", "ts": NOW + 301}, events.BAD_TS, "301 s in the future"),
        ({"user_id": "u1", "item_id": "i", "ts": NOW * 1000}, events.BAD_TS, "milliseconds"),
    ],
)
def test_field_rejections(body, expected, detail):
    out = decode(body)
    assert isinstance(out, Rejection)
    assert out.reason == expected
    assert detail in out.detail


def test_small_clock_skew_accepted():
    assert decode({"user_id": "u1", "item_id": "i", "ts": NOW + 299}).ts == NOW + 299


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (b"", events.BAD_KEY),
        (b"\xff\xfe", events.BAD_KEY),
        (b"u2", events.KEY_MISMATCH),
        (b"k" * 2000, events.BAD_KEY),
    ],
)
def test_key_rejections(key, expected):
    assert reason({"user_id": "u1", "item_id": "i"}, key=key) == expected


def test_reason_codes_are_unique_short_labels():
    assert len(set(events.REASONS)) == len(events.REASONS)
    assert all(r.isidentifier() and r.islower() for r in events.REASONS)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
records = st.fixed_dictionaries(
    {},
    optional={name: json_values for name in ("event_id", "user_id", "item_id", "type", "ts", "session_id")},
)


@settings(max_examples=300, deadline=None)
@given(body=records | json_values, key=st.none() | st.binary(max_size=10))
def test_json_never_raises_and_is_consistent(body, key):
    out = decode(body, key=key)
    if isinstance(out, Rejection):
        assert out.reason in events.REASONS and out.reason != events.DECODER_ERROR
    else:
        assert isinstance(out, Event)
        assert out.user_id == body["user_id"] and out.item_id == body["item_id"]
        assert key is None or key.decode() == out.user_id


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300), key=st.none() | st.binary(max_size=10))
def test_bytes_never_raise(raw, key):
    out = decode(None, raw=raw, key=key)
    assert isinstance(out, Event | Rejection)
    if isinstance(out, Rejection):
        assert out.reason != events.DECODER_ERROR
