"""``stream-recs trainer`` on the real broker, beside a real worker: it learns an item the live
model never saw from the clicks and publishes a model that recommends it, which the worker then
serves, and gives an item the catalogue lists but no one clicked a row from its content;
malformed records never stop it; a forget request erases the user's clicks from its window;
killed mid-cycle it leaves the live model untouched and no checkpoint half-written, and
restarted (without --model: from the announced live model) it resumes from its window and
committed offsets."""

from __future__ import annotations

import hashlib
import os
import signal
import time

import orjson
import pytest

from stream_recs.messages import decode_model_record
from stream_recs.models import load_model
from tests.harness import TrainerProcess, make_model

pytestmark = pytest.mark.kafka

TOUR = ["i1", "i2", "i3", "i4", "i5", "n1", "i6", "i7"]  # n1: an item v1 has never seen
FLAGS = ("--min-item-count", "5", "--cycle-seconds", "600")


def tours(users: range, rounds: int, start: float) -> list[dict]:
    """Each user clicks the tour ``rounds`` times, one click a second."""
    return [{"event_id": f"t{user}-{n}", "user_id": f"u{user}", "item_id": item, "ts": start + n}
            for user in users for n, item in enumerate(TOUR * rounds)]


def digest(path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(path.iterdir()))).hexdigest()


def test_the_trainer_learns_a_new_item_and_the_worker_serves_it(stream, workers, tmp_path):
    stream.env["STREAM_RECS_CANARY_SHARE"] = "0"  # live for every user at once (test_canary.py: the canary)
    stream.env["STREAM_RECS_TRAINER_CONTENT_FIT_SECONDS"] = "5"
    v1 = make_model(tmp_path / "v1", "v1", seed=1, seen_at=int(time.time()) - 7200)  # all clicked once
    worker = workers("w", v1).start()
    trainer = TrainerProcess(stream, tmp_path / "trainer", v1, tmp_path / "models", *FLAGS,
                             "--cycle-events", "1500", "--epochs", "4").start()
    try:
        catalogue = [{"item_id": f"i{n}", "available": True, "title": f"Film {n % 7} part",
                      "categories": [f"g{n % 5}"]} for n in range(50)]
        catalogue.append({"item_id": "c1", "available": True, "title": "Film 1 part", "categories": ["g1"]})
        stream.produce([(r["item_id"].encode(), orjson.dumps(r)) for r in catalogue], stream.topics.items)
        stream.produce([(b"u0", b"{not json") for _ in range(50)])  # never stops it
        stream.produce_events(tours(range(40), 5, time.time() - 3600))  # 1,600 clicks
        (record,) = stream.consume(stream.topics.model_updates, 1, timeout_s=240)
        update = decode_model_record(record.value)
        published = load_model(update.path)
        assert "n1" in published.item_ids and published.item_ids[:300] == load_model(v1).item_ids
        assert "c1" in published.item_ids  # never clicked: its row is its content's
        assert trainer.value("stream_recs_trainer_content_rows_total") == 1.0
        assert not list((tmp_path / "models").glob(".partial-*"))
        assert os.sched_getscheduler(trainer.proc.pid) == os.SCHED_IDLE  # workers get the CPU first
        assert trainer.value("stream_recs_trainer_cycles_total", result="published") == 1.0
        assert trainer.value("stream_recs_trainer_records_skipped_total", reason="bad_json") == 50.0
        assert trainer.value("stream_recs_trainer_items_added_total") == 1.0
        worker.wait_until(lambda: worker.value("stream_recs_model_info", version=update.version) == 1.0,
                          "the worker never served the trainer's model")
        stream.produce_events([{"event_id": f"fresh-{n}", "user_id": "fresh", "item_id": item}
                               for n, item in enumerate(TOUR[:5])])
        answers = {a["event_id"]: a for a in map(orjson.loads, (
            r.value for r in stream.consume(stream.topics.recommendations, 1600 + 5)))}
        last = answers["fresh-4"]  # after i1..i5
        assert last["model_version"] == update.version
        assert "n1" in [item["item_id"] for item in last["items"]], last
        window = trainer.value("stream_recs_trainer_window_events")
        stream.produce([(b"u0", orjson.dumps({"user_id": "u0", "type": "forget"}))], stream.topics.forget)
        trainer.wait_for(lambda: trainer.value("stream_recs_trainer_forgotten_total") == 1.0,
                         "the forget request did not reach the window")
        assert trainer.value("stream_recs_trainer_window_events") == window - 40  # u0's 40 clicks
    finally:
        trainer.stop()


def test_a_trainer_killed_mid_cycle_leaves_the_live_model_and_resumes(stream, tmp_path):
    v1 = make_model(tmp_path / "v1", "v1", seed=1)
    before = digest(v1)
    models = tmp_path / "models"
    trainer = TrainerProcess(stream, tmp_path / "trainer", v1, models, *FLAGS, "--cycle-events", "1500",
                             "--epochs", "40").start()
    stream.produce_events(tours(range(40), 5, time.time() - 3600))
    trainer.wait_for(lambda: "cycle: " in trainer.log.read_text(), "no cycle began")
    trainer.stop(signal.SIGKILL)
    assert digest(v1) == before
    assert [p.name for p in models.iterdir() if not p.name.startswith(".partial-")] == []
    assert stream.consume(stream.topics.model_updates, 1, timeout_s=5) == []

    alone = stream.cli("trainer", "--models-dir", str(models), "--window-dir", str(tmp_path / "w2"))
    assert alone.returncode != 0 and "no live model is announced" in alone.stderr  # and no --model
    assert stream.cli("publish-model", str(v1)).returncode == 0
    again = TrainerProcess(stream, tmp_path / "trainer", None, models, *FLAGS, "--cycle-events", "300",
                           "--epochs", "2").start()  # from the announced live model
    try:
        again.wait_for(lambda: again.value("stream_recs_trainer_window_events") == 1600.0,
                       "the window was not reloaded")
        assert again.value("stream_recs_trainer_model_info", version="v1") == 1.0
        assert not list(models.glob(".partial-*"))  # what the killed cycle left is removed
        read = again.value("stream_recs_trainer_clicks_total")  # what the killed one had not read
        stream.produce_events(tours(range(40, 50), 1, time.time() - 3000))  # 80 new clicks
        again.wait_for(lambda: again.value("stream_recs_trainer_clicks_total") == read + 80.0,
                       "the new clicks were not read")
        assert again.value("stream_recs_trainer_window_events") == 1680.0  # nothing read twice
    finally:
        again.stop()
