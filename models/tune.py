"""Hyper-parameter search (Optuna, TPE) over the ranges of the GRU4Rec papers within a
wall-clock budget, plus the tuned defaults the CLI uses.

Each trial trains on the split's training part and scores its validation cases (never the test
cases) after every epoch, their input items masked or not (median pruning stops bad trials
early); the objective is the best validation value seen. The first trial is the defaults.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from stream_recs.datasets import HISTORY_LEN

from .evaluate import Cases
from .train import TrainConfig
from .tune_budget import Budget, BudgetSpent

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


# How ``stream-recs tune`` shares its budget: it plans for at least this many trials, so a trial's
# epochs are capped to what fits in this fraction of the time left when the search starts (one
# epoch at least); the validation cases are thinned to VALIDATION["max_cases"] as train does.
MIN_TRIALS = 5


class NoResult(Exception):
    """No epoch of any trial finished within the budget (or every trial was pruned)."""


def thin_cases(cases: Cases, max_cases: int) -> Cases:
    """Every k-th case, k the least that keeps at most ``max_cases`` (bounds validation time)."""
    stride = max(1, -(-len(cases) // max_cases))
    return cases.take(np.arange(0, len(cases), stride, dtype=np.int64))


def defaults_for(loss: str) -> dict:
    """Default training hyper-parameters for ``loss``."""
    return {"loss": loss, **TUNED[loss]}


def suggest(trial, loss: str) -> dict:
    """One point of the search space (units 64-512, batch 32-256, lr 0.01-0.25, ..., seen
    memory 0-256, seen items masked from the negatives or not)."""
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
        "mask_seen": trial.suggest_categorical("mask_seen", [False, True]),
    }
    if loss == "bpr-max":
        params["bpreg"] = trial.suggest_float("bpreg", 0.0, 2.0)
        params["final_act"] = trial.suggest_categorical(
            "final_act", ["linear", "elu-0.5", "elu-1"]
        )
    return params


def start_point(loss: str) -> dict:
    """The defaults of ``loss`` as a point of the search space (the first trial)."""
    defaults = TrainConfig.from_dict(defaults_for(loss))
    return {f.name: getattr(defaults, f.name) for f in dataclasses.fields(TrainConfig)}


class _Stop(Exception):
    """A trial ends early with its best epoch so far: its next epoch would overrun the budget
    ("budget") or the trial's share ("share")."""


