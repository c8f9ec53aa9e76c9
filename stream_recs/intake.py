"""Intake: what each record of a micro-batch becomes, decided without Kafka.

``route_batch`` takes a batch's records (in offset order, each admitted once) and returns the
steps the agent carries out, in order:

- ``Send``: a record to produce on behalf of the source record. A record ``events.decode_event``
  rejects goes to the dead-letter topic with its reason (``kind`` "dead_letter"), and so does a
  valid record on the wrong topic (``wrong_topic``: a forget request on clicks, where any click
  producer could wipe any user, or a click on the forget topic); a valid record without a key is
  re-sent to its topic keyed by its user (``kind`` "rekey": a user's events and state must share
  a partition), with its event id and time fixed, so nothing changes on the way;
- ``Answer``: valid events to answer together, as one micro-batch (user ids pseudonymised when
  a key is configured, before they reach state, logs or outputs);
- ``Erase``: a ``forget`` request (from the forget topic): delete the user's state. The user's
  clicks that come before it in the batch are answered first (their ``Answer`` comes before it);
  ``topology/forgetting.py`` admits the request only after the clicks sent before it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from stream_recs.config import Topics
from stream_recs.events import WRONG_TOPIC, Event, Forget, Limits, Rejection, decode_event
from stream_recs.messages import encode_dead_letter, encode_event, encode_forget

DEAD_LETTER = "dead_letter"
REKEY = "rekey"


class Record(Protocol):
    """The fields of a consumed record that intake reads (a Faust message has them)."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None  # broker time, epoch seconds


@dataclass(frozen=True, slots=True)
class Rules:
    """How records are routed: the topics, the decoder's limits, and the pseudonymiser (if any)."""

    topics: Topics
    limits: Limits
    pseudonym: Callable[[str], str] | None = None


@dataclass(frozen=True, slots=True)
class Send:
    """Produce ``value`` keyed by ``key`` to ``topic``, for the record at ``source``."""

    topic: str
    key: bytes | None
    value: bytes
    source: int
    kind: str  # DEAD_LETTER or REKEY
    reason: str | None = None  # a dead letter's reason code


@dataclass(frozen=True, slots=True)
class Answer:
    """Events to answer as one micro-batch; ``sources[i]`` is the record of ``events[i]``, and
    ``taken`` counts the records routed since the previous ``Answer``."""

    events: list[Event]
    sources: list[int]
    taken: int


@dataclass(frozen=True, slots=True)
class Erase:
    """Delete ``user_id``'s state, as requested by the record at ``source``."""

    user_id: str
    source: int


Step = Send | Answer | Erase


def route_batch(records: Sequence[Record], rules: Rules, now: float) -> list[Step]:
    """The steps that carry out a micro-batch of records (see the module docstring)."""
    steps: list[Step] = []
    events: list[Event] = []
    sources: list[int] = []
    users: set[str] = set()  # of ``events``
    since = 0  # the first record not yet counted by an Answer
    for index, record in enumerate(records):
        decoded = decode_event(
            record.value, record.key, topic=record.topic, partition=record.partition,
            offset=record.offset, broker_ts=record.timestamp, now=now, limits=rules.limits,
        )
        if not isinstance(decoded, Rejection):
            decoded = _on_its_topic(decoded, record.topic, rules.topics)
        if isinstance(decoded, Rejection):
            steps.append(_dead_letter(record, index, decoded, rules.topics, now))
            continue
        if record.key is None:  # not keyed by user: its state may live on another partition
            value = encode_forget(decoded) if isinstance(decoded, Forget) else encode_event(decoded)
            steps.append(Send(record.topic, decoded.user_id.encode(), value, index, REKEY))
            continue
        if rules.pseudonym is not None:
            decoded = dataclasses.replace(decoded, user_id=rules.pseudonym(decoded.user_id))
        if isinstance(decoded, Forget):
            if decoded.user_id in users:  # the user's earlier clicks are answered first
                steps.append(Answer(events, sources, index - since))
                events, sources, users, since = [], [], set(), index
            steps.append(Erase(decoded.user_id, index))
            continue
        events.append(decoded)
        sources.append(index)
        users.add(decoded.user_id)
    if events:
        steps.append(Answer(events, sources, len(records) - since))
    return steps


def _on_its_topic(decoded: Event | Forget, topic: str, topics: Topics) -> Event | Forget | Rejection:
    """``decoded``, or a ``wrong_topic`` rejection when it came on the other input topic."""
    if isinstance(decoded, Forget) and topic != topics.forget:
        return Rejection(WRONG_TOPIC, f"a forget request on {topic!r}: send it to {topics.forget!r}")
    if isinstance(decoded, Event) and topic == topics.forget:
        return Rejection(WRONG_TOPIC, f"a {decoded.type} event on {topic!r}, which takes only forget "
                                      "requests")
    return decoded


def _dead_letter(record: Record, index: int, rejection: Rejection, topics: Topics, now: float) -> Send:
    value = encode_dead_letter(
        rejection.reason, rejection.detail, record.value, topic=record.topic,
        partition=record.partition, offset=record.offset, ts=now,
    )
    return Send(topics.dead_letters, record.key, value, index, DEAD_LETTER, rejection.reason)
