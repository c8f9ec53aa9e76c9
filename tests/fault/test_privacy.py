"""Privacy: ``stream-recs forget USER`` deletes a user's state for good (a changelog tombstone:
gone after a restart that restores from the changelog alone), and from every topic the project
owns within ``STREAM_RECS_FORGET_WITHIN``; idle states expire by TTL, and pseudonymised user ids
never reach state, logs or outputs in the clear."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from stream_recs.keys import KeyConfigError
from stream_recs.privacy import Pseudonymiser, load_pseudonymiser
from stream_recs.topology.timers import SESSIONS_INTERVAL_S
from stream_recs.topology.topics import changelog_topic
from tests.harness import Worker, make_model

from .load import FIGURES, read_all


def changelog(stream) -> dict[bytes, bytes | None]:
    """The sessions changelog of this test's app: the last value per key (None: tombstone)."""
    topic = changelog_topic(stream.env["STREAM_RECS_APP_ID"])
    return {r.key: r.value for r in read_all(stream.bootstrap, topic, 1, settle_s=2.0)}


def wait_forgotten(worker, count: float = 1.0) -> None:
    handled = lambda: worker.value("stream_recs_events_total", outcome="forgotten") == count  # noqa: E731
    wait_for(handled, "the forget request was not handled")


def wait_for(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def events_for(users: list[str], per_user: int, prefix: str = "e") -> list[dict]:
    return [
        {"event_id": f"{prefix}{n}-{user}", "user_id": user, "item_id": f"i{(7 * n + i) % 300}"}
        for n in range(per_user)
        for i, user in enumerate(users)
    ]


def snapshot(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list:
    """Every record of ``topic`` up to its end offsets at the call (a topic still being written
    never goes quiet, so waiting for a pause would not end)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends, records = consumer.end_offsets(parts), []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            assert time.monotonic() < deadline, f"{topic}: not read to its end in {timeout_s} s"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def traces(stream, user: str) -> dict[str, int]:
    """Records that name ``user`` (as key or in the value), per topic the project owns."""
    owned = [stream.topics.clicks, stream.topics.forget, stream.topics.recommendations,
             stream.topics.dead_letters, changelog_topic(stream.env["STREAM_RECS_APP_ID"])]
    needle = user.encode()
    return {
        topic: sum(r.key == needle or needle in (r.value or b"") for r in snapshot(stream.bootstrap, topic))
        for topic in owned
    }


# --- pseudonymisation, unit level ------------------------------------------------------------
def test_pseudonyms_are_stable_keyed_and_never_show_the_key(tmp_path):
    one, other = Pseudonymiser(b"k" * 16), Pseudonymiser(b"j" * 16)
    assert one("alice") == Pseudonymiser(b"k" * 16)("alice") != one("bob")
    assert one("alice") != other("alice")
    assert one("alice").startswith("p-") and len(one("alice")) == 34 and "alice" not in one("alice")
    assert "k" * 16 not in repr(one)
    key_file = tmp_path / "key"
    key_file.write_bytes(b"k" * 16 + b"\n")
    assert load_pseudonymiser(key_file=str(key_file))("alice") == one("alice")
    assert load_pseudonymiser() is None
    for bad in ({"key": "short"}, {"key": "k" * 16, "key_file": str(key_file)},
                {"key_file": str(tmp_path / "missing")}):
        with pytest.raises(KeyConfigError):
            load_pseudonymiser(**bad)


# --- forget, TTL and pseudonyms on a live worker ---------------------------------------------
@pytest.mark.kafka
def test_forget_deletes_the_state_and_it_stays_gone_after_a_restart(stream, workers, tmp_path):
    model = make_model(tmp_path / "m1", "v1", seed=1)
    users = [f"u{n}" for n in range(20)]
    first = workers("first", model).start()
    stream.produce_events(events_for(users, 10))
    assert len(stream.consume(stream.topics.recommendations, 200)) == 200

    done = stream.cli("forget", "u3")
    assert done.returncode == 0, done.stderr
    assert "u3" not in done.stdout
    wait_forgotten(first)
    stored = changelog(stream)
    assert stored[b"u3"] is None, "no tombstone for the forgotten user"
    assert all(stored[u.encode()] is not None for u in users if u != "u3")

    # a click that continues u7's session, forget u7 (its own topic), then a click that starts afresh
    evaluated = first.total("stream_recs_online_evaluated_total")
    stream.produce_events([{"event_id": "u7-before", "user_id": "u7", "item_id": "i2"}])
    stream.produce([(b"u7", orjson.dumps({"user_id": "u7", "type": "forget"}))], stream.topics.forget)
    wait_forgotten(first, 2.0)
    stream.produce_events([{"event_id": "u7-after", "user_id": "u7", "item_id": "i3"}])
    assert len(stream.consume(stream.topics.recommendations, 202)) == 202
    assert first.total("stream_recs_online_evaluated_total") == evaluated + 1
    # the gauge is kept by counting creations and deletions: u3 gone, u7 deleted and created again
    wait_for(lambda: first.value("stream_recs_active_sessions") == 19.0, "sessions after forget != 19")
    time.sleep(SESSIONS_INTERVAL_S + 1)  # one more report, after every record above was handled
    assert first.value("stream_recs_active_sessions") == 19.0

    first.stop(signal.SIGTERM)
    second = workers("second", model).start()  # empty data dir: state only from the changelog
    wait_for(lambda: second.value("stream_recs_active_sessions") == 19.0, "restored sessions != 19")
    stream.produce_events([{"event_id": f"after-{u}", "user_id": u, "item_id": "i1"} for u in ("u3", "u4")])
    assert len(stream.consume(stream.topics.recommendations, 204)) == 204
    # u4 continues its session (scored online against its last answer), u3 starts afresh
    assert second.total("stream_recs_online_evaluated_total") == 1.0


@pytest.mark.kafka
def test_idle_states_are_deleted_after_the_ttl(stream, workers, tmp_path):
    stream.env.update(STREAM_RECS_STATE_TTL="3", STREAM_RECS_STATE_SWEEP_INTERVAL="1")
    worker = workers("w", make_model(tmp_path / "m1", "v1", seed=1)).start()
    users = [f"u{n}" for n in range(10)]
    stream.produce_events(events_for(users, 5))
    assert len(stream.consume(stream.topics.recommendations, 50)) == 50
    wait_for(lambda: all(changelog(stream).get(u.encode(), b"") is None for u in users), "states not expired")
    wait_for(lambda: worker.value("stream_recs_active_sessions") == 0.0, "active sessions not 0", 40)
    stream.produce_events([{"event_id": "late", "user_id": "u1", "item_id": "i1"}])
    assert len(stream.consume(stream.topics.recommendations, 51)) == 51
    assert worker.total("stream_recs_online_evaluated_total") == 40.0  # 50 events less each user's first


@pytest.mark.kafka
def test_pseudonymised_user_ids_never_reach_state_logs_or_outputs(stream, workers, tmp_path):
    secret = "a-secret-pseudonymisation-key-0123456789"
    stream.env["STREAM_RECS_PSEUDONYMISE_KEY"] = secret
    pseudonym = Pseudonymiser(secret.encode())
    users = [f"alice.{n}@example.org" for n in range(8)]
    worker = workers("w", make_model(tmp_path / "m1", "v1", seed=1)).start()
    events = events_for(users, 6)
    unkeyed = {"event_id": "unkeyed", "user_id": users[0], "item_id": "i5"}  # the repartition path
    keyed = [(e["user_id"].encode(), orjson.dumps(e)) for e in events]
    stream.produce([*keyed, (None, orjson.dumps(unkeyed))])
    records = stream.consume(stream.topics.recommendations, len(events) + 1)
    assert len(records) == len(events) + 1
    for record in records:
        rec = orjson.loads(record.value)
        assert record.key.decode() == rec["user_id"] in {pseudonym(u) for u in users}
    done = stream.cli("forget", users[2])
    assert done.returncode == 0, done.stderr
    wait_forgotten(worker)
    stored = changelog(stream)
    assert set(stored) == {pseudonym(u).encode() for u in users}
    assert stored[pseudonym(users[2]).encode()] is None
    worker.stop(signal.SIGTERM)
    exposed = [worker.log.read_bytes()] + [p.read_bytes() for p in worker.data_dir.rglob("*") if p.is_file()]
    for blob in exposed:
        assert secret.encode() not in blob
        assert not any(u.encode() in blob for u in users), "a user id in the clear in state or logs"


@pytest.mark.kafka
@pytest.mark.slow
def test_a_forgotten_user_leaves_every_owned_topic_within_the_bound(stream, own_broker, tmp_path):
    within = 40.0  # topic configs scale with it; the broker checks retention and cleans every second
    broker = own_broker(**{"log.retention.check.interval.ms": "1000", "log.cleaner.backoff.ms": "500"})
    bootstrap = broker.start().bootstrap
    stream = dataclasses.replace(stream, bootstrap=bootstrap, env={
        **stream.env, "STREAM_RECS_BOOTSTRAP_SERVERS": bootstrap, "STREAM_RECS_FORGET_WITHIN": str(within),
    })
    worker = Worker(stream, tmp_path / "w", make_model(tmp_path / "m1", "v1", seed=1)).start()
    others = [f"other{n}" for n in range(10)]  # no id holds "u3"
    stop = threading.Event()

    def traffic() -> None:  # the others go on clicking (and sending garbage): segments keep rolling
        n = 0
        while not stop.wait(0.5):
            stream.produce_events(events_for(others, 1, prefix=f"t{n}-"))
            stream.produce([(b"other0", b"not json from other0")])
            n += 1

    try:
        stream.produce_events(events_for(["u3", *others], 5))
        stream.produce([(b"u3", b"not json from u3")])
        wait_for(lambda: all(traces(stream, "u3").get(t) for t in (stream.topics.recommendations,
                 stream.topics.dead_letters)), "u3's answers and dead letter never arrived")
        held = traces(stream, "u3")
        assert all(n for topic, n in held.items() if topic != stream.topics.forget), held
        feeder = threading.Thread(target=traffic, daemon=True)
        feeder.start()
        done = stream.cli("forget", "u3")  # the request, on the forget topic, names u3 too
        assert done.returncode == 0, done.stderr
        wait_forgotten(worker)
        forgotten = time.monotonic()
        while any((left := traces(stream, "u3")).values()):
            assert time.monotonic() - forgotten < 2.5 * within, f"u3's records left: {left}"
            time.sleep(1.0)
        took = time.monotonic() - forgotten
        FIGURES.append(f"forget bound {within:.0f} s: u3 gone from every owned topic {took:.0f} s "
                       "after the forget was handled")
        assert took <= 1.5 * within, f"u3 gone only after {took:.0f} s (bound {within:.0f} s)"
        kept = {topic: n for topic, n in traces(stream, "other0").items() if topic != stream.topics.forget}
        assert all(kept.values()), f"the others' recent data went too: {kept}"
    finally:
        stop.set()
        worker.stop()


# --- forget requests on their own topic ------------------------------------------------------
FORGET = {"type": "forget"}


def forget_requests(users: list[str]) -> list[tuple[bytes, bytes]]:
    return [(u.encode(), orjson.dumps({**FORGET, "user_id": u})) for u in users]


def member_partitions(stream) -> list[dict[str, set[int]]]:
    """Each member of the worker group: the partitions it holds, per topic."""
    admin = KafkaAdminClient(bootstrap_servers=stream.bootstrap)
    try:
        group = admin.describe_groups([stream.env["STREAM_RECS_APP_ID"]])[stream.env["STREAM_RECS_APP_ID"]]
    finally:
        admin.close()
    held = []
    for member in group["members"]:
        assigned = member["member_assignment"]["assigned_partitions"]
        held.append({entry["topic"]: set(entry["partitions"]) for entry in assigned})
    return held


@pytest.mark.kafka
def test_a_forget_request_waits_for_the_clicks_sent_before_it(stream, workers, tmp_path):
    """Clicks, then forget requests on their own topic, all waiting for a worker: were a request
    handled before its user's clicks, they would rebuild the state it deleted."""
    assert stream.cli("topics", "apply").returncode == 0
    users = [f"u{n}" for n in range(40)]
    stream.produce_events(events_for(users, 25))
    stream.produce(forget_requests(users[:10]), stream.topics.forget)
    stream.produce(forget_requests(["u20"]))  # on clicks: any click producer could wipe any user
    worker = workers("w", make_model(tmp_path / "m1", "v1", seed=1)).start()
    assert len(stream.consume(stream.topics.recommendations, 1000)) == 1000
    wait_forgotten(worker, 10.0)
    stored = changelog(stream)
    assert [u for u in users[:10] if stored[u.encode()] is not None] == [], "a state came back"
    assert all(stored[u.encode()] is not None for u in users[10:])
    (dead,) = [orjson.loads(r.value) for r in stream.consume(stream.topics.dead_letters, 1)]
    assert (dead["reason"], dead["topic"]) == ("wrong_topic", stream.topics.clicks)
    assert worker.value("stream_recs_dead_letters_total", reason="wrong_topic") == 1.0


@pytest.mark.kafka
def test_two_workers_hold_the_same_partitions_of_clicks_and_forget(stream, workers, tmp_path):
    model = make_model(tmp_path / "m1", "v1", seed=1)
    first = workers("first", model).start()
    second = workers("second", model).start()
    users = [f"u{n}" for n in range(40)]
    stream.produce_events(events_for(users, 5))
    assert len(stream.consume(stream.topics.recommendations, 200)) == 200
    held = member_partitions(stream)
    assert len(held) == 2
    clicks, forget = stream.topics.clicks, stream.topics.forget
    for member in held:
        assert member.get(clicks) and member[clicks] == member[forget], held
    stream.produce(forget_requests(users[:20]), stream.topics.forget)
    wait_for(lambda: sum(w.value("stream_recs_events_total", outcome="forgotten") or 0.0
                         for w in (first, second)) == 20.0, "not every forget request was handled")
    stored = changelog(stream)
    assert all(stored[u.encode()] is None for u in users[:20])
    assert all(stored[u.encode()] is not None for u in users[20:])
