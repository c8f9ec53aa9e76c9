"""Decode and validate one click record (the README's event contract) into an ``Event``, a ``Forget``
control record or a ``Rejection``.

``decode_event`` never raises on bad input: every failure becomes a ``Rejection`` whose ``reason``
is one of the stable codes below (the ``reason`` label of ``stream_recs_dead_letters_total``) and
whose ``detail`` says precisely what was wrong.

Rules, in the order they are checked:

- the value must be present and at most ``Limits.max_record_bytes`` long, valid UTF-8, valid
  JSON (orjson: no NaN/Infinity literals, no lone surrogates), a JSON object, nested at most
  ``Limits.max_depth`` levels (the contract fields are flat; unknown extra fields are ignored);
- ``user_id`` and ``item_id`` are required strings; ``event_id``, ``type``, ``ts`` and
  ``session_id`` are optional (absent or ``null``);
- ids are non-empty, at most ``Limits.max_id_chars`` characters, without control characters;
- ``type`` is one of ``EVENT_TYPES`` (default ``click``) or ``forget``: a control record
  ``{"user_id": ..., "type": "forget"}`` (``item_id`` not needed) asking to delete the user's
  state; it travels on the forget topic of its own, keyed by the user (``intake`` dead-letters a
  forget request on clicks, and a click on the forget topic, as ``wrong_topic``);
- ``ts`` is a finite, non-negative number of epoch seconds, at most ``Limits.max_future_s``
  ahead of ``now`` (a millisecond timestamp is caught here); absent: the broker timestamp, or
  ``now`` when the broker has none (Kafka reports -1);
- the record key, when present, must be non-empty UTF-8 of at most ``max_id_chars`` characters
  and equal to the body's ``user_id``; absent: the body's ``user_id`` is used;
- a missing ``event_id`` becomes ``"{topic}:{partition}:{offset}"``;
- ``exclude_categories``, optional, is a list of at most ``MAX_EXCLUDED`` category names (each
  an id as above): this answer offers no item the catalogue puts in any of them.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import orjson

EMPTY = "empty"
TOO_LARGE = "too_large"
NOT_UTF8 = "not_utf8"
BAD_JSON = "bad_json"
TOO_DEEP = "too_deep"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
BAD_ID = "bad_id"
BAD_EVENT_TYPE = "bad_event_type"
BAD_TS = "bad_ts"
BAD_KEY = "bad_key"
KEY_MISMATCH = "key_mismatch"
DECODER_ERROR = "decoder_error"  # a bug in this module, never expected
WRONG_TOPIC = "wrong_topic"  # valid, on the other topic (a forget on clicks): set by intake

REASONS = (
    EMPTY,
    TOO_LARGE,
    NOT_UTF8,
    BAD_JSON,
    TOO_DEEP,
    NOT_OBJECT,
    MISSING_FIELD,
    WRONG_TYPE,
    BAD_ID,
    BAD_EVENT_TYPE,
    BAD_TS,
    BAD_KEY,
    KEY_MISMATCH,
    DECODER_ERROR,
    WRONG_TOPIC,
)

EVENT_TYPES = frozenset({"click", "view", "cart", "purchase"})
DEFAULT_EVENT_TYPE = "click"
FORGET = "forget"  # the control type: delete the user's state

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_EXCLUDED = 20  # categories one click may exclude


@dataclass(frozen=True, slots=True)
class Limits:
    """Size and sanity bounds applied by ``decode_event``."""

    max_record_bytes: int = 4096
    max_id_chars: int = 256
    max_depth: int = 4
    max_future_s: float = 300.0


_DEFAULT = Limits()


@dataclass(frozen=True, slots=True)
class Event:
    """A valid click: every field filled in (defaults applied)."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    ts: float
    session_id: str | None = None
    exclude_categories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Forget:
    """A request to delete ``user_id``'s state (GDPR-style erasure)."""

    event_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record was refused: a stable ``reason`` code and a human ``detail``."""

    reason: str
    detail: str


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.rejection = Rejection(reason, detail)


def decode_event(
    value: bytes | None,
    key: bytes | str | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    broker_ts: float | None,
    now: float | None = None,
    limits: Limits | None = None,
) -> Event | Forget | Rejection:
    """Decode a record's value and key; ``broker_ts`` and ``now`` are epoch seconds."""
    if now is None:
        now = time.time()
    try:
        return _decode(value, key, topic, partition, offset, broker_ts, now, limits or _DEFAULT)
    except _Invalid as exc:
        return exc.rejection
    except Exception as exc:  # a decoder bug must still not stop the stream
        return Rejection(DECODER_ERROR, f"undecodable record: {type(exc).__name__}: {exc}")


