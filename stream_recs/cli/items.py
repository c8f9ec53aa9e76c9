"""``stream-recs items load | set``: publish the item catalogue (``stream_recs/catalogue.py``) to
the compacted ``items`` topic, which every worker reads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import click

from stream_recs.kafka_clients import client_kwargs

from .kafka import resolve_bootstrap
from .settings import load_or_fail


def _rows(path: Path):
    """Each record of a JSONL file, or each row of a CSV file (``categories`` separated by ``|``,
    ``available`` true/false/1/0, other columns as attributes), as a dict; a line that is not
    JSON, as the reason."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                body: dict = {"item_id": row.pop("item_id", None),
                              "available": (row.pop("available", "true") or "true").strip().lower()
                              in ("true", "1", "yes")}
                if row.get("title"):
                    body["title"] = row.pop("title")
                row.pop("title", None)
                categories = row.pop("categories", "") or ""
                if categories:
                    body["categories"] = [c for c in categories.split("|") if c]
                if any(row.values()):
                    body["attributes"] = {k: v for k, v in row.items() if v}
                yield body
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"bad_json: {exc}"


@click.group()
def items() -> None:
    """The item catalogue: which items may be recommended, and what they are."""


@items.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def load(path: Path) -> None:
    """Publish every item of PATH (.jsonl: one record per line; .csv: item_id, available, title,
    categories separated by |, other columns as attributes). Bad records are named and skipped."""
    import orjson
    from kafka import KafkaProducer

    from stream_recs.catalogue import CatalogueItem, decode_item

    settings = load_or_fail()
    producer = KafkaProducer(**client_kwargs(settings, resolve_bootstrap(settings)), acks="all", linger_ms=20)
    sent = bad = 0
    for line, body in enumerate(_rows(path), start=1):
        item = decode_item(orjson.dumps(body), None) if isinstance(body, dict) else body
        if not isinstance(item, CatalogueItem):
            bad += 1
            why = item if isinstance(item, str) else f"{item.reason}: {item.detail}"
            click.echo(f"{path}:{line}: skipped ({why})", err=True)
            continue
        producer.send(settings.topics.items, key=item.item_id.encode(), value=item.encode())
        sent += 1
    producer.flush()
    producer.close()
    click.echo(f"published {sent} items to {settings.topics.items}" + (f", skipped {bad}" if bad else ""))
    if bad:
        raise SystemExit(1)


@items.command("set")
@click.argument("item_id")
@click.option("--available/--unavailable", default=None, help="May it be recommended?")
@click.option("--title", help="Its title.")
@click.option("--category", "categories", multiple=True, help="Its categories (repeat; replaces them).")
def set_item(item_id: str, available: bool | None, title: str | None, categories: tuple[str, ...]) -> None:
    """Change one item's record; the fields not given keep their published values."""
    from kafka import KafkaProducer

    from stream_recs.catalogue import CatalogueItem
    from stream_recs.catalogue_feed import read_catalogue

    settings = load_or_fail()
    bootstrap = resolve_bootstrap(settings)
    old = read_catalogue(settings, bootstrap).get(item_id) or CatalogueItem(item_id, True)
    item = CatalogueItem(
        item_id, old.available if available is None else available,
        old.title if title is None else title,
        tuple(categories) if categories else old.categories, old.attributes,
    )
    producer = KafkaProducer(**client_kwargs(settings, bootstrap), acks="all")
    producer.send(settings.topics.items, key=item_id.encode(), value=item.encode()).get(60)
    producer.close()
    click.echo(f"{item_id}: {'available' if item.available else 'unavailable'}"
               + (f", {item.title!r}" if item.title else ""))


COMMANDS = [items]
