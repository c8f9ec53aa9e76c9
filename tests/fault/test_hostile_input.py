"""Hostile input: thousands of generated records (random bytes, broken and deeply nested JSON,
huge strings and arrays, wrong types, NaN/negative/far-future timestamps, unknown items, empty
keys, keys that disagree with the body, control characters) thrown at one worker. It never stops;
every record is answered or dead-lettered with a reason, and the counts reconcile with /metrics."""

from __future__ import annotations

import itertools
import json
import time

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from stream_recs.events import DECODER_ERROR, REASONS
from tests.harness import N_ITEMS, make_model

from .load import Tally, read_all

pytestmark = pytest.mark.kafka

EXAMPLES = 100  # lists of 20..60 records each: about 3,000 records
NOW = time.time()

users = st.sampled_from([f"u{n}" for n in range(30)])
items = st.one_of(  # known items, and any text (unknown to the model, or with control characters)
    st.sampled_from([f"i{n}" for n in range(N_ITEMS)]), st.text(min_size=1, max_size=40)
)
control = st.sampled_from(["\x00", "\n", "\x1b", "\x7f", "\x85"])
huge_text = st.integers(5_000, 400_000).map(lambda n: "x" * n)
wrong = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.just(""),
)
bad_ts = st.one_of(
    st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False), st.floats(1e10, 1e300),
    st.just(NOW * 1000), st.text(max_size=10),
)
good_ts = st.one_of(st.none(), st.floats(0, NOW, allow_nan=False))


@st.composite
def body(draw, mutations: int) -> dict:
    """An event body with up to ``mutations`` fields replaced by hostile values."""
    out: dict = {"user_id": draw(users), "item_id": draw(items)}
    if draw(st.booleans()):
        out["type"] = draw(st.sampled_from(["click", "view", "cart", "purchase"]))
    if (ts := draw(good_ts)) is not None:
        out["ts"] = ts
    for _ in range(draw(st.integers(0, mutations))):
        field = draw(st.sampled_from(["user_id", "item_id", "event_id", "type", "ts", "session_id", "extra"]))
        out[field] = draw(
            st.one_of(
                wrong, huge_text, control.map(lambda c: f"id{c}x"), st.none(),
                bad_ts if field == "ts" else st.text(max_size=20),
                st.lists(st.integers(), min_size=1_000, max_size=50_000),
                st.integers(5, 900).map(_nested),
            )
        )
    return out


def _nested(depth: int) -> object:
    node: object = 1
    for _ in range(depth):
        node = [node]
    return node


raw_values = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.sampled_from([
        b"", b"null", b"[]", b'"x"', b"42", b"{}", b'{"user_id":"u1","item_id":"i1","ts":NaN}',
        b'{"user_id":"u1","item_id":"i1","ts":-Infinity}', b'{"user_id":"u1","item_id":"i1"',
        b'\xef\xbb\xbf{"user_id":"u1","item_id":"i1"}', b'{"user_id":"u\\ud800","item_id":"i1"}',
    ]),
)


@st.composite
def record(draw) -> tuple[bytes | None, bytes | dict]:
    """(key, value): the value is raw bytes, or a body the test completes with a unique event id."""
    kind = draw(st.sampled_from(["raw", "body", "body", "valid", "valid"]))
    value = draw(raw_values if kind == "raw" else body(mutations=0 if kind == "valid" else 2))
    user = value.get("user_id") if isinstance(value, dict) else None
    matching = user.encode() if isinstance(user, str) and len(user) < 10_000 else None
    if kind == "valid":
        return draw(st.sampled_from([matching] * 4 + [None])), value
    key = draw(
        st.one_of(
            st.just(matching), st.just(None), st.just(b""), users.map(str.encode),
            st.binary(min_size=1, max_size=40), st.just(b"k" * 5_000),
        )
    )
    return key, value


def test_hostile_records_are_all_answered_or_dead_lettered(stream, workers, tmp_path):
    worker = workers("w", make_model(tmp_path / "m1", "v1", seed=1)).start()
    producer = KafkaProducer(bootstrap_servers=stream.bootstrap, acks="all", linger_ms=5,
                             max_request_size=1_048_000)
    sent: list[tuple[object, str | None, bool]] = []  # (send future, event id set here, unkeyed)
    ids = itertools.count()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(record(), min_size=20, max_size=60))
    def throw(records):
        for key, value in records:
            event_id = None
            if isinstance(value, dict):
                if "event_id" not in value:  # unique, so answers can be matched to records
                    value["event_id"] = event_id = f"h{next(ids)}"
                elif isinstance(value["event_id"], str) and value["event_id"]:  # hostile, maybe valid:
                    value["event_id"] = event_id = f"h{next(ids)}{value['event_id']}"  # made unique too
                value = json.dumps(value).encode()  # orjson refuses nesting past 255 levels
            sent.append((producer.send(stream.topics.clicks, key=key, value=value), event_id, key is None))

    throw()
    producer.flush()
    metas = [(f.get(timeout=60), event_id, unkeyed) for f, event_id, unkeyed in sent]
    producer.close()
    expected = {  # (partition, offset) -> the event id its answer carries
        (m.partition, m.offset): event_id or f"{stream.topics.clicks}:{m.partition}:{m.offset}"
        for m, event_id, _ in metas
    }
    unkeyed = {(m.partition, m.offset) for m, _, no_key in metas if no_key}
    # a final valid click: answered only once everything before it on its partition was handled
    stream.produce_events([{"event_id": "sentinel", "user_id": "u0", "item_id": "i1"}])

    dead = [orjson.loads(r.value) for r in read_all(stream.bootstrap, stream.topics.dead_letters, 1)]
    dead_at = {(d["partition"], d["offset"]): d for d in dead}
    assert len(dead_at) == len(dead), "a record was dead-lettered twice"
    assert all(d["topic"] == stream.topics.clicks for d in dead)
    must_answer = [eid for tp, eid in expected.items() if tp not in dead_at]
    recs = read_all(stream.bootstrap, stream.topics.recommendations, len(must_answer) + 1)
    answers = [orjson.loads(r.value)["event_id"] for r in recs]
    tally = Tally.of("hostile input", [*expected.values(), "sentinel"], [*answers],
                     [expected[tp] for tp in dead_at if tp in expected])
    reasons = {r: sum(d["reason"] == r for d in dead) for r in REASONS}
    tally.report(", ".join(f"{r} {n}" for r, n in reasons.items() if n))

    assert worker.running
    assert set(dead_at) <= set(expected), "a dead letter points at no record sent"
    assert not tally.lost, f"{len(tally.lost)} records neither answered nor dead-lettered: {tally.lost[:5]}"
    assert not tally.unexpected and tally.duplicated == 0
    assert not set(answers) & {expected[tp] for tp in dead_at}, "a record was both answered and dead-lettered"
    assert all(d["reason"] in REASONS and d["detail"] for d in dead)
    assert reasons[DECODER_ERROR] == 0, [d["detail"] for d in dead if d["reason"] == DECODER_ERROR][:3]
    assert len(expected) >= 2_000 and len(dead) >= 500 and tally.answered >= 500
    assert worker.value("stream_recs_events_total", outcome="dead_lettered") == len(dead)
    assert worker.value("stream_recs_events_total", outcome="recommended") == len(answers)
    for reason, count in reasons.items():
        assert worker.value("stream_recs_dead_letters_total", reason=reason) == count
    rekeyed = worker.value("stream_recs_events_total", outcome="repartitioned")
    assert rekeyed == len(unkeyed - set(dead_at)), "every valid unkeyed record is re-sent keyed by user"
