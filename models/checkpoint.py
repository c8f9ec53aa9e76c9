"""Checkpoints: a directory with ``model.safetensors`` (weights) and ``meta.json`` (item ids and
their registry, each item's count in the training data, hyper-parameters, data fingerprint,
metrics, version, sha256 of the weights file).

Loading never unpickles: weights come from safetensors, metadata from JSON, and the weights file
must match the recorded sha256 and the shapes implied by the metadata, else :class:`CheckpointError`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load, save_file

from .gru4rec import GRU4Rec
from .registry import ItemRegistry, RegistryError

FORMAT = "stream-recs-gru4rec/1"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
ARCHITECTURE_KEYS = ("hidden_size", "n_layers", "dropout_embed", "dropout_hidden")
SEEN_KEYS = ("seen_size", "seen_decay")  # absent from checkpoints written before the seen memory


class CheckpointError(Exception):
    """A checkpoint is missing, truncated, tampered with or inconsistent."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(
    model: GRU4Rec, path: str | Path, *, hyperparameters: dict | None = None,
    fingerprint: str | None = None, metrics: dict | None = None,
) -> Path:
    """Write ``model`` to the directory ``path`` (created if needed); returns the directory.

    Files are written to temporaries and renamed, weights first, so a reader sees either the
    old or the new checkpoint (the sha256 in meta.json ties the pair together).
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    save_file(tensors, tmp)
    sha = _sha256(Path(tmp))
    os.replace(tmp, directory / WEIGHTS_FILE)
    meta = {
        "format": FORMAT,
        "version": model.version,
        "architecture": {
            "hidden_size": model.hidden_size,
            "n_layers": model.n_layers,
            "dropout_embed": model.dropout_embed.p,
            "dropout_hidden": model.dropout_hidden.p,
            "seen_size": model.seen_size,
            "seen_decay": model.seen_decay,
        },
        "hyperparameters": hyperparameters or {},
        "data_fingerprint": fingerprint,
        "metrics": metrics or {},
        "weights_sha256": sha,
        "item_ids": model.item_ids,
        "items": model.registry.to_meta(),
        "item_counts": list(model.item_counts),
    }
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(meta, handle, indent=1)
    os.replace(tmp, directory / META_FILE)
    return directory


@dataclass(frozen=True)
class CheckpointFiles:
    """A checkpoint's two files, each read once: what is verified is what is loaded."""

    directory: Path
    meta_bytes: bytes
    weights: bytes

    @functools.cached_property
    def meta_digest(self) -> bytes:
        """sha256 of meta.json: it names the weights (their sha256), so it pins the checkpoint."""
        return hashlib.sha256(self.meta_bytes).digest()

    @functools.cached_property
    def weights_digest(self) -> bytes:
        return hashlib.sha256(self.weights).digest()

    @property
    def meta_sha256(self) -> str:
        return self.meta_digest.hex()

    def meta(self) -> dict:
        """The metadata, validated for format and required fields."""
        return _parse_meta(self.meta_bytes, self.directory / META_FILE)

    def model(self) -> GRU4Rec:
        """The model these files hold, in eval mode, if the weights match the metadata."""
        meta = self.meta()
        if self.weights_digest.hex() != meta["weights_sha256"]:
            raise CheckpointError(f"{self.directory / WEIGHTS_FILE} does not match the sha256 in "
                                  f"{META_FILE} (tampered?)")
        try:
            tensors = load(self.weights)
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{self.directory / WEIGHTS_FILE} cannot be read: {exc}") from exc
        arch = meta["architecture"]
        try:
            model = GRU4Rec(
                meta["item_ids"], version=str(meta["version"]),
                **{k: arch[k] for k in ARCHITECTURE_KEYS},
                **{k: arch[k] for k in SEEN_KEYS if k in arch},
            )
            model.load_state_dict(tensors, strict=True)
            model.use_registry(ItemRegistry.from_meta(model.item_ids, meta.get("items")))
            model.item_counts = _item_counts(meta.get("item_counts", []), model.n_items,
                                             self.directory / META_FILE)
        except RegistryError as exc:
            raise CheckpointError(f"{self.directory / META_FILE}: {exc}") from exc
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{self.directory}: weights do not fit the metadata: {exc}") from exc
        return model.eval()


def _item_counts(counts: object, n_items: int, where: Path) -> tuple[int, ...]:
    """The training counts of ``meta.json`` (absent from older checkpoints: none)."""
    if not isinstance(counts, list) or len(counts) not in (0, n_items) or not all(
        type(c) is int and c >= 0 for c in counts
    ):
        raise CheckpointError(f"{where}: item_counts must list a count for each of the {n_items} items")
    return tuple(counts)


def _parse_meta(raw: bytes, where: Path) -> dict:
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{where} is not valid JSON (truncated?): {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a {FORMAT} checkpoint")
    for key in ("version", "architecture", "weights_sha256", "item_ids"):
        if key not in meta:
            raise CheckpointError(f"{where}: field {key!r} is missing")
    return meta


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} is missing") from exc
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read: {exc}") from exc


def read_checkpoint(path: str | Path) -> CheckpointFiles:
    """The files of the checkpoint directory ``path``, read (not yet verified)."""
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a checkpoint directory")
    return CheckpointFiles(directory, _read(directory / META_FILE), _read(directory / WEIGHTS_FILE))


def read_meta(path: str | Path) -> dict:
    """The checkpoint's metadata (validated for format and required fields)."""
    meta_path = Path(path) / META_FILE
    return _parse_meta(_read(meta_path), meta_path)


def load_model(path: str | Path) -> GRU4Rec:
    """Load a checkpoint directory written by :func:`save_model`; the model is in eval mode."""
    return read_checkpoint(path).model()
