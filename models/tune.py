"""Hyper-parameter search (Optuna, TPE) over the ranges of the GRU4Rec papers, plus the tuned
defaults the CLI uses.

Each trial trains on the split's training part and scores the validation cases after every
epoch, their input items masked or not (median pruning stops bad trials early); the objective is
the best validation value seen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from stream_recs.datasets import HISTORY_LEN

from .train import TrainConfig

# Defaults for every dataset. "xe": the best MovieLens-100K settings of a manual search on
# leave-one-out validation NDCG@10, unmasked (capacity 64-512, batch 32/64, BPTT 1-32, dropout, lr,
# momentum, chunking, 1-2 layers), then of a grid over the seen memory (width 64/128/256, decay
# 0.97/0.99, 5-20 epochs; the best median over seeds 0-2); bench/quality.py measures them on
# test. "bpr-max": the published RetailRocket BPR-max settings (Hidasi & Karatzoglou 2018) with
# windowed BPTT. ``train`` without --epochs chooses the epochs and whether the seen memory stays by
# validation (VALIDATION below); these epochs are then only the fallback for data too small for it.
TUNED: dict[str, dict] = {
    "xe": {
        "hidden_size": 256, "batch_size": 32, "learning_rate": 0.05, "momentum": 0.0,
        "dropout_embed": 0.3, "dropout_hidden": 0.5, "bptt": 16, "n_sample": 2048,
        "seen_size": 128, "seen_decay": 0.99, "epochs": 10,
    },
    "bpr-max": {
        "hidden_size": 224, "batch_size": 80, "learning_rate": 0.05, "momentum": 0.4,
        "dropout_embed": 0.5, "dropout_hidden": 0.05, "alpha": 0.4, "bpreg": 1.95,
        "final_act": "elu-0.5", "bptt": 16, "n_sample": 2048, "epochs": 20,
    },
}


# How ``stream-recs train`` picks the number of epochs when ``--epochs`` is not given: early
# stopping on this metric of the validation part (``evaluate.validation_split``), ranked as the
# worker serves (masked), up to ``max_epochs``; cases beyond ``max_cases`` are thinned evenly (to
# bound the time per epoch). With fewer than ``min_cases`` the data set is too small to validate
# on and the fixed ``epochs`` of ``TUNED`` apply.
VALIDATION = {"metric": "ndcg@20", "masking": "masked", "max_epochs": 30, "min_cases": 100,
              "max_cases": 5000}


def defaults_for(loss: str) -> dict:
    """Default training hyper-parameters for ``loss``."""
    return {"loss": loss, **TUNED[loss]}


def suggest(trial, loss: str) -> dict:
    """One point of the search space (units 64-512, batch 32-256, lr 0.01-0.25, ..., seen
    memory 0-256)."""
    params = {
        "loss": loss,
        "hidden_size": trial.suggest_int("hidden_size", 64, 512, step=32),
        "batch_size": trial.suggest_int("batch_size", 32, 256, step=16),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.25, log=True),
        "momentum": trial.suggest_float("momentum", 0.0, 0.9),
        "dropout_embed": trial.suggest_float("dropout_embed", 0.0, 0.5),
        "dropout_hidden": trial.suggest_float("dropout_hidden", 0.0, 0.7),
        "alpha": trial.suggest_float("alpha", 0.0, 1.0),
        "bptt": trial.suggest_categorical("bptt", [1, 2, 4, 8, 16, 32]),
        "chunk_len": trial.suggest_categorical("chunk_len", [0, 64]),
        "seen_size": trial.suggest_categorical("seen_size", [0, 64, 128, 256]),
        "seen_decay": trial.suggest_categorical("seen_decay", [0.9, 0.97, 0.99, 1.0]),
    }
    if loss == "bpr-max":
        params["bpreg"] = trial.suggest_float("bpreg", 0.0, 2.0)
        params["final_act"] = trial.suggest_categorical(
            "final_act", ["linear", "elu-0.5", "elu-1"]
        )
    return params


def run_study(
    split, item_ids: Sequence[str], *, loss: str = "xe", metric: str = "ndcg@10", masking: str,
    n_trials: int = 30, timeout: float | None = None, epochs: int = 20,
    max_train_seconds: float | None = None,
    session_gap: float | None = None, max_len: int = HISTORY_LEN, seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Search; returns best value, best parameters (with the best epoch) and every trial.

    A trial is pruned when its validation curve is below the median of earlier trials, or when
    its projected training time exceeds ``max_train_seconds``.
    """
    import optuna

    from .evaluate import ModelPredictor, evaluate
    from .train import train_model, training_sequences

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    registry, sequences = training_sequences(split.train, session_gap)

    def objective(trial) -> float:
        params = suggest(trial, loss)
        config = TrainConfig.from_dict({**params, "epochs": epochs, "seed": seed,
                                        "max_len": max_len})
        best, train_seconds = 0.0, 0.0

        def on_epoch(epoch, model, stats) -> None:
            nonlocal best, train_seconds
            train_seconds += stats["seconds"]
            value = evaluate(ModelPredictor(model, item_ids), split.valid)[masking][metric]
            if value > best:
                best = value
                trial.set_user_attr("best_epoch", epoch + 1)
            trial.report(value, epoch)
            too_slow = max_train_seconds and train_seconds * epochs / (epoch + 1) > max_train_seconds
            if too_slow or trial.should_prune():
                raise optuna.TrialPruned()

        train_model(sequences, registry, config, "tuning", show_progress=False,
                    on_epoch=on_epoch)
        log(f"trial {trial.number}: {metric} {best:.4f} {params}")
        return best

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3),
    )
    study.optimize(objective, n_trials=n_trials, timeout=timeout)
    return {
        "metric": metric,
        "masking": masking,
        "best_value": study.best_value,
        "best_params": {**study.best_params, "epochs": study.best_trial.user_attrs["best_epoch"]},
        "trials": [
            {"number": t.number, "value": t.value, "state": t.state.name, "params": t.params,
             "best_epoch": t.user_attrs.get("best_epoch")}
            for t in study.trials
        ],
    }
