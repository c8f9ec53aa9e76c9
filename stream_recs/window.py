"""The continuous-learning trainer's rolling window of recent clicks, on local disk.

The trainer appends the clicks it consumes with the Kafka offsets that follow them, commits those
offsets to Kafka only once :meth:`RollingWindow.append` returns, resumes from
:attr:`RollingWindow.offsets` after a restart, and reads the window back as ``Events`` each cycle.
Evicted clicks feed a uniform reservoir replayed against forgetting. One writer at a time.

Files (orjson lines, UTF-8, so any id round-trips):

- ``seg-<n>.jsonl``: segments of ``[user, item, ts, session or null]`` lines. Only the newest
  grows, at its end, up to ``max_bytes // SEGMENTS_PER_BUDGET`` bytes; committed bytes are never
  rewritten.
- ``replay-<n>.jsonl``: the reservoir as a log of ``<slot> <click line>`` (a later line replaces
  its slot's earlier one), rewritten compactly at ``REPLAY_LOG_FACTOR`` lines per slot.
- ``manifest.json``, the commit point: the segments with their committed lengths and line counts,
  the first segment's evicted prefix, the age horizon, the replay log's committed length, the
  eviction count and the offsets (``"topic:partition"`` -> next offset) the window covers. Written
  to a temporary file, fsynced and renamed over the old one once every file it names is fsynced.

Crash safety: opening reads exactly what the manifest lists, cuts off bytes past a committed
length (a torn append) and deletes the window's files it does not list (written before a crash,
or a temporary manifest); an exception inside a commit reloads the same way. So after kill -9 the
window and its offsets are those of the last append that returned.

Bounds, applied by every :meth:`append` and :meth:`trim` (after reopening with other bounds, by
the next one); the earliest appended clicks go first:

- ``max_events``: never more clicks in the window.
- ``max_age``: no click with ``ts < horizon``: the newest ts appended, or the ``now`` of trim,
  less ``max_age``; the horizon never moves back, and a click that arrives older is evicted.
- ``max_bytes``: :attr:`size_bytes` (every file the window keeps) is never over it when append or
  trim returns; during one, the batch being written may pass it. The replay log takes at most
  ``REPLAY_SHARE`` of it (past that it is compacted, then keeps a random subset of its slots for
  good: still a uniform sample, of fewer clicks); for the rest the oldest segments are deleted
  whole, so up to one segment plus the evicted lines of kept segments hold no window click.
- ``max_replay``: the reservoir holds at most this many clicks, a uniform sample (Algorithm R,
  seeded by the eviction count) of all clicks ever evicted from the window, and nothing else.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import orjson

from stream_recs.datasets import Events
from stream_recs.window_files import (
    Row,
    Segment,
    encode_row,
    fsync_path,
    read_committed,
    split_lines,
    to_events,
    write_at,
)

FORMAT = 1
MANIFEST = "manifest.json"
TEMP_SUFFIX = ".tmp"
SEGMENT, REPLAY = "seg", "replay"
SEGMENTS_PER_BUDGET = 16  # segment size = max_bytes // this: the byte bound's granularity
REPLAY_LOG_FACTOR = 2  # the replay log is compacted at this many lines per slot
REPLAY_SHARE = 0.25  # of max_bytes, the most the replay log may take


class RollingWindow:
    """A bounded, crash-safe window of recent clicks plus a replay reservoir of evicted ones
    (the module docstring states the files, the bounds and the crash guarantees)."""

    def __init__(self, directory: str | Path, max_events: int, max_age: float, max_bytes: int,
                 max_replay: int) -> None:
        if max_events < 1 or not max_age > 0 or max_bytes < 1 or max_replay < 0:
            raise ValueError("need max_events >= 1, max_age > 0, max_bytes >= 1, max_replay >= 0")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_events, self.max_age, self.max_bytes, self.max_replay = (
            max_events, max_age, max_bytes, max_replay)
        self._segment_bytes = max(1, max_bytes // SEGMENTS_PER_BUDGET)
        self._load()

    # --- reading -----------------------------------------------------------------------------
    @property
    def offsets(self) -> dict[str, int]:
        """The next offset of each ``"topic:partition"`` the window covers (where to resume)."""
        return dict(self._offsets)

    @property
    def size_bytes(self) -> int:
        """Bytes of every file the window keeps: segments, replay log and manifest."""
        return sum(s.length for s in self._segments) + self._replay_length + self._manifest_size

    def __len__(self) -> int:
        return sum(int(m.sum()) for m in self._masks())

    def events(self) -> Events:
        """The clicks in the window, time-ordered (ties in append order)."""
        lines: list[bytes] = []
        for seg, mask in zip(self._segments, self._masks(), strict=True):
            lines += seg.lines(self.directory, np.flatnonzero(mask))
        return to_events(lines)

    def replay(self, n: int, seed: int | np.random.Generator | None = None) -> Events:
        """Up to ``n`` distinct clicks drawn at random from the reservoir, time-ordered."""
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(self._slots), size=min(n, len(self._slots)), replace=False))
        return to_events([self._slots[i] for i in pick])

    def stats(self) -> dict:
        """Counts and time span for metrics."""
        ts = np.concatenate([s.ts[m] for s, m in zip(self._segments, self._masks(), strict=True)]
                            or [np.zeros(0)])
        oldest, newest = (float(ts.min()), float(ts.max())) if len(ts) else (None, None)
        return {"events": len(ts), "segments": len(self._segments), "bytes": self.size_bytes,
                "replay_events": len(self._slots), "evicted": self._seen, "oldest_ts": oldest,
                "newest_ts": newest, "span_s": newest - oldest if len(ts) else 0.0}

    # --- writing -----------------------------------------------------------------------------
    def append(self, rows: Iterable[Row], offsets: Mapping[str, int]) -> None:
        """Add clicks (user, item, ts, session or None) and the offsets that follow them; durable
        when it returns. A bad row raises ValueError before anything is written."""
        rows = list(rows)
        lines = [encode_row(row) for row in rows]
        ts = np.array([float(row[2]) for row in rows], np.float64)
        offsets = {str(k): int(v) for k, v in offsets.items()}
        if any(v < 0 for v in offsets.values()):
            raise ValueError(f"negative offset in {offsets}")
        newest = float(ts.max()) if len(ts) else -math.inf
        self._commit(lines, ts, offsets, newest)

    def trim(self, now: float) -> None:
        """Apply the bounds with the age horizon at ``now - max_age`` (wall clock); durable."""
        self._commit([], np.zeros(0), {}, now)

    def forget(self, users: Iterable[str]) -> int:
        """Erase every click of ``users`` from the window and the replay sample (a forget
        request): every file is rewritten without them, and the old files are deleted once the
        new manifest is durable. Returns the clicks erased."""
        gone = set(users)
        lines: list[bytes] = []
        ts: list[float] = []
        for seg, mask in zip(self._segments, self._masks(), strict=True):
            for line, t in zip(seg.lines(self.directory, np.flatnonzero(mask)), seg.ts[mask], strict=True):
                if orjson.loads(line)[0] not in gone:
                    lines.append(line)
                    ts.append(float(t))
        slots = [line for line in self._slots if orjson.loads(line)[0] not in gone]
        erased = len(self) - len(lines) + len(self._slots) - len(slots)
        if erased:
            try:
                self._dropped, self._segments, self._head = list(self._segments), [], 0
                self._slots, self._rewrite = slots, True
                self._write_out(self._write_rows(lines, np.array(ts, np.float64)))
            except BaseException:
                self._load()
                raise
        return erased

    # --- internals ---------------------------------------------------------------------------
    def _name(self, kind: str) -> str:
        """The name the next new file of ``kind`` gets."""
        return f"{kind}-{self._next:012d}.jsonl"

    def _load(self) -> None:
        """(Re)read the state the manifest lists; delete and cut off everything else."""
        path = self.directory / MANIFEST
        manifest = orjson.loads(path.read_bytes()) if path.exists() else {
            "format": FORMAT, "segments": [], "head": 0, "horizon": None, "next": 0, "offsets": {},
            "replay": [None, 0, 0, self.max_replay]}
        if manifest["format"] != FORMAT:
            raise ValueError(f"{path}: unknown format {manifest['format']!r}")
        self._manifest_size = path.stat().st_size if path.exists() else 0
        self._offsets: dict[str, int] = manifest["offsets"]
        self._head, self._next = manifest["head"], manifest["next"]
        self._horizon = -math.inf if manifest["horizon"] is None else manifest["horizon"]
        self._segments = [self._load_segment(*entry) for entry in manifest["segments"]]
        self._replay_name, self._replay_length, self._seen, self._capacity = manifest["replay"]
        self._slots: list[bytes] = []
        log = [] if self._replay_name is None else split_lines(
            read_committed(self.directory / self._replay_name, self._replay_length))
        for slot, line in (entry.split(b" ", 1) for entry in log):
            self._slots[int(slot):int(slot) + 1] = [line]  # the next free slot, or a replacement
        self._replay_lines = len(log)
        self._pending: list[bytes] = []  # replay log lines of this commit
        self._rewrite = False  # this commit rewrites the replay log compactly
        self._dropped: list[Segment] = []  # segments this commit deletes
        listed = {s.name: s.length for s in self._segments}
        if self._replay_name is not None:
            listed[self._replay_name] = self._replay_length
        for file in self.directory.iterdir():
            if file.name in listed:
                if file.stat().st_size > listed[file.name]:
                    os.truncate(file, listed[file.name])
            elif file.name.endswith(TEMP_SUFFIX) or (
                    file.name.startswith((SEGMENT + "-", REPLAY + "-")) and file.suffix == ".jsonl"):
                file.unlink()

    def _load_segment(self, name: str, length: int, count: int) -> Segment:
        lines = split_lines(read_committed(self.directory / name, length))
        if len(lines) != count:
            raise ValueError(f"{name}: {len(lines)} clicks, its manifest lists {count}")
        ts = np.array([orjson.loads(line)[2] for line in lines], np.float64)
        return Segment(name, length, ts, np.cumsum([len(line) for line in lines], dtype=np.int64))

    def _masks(self) -> list[np.ndarray]:
        """Which lines of each segment are in the window."""
        masks = [s.ts >= self._horizon for s in self._segments]
        if masks:
            masks[0][:self._head] = False
        return masks

    def _commit(self, lines: list[bytes], ts: np.ndarray, offsets: dict[str, int], newest: float) -> None:
        try:
            before = dict(zip((s.name for s in self._segments), self._masks(), strict=True))
            created = self._write_rows(lines, ts)
            for seg in self._segments:  # the new clicks count as in the window until evicted
                had = before.get(seg.name, np.zeros(0, bool))
                before[seg.name] = np.concatenate([had, np.ones(len(seg.ts) - len(had), bool)])
            self._offsets.update(offsets)
            self._horizon = max(self._horizon, newest - self.max_age)
            if self._capacity > self.max_replay:
                self._shrink_replay(self.max_replay)
            self._drop_dead()
            self._evict_oldest(sum(int(m.sum()) for m in self._masks()) - self.max_events)
            before = self._feed_evicted(before)
            self._fit_replay()
            while self._planned_size() > self.max_bytes:  # the oldest segments give way
                if not self._segments:
                    raise ValueError(f"max_bytes={self.max_bytes} cannot hold the manifest")
                self._dropped.append(self._segments.pop(0))
                self._head = 0
                before = self._feed_evicted(before)
                self._fit_replay()
            self._write_out(created)
        except BaseException:
            self._load()
            raise

    def _write_out(self, created: list[str]) -> None:
        """Write the replay log's part, make the new files durable, commit the manifest, then
        delete the files it no longer lists (``created``: the new segments' names)."""
        name, length, offset, chunks = self._replay_plan()
        manifest = self._manifest_bytes(name, length)
        doomed = [s.name for s in self._dropped]
        if name != self._replay_name:
            self._next += 1
            created.append(name)
            doomed += [self._replay_name] if self._replay_name is not None else []
        if chunks or name != self._replay_name:
            write_at(self.directory / name, offset, chunks)
        if created:
            fsync_path(self.directory)
        self._write_manifest(manifest)
        for doomed_name in doomed:
            (self.directory / doomed_name).unlink(missing_ok=True)
        self._replay_lines = len(self._slots) if self._rewrite else self._replay_lines + len(self._pending)
        self._replay_name, self._replay_length = name, length
        self._pending, self._rewrite, self._dropped = [], False, []

    def _write_rows(self, lines: list[bytes], ts: np.ndarray) -> list[str]:
        """Append lines to the newest segment and to new ones as it fills; the new files' names."""
        created: list[str] = []
        sizes = np.array([len(line) for line in lines], np.int64)
        start = 0
        while start < len(lines):
            seg = self._segments[-1] if self._segments else None
            room = self._segment_bytes - seg.length if seg is not None else 0
            end = start + int(np.searchsorted(np.cumsum(sizes[start:]), room, side="right"))
            if end == start:  # full: start another segment, with at least one line
                seg = Segment(self._name(SEGMENT), 0, np.zeros(0), np.zeros(0, np.int64))
                self._next += 1
                self._segments.append(seg)
                created.append(seg.name)
                fit = np.searchsorted(np.cumsum(sizes[start:]), self._segment_bytes, side="right")
                end = start + max(1, int(fit))
            length = write_at(self.directory / seg.name, seg.length, lines[start:end])
            seg.ends = np.concatenate([seg.ends, seg.length + np.cumsum(sizes[start:end])])
            seg.ts = np.concatenate([seg.ts, ts[start:end]])
            seg.length = length
            start = end
        return created

    def _drop_dead(self) -> None:
        """Drop segments with no click left in the window."""
        masks = self._masks()
        if masks and not masks[0].any():
            self._head = 0
        self._dropped += [s for s, m in zip(self._segments, masks, strict=True) if not m.any()]
        self._segments = [s for s, m in zip(self._segments, masks, strict=True) if m.any()]

    def _evict_oldest(self, excess: int) -> None:
        """Move the head past the ``excess`` earliest appended clicks of the window."""
        while excess > 0:
            visible = np.flatnonzero(self._masks()[0])
            if len(visible) <= excess:
                self._dropped.append(self._segments.pop(0))
                self._head = 0
                excess -= len(visible)
            else:
                self._head = int(visible[excess - 1]) + 1
                excess = 0

    def _feed_evicted(self, before: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Feed the reservoir with the clicks in ``before`` that left the window; the masks now."""
        after = dict(zip((s.name for s in self._segments), self._masks(), strict=True))
        for seg in self._dropped + self._segments:
            if seg.name in before:
                gone = before[seg.name] & ~after[seg.name] if seg.name in after else before[seg.name]
                if gone.any():  # read only the segments that lost clicks
                    self._feed(seg.lines(self.directory, np.flatnonzero(gone)))
        return after

    def _feed(self, lines: list[bytes]) -> None:
        """Algorithm R over evicted clicks: the i-th ever evicted takes slot i while slots are
        free, then a random slot with probability capacity / (i + 1)."""
        index = self._seen + np.arange(len(lines))
        draws = (np.random.default_rng(self._seen).random(len(lines)) * (index + 1)).astype(np.int64)
        slots = np.where(index < self._capacity, index, draws)
        for k in np.flatnonzero(slots < self._capacity):
            slot = int(slots[k])
            self._slots[slot:slot + 1] = [lines[k]]
            self._pending.append(b"%d " % slot + lines[k])
        self._seen += len(lines)
        if self._replay_lines + len(self._pending) > REPLAY_LOG_FACTOR * max(1, self._capacity):
            self._rewrite = True

    def _fit_replay(self) -> None:
        """Hold the replay log to its share of max_bytes: compact it, then keep fewer slots."""
        limit = self.max_bytes * REPLAY_SHARE
        while (size := self._replay_plan()[1]) > limit:
            if not self._rewrite and self._replay_lines + len(self._pending) > len(self._slots):
                self._rewrite = True
            else:
                self._shrink_replay(min(len(self._slots) - 1, int(len(self._slots) * limit / size)))

    def _shrink_replay(self, keep: int) -> None:
        """Keep a random subset of ``keep`` slots and make that the capacity from now on."""
        rng = np.random.default_rng(self._seen)
        chosen = np.sort(rng.choice(len(self._slots), size=min(keep, len(self._slots)), replace=False))
        self._slots = [self._slots[i] for i in chosen]
        self._capacity, self._rewrite = keep, True

    def _replay_plan(self) -> tuple[str | None, int, int, list[bytes]]:
        """What this commit writes of the replay log: file, its length after, offset, lines."""
        if self._rewrite or (self._pending and self._replay_name is None):
            chunks = ([b"%d " % i + line for i, line in enumerate(self._slots)] if self._rewrite
                      else self._pending)
            return self._name(REPLAY), sum(map(len, chunks)), 0, chunks
        return self._replay_name, self._replay_length + sum(map(len, self._pending)), \
            self._replay_length, self._pending

    def _planned_size(self) -> int:
        name, length = self._replay_plan()[:2]
        return sum(s.length for s in self._segments) + length + len(self._manifest_bytes(name, length))

    def _manifest_bytes(self, replay_name: str | None, replay_length: int) -> bytes:
        new_file = replay_name != self._replay_name
        return orjson.dumps({
            "format": FORMAT, "segments": [[s.name, s.length, len(s.ts)] for s in self._segments],
            "head": self._head, "horizon": None if self._horizon == -math.inf else self._horizon,
            "next": self._next + new_file, "offsets": self._offsets,
            "replay": [replay_name, replay_length, self._seen, self._capacity],
        })

    def _write_manifest(self, data: bytes) -> None:
        temp = self.directory / (MANIFEST + TEMP_SUFFIX)
        write_at(temp, 0, [data])
        os.replace(temp, self.directory / MANIFEST)
        fsync_path(self.directory)
        self._manifest_size = len(data)
