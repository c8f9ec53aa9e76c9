"""The trainer's models directory: whole checkpoints only, what a killed writer left removed, old
checkpoints pruned except the newest and the ones a worker may still load."""

from __future__ import annotations

import os

import pytest
import torch

from stream_recs.model_store import PARTIAL, ModelStore
from stream_recs.models import GRU4Rec, load_model


def model(version: str) -> GRU4Rec:
    torch.manual_seed(0)
    return GRU4Rec(["a", "b", "c"], hidden_size=4, version=version)


def test_a_checkpoint_appears_whole_and_a_partial_one_is_cleaned(tmp_path):
    store = ModelStore(tmp_path)
    (tmp_path / f"{PARTIAL}v0").mkdir()
    assert store.clean() == [f"{PARTIAL}v0"]
    path = store.write(model("v1"))
    assert path == tmp_path / "v1" and load_model(path).version == "v1"
    with pytest.raises(FileExistsError):
        store.write(model("v1"))


def test_pruning_keeps_the_newest_and_the_protected(tmp_path):
    store = ModelStore(tmp_path)
    paths = []
    for n in range(6):
        paths.append(store.write(model(f"v{n}")))
        os.utime(paths[-1], ns=(n * 10**9, n * 10**9))  # write order, whatever the clock's resolution
    (tmp_path / f"{PARTIAL}v9").mkdir()  # being written: not the pruner's
    removed = store.prune(2, protected=[paths[0], tmp_path / "v2"])
    assert sorted(removed) == ["v1", "v3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{PARTIAL}v9", "v0", "v2", "v4", "v5"]
