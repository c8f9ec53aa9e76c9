"""Training as ``stream-recs train`` documents it: a fixed number of epochs on all the data, or
early stopping on a validation part held out by the data's shape (``evaluate.validation_split``),
keeping the best epoch and, unless fixed, the seen memory only where it validates better."""

from __future__ import annotations

from collections.abc import Callable

from stream_recs.datasets import Events

from .evaluate import ModelPredictor, validation_split
from .evaluate import evaluate as run_eval
from .gru4rec import GRU4Rec
from .train import TrainConfig, train_model, training_sequences
from .tune import VALIDATION, thin_cases


def fit_model(events: Events, values: dict, gap: float | None, max_len: int, version: str,
              parent: GRU4Rec | None, fixed: bool, seen_fixed: bool, quiet: bool,
              retire: tuple[float, float] | None, say: Callable[[str], None] = print):
    """Fixed epochs on all of ``events`` (``fixed``), or early stopping on a validation part (with
    the seen memory on and off unless ``seen_fixed``); ``retire``: (now, seconds) for
    ``ItemRegistry.retire_unseen``; ``say`` prints the progress. Returns (model, history,
    registry, number of sequences, the choice made: how, epoch, scores, and the config values it
    settled)."""
    parent_registry = parent.registry if parent is not None else None
    valid = None
    if not fixed:
        fit_events, valid, part = validation_split(events, gap, max_len)
        if len(valid) < VALIDATION["min_cases"] or not len(fit_events):
            say(f"{len(valid)} validation cases ({part}), fewer than {VALIDATION['min_cases']}: too "
                f"few to validate on; training {values['epochs']} epochs on all the data")
            valid = None
    if valid is None:
        config = TrainConfig.from_dict(values)
        registry, sequences = training_sequences(events, gap, parent_registry)
        registry = registry.retire_unseen(*retire) if retire else registry
        model, history = train_model(sequences, registry, config, version,
                                     show_progress=not quiet, parent=parent)
        how = "--epochs" if fixed else "fixed: too few validation cases"
        return model, history, registry, len(sequences), {"how": how, "config": {}}
    valid = thin_cases(valid, VALIDATION["max_cases"])
    registry, sequences = training_sequences(fit_events, gap, parent_registry)
    registry = registry.retire_unseen(*retire) if retire else registry
    metric, masking = VALIDATION["metric"], VALIDATION["masking"]
    say(f"validation: {len(valid)} cases ({part}); early stopping on {masking} {metric}, "
               f"at most {VALIDATION['max_epochs']} epochs")
    candidates = [{}]
    if not seen_fixed and values.get("seen_size"):
        candidates.append({"seen_size": 0})
    tried = []
    for change in candidates:
        config = TrainConfig.from_dict({**values, **change, "epochs": VALIDATION["max_epochs"]})

        def score(model):
            return run_eval(ModelPredictor(model, events.item_ids), valid)[masking][metric]

        def show(epoch, model, stats):
            say(f"  epoch {epoch + 1}: loss {stats['loss']:.4f}, valid {stats['valid']:.4f}")

        say(f"seen memory {config.seen_size or 'off'}:")
        model, history = train_model(sequences, registry, config, version, show_progress=not quiet,
                                     parent=parent, validate=score, on_epoch=show if quiet else None)
        best = next(h for h in history if h.get("best"))
        tried.append((best["valid"], config.seen_size, model, history))
        say(f"  seen memory {config.seen_size or 'off'}: best epoch {best['epoch']}, valid "
            f"{masking} {metric} {best['valid']:.4f}")
    value, seen_size, model, history = max(tried, key=lambda t: t[0])
    epoch = next(h["epoch"] for h in history if h.get("best"))
    choice = {"how": f"early stopping on {masking} {metric} of {part}", "epoch": epoch,
              "valid": value, "valid_cases": len(valid), "max_epochs": VALIDATION["max_epochs"],
              "curve": [round(h["valid"], 5) for h in history],
              "seen_memory": {str(s): round(v, 5) for v, s, _, _ in tried},
              "config": {"epochs": epoch, "seen_size": seen_size}}
    return model, history, registry, len(sequences), choice
