"""Output messages (DESIGN.md section 4): recommendations and dead letters, encoded with orjson.

Both are keyed by user id by the caller; these functions only build the values. A dead letter
carries, besides the contract fields, ``detail`` (the decoder's precise explanation) and
``raw_size`` (the original value's length, since ``raw`` is truncated).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import NamedTuple

import orjson

MAX_RAW_BYTES = 1024


class RecItem(NamedTuple):
    """One recommended item; ``because`` is the history item it is most similar to.

    A named tuple: twenty are built per event on the hot path."""

    item_id: str
    score: float
    because: str | None


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The answer to one event; ``model_version`` is None for the popularity fallback."""

    event_id: str
    user_id: str
    items: tuple[RecItem, ...]
    strategy: str  # "model" | "popular"
    model_version: str | None
    event_ts: float


def encode_recommendation(rec: Recommendation, produced_ts: float) -> bytes:
    """JSON value for the recommendations topic."""
    return orjson.dumps(
        {
            "event_id": rec.event_id,
            "user_id": rec.user_id,
            "items": [{"item_id": it.item_id, "score": it.score, "because": it.because} for it in rec.items],
            "strategy": rec.strategy,
            "model_version": rec.model_version,
            "event_ts": rec.event_ts,
            "produced_ts": produced_ts,
        }
    )


def encode_dead_letter(
    reason: str,
    detail: str,
    raw: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    ts: float,
    max_raw: int = MAX_RAW_BYTES,
) -> bytes:
    """JSON value for the dead-letters topic; ``ts`` is when the record was dead-lettered."""
    raw = bytes(raw or b"")
    return orjson.dumps(
        {
            "reason": reason,
            "detail": detail,
            "raw": base64.b64encode(raw[:max_raw]).decode("ascii"),
            "raw_size": len(raw),
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "ts": ts,
        }
    )
