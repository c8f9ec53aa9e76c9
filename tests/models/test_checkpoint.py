"""Checkpoint round trip, training counts, and rejection of tampered, truncated or missing files."""

import json

import numpy as np
import pytest
import torch

from stream_recs.models import CheckpointError, GRU4Rec, load_model, save_model


@pytest.fixture(params=[0, 3], ids=["plain", "seen-memory"])
def saved(tmp_path, request):
    torch.manual_seed(0)
    model = GRU4Rec(["a", "b", "c", "d"], hidden_size=5, n_layers=2, version="v-test",
                    seen_size=request.param, seen_decay=0.9).eval()
    path = save_model(model, tmp_path / "ckpt", hyperparameters={"bptt": 4}, fingerprint="abc",
                      metrics={"ndcg@10": 0.1})
    return model, path


def test_round_trip(saved):
    model, path = saved
    loaded = load_model(path)
    assert loaded.item_ids == ["a", "b", "c", "d"] and loaded.version == "v-test"
    assert loaded.state_size == model.state_size and not loaded.training
    h = loaded.step(loaded.init_hidden(2), torch.tensor([0, 3]))
    torch.testing.assert_close(loaded.score(h), model.score(model.step(model.init_hidden(2),
                                                                       torch.tensor([0, 3]))))
    meta = json.loads((path / "meta.json").read_text())
    assert meta["hyperparameters"] == {"bptt": 4} and meta["data_fingerprint"] == "abc"
    assert (loaded.seen_size, loaded.seen_decay) == (model.seen_size, 0.9)


def test_tampered_weights_rejected(saved):
    _, path = saved
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(path)


def test_truncated_weights_rejected(saved):
    _, path = saved
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_model(path)


def test_truncated_meta_rejected(saved):
    _, path = saved
    text = (path / "meta.json").read_text()
    (path / "meta.json").write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="JSON"):
        load_model(path)


def test_inconsistent_meta_rejected(saved):
    _, path = saved
    meta = json.loads((path / "meta.json").read_text())
    meta["item_ids"].append("e")
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)


@pytest.mark.parametrize("name", ["model.safetensors", "meta.json"])
def test_missing_file_rejected(saved, name):
    _, path = saved
    (path / name).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_model(path)


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "nothing")


def test_checkpoint_without_seen_fields(saved):
    # written before the seen memory existed: a plain model; a seen model's weights do not fit
    model, path = saved
    meta = json.loads((path / "meta.json").read_text())
    del meta["architecture"]["seen_size"], meta["architecture"]["seen_decay"]
    (path / "meta.json").write_text(json.dumps(meta))
    if model.seen_size:
        with pytest.raises(CheckpointError, match="do not fit"):
            load_model(path)
    else:
        assert load_model(path).state_size == model.state_size


def test_training_counts_round_trip_and_older_checkpoints_have_none(tmp_path):
    model = GRU4Rec(["a", "b", "c"], hidden_size=4, version="v-counts")
    model.item_counts = (5, 0, 2)
    path = save_model(model, tmp_path / "ckpt")
    assert load_model(path).item_counts == (5, 0, 2)
    meta = json.loads((path / "meta.json").read_text())
    del meta["item_counts"]  # written before checkpoints carried them
    (path / "meta.json").write_text(json.dumps(meta))
    assert load_model(path).item_counts == ()
    for bad in ([1, 2], [1, -2, 3], [1, 2.5, 3], {"a": 1}):
        meta["item_counts"] = bad
        (path / "meta.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match="item_counts"):
            load_model(path)


def test_training_records_each_items_count():
    from stream_recs.models.train import TrainConfig, train_model

    sequences = [np.array([0, 1, 1]), np.array([2, 1])]
    config = TrainConfig(hidden_size=4, epochs=0, n_sample=0)
    model, _ = train_model(sequences, ["a", "b", "c", "d"], config, "v", show_progress=False)
    assert model.item_counts == (1, 3, 1, 0)
