"""The model: training-time forward == incremental step API, hidden resets, sparse optimiser."""

import itertools

import numpy as np
import pytest
import torch

from stream_recs.models import GRU4Rec
from stream_recs.models.optim import AdagradMomentum
from stream_recs.models.train import TrainConfig, Trainer, train_model

ITEMS = [f"i{k}" for k in range(20)]


class RecordingTrainer(Trainer):
    """Records every (output, target) row the loss sees."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows: list[tuple[torch.Tensor, int]] = []

    def loss(self, outputs, targets, *args):
        self.rows += list(zip(outputs.detach(), targets.tolist(), strict=True))
        return super().loss(outputs, targets, *args)


@pytest.mark.parametrize("bptt", [1, 3])
@pytest.mark.parametrize(("n_layers", "seen_size"), [(1, 0), (2, 0), (1, 3), (2, 3)])
def test_training_forward_equals_stepping(bptt, n_layers, seen_size):
    # every item occurs once, so a target identifies its position in its sequence
    seqs = [np.array([0, 1, 2, 3]), np.array([4, 5]), np.array([6, 7, 8]), np.array([9, 10, 11])]
    torch.manual_seed(0)
    model = GRU4Rec(ITEMS, hidden_size=8, n_layers=n_layers, seen_size=seen_size)
    config = TrainConfig(hidden_size=8, n_layers=n_layers, batch_size=2, learning_rate=1e-30,
                         bptt=bptt, n_sample=4, epochs=1)
    trainer = RecordingTrainer(model, seqs, config)
    trainer.train_epoch()
    assert len(trainer.rows) == sum(len(s) - 1 for s in seqs)
    model.eval()
    for seq in seqs:
        hidden = model.init_hidden(1)
        for item, target in itertools.pairwise(seq):
            hidden = model.step(hidden, torch.tensor([item]))
            recorded = next(out for out, t in trainer.rows if t == target)
            torch.testing.assert_close(recorded, model.output_of(hidden)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seen_size", [0, 3])
def test_lane_reset_zeroes_state(seen_size):
    # a lane that takes over a new sequence must not carry the previous sequence's state
    seqs = [np.array([0, 1]), np.array([2, 3, 4]), np.array([5, 6])]
    torch.manual_seed(1)
    model = GRU4Rec(ITEMS, hidden_size=4, seen_size=seen_size)
    trainer = RecordingTrainer(model, seqs, TrainConfig(hidden_size=4, batch_size=2,
                                                        learning_rate=1e-30, epochs=1))
    trainer.train_epoch()
    fresh = model.step(model.init_hidden(1), torch.tensor([5]))
    recorded = next(out for out, t in trainer.rows if t == 6)
    torch.testing.assert_close(recorded, model.output_of(fresh)[0])


@pytest.mark.parametrize("seen_size", [0, 5])
def test_step_and_score_shapes_and_batch_independence(seen_size):
    model = GRU4Rec(ITEMS, hidden_size=6, n_layers=2, seen_size=seen_size).eval()
    h = model.init_hidden(3)
    assert h.shape == (3, 12 + seen_size) and h.dtype == torch.float32
    h = model.step(h, torch.tensor([1, 2, 3]))
    s = model.score(h)
    assert s.shape == (3, len(ITEMS))
    single = model.score(model.step(model.init_hidden(1), torch.tensor([2])))
    torch.testing.assert_close(s[1:2], single)
    w, b = model.output_embeddings()
    torch.testing.assert_close(model.output_of(h) @ w.T + b, s)


def test_seen_memory_by_hand():
    model = GRU4Rec(["a", "b", "c"], hidden_size=2, seen_size=2, seen_decay=0.5).eval()
    seen = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    with torch.no_grad():
        model.seen_embedding.weight.copy_(seen)
        model.seen_scale.fill_(-2.0)
    h = model.step(model.step(model.init_hidden(1), torch.tensor([0])), torch.tensor([1]))
    memory = torch.tensor([0.5, 1.0])  # 0.5 * f(a) + f(b)
    torch.testing.assert_close(h[0, 2:], memory)
    with torch.no_grad():
        gru_only = h[:, :2] @ model.item_embedding.weight.T + model.item_bias.weight[:, 0]
    torch.testing.assert_close(model.score(h), gru_only - 2.0 * (memory @ seen.T))


def test_item_index():
    model = GRU4Rec(ITEMS)
    assert model.item_index("i3") == 3 and model.item_index("nope") is None


def test_sparse_optimizer_updates_only_touched_rows_by_hand():
    emb = torch.nn.Embedding(4, 1, sparse=True)
    with torch.no_grad():
        emb.weight.zero_()
    opt = AdagradMomentum(emb.parameters(), lr=0.1, momentum=0.5)
    for _ in range(2):
        opt.zero_grad()
        (2.0 * emb(torch.tensor([1]))).sum().backward()  # gradient 2 on row 1
        opt.step()
    # step 1: G=4, v=0.1*2/2=0.1; step 2: G=8, v=0.5*0.1+0.1*2/sqrt(8)
    v2 = 0.05 + 0.2 / np.sqrt(8.0)
    expected = -(0.1 + v2)
    assert emb.weight[:, 0].tolist() == pytest.approx([0.0, expected, 0.0, 0.0], rel=1e-5)


def test_row_scale_multiplies_each_rows_step_sparse_or_dense():
    for sparse in (True, False):
        emb = torch.nn.Embedding(3, 2, sparse=sparse)
        with torch.no_grad():
            emb.weight.zero_()
        opt = AdagradMomentum(emb.parameters(), lr=0.1, row_scale={emb.weight: torch.tensor([1.0, 5.0, 0.0])})
        emb(torch.tensor([0, 1, 2])).sum().backward()  # gradient 1 on every element
        opt.step()
        # G=1, so each element moves by lr * its row's multiple
        assert emb.weight[:, 0].tolist() == pytest.approx([-0.1, -0.5, 0.0], rel=1e-5)


def test_sampled_and_bpr_max_training_reduce_loss():
    rng = np.random.default_rng(0)
    seqs = [np.arange(k, k + 6) % 20 for k in rng.integers(0, 20, size=60)]
    for loss in ("xe", "bpr-max"):
        config = TrainConfig(hidden_size=16, batch_size=8, loss=loss, n_sample=8, epochs=6,
                             learning_rate=0.1, momentum=0.3, final_act="elu-0.5")
        _, history = train_model(seqs, ITEMS, config, "t", show_progress=False)
        assert history[-1]["loss"] < history[0]["loss"]


def test_lr_decay_scales_each_epochs_learning_rate(monkeypatch):
    from stream_recs.models import train as train_module

    seen = []
    original = train_module.Trainer.train_epoch

    def spy(self, progress=None):
        seen.append(self.optimizer.param_groups[0]["lr"])
        return original(self, progress)

    monkeypatch.setattr(train_module.Trainer, "train_epoch", spy)
    seqs = [np.arange(k, k + 6) % 20 for k in range(10)]
    config = TrainConfig(hidden_size=8, batch_size=4, n_sample=0, epochs=3, learning_rate=0.1,
                         lr_decay=0.5)
    train_model(seqs, ITEMS, config, "t", show_progress=False)
    assert seen == pytest.approx([0.1, 0.05, 0.025])
    with pytest.raises(ValueError):
        TrainConfig(lr_decay=0.0)


def test_dropout_keeps_expectation_and_is_identity_in_eval():
    from stream_recs.models.gru4rec import Dropout

    layer = Dropout(0.25)
    x = torch.ones(200_000)
    y = layer(x)
    assert torch.isclose(y[y != 0], torch.tensor(1.0 / 0.75)).all()
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    assert torch.equal(layer.eval()(x), x)
