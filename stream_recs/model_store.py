"""The models directory the trainer writes and the workers read: each checkpoint appears whole or
not at all.

A checkpoint is written into ``.partial-<name>`` beside the others, flushed to disk, then renamed
to ``<name>`` (a rename within one file system is atomic), and the directory itself is flushed,
so a worker never reads half a checkpoint, and a trainer killed mid-write leaves only a
``.partial-`` directory, which the next start removes. Older checkpoints are pruned (``prune``):
the newest few stay, and any a worker may still load (the live model, a candidate, the newest
announced one).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from stream_recs.models import GRU4Rec, save_model
from stream_recs.window_files import fsync_path

PARTIAL = ".partial-"


class ModelStore:
    """Checkpoints under ``root``, one directory each, named by model version."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def clean(self) -> list[str]:
        """Remove what a killed writer left (``.partial-`` directories); returns their names."""
        left = sorted(p.name for p in self.root.glob(f"{PARTIAL}*"))
        for name in left:
            shutil.rmtree(self.root / name)
        return left

    def write(self, model: GRU4Rec, **meta: object) -> Path:
        """Save ``model`` (``meta``: ``save_model``'s keyword arguments) as ``root/<version>``,
        atomically; an existing checkpoint of that version is an error."""
        final = self.root / model.version
        if final.exists():
            raise FileExistsError(f"{final} exists")
        partial = self.root / f"{PARTIAL}{model.version}"
        shutil.rmtree(partial, ignore_errors=True)
        save_model(model, partial, **meta)
        for file in partial.iterdir():
            fsync_path(file)
        fsync_path(partial)
        os.rename(partial, final)
        fsync_path(self.root)
        return final

    def prune(self, keep: int, protected: Iterable[Path]) -> list[str]:
        """Remove all but the ``keep`` newest checkpoints (by write time) and the ``protected``
        ones; returns the names removed."""
        protected = {Path(p).resolve() for p in protected}
        written = sorted((p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(PARTIAL)),
                         key=lambda p: p.stat().st_mtime_ns, reverse=True)
        removed = [p for p in written[keep:] if p.resolve() not in protected]
        for path in removed:
            shutil.rmtree(path)
        if removed:
            fsync_path(self.root)
        return [p.name for p in removed]

