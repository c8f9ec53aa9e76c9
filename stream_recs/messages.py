"""The messages the project writes, encoded with orjson: recommendations, dead letters, re-keyed
clicks and forget requests, model-update announcements (the contracts of the README).

Records are keyed by user id by the caller; these functions only build the values. A dead letter
carries, besides the contract fields, ``detail`` (the decoder's precise explanation) and
``raw_size`` (the original value's length, since ``raw`` is truncated).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from stream_recs.catalogue import Catalogue
from stream_recs.events import FORGET, Event, Forget

MAX_RAW_BYTES = 1024


SCHEMA = 2  # the recommendation's shape: 2 since ``because`` became {"item_id", "weight"} or null


class RecItem(NamedTuple):
    """One recommended item; ``because`` is the session item that explains it (``explain.py``)
    and ``weight`` how much (both None: no explanation).

    A named tuple: twenty are built per event on the hot path."""

    item_id: str
    score: float
    because: str | None
    weight: float | None = None


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The answer to one event; ``model_version`` is None for the popularity fallback."""

    event_id: str
    user_id: str
    items: tuple[RecItem, ...]
    strategy: str  # "model" | "popular"
    model_version: str | None
    event_ts: float


def encode_event(event: Event) -> bytes:
    """JSON value of a validated click (every field explicit), for re-sending it keyed by user."""
    body = {"event_id": event.event_id, "user_id": event.user_id, "item_id": event.item_id,
            "type": event.type, "ts": event.ts}
    if event.session_id is not None:
        body["session_id"] = event.session_id
    if event.exclude_categories:
        body["exclude_categories"] = list(event.exclude_categories)
    return orjson.dumps(body)


def encode_forget(forget: Forget) -> bytes:
    """JSON value of a request to delete ``forget.user_id``'s state (on the forget topic)."""
    return orjson.dumps({"event_id": forget.event_id, "user_id": forget.user_id, "type": FORGET})


def encode_recommendation(rec: Recommendation, produced_ts: float, details: Catalogue | None = None) -> bytes:
    """JSON value for the recommendations topic (``SCHEMA`` 2). With ``details`` each item also
    carries the ``title`` and ``categories`` of its catalogue record, where it has them."""
    items = [
        {"item_id": it.item_id, "score": it.score,
         "because": None if it.because is None else {"item_id": it.because, "weight": it.weight}}
        for it in rec.items
    ]
    if details is not None:
        for item in items:
            record = details.get(item["item_id"])
            if record is not None and record.title is not None:
                item["title"] = record.title
            if record is not None and record.categories:
                item["categories"] = record.categories
    return orjson.dumps(
        {
            "schema": SCHEMA,
            "event_id": rec.event_id,
            "user_id": rec.user_id,
            "items": items,
            "strategy": rec.strategy,
            "model_version": rec.model_version,
            "event_ts": rec.event_ts,
            "produced_ts": produced_ts,
        }
    )


def because_of(item: dict) -> tuple[str, float | None] | None:
    """(item id, weight) of a recommended item's ``because`` as read from the recommendations
    topic, in either shape: schema 2's ``{"item_id", "weight"}`` or null, or the earlier releases'
    item id string or null (weight None). Kept for readers of older records for one release."""
    because = item.get("because")
    if isinstance(because, dict):
        return because.get("item_id"), because.get("weight")
    return (because, None) if isinstance(because, str) else None


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


class ModelUpdateError(ValueError):
    """A model-updates record that is not a valid announcement."""


# why a worker refuses an announcement (``model_updates.Refused``; a label of its metric)
REFUSAL_REASONS = (
    "malformed", "outside_root", "unsigned", "bad_signature", "bad_checkpoint", "branched_lineage",
)


FULL, CANARY = "full", "canary"  # an announcement's rollout: every user at once, or a canary first
PROMOTE, ROLLBACK = "promote", "rollback"  # the decisions that end a canary


@dataclass(frozen=True, slots=True)
class ModelUpdate:
    """Announcement of a new checkpoint: where it is, the sha256 its weights must have, the
    HMAC-SHA256 signature over its files (``model_updates.sign``; None: unsigned), and its
    rollout (``FULL``, or ``CANARY``: a share of users first, ``canary.py``)."""

    path: str
    version: str
    sha256: str
    signature: str | None = None
    rollout: str = FULL


@dataclass(frozen=True, slots=True)
class CanaryDecision:
    """The end of a candidate's canary: ``PROMOTE`` (every user gets it) or ``ROLLBACK``, with
    the online counts it was decided on (``canary.Verdict.evidence``)."""

    version: str
    decision: str
    evidence: dict


def encode_model_update(update: ModelUpdate) -> bytes:
    """JSON value for the model-updates topic (a full rollout is the original shape)."""
    body = {"path": update.path, "version": update.version, "sha256": update.sha256}
    if update.signature is not None:
        body["signature"] = update.signature
    if update.rollout != FULL:
        body["rollout"] = update.rollout
    return orjson.dumps(body)


def encode_canary_decision(decision: CanaryDecision) -> bytes:
    """JSON value for the model-updates topic."""
    return orjson.dumps({"canary_decision": decision.decision, "version": decision.version,
                         "evidence": decision.evidence})


def _is_digest(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def decode_model_record(raw: bytes | None, max_bytes: int = 4096) -> ModelUpdate | CanaryDecision:
    """Parse a model-updates record: an announcement or a canary decision; raises
    ``ModelUpdateError`` with the reason."""
    if not raw or len(raw) > max_bytes:
        raise ModelUpdateError(f"model update must be 1..{max_bytes} bytes, got {len(raw or b'')}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ModelUpdateError(f"model update is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ModelUpdateError("model update must be a JSON object")
    if "canary_decision" in body:
        return _decision(body)
    fields = {}
    for name in ("path", "version", "sha256"):
        value = body.get(name)
        if not isinstance(value, str) or not value:
            raise ModelUpdateError(f"model update field {name!r} must be a non-empty string")
        fields[name] = value
    signature = body.get("signature")
    for name, value in (("sha256", fields["sha256"]), ("signature", signature)):
        if value is not None and not (isinstance(value, str) and _is_digest(value)):
            raise ModelUpdateError(f"model update field {name!r} must be 64 lowercase hex digits")
    rollout = body.get("rollout", FULL)
    if rollout not in (FULL, CANARY):
        raise ModelUpdateError(f"model update field 'rollout' must be {FULL!r} or {CANARY!r}")
    return ModelUpdate(**fields, signature=signature, rollout=rollout)


def _decision(body: dict) -> CanaryDecision:
    decision, version, evidence = body["canary_decision"], body.get("version"), body.get("evidence", {})
    if decision not in (PROMOTE, ROLLBACK):
        raise ModelUpdateError(f"canary decision must be {PROMOTE!r} or {ROLLBACK!r}")
    if not isinstance(version, str) or not version:
        raise ModelUpdateError("canary decision field 'version' must be a non-empty string")
    if not isinstance(evidence, dict):
        raise ModelUpdateError("canary decision field 'evidence' must be a JSON object")
    return CanaryDecision(version, decision, evidence)
