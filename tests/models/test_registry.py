"""The item registry: append-only growth, retirement, the checkpoint round trip, training from a
parent (indices kept, weights warm-started)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stream_recs.cli import main
from stream_recs.datasets import from_rows
from stream_recs.models import CheckpointError, GRU4Rec, load_model, save_model
from stream_recs.models.checkpoint import META_FILE
from stream_recs.models.registry import (
    RETIRED_OPERATOR,
    RETIRED_UNSEEN,
    ItemRegistry,
    RegistryError,
    vocabulary_fingerprint,
)
from stream_recs.models.train import TrainConfig, train_model, training_sequences
from stream_recs.models.warm_start import warm_start

DAY = 86400


def test_growing_the_vocabulary_keeps_every_old_index():
    v1 = ItemRegistry.new(["b", "a", "c"])
    v2 = v1.extend(["z", "a", "y", "z"])
    v3 = v2.extend(["x", "b"])
    assert v2.ids == ("b", "a", "c", "z", "y") and v3.ids == (*v2.ids, "x")
    for older in (v1, v2):
        assert v3.ids[: len(older.ids)] == older.ids
    assert v1.lineage == v2.lineage == v3.lineage == vocabulary_fingerprint(["b", "a", "c"])
    assert v3.conflict_with(v1) is None and v1.conflict_with(v3) is None
    sibling = v1.extend(["y"])  # a second child of v1 numbers "y" as v2 numbers "z"
    assert "branched" in v2.conflict_with(sibling)
    assert ItemRegistry.new(["q"]).conflict_with(v3) is None  # another lineage: translated


def test_retirement_by_age_and_by_operator():
    reg = ItemRegistry.new(["a", "b", "c", "d"]).seen({"a": 100 * DAY, "b": 10 * DAY, "c": 99 * DAY})
    aged = reg.retire_unseen(now=100 * DAY, after=30 * DAY)
    assert aged.retired == {"b": RETIRED_UNSEEN}  # "d" was never seen: not judged
    both = aged.retire(["c"])
    assert both.retired_indices() == [1, 2]
    seen_again = both.seen({"b": 101 * DAY}).retire_unseen(now=101 * DAY, after=30 * DAY)
    assert seen_again.retired == {"c": RETIRED_OPERATOR}  # the operator's stays until restored
    assert seen_again.restore(["c"]).retired == {}
    with pytest.raises(RegistryError, match="not registered"):
        reg.retire(["nope"])


def test_registry_round_trips_through_a_checkpoint_and_old_checkpoints_start_a_lineage(tmp_path):
    model = GRU4Rec(["a", "b", "c"], hidden_size=4, version="v1")
    model.use_registry(model.registry.extend([]).seen({"a": 5}).retire(["b"]))
    loaded = load_model(save_model(model, tmp_path / "m"))
    assert loaded.registry == model.registry
    meta = json.loads((tmp_path / "m" / META_FILE).read_text())
    del meta["items"]  # as written before registries existed
    (tmp_path / "m" / META_FILE).write_text(json.dumps(meta))
    old = load_model(tmp_path / "m")
    assert old.registry.lineage == vocabulary_fingerprint(["a", "b", "c"]) and not old.registry.retired
    meta["items"] = {"lineage": "xyz"}
    (tmp_path / "m" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="registry"):
        load_model(tmp_path / "m")
    meta["items"] = {"lineage": "0000abcd", "retired": {"nope": RETIRED_OPERATOR}}
    (tmp_path / "m" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="retired items"):
        load_model(tmp_path / "m")


def _events(rows):
    users, items, ts = zip(*rows, strict=True)
    return from_rows(users, items, ts)


def test_training_from_a_parent_appends_new_items_and_starts_from_its_weights():
    first = _events([("u1", "b", 1), ("u1", "a", 2), ("u2", "a", 3), ("u2", "b", 4)])
    parent_registry, seqs = training_sequences(first, None)
    assert parent_registry.ids == ("a", "b") and parent_registry.last_seen == (3, 4)
    config = TrainConfig(hidden_size=4, epochs=1, n_sample=0)
    parent, _ = train_model(seqs, parent_registry, config, "v1", show_progress=False)
    later = _events([("u3", "c", 10), ("u3", "a", 11), ("u4", "d", 12), ("u4", "c", 13)])
    registry, seqs = training_sequences(later, None, parent.registry)
    assert registry.ids == ("a", "b", "c", "d") and registry.lineage == parent.registry.lineage
    assert registry.last_seen == (11, 4, 13, 12)
    child = GRU4Rec(registry.ids, hidden_size=4)
    child.use_registry(registry)
    warm_start(child, parent)
    for name, value in parent.state_dict().items():
        mine = child.state_dict()[name]
        assert torch.equal(mine[: len(value)] if name.startswith("item_") else mine, value), name
    with pytest.raises(RegistryError, match="hidden_size"):
        warm_start(GRU4Rec(registry.ids, hidden_size=8), parent)
    stranger = GRU4Rec(["a", "b", "c"], hidden_size=4)
    with pytest.raises(RegistryError, match="extend"):
        warm_start(stranger, parent)


def test_train_from_a_parent_and_retire_items_through_the_cli(tmp_path):
    runner = CliRunner()
    rng = np.random.default_rng(0)
    log = tmp_path / "log.csv"
    rows = ["user_id,item_id,timestamp"]
    rows += [f"u{n % 20},i{rng.integers(0, 30)},{n}" for n in range(1500)]
    log.write_text("\n".join(rows) + "\n")
    flags = ["--epochs", "1", "--quiet", "--param", "hidden_size=8"]
    result = runner.invoke(main, ["train", "--events", str(log), "--out", str(tmp_path / "v1"), *flags])
    assert result.exit_code == 0, result.output
    v1 = load_model(tmp_path / "v1")
    # later data: new items, and i0..i9 no longer clicked
    rows = ["user_id,item_id,timestamp"]
    rows += [f"u{n % 20},i{10 + rng.integers(0, 30)},{10_000 + n}" for n in range(1500)]
    log.write_text("\n".join(rows) + "\n")
    result = runner.invoke(main, ["train", "--events", str(log), "--out", str(tmp_path / "v2"),
                                  "--parent", str(tmp_path / "v1"), "--retire-after", "5000",
                                  "--epochs", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    v2 = load_model(tmp_path / "v2")
    assert v2.item_ids[: v1.n_items] == v1.item_ids and v2.n_items == 40
    assert v2.hidden_size == 8 and v2.registry.lineage == v1.registry.lineage
    assert set(v2.registry.retired) == {f"i{n}" for n in range(10)}
    result = runner.invoke(main, ["retire-items", "--model", str(tmp_path / "v2"),
                                  "--out", str(tmp_path / "v3"), "i20", "i21"])
    assert result.exit_code == 0, result.output
    v3 = load_model(tmp_path / "v3")
    assert v3.version != v2.version and v3.item_ids == v2.item_ids
    assert v3.registry.retired["i20"] == RETIRED_OPERATOR and len(v3.registry.retired) == 12
    result = runner.invoke(main, ["retire-items", "--model", str(tmp_path / "v3"),
                                  "--out", str(tmp_path / "v4"), "nope"])
    assert result.exit_code != 0 and "not registered" in result.output
    result = runner.invoke(main, ["train", "--events", str(log), "--out", str(tmp_path / "bad"),
                                  "--parent", str(tmp_path / "v1"), "--param", "hidden_size=16",
                                  "--epochs", "1", "--quiet"])
    assert result.exit_code != 0 and "same architecture" in result.output
