"""Training precision: bfloat16 autocast trains, keeps float32 weights, and is refused by name."""

import numpy as np
import pytest
import torch

from stream_recs.models.precision import native_bf16, resolve_precision
from stream_recs.models.train import TrainConfig, train_model

ITEMS = [f"i{k}" for k in range(20)]


def test_resolve():
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("bfloat16") == "bfloat16"
    assert resolve_precision("auto") == ("bfloat16" if native_bf16() else "float32")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="half")


def test_bfloat16_training_learns_in_float32_weights():
    rng = np.random.default_rng(0)
    seqs = [np.arange(k, k + 6) % 20 for k in rng.integers(0, 20, size=60)]
    config = TrainConfig(hidden_size=16, batch_size=8, n_sample=8, epochs=6, learning_rate=0.1,
                         bptt=3, seen_size=4, n_layers=2, precision="bfloat16")
    model, history = train_model(seqs, ITEMS, config, "t", show_progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.init_hidden(2).dtype == torch.float32
