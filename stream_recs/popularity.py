"""The popularity fallback: exponentially decayed counts of the known items, kept per clicks
partition, for events the model cannot answer (no model live, or a session with no item the model
knows).

Counts are kept per clicks partition (a ``Shard``), so they move with the partition: the worker
that holds a partition counts its clicks (``count``) and writes its shard's snapshot to a
compacted changelog, keyed by the partition (``snapshots``); the next holder starts from the
newest of that snapshot and what it holds itself (``take``), and every worker reads every
partition's snapshots (``observe``), so all of them offer the counts of all the clicks. A shard
records the next offset it has counted: a click replayed after a crash is not counted twice.

Only known items are counted and offered: the live model's items that are not retired
(``use_catalogue``), so ids a producer makes up never reach a cold user, nor push real items out
of the bounded counts. With no model live, no click is counted and the counts held are offered
as they are (all were counted under a model). A partition that nobody has counted yet holds
its share (1/``partitions``) of the live model's training counts.

Counts decay with ``half_life`` in processing time (an event's own timestamp is the producer's
to choose): each shard stores weights relative to its ``t_ref``, worth ``2 ** ((t_ref - t) /
half_life)`` at time t, so all of them decay alike and the ranking changes only when clicks are
counted. A shard keeps at most ``2 * max_items`` items in memory and writes its ``max_items``
most popular.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Iterable, Mapping

import orjson

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
SNAPSHOT_BYTES = 512 << 10  # a snapshot stays well under Kafka's default 1 MiB record limit
REBASE_HALF_LIVES = 64.0  # a shard's weights are rebased before they grow past 2**64 per click
REFRESH_S = 1.0  # the merged ranking is recomputed at most this often while clicks are counted


class Shard:
    """One clicks partition's decayed item counts and ``offset``, the next offset of the partition
    they have counted."""

    __slots__ = ("offset", "t_ref", "weights")

    def __init__(self, t_ref: float, offset: int = 0, weights: dict[str, float] | None = None) -> None:
        self.t_ref = t_ref
        self.offset = offset
        self.weights = weights if weights is not None else {}

    def add(self, item: str, now: float, half_life: float) -> None:
        """Count one click on ``item`` at time ``now``."""
        if now - self.t_ref > REBASE_HALF_LIVES * half_life:
            factor = 2.0 ** ((self.t_ref - now) / half_life)
            self.weights = {i: w * factor for i, w in self.weights.items()}
            self.t_ref = now
        self.weights[item] = self.weights.get(item, 0.0) + 2.0 ** ((now - self.t_ref) / half_life)

    def best(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` items of largest weight, best first."""
        return heapq.nlargest(n, self.weights.items(), key=lambda pair: pair[1])

    def prune(self, keep: int) -> None:
        """Forget all but the ``keep`` items of largest weight."""
        self.weights = dict(self.best(keep))

    def encode(self, keep: int) -> bytes:
        """The snapshot of the ``keep`` most popular items (fewer where their ids would make it
        larger than ``SNAPSHOT_BYTES``)."""
        items, size = [], 0
        for item, weight in self.best(keep):
            size += len(item.encode()) + 32
            if size > SNAPSHOT_BYTES:
                break
            items.append((item, weight))
        return orjson.dumps({"format": SNAPSHOT_FORMAT, "t_ref": self.t_ref, "offset": self.offset,
                             "items": items})

    @classmethod
    def decode(cls, raw: bytes) -> Shard:
        """A shard from its snapshot; ``ValueError`` when it is not one."""
        try:
            body = orjson.loads(raw)
            if body["format"] != SNAPSHOT_FORMAT:
                raise ValueError(f"snapshot format {body['format']!r}")
            t_ref, offset = float(body["t_ref"]), body["offset"]
            weights = {str(item): float(weight) for item, weight in body["items"]}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a popularity snapshot: {exc}") from exc
        if not (isinstance(offset, int) and offset >= 0 and math.isfinite(t_ref)):
            raise ValueError("not a popularity snapshot: bad offset or t_ref")
        if not all(math.isfinite(w) and w >= 0 for w in weights.values()):
            raise ValueError("not a popularity snapshot: bad weights")
        return cls(t_ref, offset, weights)


class _Catalogue:
    """The known items and the training counts that seed the partitions nobody has counted;
    ``since``: the time the seed counts from (set by the first call that gives a time)."""

    __slots__ = ("known", "seed", "since")

    def __init__(self, known: frozenset[str] | None, seed: dict[str, float]) -> None:
        self.known, self.seed = known, seed
        self.since: float | None = None