def run_study(
    split, item_ids: Sequence[str], *, budget: Budget, loss: str = "xe", metric: str = "ndcg@10",
    masking: str, n_trials: int = 30, epochs: int = 20, max_train_seconds: float | None = None,
    session_gap: float | None = None, max_len: int = HISTORY_LEN, seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Search within ``budget`` (already running: loading counts); returns the best value, the
    best parameters (with the loss and the best epoch), how the budget went, and every trial.

    No trial starts unless an epoch of the median cost so far fits in what is left (with
    ``tune_budget.MARGIN``); a trial stops, keeping its best epoch, when its next epoch would
    overrun the budget or its share (``MIN_TRIALS``); an epoch still running when the budget
    runs out is interrupted. A trial is pruned when its validation curve is below the median of
    earlier trials, or when its projected training time exceeds ``max_train_seconds``; one that
    cannot train (diverging loss, an error) fails. Raises :class:`NoResult` when no trial
    finished an epoch.
    """
    import optuna

    from .evaluate import ModelPredictor, evaluate
    from .train import train_model, training_sequences

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    valid = thin_cases(split.valid, VALIDATION["max_cases"])
    registry, sequences = training_sequences(split.train, session_gap)
    prepared, share = budget.elapsed(), budget.left() / MIN_TRIALS
    if budget.left() <= 0:
        raise NoResult(f"loading and preparing the data took {prepared:.1f}s, all of the "
                       f"{budget.seconds:g}s budget: no trial could start; give a larger --budget")
    log(f"{len(split.valid)} validation cases ({len(valid)} used), {len(sequences)} training "
        f"sequences; {budget.left():.0f}s of the {budget.seconds:g}s budget left, at most "
        f"{share:.0f}s a trial (or one epoch) and {epochs} epochs")

    def run_trial(trial) -> dict:
        params = suggest(trial, loss)
        config = TrainConfig.from_dict({**params, "epochs": epochs, "seed": seed, "max_len": max_len})
        curve: list[float] = []
        started = mark = time.monotonic()
        train_seconds = 0.0

        def on_epoch(epoch, model, stats) -> None:
            nonlocal mark, train_seconds
            value = evaluate(ModelPredictor(model, item_ids), valid)[masking][metric]
            with budget.shielded():
                now = time.monotonic()
                cost, mark = now - mark, now
                budget.epoch_costs.append(cost)
                train_seconds += stats["seconds"]
                curve.append(value)
                trial.report(value, epoch)
                too_slow = max_train_seconds and train_seconds * epochs / (epoch + 1) > max_train_seconds
                if too_slow or trial.should_prune():
                    raise optuna.TrialPruned()
                if epoch + 1 < epochs and not budget.fits(cost):
                    raise _Stop("budget")
                if epoch + 1 < epochs and now - started + cost > share:
                    raise _Stop("share")

        stopped = None
        try:
            with budget.enforced():
                train_model(sequences, registry, config, "tuning", show_progress=False,
                            on_epoch=on_epoch)
        except _Stop as stop:
            stopped = str(stop)
        except BudgetSpent:
            stopped = "interrupted"
        except optuna.TrialPruned:
            stopped = "pruned"
        except FloatingPointError:  # a learning rate too high for these settings
            stopped = "failed: the loss diverged"
        except (RuntimeError, ValueError) as exc:  # settings this data cannot train with
            stopped = f"failed: {type(exc).__name__}: {exc}"
        if stopped == "pruned":
            state = "PRUNED"
        elif not curve or (stopped or "").startswith("failed"):
            state = "FAIL"
        else:  # all its epochs, or stopped early with its best epoch so far
            state = "COMPLETE"
        best = max(range(len(curve)), key=curve.__getitem__) if curve else None
        return {"number": trial.number, "state": state, "stopped": stopped,
                "started_s": round(started - budget.started, 2),
                "value": None if best is None else curve[best],
                "best_epoch": None if best is None else best + 1, "epochs": len(curve),
                "seconds": round(time.monotonic() - started, 1),
                "curve": [round(v, 5) for v in curve], "params": params}

    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3),
    )
    study.enqueue_trial(start_point(loss))
    trials: list[dict] = []
    stopped = "trials"
    while len(trials) < n_trials:
        if not budget.fits(budget.epoch_estimate()):
            stopped = "budget"
            break
        trial = study.ask()
        record = run_trial(trial)
        trials.append(record)
        study.tell(trial, record["value"] if record["state"] == "COMPLETE" else None,
                   state=getattr(optuna.trial.TrialState, record["state"]))
        value = "-" if record["value"] is None else f"{record['value']:.4f}"
        why = f" ({record['stopped']})" if record["stopped"] else ""
        log(f"trial {record['number']}: {record['state'].lower()}{why} after {record['epochs']} "
            f"epochs, {record['seconds']:.0f}s, best {metric} {value}; {record['params']}")
        if record["stopped"] in ("budget", "interrupted"):
            stopped = "budget"
            break
    counts = {state: sum(t["state"] == state for t in trials) for state in ("COMPLETE", "PRUNED", "FAIL")}
    search = {"budget_s": budget.seconds, "elapsed_s": round(budget.elapsed(), 1),
              "stopped_by": stopped, "trials_started": len(trials),
              "trials_completed": counts["COMPLETE"], "trials_pruned": counts["PRUNED"],
              "trials_failed": counts["FAIL"], "max_epochs_per_trial": epochs,
              "trial_share_s": round(share, 1),
              "prepare_s": round(prepared, 1), "validation_cases": len(split.valid),
              "validation_cases_used": len(valid)}
    completed = [t for t in trials if t["state"] == "COMPLETE"]
    if not completed:
        raise NoResult(
            f"no trial finished an epoch within the {budget.seconds:g}s budget ({len(trials)} "
            f"started: {counts['PRUNED']} pruned, {counts['FAIL']} stopped or failed without a "
            f"validated epoch; {prepared:.1f}s went to loading and preparing the "
            f"data); give a larger --budget, or fewer --max-len items")
    best = max(completed, key=lambda t: t["value"])
    return {"metric": metric, "masking": masking, "best_value": best["value"],
            "best_params": {**best["params"], "epochs": best["best_epoch"]},
            "search": search, "trials": trials}


def summary(result: dict, budget: Budget) -> str:
    """The closing line of a search: time taken, trials by outcome, the best value."""
    run = result["search"]
    by = "the budget" if run["stopped_by"] == "budget" else "--trials"
    return (f"took {budget.elapsed():.0f}s of the {budget.seconds:g}s budget (stopped by {by}): "
            f"{run['trials_completed']} trials completed, {run['trials_pruned']} pruned, "
            f"{run['trials_failed']} without a result, of {run['trials_started']} started; best "
            f"{result['masking']} {result['metric']} {result['best_value']:.4f}")
