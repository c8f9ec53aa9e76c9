"""Intake routing: what each record of a micro-batch becomes, without Kafka."""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass

import orjson

from stream_recs.config import Topics
from stream_recs.events import Limits
from stream_recs.intake import DEAD_LETTER, REKEY, Answer, Erase, Rules, Send, route_batch
from stream_recs.privacy import Pseudonymiser

NOW = 1_700_000_000.0
TOPICS = Topics()
RULES = Rules(TOPICS, Limits())


@dataclass
class Record:
    value: bytes | None
    key: bytes | None
    offset: int
    topic: str = "clicks"
    partition: int = 0
    timestamp: float | None = NOW - 1


def click(user: str, item: str, offset: int, keyed: bool = True, **fields) -> Record:
    body = {"user_id": user, "item_id": item, **fields}
    return Record(orjson.dumps(body), user.encode() if keyed else None, offset)


def forget(user: str, offset: int, keyed: bool = True, topic: str = TOPICS.forget) -> Record:
    body = {"event_id": f"f{offset}", "user_id": user, "type": "forget"}
    return Record(orjson.dumps(body), user.encode() if keyed else None, offset, topic)


def test_valid_clicks_are_answered_together_in_order():
    records = [click("a", "i1", 0), click("b", "i2", 1), click("a", "i3", 2)]
    steps = route_batch(records, RULES, NOW)
    assert len(steps) == 1 and isinstance(steps[0], Answer)
    answer = steps[0]
    assert [(e.user_id, e.item_id) for e in answer.events] == [("a", "i1"), ("b", "i2"), ("a", "i3")]
    assert answer.sources == [0, 1, 2] and answer.taken == 3
    assert answer.events[0].event_id == "clicks:0:0" and answer.events[0].ts == NOW - 1


def test_a_rejected_record_becomes_a_dead_letter_with_its_reason():
    bad = Record(b"{not json", b"u", 1)
    steps = route_batch([click("a", "i1", 0), bad], RULES, NOW)
    send = next(step for step in steps if isinstance(step, Send))
    assert (send.topic, send.key, send.source, send.kind, send.reason) == (
        TOPICS.dead_letters, b"u", 1, DEAD_LETTER, "bad_json",
    )
    letter = orjson.loads(send.value)
    assert letter["reason"] == "bad_json" and base64.b64decode(letter["raw"]) == b"{not json"
    assert (letter["topic"], letter["partition"], letter["offset"], letter["ts"]) == ("clicks", 0, 1, NOW)
    answer = next(step for step in steps if isinstance(step, Answer))
    assert answer.sources == [0] and answer.taken == 2  # the rejected record was taken too


def test_a_record_without_key_is_sent_again_keyed_by_its_user_with_id_and_time_fixed():
    steps = route_batch([click("a", "i1", 5, keyed=False, session_id="s1")], RULES, NOW)
    assert len(steps) == 1
    send = steps[0]
    assert (send.topic, send.key, send.kind, send.reason) == (TOPICS.clicks, b"a", REKEY, None)
    assert orjson.loads(send.value) == {
        "event_id": "clicks:0:5", "user_id": "a", "item_id": "i1", "type": "click", "ts": NOW - 1,
        "session_id": "s1",
    }


def test_a_forget_request_without_key_is_sent_again_keyed_to_the_forget_topic():
    (send,) = route_batch([forget("a", 3, keyed=False)], RULES, NOW)
    assert (send.topic, send.kind, send.key) == (TOPICS.forget, REKEY, b"a")
    assert orjson.loads(send.value) == {"event_id": "f3", "user_id": "a", "type": "forget"}


def test_a_record_on_the_wrong_topic_is_dead_lettered_and_erases_nothing():
    on_clicks = forget("a", 1, topic=TOPICS.clicks)  # any click producer could wipe any user
    on_forget = dataclasses.replace(click("a", "i1", 2), topic=TOPICS.forget)
    steps = route_batch([click("a", "i1", 0), on_clicks, on_forget], RULES, NOW)
    assert [type(step) for step in steps] == [Send, Send, Answer]
    for send, source, topic in zip(steps[:2], (1, 2), (TOPICS.clicks, TOPICS.forget), strict=True):
        assert (send.topic, send.kind, send.reason, send.source) == (
            TOPICS.dead_letters, DEAD_LETTER, "wrong_topic", source,
        )
        letter = orjson.loads(send.value)
        assert letter["topic"] == topic and letter["reason"] == "wrong_topic"
    assert TOPICS.forget in orjson.loads(steps[0].value)["detail"]
    assert steps[2].sources == [0]


def test_forget_comes_after_the_users_earlier_clicks_and_before_later_ones():
    records = [click("a", "i1", 0), click("b", "i2", 1), forget("a", 2), click("a", "i3", 3)]
    steps = route_batch(records, RULES, NOW)
    assert [type(step) for step in steps] == [Answer, Erase, Answer]
    first, erase, last = steps
    assert [e.item_id for e in first.events] == ["i1", "i2"] and first.taken == 2
    assert (erase.user_id, erase.source) == ("a", 2)
    assert [e.item_id for e in last.events] == ["i3"] and last.sources == [3] and last.taken == 2


def test_forget_of_a_user_without_clicks_in_the_batch_answers_nothing_early():
    steps = route_batch([click("b", "i2", 0), forget("a", 1), click("b", "i3", 2)], RULES, NOW)
    assert [type(step) for step in steps] == [Erase, Answer]
    assert [e.item_id for e in steps[1].events] == ["i2", "i3"] and steps[1].taken == 3


def test_user_ids_are_pseudonymised_before_anything_uses_them():
    pseudonym = Pseudonymiser(b"k" * 16)
    rules = Rules(TOPICS, Limits(), pseudonym)
    steps = route_batch([click("alice", "i1", 0), forget("alice", 1)], rules, NOW)
    answer, erase = steps
    assert answer.events[0].user_id == erase.user_id == pseudonym("alice") != "alice"


def test_limits_are_the_rules():
    rules = Rules(TOPICS, Limits(max_record_bytes=20))
    (send,) = route_batch([click("a", "i1", 0)], rules, NOW)
    assert send.reason == "too_large"


def test_an_empty_batch_has_no_steps():
    assert route_batch([], RULES, NOW) == []
