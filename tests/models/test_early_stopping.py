"""Validation-driven training: the validation part chosen by the data's shape, early stopping that
keeps the best epoch, ``--epochs`` overriding it, and the fallback on data too small to validate."""

import json

import numpy as np
import torch
from click.testing import CliRunner

from stream_recs.cli import main
from stream_recs.datasets import from_rows
from stream_recs.models.evaluate import validation_split
from stream_recs.models.train import TrainConfig, train_model
from stream_recs.models.tune import defaults_for

ITEMS = [f"i{k}" for k in range(20)]
SEQS = [np.arange(k, k + 6) % 20 for k in range(40)]


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.4, 0.9, 0.9])
    snapshots = []

    def validate(model):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    config = TrainConfig(hidden_size=8, batch_size=8, n_sample=0, epochs=10, patience=3)
    model, history = train_model(SEQS, ITEMS, config, "t", show_progress=False, validate=validate)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]  # 3 epochs after the best, then stop
    assert [h.get("best", False) for h in history] == [False, True, False, False, False]
    assert [h["valid"] for h in history] == [0.1, 0.5, 0.3, 0.2, 0.4]
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshots[1][name]), name  # epoch 2's weights, not epoch 5's
    assert not torch.equal(snapshots[1]["item_embedding.weight"], snapshots[4]["item_embedding.weight"])


def test_without_validation_every_epoch_runs():
    config = TrainConfig(hidden_size=8, batch_size=8, n_sample=0, epochs=4, patience=1)
    _, history = train_model(SEQS, ITEMS, config, "t", show_progress=False)
    assert len(history) == 4 and not any("valid" in h or "best" in h for h in history)


def test_validation_split_of_user_histories_holds_out_each_users_last_item():
    events = from_rows(["a", "a", "a", "b", "b", "c"], ["x", "y", "z", "y", "x", "z"],
                       [1.0, 2.0, 3.0, 1.5, 2.5, 9.0])
    train, cases, part = validation_split(events, session_gap=None, max_len=2)
    assert part == "each user's last item"
    held = {(events.user_ids[u], events.item_ids[t]) for u, t in zip(cases.users, cases.targets, strict=True)}
    assert held == {("a", "z"), ("b", "x")}  # c has one event: it stays in training
    assert [events.item_ids[i] for i in cases.prefixes[0]] == ["x", "y"]
    kept = sorted((events.user_ids[u], events.item_ids[i])
                  for u, i in zip(train.user, train.item, strict=True))
    assert kept == [("a", "x"), ("a", "y"), ("b", "y"), ("c", "z")]


def test_validation_split_of_a_session_log_holds_out_the_last_days_sessions():
    day = 86_400.0
    rows = [(s, f"u{s % 3}", f"i{(s + k) % 7}", s * day + 60 * k) for s in range(20) for k in range(3)]
    sessions, users, items, ts = zip(*rows, strict=True)
    events = from_rows(users, items, ts, sessions)
    train, cases, part = validation_split(events, session_gap=None)
    assert part == "the last 1 days' sessions"
    assert train.ts.max() < 19 * day and len(train) == 19 * 3  # session 19 started in the last day
    assert len(cases) == 2  # its second and third clicks, each from its prefix
    # without session ids, a session gap also makes a session log
    plain = from_rows(users, items, ts)
    assert validation_split(plain, session_gap=1800.0)[2] == part


def _train(tmp_path, *extra):
    data = ["--dataset", "synthetic", "--n-events", "12000", "--n-users", "200", "--n-items", "100"]
    small = ["--quiet", "--threads", "1", "--param", "hidden_size=16", "--param", "n_sample=0",
             "--param", "seen_size=0"]
    result = CliRunner().invoke(main, ["train", *data, *small, "--out", str(tmp_path), *extra])
    assert result.exit_code == 0, result.output
    return result, json.loads((tmp_path / "meta.json").read_text())["hyperparameters"]


def test_train_chooses_the_epoch_by_validation(tmp_path):
    result, hyper = _train(tmp_path)
    choice = hyper["epoch_choice"]
    assert choice["how"].startswith("early stopping on masked")
    curve = choice["curve"]
    assert hyper["epochs"] == choice["epoch"] == int(np.argmax(curve)) + 1
    assert len(curve) == min(choice["epoch"] + hyper["patience"], choice["max_epochs"])
    assert "valid" in result.output  # the per-epoch validation figures are printed


def test_epochs_option_overrides_early_stopping(tmp_path):
    result, hyper = _train(tmp_path, "--epochs", "2")
    assert hyper["epochs"] == 2 and hyper["epoch_choice"] == {"how": "--epochs"}
    assert "validation" not in result.output


def test_too_small_to_validate_falls_back_to_the_fixed_epochs(tmp_path):
    data = ["--dataset", "synthetic", "--n-events", "600", "--n-users", "20", "--n-items", "30"]
    result = CliRunner().invoke(main, ["train", *data, "--quiet", "--param", "hidden_size=8",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    hyper = json.loads((tmp_path / "meta.json").read_text())["hyperparameters"]
    assert hyper["epoch_choice"]["how"] == "fixed: too few validation cases"
    assert hyper["epochs"] == defaults_for("xe")["epochs"]
