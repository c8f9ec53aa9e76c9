"""The files of the trainer's rolling window (``window.py``): click lines, segments, durable writes.

A click is one orjson line ``[user, item, ts, session or null]`` (UTF-8, so any id round-trips);
a file is only ever read up to the length its manifest committed, in whole lines.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from stream_recs.datasets import Events, from_rows, sort_by_time

Row = tuple[str, str, float, str | None]  # user, item, ts (epoch seconds), session or None


@dataclass
class Segment:
    name: str
    length: int  # committed bytes
    ts: np.ndarray  # float64, one per line
    ends: np.ndarray  # int64, the end offset of each line

    def lines(self, directory: Path, rows: np.ndarray) -> list[bytes]:
        data = read_committed(directory / self.name, self.length)
        starts = np.concatenate(([0], self.ends[:-1]))
        return [data[starts[r]:self.ends[r]] for r in rows]


def encode_row(row: Row) -> bytes:
    user, item, ts, session = row
    try:
        if isinstance(user, str) and isinstance(item, str) and isinstance(session, str | None) \
                and math.isfinite(float(ts)):
            return orjson.dumps([user, item, float(ts), session]) + b"\n"
    except (TypeError, ValueError):  # ts not a number, an id with a lone surrogate
        pass
    raise ValueError(f"need (user, item, finite ts, session or None), unicode ids: {row!r:.200}")


def read_committed(path: Path, length: int) -> bytes:
    """The committed bytes of a file: whole lines."""
    with open(path, "rb") as handle:
        data = handle.read(length)
    if len(data) != length or (data and not data.endswith(b"\n")):
        raise ValueError(f"{path} does not hold the {length} bytes of lines its manifest lists")
    return data


def split_lines(data: bytes) -> list[bytes]:
    return [line + b"\n" for line in data.split(b"\n")[:-1]]


def write_at(path: Path, offset: int, chunks: list[bytes]) -> int:
    """Write ``chunks`` at ``offset``, cutting off what lay past it, fsync; the new length."""
    with open(path, "r+b" if offset else "wb") as handle:
        handle.truncate(offset)
        handle.seek(offset)
        handle.write(b"".join(chunks))
        handle.flush()
        os.fsync(handle.fileno())
        return handle.tell()


def fsync_path(path: Path) -> None:
    """Flush a file, or a directory (which makes new, renamed and deleted names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def to_events(lines: list[bytes]) -> Events:
    """Time-ordered Events of click lines (ties keep their order); session ids are kept only when
    every click has one, as ``datasets.read_kafka_clicks`` does."""
    rows = [orjson.loads(line) for line in lines]
    sessions = [r[3] for r in rows]
    with_sessions = bool(rows) and all(s is not None for s in sessions)
    return sort_by_time(from_rows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                                  sessions if with_sessions else None))