class Popularity:
    """The fallback's counts: the shards of the partitions this worker holds, which it counts,
    and the latest snapshot of every other one. ``partitions``: the clicks topic's partition
    count (the wiring sets it)."""

    def __init__(self, half_life: float, max_items: int, partitions: int = 1,
                 refresh: float = REFRESH_S) -> None:
        self.half_life = half_life
        self.max_items = max_items
        self.partitions = partitions
        self.refresh = refresh
        self._catalogue = _Catalogue(None, {})
        self._shards: dict[int, Shard] = {}
        self._owned: set[int] = set()
        self._dirty: set[int] = set()
        self._ranked: list[tuple[str, float]] | None = None
        self._ranked_at = -math.inf

    # --- what is known ----------------------------------------------------------------------
    def use_catalogue(self, known: Iterable[str] | None, counts: Mapping[str, float] | None = None) -> None:
        """Count and offer only ``known`` (None: no model live, nothing is counted); ``counts``:
        the live model's training counts per item, the seed of partitions nobody has counted.
        One assignment, so it may be called from another thread."""
        known_set = frozenset(known) if known is not None else None
        seed = {}
        if known_set is not None and counts:
            seed = dict(heapq.nlargest(self.max_items, ((i, float(c)) for i, c in counts.items()
                                                        if c > 0 and i in known_set),
                                       key=lambda pair: pair[1]))
        self._catalogue = _Catalogue(known_set, seed)
        self._ranked = None

    # --- ownership ----------------------------------------------------------------------------
    def take(self, partition: int, stored: bytes | None, now: float) -> None:
        """Count ``partition`` from now on, starting from whichever of its ``stored`` snapshot
        and the shard held here has counted further (neither: its share of the seed)."""
        self._owned.add(partition)
        self._adopt(partition, stored, newer_only=True)
        if partition not in self._shards:
            self._shards[partition] = self._seeded(now)
            self._dirty.add(partition)
        self._ranked = None

    def release(self, partitions: Iterable[int]) -> None:
        """Stop counting ``partitions`` (revoked); their shards stay, as the other workers' will."""
        self._owned.difference_update(partitions)

    def observe(self, partition: int, snapshot: bytes | None) -> None:
        """A snapshot of ``partition`` read from the changelog: it replaces the shard held unless
        this worker counts the partition, or holds a shard that has counted further."""
        if partition not in self._owned and self._adopt(partition, snapshot, newer_only=False):
            self._ranked = None

    def _adopt(self, partition: int, snapshot: bytes | None, newer_only: bool) -> bool:
        if not snapshot:
            return False
        try:
            shard = Shard.decode(snapshot)
        except ValueError as exc:
            log.warning("popularity counts of partition %d ignored: %s", partition, exc)
            return False
        held = self._shards.get(partition)
        if held is not None and (shard.offset <= held.offset if newer_only else shard.offset < held.offset):
            return False
        self._shards[partition] = shard
        return True

    def _seeded(self, now: float) -> Shard:
        catalogue = self._catalogue
        if catalogue.since is None:
            catalogue.since = now
        share = 1.0 / self.partitions
        return Shard(catalogue.since, 0, {item: count * share for item, count in catalogue.seed.items()})

    # --- counting ------------------------------------------------------------------------------
    def count(self, clicks: Iterable[tuple[int, int, str]], now: float) -> None:
        """Count clicks, each ``(partition, offset, item_id)``, at time ``now``: the known items,
        each click once (an offset below the shard's is a replay). A partition not taken yet is
        taken from what is held here."""
        known = self._catalogue.known
        if known is None:
            return
        touched = set()
        for partition, offset, item in clicks:
            if partition not in self._owned:
                self.take(partition, None, now)
            shard = self._shards[partition]
            if offset < shard.offset:
                continue
            shard.offset = offset + 1
            touched.add(partition)
            if item in known:
                shard.add(item, now, self.half_life)
        for partition in touched:
            shard = self._shards[partition]
            if len(shard.weights) > 2 * self.max_items:
                shard.prune(self.max_items)
        self._dirty |= touched

    def snapshots(self, partitions: Iterable[int]) -> dict[int, bytes]:
        """The snapshot of each of ``partitions`` (the ones the changelog may be written for now)
        that this worker counts and that changed since its last one."""
        due = self._dirty & self._owned & set(partitions)
        self._dirty -= due
        return {p: self._shards[p].encode(self.max_items) for p in sorted(due)}

    # --- the offer -----------------------------------------------------------------------------
    def top(self, n: int, now: float) -> list[tuple[str, float]]:
        """The ``n`` most popular known items with their share of the known items' decayed total,
        best first (recomputed at most every ``refresh`` seconds while only counts change)."""
        if n <= 0:
            return []
        if self._ranked is None or now - self._ranked_at >= self.refresh:
            self._ranked, self._ranked_at = self._rank(now), now
        return self._ranked[:n]

    def _rank(self, now: float) -> list[tuple[str, float]]:
        catalogue = self._catalogue
        parts = [(shard, 1.0) for shard in self._shards.values()]
        unseen = self.partitions - sum(p < self.partitions for p in self._shards)
        if unseen > 0 and catalogue.seed:
            parts.append((self._seeded(now), float(unseen)))
        if not parts:
            return []
        newest = max(shard.t_ref for shard, _ in parts)
        totals: dict[str, float] = {}
        for shard, times in parts:
            factor = times * 2.0 ** ((shard.t_ref - newest) / self.half_life)
            for item, weight in shard.weights.items():
                totals[item] = totals.get(item, 0.0) + weight * factor
        if catalogue.known is not None:
            totals = {item: value for item, value in totals.items() if item in catalogue.known}
        total = sum(totals.values())
        if total <= 0:
            return []
        best = heapq.nlargest(self.max_items, totals.items(), key=lambda pair: pair[1])
        return [(item, value / total) for item, value in best]
