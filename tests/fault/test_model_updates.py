"""Malformed model-update messages, corrupt or tampered checkpoints and, with a signing key,
unsigned, mis-signed or out-of-root announcements are refused with a clear error, counted by
reason, while the old model keeps serving; loading a checkpoint never unpickles anything."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from stream_recs.config import ServingOptions
from stream_recs.messages import ModelUpdate, encode_model_update
from stream_recs.metrics import Metrics
from stream_recs.model_updates import Trust, sign
from stream_recs.models import load_model
from stream_recs.models.checkpoint import META_FILE, WEIGHTS_FILE, _sha256, read_checkpoint, read_meta
from stream_recs.rollout_follower import ModelFollower
from stream_recs.scoring import Recommender
from tests.harness import make_model


class _Payload:
    """Unpickling this creates ``marker``: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def _rewrite_meta(path: Path, **changes) -> None:
    meta = json.loads((path / META_FILE).read_text())
    meta.update(changes)
    (path / META_FILE).write_text(json.dumps(meta))


def bad_announcements(tmp_path: Path, good: Path) -> dict[str, bytes | None]:
    """Announcements the worker must refuse, by what is wrong with them."""
    sha = read_meta(good)["weights_sha256"]

    def variant(name: str) -> Path:
        return Path(shutil.copytree(good, tmp_path / name))

    tampered = variant("tampered")
    with (tampered / WEIGHTS_FILE).open("r+b") as handle:
        handle.seek(-8, os.SEEK_END)
        handle.write(b"\x00" * 8)
    pickled = variant("pickled")  # a pickle posing as the weights, its sha256 recorded everywhere
    (pickled / WEIGHTS_FILE).write_bytes(pickle.dumps(_Payload(tmp_path / "UNPICKLED")))
    _rewrite_meta(pickled, weights_sha256=_sha256(pickled / WEIGHTS_FILE))
    shapes = variant("shapes")
    _rewrite_meta(shapes, item_ids=["a", "b"])
    truncated = variant("truncated")
    (truncated / META_FILE).write_text((truncated / META_FILE).read_text()[:50])

    def announce(path, version="v2", digest=sha):
        return encode_model_update(ModelUpdate(str(path), version, digest))

    return {
        "not json": b"\x00\xffgarbage",
        "not an object": b"[1, 2]",
        "empty": None,
        "huge": b"{" + b" " * 100_000 + b"}",
        "missing sha256": orjson.dumps({"path": str(good), "version": "v2"}),
        "bad sha256": orjson.dumps({"path": str(good), "version": "v2", "sha256": "xyz"}),
        "bad signature field": orjson.dumps({"path": str(good), "version": "v2", "sha256": sha,
                                              "signature": 7}),
        "no such path": announce(tmp_path / "missing"),
        "a file, not a checkpoint": announce(good / META_FILE),
        "NUL in path": announce(f"{good}\x00evil"),
        "sha256 not the announced one": announce(good, digest="0" * 64),
        "version not the announced one": announce(good, version="v9"),
        "tampered weights": announce(tampered),
        "pickle as weights": announce(pickled, digest=read_meta(pickled)["weights_sha256"]),
        "metadata that does not fit the weights": announce(shapes),
        "truncated metadata": announce(truncated),
    }


async def test_each_bad_update_is_rejected_and_the_old_model_keeps_serving(tmp_path):
    v1 = load_model(make_model(tmp_path / "m1", "v1", seed=1))
    v2 = make_model(tmp_path / "m2", "v2", seed=2)
    recommender, metrics = Recommender(v1, ServingOptions(k=5)), Metrics()
    for what, raw in bad_announcements(tmp_path, v2).items():
        assert await ModelFollower(recommender, metrics).apply(raw) is False, what
        assert recommender.model_version == "v1", what
    assert not (tmp_path / "UNPICKLED").exists(), "a checkpoint was unpickled"
    assert await ModelFollower(recommender, metrics).apply(announce_good(v2)) is True
    assert recommender.model_version == "v2"


def announce_good(path: Path) -> bytes:
    return encode_model_update(ModelUpdate(str(path), "v2", read_meta(path)["weights_sha256"]))


def test_pickled_weights_are_never_unpickled(tmp_path):
    good = make_model(tmp_path / "m", "v1", seed=1)
    (good / WEIGHTS_FILE).write_bytes(pickle.dumps(_Payload(tmp_path / "UNPICKLED")))
    _rewrite_meta(good, weights_sha256=_sha256(good / WEIGHTS_FILE))
    with pytest.raises(Exception, match="cannot be read"):
        load_model(good)
    assert not (tmp_path / "UNPICKLED").exists()


def announce_and_wait_refused(stream, worker, announcements: list[bytes | None]) -> None:
    """Send ``announcements`` to model-updates; return once ``worker`` refused them all."""
    producer = KafkaProducer(bootstrap_servers=stream.bootstrap, acks="all")
    for raw in announcements:
        producer.send(stream.topics.model_updates, key=b"model", value=raw)
    producer.flush()
    producer.close()
    deadline = time.monotonic() + 60
    while worker.value("stream_recs_model_reloads_total", result="failure") != len(announcements):
        assert worker.running, worker.log.read_text()[-3000:]
        assert time.monotonic() < deadline, "not every bad announcement was refused"
        time.sleep(0.5)


