"""The canary: a candidate model serves a deterministic share of users while the online HR@K of
both models is counted, until a statistical test promotes it or rolls it back. Pure, no Kafka.

- **Who.** A user is in the candidate's share when a hash of the candidate's version and the user
  id falls below ``share`` (``in_canary``): every worker agrees without talking, each candidate
  draws its own users, and a user stays on one model for the whole canary.
- **What is counted.** An event is judged against the answer that preceded it (hit or not, and
  its rank: ``scoring.py``), and counted for the candidate or the live model only when that
  answer came from the model serving the user's side (a user's first answer after the canary
  started came from the live model, and is not the candidate's).
- **Where.** Counts are kept per clicks partition (``CanaryCounts``), like the fallback's
  popularity counts, so they move with the partition, survive restarts through the shared counts'
  changelog, and every worker reads every partition's (``observe``): all sum the same counts.
  Each shard records the next offset it has counted, so a replayed click is not counted twice.
- **The test** (``judge``): one-sided non-inferiority of the candidate's hit rate, with
  Agresti-Caffo adjusted proportions (one hit and one miss added to each side). With
  ``d = p_candidate - p_live`` and margin ``m = tolerance * p_live``, ``z = (d + m) / se``. Once
  both sides have ``min_events`` evaluations, ``z >= z_min`` promotes (not worse beyond the
  margin), ``z <= -z_min`` rolls back (worse beyond it), and at ``max_events`` an undecided
  candidate is rolled back. The counts are looked at again every few seconds: ``z_min`` is
  strict (2.33, 1% one-sided per look) to keep repeated looks from deciding on noise.
- **Agreement.** The first worker to reach a verdict publishes it on model-updates; every
  worker, itself included, acts on the topic's first decision (``rollout.py``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from stream_recs.config import Canary
from stream_recs.messages import PROMOTE, ROLLBACK

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
LIVE_ARM, CANDIDATE_ARM = 0, 1
TEST = "one-sided non-inferiority z-test of online HR@K, Agresti-Caffo adjusted"


def in_canary(user_id: str, candidate_version: str, share: float) -> bool:
    """Is ``user_id`` in the candidate's share of users?"""
    digest = hashlib.blake2b(f"{candidate_version}\0{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < share * 2.0**64


@dataclass(frozen=True)
class Arm:
    """One side's online evaluations: how many, how many hits, the sum of reciprocal ranks."""

    evaluated: int = 0
    hits: int = 0
    reciprocal: float = 0.0

    def __add__(self, other: Arm) -> Arm:
        return Arm(self.evaluated + other.evaluated, self.hits + other.hits,
                   self.reciprocal + other.reciprocal)

    def described(self) -> dict:
        n = self.evaluated
        return {"evaluated": n, "hits": self.hits, "hr": self.hits / n if n else None,
                "mrr": self.reciprocal / n if n else None}


@dataclass(frozen=True)
class Verdict:
    """``PROMOTE`` or ``ROLLBACK``, and what it was decided on."""

    decision: str
    evidence: dict


def z_score(live: Arm, candidate: Arm, tolerance: float) -> float:
    """The non-inferiority statistic of the module docstring."""
    p_live = (live.hits + 1) / (live.evaluated + 2)
    p_candidate = (candidate.hits + 1) / (candidate.evaluated + 2)
    se = math.sqrt(p_live * (1 - p_live) / (live.evaluated + 2)
                   + p_candidate * (1 - p_candidate) / (candidate.evaluated + 2))
    return (p_candidate - p_live + tolerance * p_live) / se


def judge(live: Arm, candidate: Arm, rules: Canary) -> Verdict | None:
    """The canary's verdict on these counts (None: not yet)."""
    if min(live.evaluated, candidate.evaluated) < rules.min_events:
        return None
    z = z_score(live, candidate, rules.tolerance)
    if z >= rules.z:
        decision, why = PROMOTE, "not worse beyond the tolerance"
    elif z <= -rules.z:
        decision, why = ROLLBACK, "worse beyond the tolerance"
    elif candidate.evaluated >= rules.max_events:
        decision, why = ROLLBACK, f"not shown to be not worse after {rules.max_events} evaluations"
    else:
        return None
    return Verdict(decision, {"live": live.described(), "candidate": candidate.described(), "z": round(z, 3),
                              "z_min": rules.z, "tolerance": rules.tolerance, "why": why, "test": TEST})


class _Shard:
    """One clicks partition's counts for one candidate, and the next offset counted."""

    __slots__ = ("arms", "offset", "version")

    def __init__(self, version: str, offset: int = 0, arms: list[Arm] | None = None) -> None:
        self.version, self.offset = version, offset
        self.arms = arms or [Arm(), Arm()]

    def encode(self) -> bytes:
        return orjson.dumps({"format": SNAPSHOT_FORMAT, "version": self.version, "offset": self.offset,
                             "arms": [[a.evaluated, a.hits, a.reciprocal] for a in self.arms]})

    @classmethod
    def decode(cls, raw: bytes) -> _Shard:
        try:
            body = orjson.loads(raw)
            if body["format"] != SNAPSHOT_FORMAT:
                raise ValueError(f"snapshot format {body['format']!r}")
            arms = [Arm(int(n), int(h), float(rr)) for n, h, rr in body["arms"]]
            version, offset = str(body["version"]), int(body["offset"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a canary snapshot: {exc}") from exc
        if len(arms) != 2 or offset < 0:
            raise ValueError("not a canary snapshot: bad arms or offset")
        return cls(version, offset, arms)


class CanaryCounts:
    """The online counts of the current candidate's canary: the shards of the clicks partitions
    this worker holds, which it counts, and the latest snapshot of every other one (the same
    ownership protocol as ``popularity.Popularity``: ``take``, ``release``, ``observe``,
    ``snapshots``)."""

    def __init__(self) -> None:
        self.version: str | None = None  # the candidate counted for (None: no canary)
        self._shards: dict[int, _Shard] = {}
        self._read: dict[int, _Shard] = {}  # the last snapshot read of each partition, any candidate
        self._owned: set[int] = set()
        self._dirty: set[int] = set()

    def follow(self, version: str | None) -> None:
        """Count for candidate ``version`` from now on (None: no canary), from the snapshots read
        of it (a worker may read them before it knows the candidate); other counts go."""
        if version != self.version:
            self.version = version
            self._shards = {p: s for p, s in self._read.items() if s.version == version}

    def take(self, partition: int, stored: bytes | None, now: float) -> None:
        """Count ``partition`` from now on, from its ``stored`` snapshot when that is further."""
        self._owned.add(partition)
        self._adopt(partition, stored, newer_only=True)

    def release(self, partitions: Iterable[int]) -> None:
        """Stop counting ``partitions`` (revoked)."""
        self._owned.difference_update(partitions)

    def observe(self, partition: int, snapshot: bytes | None) -> None:
        """A snapshot read from the changelog: kept unless this worker counts the partition."""
        if partition not in self._owned:
            self._adopt(partition, snapshot, newer_only=False)

    def _adopt(self, partition: int, snapshot: bytes | None, newer_only: bool) -> None:
        if not snapshot:
            return
        try:
            shard = _Shard.decode(snapshot)
        except ValueError as exc:
            log.warning("canary counts of partition %d ignored: %s", partition, exc)
            return
        self._read[partition] = shard
        held = self._shards.get(partition)
        if shard.version != self.version or (
            held is not None and (shard.offset <= held.offset if newer_only else shard.offset < held.offset)
        ):
            return
        self._shards[partition] = _Shard(shard.version, shard.offset, list(shard.arms))

    def count(self, evaluations: Iterable[tuple[int, int, int, int]]) -> None:
        """Count evaluations, each ``(partition, offset, arm, rank)`` (rank 0: a miss), once each."""
        if self.version is None:
            return
        for partition, offset, arm, rank in evaluations:
            shard = self._shards.get(partition)
            if shard is None:
                shard = self._shards[partition] = _Shard(self.version)
            if offset < shard.offset:
                continue
            shard.offset = offset + 1
            shard.arms[arm] += Arm(1, rank > 0, 1.0 / rank if rank else 0.0)
            self._dirty.add(partition)
            self._owned.add(partition)

    def snapshots(self, partitions: Iterable[int]) -> dict[int, bytes]:
        """The snapshot of each of ``partitions`` this worker counts that changed since its last."""
        due = self._dirty & self._owned & set(partitions)
        self._dirty -= due
        return {p: self._shards[p].encode() for p in sorted(due) if p in self._shards}

    def totals(self) -> tuple[Arm, Arm]:
        """(live, candidate) counts over every partition."""
        live = candidate = Arm()
        for shard in self._shards.values():
            live, candidate = live + shard.arms[LIVE_ARM], candidate + shard.arms[CANDIDATE_ARM]
        return live, candidate
