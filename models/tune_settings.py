"""The settings file ``stream-recs tune`` writes and ``stream-recs train --settings`` reads: the
chosen hyper-parameters (``best_params``) and what produced them (the data's fingerprint, the
protocol, the metric, the budget), so that a training can say what it was tuned on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from .train import TrainConfig

FORMAT = "stream-recs tune settings 1"
KEYS = ("format", "best_params", "best_value", "metric", "masking", "tuned_on", "search", "trials")


class SettingsError(ValueError):
    """A settings file that ``train`` cannot use."""


def settings_document(result: dict, tuned_on: dict) -> dict:
    """The file's content: ``run_study``'s result and ``tuned_on`` (the data's name and
    fingerprint, the protocol and what shapes its split)."""
    return {"format": FORMAT, "best_params": result["best_params"], "best_value": result["best_value"],
            "metric": result["metric"], "masking": result["masking"], "tuned_on": tuned_on,
            "search": result["search"], "trials": result["trials"]}


def read_settings(path: str | Path) -> tuple[dict, dict]:
    """The file's hyper-parameters, checked against ``TrainConfig`` (names and types), and the
    record a checkpoint keeps of it (path, sha256, content less the trials)."""
    text = Path(path).read_text()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path} is not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("best_params"), dict):
        raise SettingsError(f"{path} has no best_params object: not a file of `stream-recs tune --out`")
    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        raise SettingsError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(KEYS)})")
    if doc.get("format", FORMAT) != FORMAT:
        raise SettingsError(f"{path} is in format {doc['format']!r}, not {FORMAT!r}")
    params = doc["best_params"]
    defaults = TrainConfig()
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise SettingsError(f"{path}: unknown hyper-parameter(s) {', '.join(unknown)}")
    for name, value in params.items():
        expected = type(getattr(defaults, name))
        fits = isinstance(value, expected) and (expected is bool or not isinstance(value, bool))
        if not fits and not (expected is float and isinstance(value, int) and not isinstance(value, bool)):
            raise SettingsError(f"{path}: {name} must be {expected.__name__}, not {value!r}")
    record = {"path": str(Path(path).resolve()), "sha256": hashlib.sha256(text.encode()).hexdigest(),
              "content": {key: value for key, value in doc.items() if key != "trials"}}
    return params, record


def use_warnings(path, params: dict, record: dict, fingerprint: str, loss: str | None) -> list[str]:
    """Why these settings may not suit a training on data of ``fingerprint`` with ``--loss``."""
    tuned_on = record["content"].get("tuned_on") or {}
    warnings = []
    if tuned_on.get("fingerprint") != fingerprint:
        warnings.append(f"{path} was tuned on other data ({tuned_on.get('data', 'unknown')}, "
                        f"fingerprint {str(tuned_on.get('fingerprint'))[:12]}; this data "
                        f"{fingerprint[:12]}): its settings may not suit it")
    if loss and params.get("loss", loss) != loss:
        warnings.append(f"{path} was tuned for --loss {params['loss']}; training {loss} with its "
                        f"other settings")
    return warnings