@pytest.mark.kafka
def test_live_worker_refuses_bad_updates_and_keeps_answering(stream, workers, tmp_path):
    worker = workers("w", make_model(tmp_path / "m1", "v1", seed=1)).start()
    bad = bad_announcements(tmp_path, make_model(tmp_path / "m2", "v2", seed=2))
    announce_and_wait_refused(stream, worker, list(bad.values()))
    assert worker.value("stream_recs_model_info", version="v1") == 1.0
    assert worker.value("stream_recs_model_reloads_total", result="success") == 0.0
    stream.produce_events([{"event_id": f"e{n}", "user_id": "u1", "item_id": f"i{n}"} for n in range(20)])
    recs = [orjson.loads(r.value) for r in stream.consume(stream.topics.recommendations, 20)]
    assert len(recs) == 20 and {r["model_version"] for r in recs} == {"v1"}
    assert not (tmp_path / "UNPICKLED").exists()
    log = worker.log.read_text()
    assert log.count("the old model keeps serving") == len(bad)


# --- signed announcements ---------------------------------------------------------------------
KEY = b"signing-key-for-tests-0123456789"


def signed(path: Path, key: bytes = KEY, version: str = "v2") -> bytes:
    files = read_checkpoint(path)
    return encode_model_update(ModelUpdate(str(path), version, files.meta()["weights_sha256"],
                                           sign(key, files)))


def unsigned_or_forged(tmp_path: Path, good: Path) -> dict[str, tuple[str, bytes]]:
    """Announcements a worker holding ``KEY``, with models root ``good.parent``, must refuse:
    what is wrong -> (the reason it is counted under, the announcement)."""
    outside = Path(shutil.copytree(good, tmp_path / "outside"))
    link = good.parent / "link"
    link.symlink_to(outside, target_is_directory=True)
    relabelled = Path(shutil.copytree(good, good.parent / "relabelled"))
    meta = json.loads((relabelled / META_FILE).read_text())  # same shapes, same weights: it loads
    meta["item_ids"][0], meta["item_ids"][1] = meta["item_ids"][1], meta["item_ids"][0]
    signature = orjson.loads(signed(relabelled))["signature"]  # signed before the tampering
    (relabelled / META_FILE).write_text(json.dumps(meta))
    return {
        "unsigned": ("unsigned", announce_good(good)),
        "signed with another key": ("bad_signature", signed(good, key=b"another-key-0123456789abcdef")),
        "tampered meta.json": ("bad_signature", encode_model_update(ModelUpdate(
            str(relabelled), "v2", meta["weights_sha256"], signature))),
        "signed, outside the root": ("outside_root", signed(outside)),
        "a link out of the root": ("outside_root", signed(link)),
        "signed, version not the announced one": ("bad_checkpoint", signed(good, version="v9")),
        "malformed": ("malformed", b"{}"),
    }


async def test_a_worker_with_the_key_serves_only_signed_checkpoints_under_its_root(tmp_path):
    root = tmp_path / "models"
    v1 = load_model(make_model(root / "m1", "v1", seed=1))
    good = make_model(root / "m2", "v2", seed=2)
    recommender, metrics = Recommender(v1, ServingOptions(k=5)), Metrics()
    trust = Trust(KEY, root.resolve())
    assert "signing-key" not in repr(trust)
    bad = unsigned_or_forged(tmp_path, good)
    assert load_model(good.parent / "relabelled").item_ids != load_model(good).item_ids  # loads
    for what, (_, raw) in bad.items():
        assert await ModelFollower(recommender, metrics, trust=trust).apply(raw) is False, what
        assert recommender.model_version == "v1", what
    for reason in {reason for reason, _ in bad.values()}:
        expected = sum(1 for r, _ in bad.values() if r == reason)
        assert metrics.registry.get_sample_value(
            "stream_recs_model_updates_refused_total", {"reason": reason}) == expected, reason
    assert await ModelFollower(recommender, metrics, trust=trust).apply(signed(good)) is True
    assert recommender.model_version == "v2"


@pytest.mark.kafka
def test_live_worker_with_the_key_refuses_forgeries_and_swaps_in_a_published_model(
    stream, workers, tmp_path
):
    root = tmp_path / "models"
    key_file = tmp_path / "signing.key"
    key_file.write_bytes(KEY + b"\n")
    stream.env.update(STREAM_RECS_MODEL_SIGNING_KEY_FILE=str(key_file), STREAM_RECS_MODELS_ROOT=str(root))
    worker = workers("w", make_model(root / "m1", "v1", seed=1)).start()
    good = make_model(root / "m2", "v2", seed=2)
    bad = unsigned_or_forged(tmp_path, good)
    announce_and_wait_refused(stream, worker, [raw for _, raw in bad.values()])
    assert worker.value("stream_recs_model_updates_refused_total", reason="unsigned") == 1.0
    assert worker.value("stream_recs_model_updates_refused_total", reason="outside_root") == 2.0
    assert worker.value("stream_recs_model_info", version="v1") == 1.0
    published = stream.cli("publish-model", str(good))
    assert published.returncode == 0 and "signed" in published.stdout, published.stderr
    deadline = time.monotonic() + 60
    while worker.value("stream_recs_model_info", version="v2") != 1.0:
        assert time.monotonic() < deadline, "the signed model was not swapped in"
        time.sleep(0.5)
    stream.produce_events([{"event_id": f"e{n}", "user_id": "u1", "item_id": f"i{n}"} for n in range(5)])
    recs = [orjson.loads(r.value) for r in stream.consume(stream.topics.recommendations, 5)]
    assert {r["model_version"] for r in recs} == {"v2"}
