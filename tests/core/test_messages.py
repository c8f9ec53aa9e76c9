"""Output message encoders: the JSON shapes of the README's contracts."""

from __future__ import annotations

import base64

import orjson

from stream_recs.catalogue import Catalogue, CatalogueItem
from stream_recs.messages import (
    RecItem,
    Recommendation,
    because_of,
    encode_dead_letter,
    encode_recommendation,
)


def test_recommendation_json():
    rec = Recommendation(
        "e1", "u1", (RecItem("i2", 0.5, "i1", 0.75), RecItem("i3", 0.25, None)), "model", "v1", 10.5
    )
    assert orjson.loads(encode_recommendation(rec, produced_ts=11.0)) == {
        "schema": 2,
        "event_id": "e1",
        "user_id": "u1",
        "items": [
            {"item_id": "i2", "score": 0.5, "because": {"item_id": "i1", "weight": 0.75}},
            {"item_id": "i3", "score": 0.25, "because": None},
        ],
        "strategy": "model",
        "model_version": "v1",
        "event_ts": 10.5,
        "produced_ts": 11.0,
    }


def test_recommended_items_carry_catalogue_details_when_asked():
    catalogue = Catalogue()
    catalogue.apply("i2", CatalogueItem("i2", True, "Film two", ("Drama", "War")))
    catalogue.apply("i3", CatalogueItem("i3", True))  # a record without title or categories
    rec = Recommendation("e1", "u1", (RecItem("i2", 0.5, None), RecItem("i3", 0.25, None),
                                      RecItem("i4", 0.1, None)), "model", "v1", 1.0)
    items = orjson.loads(encode_recommendation(rec, 2.0, catalogue))["items"]
    assert items[0] == {"item_id": "i2", "score": 0.5, "because": None, "title": "Film two",
                        "categories": ["Drama", "War"]}
    assert items[1] == {"item_id": "i3", "score": 0.25, "because": None}
    assert items[2] == {"item_id": "i4", "score": 0.1, "because": None}  # no record
    plain = orjson.loads(encode_recommendation(rec, 2.0))["items"]
    assert "title" not in plain[0] and "categories" not in plain[0]


def test_because_reads_both_shapes():
    new = orjson.loads(encode_recommendation(
        Recommendation("e1", "u1", (RecItem("i2", 0.5, "i1", 0.75),), "model", "v1", 1.0), 2.0))
    assert [because_of(it) for it in new["items"]] == [("i1", 0.75)]
    old = {"item_id": "i2", "score": 0.5, "because": "i1"}  # schema 1 (no "schema" field)
    assert because_of(old) == ("i1", None)
    assert because_of({"item_id": "i2", "score": 0.5, "because": None}) is None
    assert because_of({"item_id": "i2", "score": 0.5}) is None


def test_dead_letter_json_truncates_raw():
    raw = bytes(range(256)) * 5
    out = orjson.loads(
        encode_dead_letter(
            "bad_json",
            "invalid JSON",
            raw,
            topic="clicks",
            partition=2,
            offset=9,
            ts=5.0,
            max_raw=100,
        )
    )
    assert base64.b64decode(out.pop("raw")) == raw[:100]
    assert out == {
        "reason": "bad_json",
        "detail": "invalid JSON",
        "raw_size": 1280,
        "topic": "clicks",
        "partition": 2,
        "offset": 9,
        "ts": 5.0,
    }


def test_dead_letter_without_value():
    out = orjson.loads(
        encode_dead_letter("empty", "no value", None, topic="t", partition=0, offset=1, ts=0.0)
    )
    assert (out["raw"], out["raw_size"]) == ("", 0)