def _decode(value, key, topic, partition, offset, broker_ts, now, limits: Limits) -> Event | Forget:
    if not value:
        raise _Invalid(EMPTY, "record has no value")
    if len(value) > limits.max_record_bytes:
        raise _Invalid(TOO_LARGE, f"record is {len(value)} bytes, limit {limits.max_record_bytes}")
    body = _parse(bytes(value), limits.max_depth)
    user_id = _id(body, "user_id", limits, required=True)
    forget = body.get("type") == FORGET
    item_id = _id(body, "item_id", limits, required=not forget)
    event_id = _id(body, "event_id", limits, required=False) or f"{topic}:{partition}:{offset}"
    session_id = _id(body, "session_id", limits, required=False)
    event_type = body.get("type")
    if event_type is None:
        event_type = DEFAULT_EVENT_TYPE
    elif not isinstance(event_type, str):
        raise _Invalid(WRONG_TYPE, f"type must be a string, got {_json_type(event_type)}")
    elif event_type not in EVENT_TYPES and not forget:
        allowed = sorted(EVENT_TYPES | {FORGET})
        raise _Invalid(BAD_EVENT_TYPE, f"type {event_type[:40]!r} is not one of {allowed}")
    ts = _ts(body.get("ts"), broker_ts, now, limits)
    if key is not None:
        _check_key(key, user_id, limits)
    if forget:
        return Forget(event_id, user_id)
    return Event(event_id, user_id, item_id, event_type, ts, session_id, _categories(body, limits))


def _categories(body: dict, limits: Limits) -> tuple[str, ...]:
    value = body.get("exclude_categories")
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_EXCLUDED:
        raise _Invalid(WRONG_TYPE, f"exclude_categories must be a list of at most {MAX_EXCLUDED} names")
    return tuple(_id({"exclude_categories": name}, "exclude_categories", limits, required=True)
                 for name in value)


def _parse(value: bytes, max_depth: int) -> dict:
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise _Invalid(NOT_UTF8, f"record is not UTF-8: {bad.reason} at byte {bad.start}") from None
        if "depth limit" in str(exc) or "recursion" in str(exc):
            raise _Invalid(TOO_DEEP, f"JSON nested deeper than {max_depth} levels") from None
        raise _Invalid(BAD_JSON, f"invalid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _Invalid(NOT_OBJECT, f"record is a JSON {_json_type(body)}, not an object")
    for field_value in body.values():
        if isinstance(field_value, dict | list) and _depth(field_value) + 1 > max_depth:
            raise _Invalid(TOO_DEEP, f"JSON nested deeper than {max_depth} levels")
    return body


def _depth(node: dict | list) -> int:
    """Nesting depth of a container (1 for a flat one), without recursion."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        children = current.values() if isinstance(current, dict) else current
        stack.extend((c, level + 1) for c in children if isinstance(c, dict | list))
    return deepest


def _id(body: dict, name: str, limits: Limits, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _Invalid(MISSING_FIELD, f"{name} is missing")
        return None
    if not isinstance(value, str):
        raise _Invalid(WRONG_TYPE, f"{name} must be a string, got {_json_type(value)}")
    if not value:
        raise _Invalid(BAD_ID, f"{name} is empty")
    if len(value) > limits.max_id_chars:
        raise _Invalid(TOO_LARGE, f"{name} is {len(value)} characters, limit {limits.max_id_chars}")
    bad = _CONTROL.search(value)
    if bad:
        raise _Invalid(BAD_ID, f"{name} has control character U+{ord(bad.group()):04X} at {bad.start()}")
    return value


def _ts(value: object, broker_ts: float | None, now: float, limits: Limits) -> float:
    if value is None:
        return float(broker_ts) if broker_ts is not None and broker_ts >= 0 else now
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(WRONG_TYPE, f"ts must be a number, got {_json_type(value)}")
    ts = float(value)
    if not math.isfinite(ts):
        raise _Invalid(BAD_TS, f"ts {value} is not finite")
    if ts < 0:
        raise _Invalid(BAD_TS, f"ts {value} is negative")
    if ts > now + limits.max_future_s:
        hint = " (milliseconds? ts is epoch seconds)" if ts / 1000.0 <= now + limits.max_future_s else ""
        raise _Invalid(BAD_TS, f"ts {value} is {ts - now:.0f} s in the future{hint}")
    return ts


def _check_key(key: bytes | str, user_id: str, limits: Limits) -> None:
    if not key:
        raise _Invalid(BAD_KEY, "record key is empty")
    if len(key) > 4 * limits.max_id_chars:
        raise _Invalid(BAD_KEY, f"record key is {len(key)} long, limit {4 * limits.max_id_chars}")
    try:
        text = key if isinstance(key, str) else bytes(key).decode("utf-8")
    except UnicodeDecodeError as bad:
        raise _Invalid(BAD_KEY, f"record key is not UTF-8: {bad.reason} at byte {bad.start}") from None
    if text != user_id:
        raise _Invalid(KEY_MISMATCH, f"record key {text[:64]!r} differs from user_id {user_id[:64]!r}")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
