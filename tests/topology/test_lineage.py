"""Three model versions of one item-registry lineage, each served by a worker restarted on an
empty data dir: every state, written under any earlier version, is read by the later one from
the changelog as it is, with no vocabulary remembered anywhere, so no user's history is lost."""

from __future__ import annotations

import pytest

from stream_recs.models import load_model
from stream_recs.state import SessionState
from stream_recs.topology.topics import changelog_topic
from tests.fault.load import read_all
from tests.harness import make_child, make_model, replayed_top_k

from .test_stream import MASK, T0, K, by_event

pytestmark = pytest.mark.kafka

USERS = 20
NEW_ITEMS = {"v2": [f"j{n}" for n in range(20)], "v3": [f"k{n}" for n in range(20)]}


def clicks(version: str, start: int, per_user: int) -> list[dict]:
    """``per_user`` clicks for each user, on the items new in ``version`` (v1: i0..i299)."""
    items = NEW_ITEMS.get(version, [f"i{n}" for n in range(300)])
    return [
        {"event_id": f"e{start + n}", "user_id": f"u{n % USERS}", "type": "click",
         "item_id": items[(n * 7) % len(items)], "ts": T0 + start + n}
        for n in range(USERS * per_user)
    ]


def test_states_of_every_earlier_version_are_served_after_restarts(stream, workers, tmp_path):
    v1 = make_model(tmp_path / "v1", "v1", seed=1)
    v2 = make_child(tmp_path / "v2", v1, "v2", NEW_ITEMS["v2"], seed=2)
    v3 = make_child(tmp_path / "v3", v2, "v3", NEW_ITEMS["v3"], seed=3)
    sent: list[dict] = []
    for name, path, per_user in (("v1", v1, 4), ("v2", v2, 2), ("v3", v3, 2)):
        worker = workers(f"worker-{name}", path).start()  # fresh data dir: state from the changelog
        events = clicks(name, len(sent), per_user)
        stream.produce_events(events)
        sent += events
        ids = {e["event_id"] for e in events}
        answers = by_event(stream.answers(stream.topics.recommendations, ids))
        assert {answers[i]["model_version"] for i in ids} == {name}
        worker.stop()

    model, histories = load_model(v3), {}
    for event in sent:
        histories.setdefault(event["user_id"], []).append(event)
    for event in events:  # v3's answers: from whole histories, v1's items first
        history = histories[event["user_id"]]
        seen = [e["item_id"] for e in history[: history.index(event) + 1]]
        got = [item["item_id"] for item in answers[event["event_id"]]["items"]]
        assert got == replayed_top_k(model, seen, K, MASK), event["event_id"]

    last: dict[bytes, SessionState] = {}
    for record in read_all(stream.bootstrap, changelog_topic(stream.env["STREAM_RECS_APP_ID"]), USERS):
        last[record.key] = SessionState.decode(record.value)
    assert len(last) == USERS
    for key, state in last.items():
        items = [e["item_id"] for e in histories[key.decode()]]
        assert [model.item_ids[i] for i in state.history] == items, key
        assert state.vocab == model.registry.lineage


def test_a_worker_started_after_an_announcement_answers_with_the_announced_model(
    stream, workers, tmp_path
):
    v1 = make_model(tmp_path / "v1", "v1", seed=1)
    v2 = make_child(tmp_path / "v2", v1, "v2", NEW_ITEMS["v2"], seed=2)
    for command in (("topics", "apply"), ("publish-model", str(v2))):
        done = stream.cli(*command)
        assert done.returncode == 0, done.stderr
    events = clicks("v2", 0, 3)  # waiting before the worker starts: its very first batch
    stream.produce_events(events)
    workers("w", v1).start()  # its command line names v1
    answers = by_event(stream.answers(stream.topics.recommendations, {e["event_id"] for e in events}))
    assert {a["model_version"] for a in answers.values()} == {"v2"}
    assert all(a["strategy"] == "model" for a in answers.values())
