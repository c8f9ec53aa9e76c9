"""Session-parallel mini-batches (GRU4Rec): B lanes, each walking through one sequence.

At every step each lane contributes (current item, next item). When a lane's sequence ends the
next unused sequence takes the lane and the lane is flagged for a hidden-state reset. When no
sequences are left, finished lanes are dropped (``keep`` tells which lanes survive). There is no
padding: every row of every step is a real (input, target) pair.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Step:
    """One training step over the active lanes."""

    keep: torch.Tensor | None  # lanes of the previous step that continue (None: all of them)
    reset: torch.Tensor  # bool [n]: lane starts a new sequence, zero its state before stepping
    inputs: torch.Tensor  # long [n]
    targets: torch.Tensor  # long [n]


def session_parallel(sequences: Sequence[np.ndarray], batch_size: int) -> Iterator[Step]:
    """Yield steps over ``sequences`` (in the given order; length-1 sequences have no target)."""
    seqs = [s for s in sequences if len(s) >= 2]
    if not seqs:
        return
    data = np.concatenate(seqs).astype(np.int64)
    lengths = np.array([len(s) for s in seqs], np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    ends = starts + lengths
    n_lanes = min(batch_size, len(seqs))
    cursor = starts[:n_lanes].copy()
    end = ends[:n_lanes].copy()
    next_seq = n_lanes
    reset = np.ones(n_lanes, bool)
    keep = None
    while len(cursor):
        yield Step(
            None if keep is None else torch.from_numpy(keep),
            torch.from_numpy(reset.copy()),
            torch.from_numpy(data[cursor]),
            torch.from_numpy(data[cursor + 1]),
        )
        cursor += 1
        done = np.flatnonzero(cursor + 1 >= end)
        reset[:] = False
        keep = None
        if len(done):
            n_new = min(len(done), len(seqs) - next_seq)
            lanes = done[:n_new]
            cursor[lanes] = starts[next_seq:next_seq + n_new]
            end[lanes] = ends[next_seq:next_seq + n_new]
            reset[lanes] = True
            next_seq += n_new
            if n_new < len(done):
                alive = np.ones(len(cursor), bool)
                alive[done[n_new:]] = False
                keep = np.flatnonzero(alive)
                cursor, end, reset = cursor[keep], end[keep], reset[keep]
