"""The item catalogue: what each item is and whether it may be recommended, from the compacted
``items`` topic (the README's contract). Pure, no Kafka.

A record is keyed by item id; its value is ``{"item_id", "available": bool, "title"?,
"categories"?: [str], "attributes"?: {...}}``, and a tombstone (no value) removes the item's
entry. ``decode_item`` never raises: a bad record becomes an ``events.Rejection`` with one of the
click decoder's reason codes, so dead letters read alike. ``Catalogue`` keeps each item's latest
record; an item it has no record of is available, so a worker without a catalogue serves as
before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import orjson

from stream_recs.events import (
    BAD_ID,
    BAD_JSON,
    EMPTY,
    KEY_MISMATCH,
    MISSING_FIELD,
    NOT_OBJECT,
    NOT_UTF8,
    TOO_DEEP,
    TOO_LARGE,
    WRONG_TYPE,
    Rejection,
)

MAX_ITEM_BYTES = 64 << 10  # titles, categories and attributes: more room than a click
MAX_ID_CHARS = 256
MAX_DEPTH = 6


@dataclass(frozen=True, slots=True)
class CatalogueItem:
    """One item's catalogue record."""

    item_id: str
    available: bool
    title: str | None = None
    categories: tuple[str, ...] = ()
    attributes: dict = field(default_factory=dict)

    def encode(self) -> bytes:
        """The record's JSON value (optional fields only when set)."""
        body: dict = {"item_id": self.item_id, "available": self.available}
        if self.title is not None:
            body["title"] = self.title
        if self.categories:
            body["categories"] = list(self.categories)
        if self.attributes:
            body["attributes"] = self.attributes
        return orjson.dumps(body)


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.rejection = Rejection(reason, detail)


def decode_item(value: bytes | None, key: bytes | None) -> CatalogueItem | Rejection | None:
    """The record of an ``items`` topic record; None for a tombstone (with a key)."""
    try:
        return _decode(value, key)
    except _Bad as bad:
        return bad.rejection


def _decode(value: bytes | None, key: bytes | None) -> CatalogueItem | None:
    if value is None:
        if not key:
            raise _Bad(EMPTY, "a tombstone without a key names no item")
        return None
    if not value:
        raise _Bad(EMPTY, "empty value")
    if len(value) > MAX_ITEM_BYTES:
        raise _Bad(TOO_LARGE, f"{len(value)} bytes, more than {MAX_ITEM_BYTES}")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(NOT_UTF8, str(exc)) from exc
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _Bad(BAD_JSON, str(exc)) from exc
    if not isinstance(body, dict):
        raise _Bad(NOT_OBJECT, f"a JSON {type(body).__name__}, not an object")
    if _depth(body) > MAX_DEPTH:
        raise _Bad(TOO_DEEP, f"nested deeper than {MAX_DEPTH} levels")
    item_id = body.get("item_id")
    if item_id is None or "available" not in body:
        raise _Bad(MISSING_FIELD, "item_id and available are required")
    if not isinstance(item_id, str) or not 0 < len(item_id) <= MAX_ID_CHARS or not item_id.isprintable():
        raise _Bad(BAD_ID, f"item_id must be 1..{MAX_ID_CHARS} printable characters")
    if key is not None and key != item_id.encode():
        raise _Bad(KEY_MISMATCH, "the record key is not the item_id")
    available, title = body["available"], body.get("title")
    categories, attributes = body.get("categories") or [], body.get("attributes") or {}
    if not isinstance(available, bool):
        raise _Bad(WRONG_TYPE, "available must be true or false")
    if title is not None and not isinstance(title, str):
        raise _Bad(WRONG_TYPE, "title must be a string")
    if not isinstance(categories, list) or not all(isinstance(c, str) and c for c in categories):
        raise _Bad(WRONG_TYPE, "categories must be a list of non-empty strings")
    if not isinstance(attributes, dict):
        raise _Bad(WRONG_TYPE, "attributes must be an object")
    return CatalogueItem(item_id, available, title, tuple(categories), attributes)


def _depth(node: object) -> int:
    if isinstance(node, dict):
        return 1 + max((_depth(v) for v in node.values()), default=0)
    if isinstance(node, list):
        return 1 + max((_depth(v) for v in node), default=0)
    return 0


class Catalogue:
    """Each item's latest record; ``unavailable``: the ids never to recommend; the items of each
    category; ``generation``, which changes whenever a record does."""

    def __init__(self) -> None:
        self._items: dict[str, CatalogueItem] = {}
        self._categories: dict[str, set[str]] = {}
        self.unavailable: frozenset[str] = frozenset()
        self.generation = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, item_id: str) -> CatalogueItem | None:
        return self._items.get(item_id)

    def records(self) -> Mapping[str, CatalogueItem]:
        """Every item's record by item id (a read-only view)."""
        return MappingProxyType(self._items)

    def in_category(self, category: str) -> frozenset[str]:
        """The ids of the items whose record names ``category``."""
        return frozenset(self._categories.get(category, ()))

    def apply(self, item_id: str, item: CatalogueItem | None) -> None:
        """Take ``item`` as ``item_id``'s record (None: a tombstone, the entry goes)."""
        old = self._items.pop(item_id, None)
        if old == item:
            if item is not None:
                self._items[item_id] = item
            return
        for category in old.categories if old is not None else ():
            self._categories[category].discard(item_id)
        if item is not None:
            self._items[item_id] = item
            for category in item.categories:
                self._categories.setdefault(category, set()).add(item_id)
        gone = item is not None and not item.available
        if gone != (item_id in self.unavailable):
            self.unavailable = self.unavailable | {item_id} if gone else self.unavailable - {item_id}
        self.generation += 1
