"""The item registry: a model's vocabulary as an append-only lineage, so that an item keeps its
index across model versions, and states written under one model are read by every later one.

A model trained from a parent (``extend``) lists the parent's item ids in the same order, then the
items it adds; no item is ever renumbered or removed. The lineage is tagged by ``lineage``, the
fingerprint of its first vocabulary (so a checkpoint written before registries existed, read as a
lineage of its own, keeps the tag its states already carry). A session state records the lineage,
not the model: any model of the lineage reads it, an index below its item count means the same
item, and an index at or above it is an item that model lacks (written by a newer model, read
after a rollback), which it drops.

An item leaves ranking by retirement, never by removal: ``retired`` maps an id to why, either
``RETIRED_UNSEEN`` (no click for longer than a configured time, undone when it is clicked again)
or ``RETIRED_OPERATOR`` (``stream-recs retire-items``, undone only by the operator). ``last_seen``
holds each item's newest event time in whole seconds (0: unknown, as in a checkpoint from before
registries). The registry travels in the checkpoint's ``meta.json``, which the signature covers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

RETIRED_UNSEEN = "unseen"
RETIRED_OPERATOR = "operator"
_REASONS = (RETIRED_UNSEEN, RETIRED_OPERATOR)


class RegistryError(ValueError):
    """A registry that is inconsistent, or a change that would renumber or forget an item."""


def vocabulary_fingerprint(item_ids: Sequence[str]) -> int:
    """Non-zero 32-bit tag of an ordered item vocabulary (a new lineage's ``lineage``)."""
    digest = hashlib.blake2b(digest_size=4)
    for item in item_ids:
        digest.update(item.encode())
        digest.update(b"\x00")
    return int.from_bytes(digest.digest(), "little") or 1


@dataclass(frozen=True)
class ItemRegistry:
    """A model's item ids in index order, the lineage they belong to, what is retired and when
    each item was last seen. Immutable: each change returns a new registry."""

    ids: tuple[str, ...]
    lineage: int
    retired: Mapping[str, str] = field(default_factory=dict)
    last_seen: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.ids)) != len(self.ids):
            raise RegistryError("item ids must be unique")
        if not self.last_seen:
            object.__setattr__(self, "last_seen", (0,) * len(self.ids))
        if len(self.last_seen) != len(self.ids):
            raise RegistryError(f"last_seen has {len(self.last_seen)} entries for {len(self.ids)} items")
        unknown = set(self.retired) - set(self.ids)
        if unknown:
            raise RegistryError(f"retired items not in the vocabulary: {sorted(unknown)[:5]}")
        if not set(self.retired.values()) <= set(_REASONS):
            raise RegistryError(f"a retirement reason is not one of {_REASONS}")

    @classmethod
    def new(cls, item_ids: Sequence[str], last_seen: Sequence[int] = ()) -> ItemRegistry:
        """The first vocabulary of a new lineage."""
        ids = tuple(item_ids)
        return cls(ids, vocabulary_fingerprint(ids), {}, tuple(last_seen))

    # --- changes --------------------------------------------------------------------------
    def extend(self, item_ids: Iterable[str]) -> ItemRegistry:
        """This registry with the ids it lacks appended, in the order given."""
        known = set(self.ids)
        added = tuple(dict.fromkeys(i for i in item_ids if i not in known))
        return ItemRegistry(self.ids + added, self.lineage, self.retired,
                            self.last_seen + (0,) * len(added))

    def seen(self, last_seen: Mapping[str, int]) -> ItemRegistry:
        """Newest event times (seconds) folded in; each id must be registered."""
        index = self.index()
        times = list(self.last_seen)
        for item, ts in last_seen.items():
            i = index.get(item)
            if i is None:
                raise RegistryError(f"item {item!r} is not registered")
            times[i] = max(times[i], int(ts))
        return ItemRegistry(self.ids, self.lineage, self.retired, tuple(times))

    def retire_unseen(self, now: float, after: float) -> ItemRegistry:
        """Items last seen more than ``after`` seconds before ``now`` retired as unseen, and
        the ones retired so but seen since then restored; operator retirements stay. An item
        never seen (last_seen 0) is not judged."""
        retired = {i: why for i, why in self.retired.items() if why == RETIRED_OPERATOR}
        for item, ts in zip(self.ids, self.last_seen, strict=True):
            if ts and now - ts > after and item not in retired:
                retired[item] = RETIRED_UNSEEN
        return ItemRegistry(self.ids, self.lineage, retired, self.last_seen)

    def retire(self, item_ids: Iterable[str]) -> ItemRegistry:
        """The operator retires ``item_ids`` (each must be registered)."""
        retired = dict(self.retired)
        retired.update(dict.fromkeys(self._registered(item_ids), RETIRED_OPERATOR))
        return ItemRegistry(self.ids, self.lineage, retired, self.last_seen)

    def restore(self, item_ids: Iterable[str]) -> ItemRegistry:
        """``item_ids`` back in ranking, whatever retired them."""
        back = set(self._registered(item_ids))
        retired = {i: why for i, why in self.retired.items() if i not in back}
        return ItemRegistry(self.ids, self.lineage, retired, self.last_seen)

    # --- reading --------------------------------------------------------------------------
    def index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.ids)}

    def retired_indices(self) -> list[int]:
        index = self.index()
        return sorted(index[item] for item in self.retired)

    def conflict_with(self, other: ItemRegistry) -> str | None:
        """Why states of ``other`` cannot be read as states of this lineage: two registries of
        one lineage must agree on every index they share (a branched lineage does not); None
        when they agree or belong to different lineages."""
        if other.lineage != self.lineage:
            return None
        shared = min(len(self.ids), len(other.ids))
        if self.ids[:shared] != other.ids[:shared]:
            first = next(i for i in range(shared) if self.ids[i] != other.ids[i])
            return (f"lineage {self.lineage:08x} is branched: index {first} is {self.ids[first]!r} "
                    f"here and {other.ids[first]!r} there")
        return None

    def to_meta(self) -> dict:
        """The ``meta.json`` entry (beside ``item_ids``, which it does not repeat)."""
        return {"lineage": f"{self.lineage:08x}", "retired": dict(sorted(self.retired.items())),
                "last_seen": list(self.last_seen)}

    @classmethod
    def from_meta(cls, item_ids: Sequence[str], entry: Mapping | None) -> ItemRegistry:
        """The registry of a checkpoint; a checkpoint without one starts a lineage of its own."""
        if entry is None:
            return cls.new(item_ids)
        try:
            lineage = int(entry["lineage"], 16)
            retired = {str(k): str(v) for k, v in dict(entry.get("retired", {})).items()}
            last_seen = tuple(int(t) for t in entry.get("last_seen", ()))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RegistryError(f"the item registry is malformed: {exc}") from exc
        return cls(tuple(item_ids), lineage, retired, last_seen)

    def _registered(self, item_ids: Iterable[str]) -> list[str]:
        items = list(item_ids)
        unknown = sorted(set(items) - set(self.ids))
        if unknown:
            raise RegistryError(f"not registered: {', '.join(unknown[:5])}")
        return items
