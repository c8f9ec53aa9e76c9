"""The catalogue on the real broker: `items load` publishes a file (bad lines named and skipped),
a bad record written to the items topic by anyone else goes to the dead-letter topic once with its
reason, and an item marked unavailable mid-stream disappears from the next answers; `items set`
keeps the fields it is not given; with STREAM_RECS_ITEM_DETAILS=on answers carry titles and
categories."""

from __future__ import annotations

import orjson
import pytest

from stream_recs.catalogue import decode_item
from tests.harness import make_model

pytestmark = pytest.mark.kafka


def clicks(prefix: str, users: int) -> list[dict]:
    return [{"event_id": f"{prefix}{u}-{n}", "user_id": f"{prefix}{u}", "item_id": f"i{(u * 7 + n) % 300}"}
            for u in range(users) for n in range(3)]


def answered(stream, events: list[dict]) -> list[dict]:
    """The recommended items of the answers to ``events``."""
    stream.produce_events(events)
    wanted = {e["event_id"] for e in events}
    answers = [a for a in stream.answers(stream.topics.recommendations, wanted) if a["event_id"] in wanted]
    assert {a["event_id"] for a in answers} == wanted
    return [item for a in answers for item in a["items"]]


def test_an_item_marked_unavailable_mid_stream_leaves_the_next_answers(stream, workers, tmp_path):
    stream.env["STREAM_RECS_ITEM_DETAILS"] = "on"
    worker = workers("w", make_model(tmp_path / "v1", "v1", seed=1)).start()
    listing = tmp_path / "items.jsonl"
    lines = [orjson.dumps({"item_id": f"i{n}", "available": True, "title": f"Film {n}",
                           "categories": ["Drama"]}).decode() for n in range(300)]
    listing.write_text("\n".join([*lines, '{"item_id": "i1", "available": "maybe"}', "{nope"]) + "\n")
    loaded = stream.cli("items", "load", str(listing))
    assert loaded.returncode == 1 and "published 300 items" in loaded.stdout, loaded.stderr
    assert "items.jsonl:301: skipped (wrong_type" in loaded.stderr
    assert "items.jsonl:302: skipped (bad_json" in loaded.stderr
    stream.produce([(b"i999", b"{not json")], stream.topics.items)  # from another producer
    (letter,) = stream.consume(stream.topics.dead_letters, 1)
    dead = orjson.loads(letter.value)
    assert dead["reason"] == "bad_json" and dead["topic"] == stream.topics.items

    worker.wait_until(lambda: worker.value("stream_recs_catalogue_items", available="true") == 300.0,
                      "the catalogue was not read")
    shown = answered(stream, clicks("a", 40))
    assert shown and all(item["title"] == f"Film {item['item_id'][1:]}" and item["categories"] == ["Drama"]
                         for item in shown)
    gone = sorted({item["item_id"] for item in shown})[0]
    changed = stream.cli("items", "set", gone, "--unavailable")
    assert changed.returncode == 0 and f"{gone}: unavailable, 'Film {gone[1:]}'" in changed.stdout
    worker.wait_until(lambda: worker.value("stream_recs_catalogue_items", available="false") == 1.0,
                      "the change was not read")
    after = {item["item_id"] for item in answered(stream, clicks("b", 40))}  # the same clicks, other users
    assert gone not in after and len(after) > 10
    back = stream.cli("items", "set", gone, "--available")
    assert back.returncode == 0
    records = stream.consume(stream.topics.items, 303, timeout_s=30)
    latest = [decode_item(r.value, r.key) for r in records if r.key == gone.encode()][-1]
    assert latest.available and latest.title == f"Film {gone[1:]}" and latest.categories == ("Drama",)
    assert worker.value("stream_recs_dead_letters_total", reason="bad_json") == 1.0
