"""The catalogue: records decoded (bad ones rejected with a reason, never raised), each item's
latest record kept, and an unavailable item never offered, by the model or by the fallback."""

from __future__ import annotations

import orjson
import pytest
import torch

from stream_recs.catalogue import Catalogue, CatalogueItem, decode_item
from stream_recs.config import ServingOptions
from stream_recs.events import Event, Rejection
from stream_recs.models import GRU4Rec
from stream_recs.scoring import MODEL, POPULAR, Recommender
from tests.core.test_scoring import T0, ev


def test_a_full_record_round_trips_and_a_tombstone_names_its_item():
    item = CatalogueItem("m1", True, "Heat (1995)", ("Action", "Crime"), {"year": 1995})
    assert decode_item(item.encode(), b"m1") == item
    unavailable = orjson.dumps({"item_id": "m2", "available": False})
    assert decode_item(unavailable, None) == CatalogueItem("m2", False)
    assert decode_item(None, b"m1") is None


@pytest.mark.parametrize(("value", "key", "reason"), [
    (b"", b"m1", "empty"),
    (None, None, "empty"),
    (b"\xff\xfe", b"m1", "not_utf8"),
    (b"{nope", b"m1", "bad_json"),
    (b"[1]", b"m1", "not_object"),
    (b'{"item_id": "m1"}', b"m1", "missing_field"),
    (b'{"item_id": "", "available": true}', b"", "bad_id"),
    (b'{"item_id": "m1", "available": "yes"}', b"m1", "wrong_type"),
    (b'{"item_id": "m1", "available": true, "categories": "Drama"}', b"m1", "wrong_type"),
    (b'{"item_id": "m1", "available": true}', b"m2", "key_mismatch"),
    (b'{"item_id": "m1", "available": true, "attributes": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}',
     b"m1", "too_deep"),
    (b'{"item_id": "m1", "available": true, "title": "' + b"x" * 70_000 + b'"}', b"m1", "too_large"),
])
def test_a_bad_record_is_rejected_with_its_reason(value, key, reason):
    rejected = decode_item(value, key)
    assert isinstance(rejected, Rejection) and rejected.reason == reason, rejected


def test_the_latest_record_wins_and_the_unavailable_set_moves_with_it():
    catalogue = Catalogue()
    catalogue.apply("m1", CatalogueItem("m1", True, "Heat"))
    assert catalogue.unavailable == frozenset() and catalogue.generation == 1
    catalogue.apply("m1", CatalogueItem("m1", False, "Heat"))
    assert catalogue.unavailable == {"m1"} and catalogue.generation == 2
    catalogue.apply("m1", CatalogueItem("m1", False))  # the same availability, another record
    assert catalogue.generation == 3 and catalogue.get("m1").title is None
    catalogue.apply("m1", CatalogueItem("m1", False))  # the same record again: nothing changes
    assert catalogue.generation == 3
    catalogue.apply("m1", None)  # removed: available again, as an item with no record
    assert catalogue.unavailable == frozenset() and catalogue.get("m1") is None and len(catalogue) == 0


def test_categories_follow_each_items_latest_record():
    catalogue = Catalogue()
    catalogue.apply("m1", CatalogueItem("m1", True, categories=("Drama", "War")))
    catalogue.apply("m2", CatalogueItem("m2", True, categories=("War",)))
    assert catalogue.in_category("War") == {"m1", "m2"} and catalogue.in_category("Horror") == frozenset()
    catalogue.apply("m1", CatalogueItem("m1", True, categories=("Comedy",)))
    assert catalogue.in_category("War") == {"m2"} and catalogue.in_category("Comedy") == {"m1"}
    catalogue.apply("m2", None)
    assert catalogue.in_category("War") == frozenset()


def test_an_unavailable_item_is_never_recommended_by_the_model_or_the_fallback():
    torch.manual_seed(0)
    model = GRU4Rec([f"i{n}" for n in range(40)], hidden_size=8, version="v1")
    rec = Recommender(model, ServingOptions(k=10, mask_recent=0))
    first = rec.step_batch([ev("u", "i3", T0)], {}, T0).recommendations[0]
    favourite = first.items[0].item_id
    rec.catalogue.apply(favourite, CatalogueItem(favourite, False))
    again = rec.step_batch([ev("v", "i3", T0)], {}, T0).recommendations[0]
    assert again.strategy == MODEL and len(again.items) == 10
    assert favourite not in {item.item_id for item in again.items}
    rec.popularity.use_catalogue(model.item_ids, {favourite: 100.0, "i5": 50.0})
    fallback = rec.step_batch([ev("w", "unknown", T0)], {}, T0).recommendations[0]
    assert fallback.strategy == POPULAR and favourite not in {item.item_id for item in fallback.items}
    assert "i5" in {item.item_id for item in fallback.items}
    rec.catalogue.apply(favourite, CatalogueItem(favourite, True))
    assert rec.step_batch([ev("x", "i3", T0)], {}, T0).recommendations[0].items[0].item_id == favourite


def test_a_click_excluding_categories_gets_none_of_their_items_and_others_are_untouched():
    torch.manual_seed(1)
    model = GRU4Rec([f"i{n}" for n in range(60)], hidden_size=8, version="v1")
    rec = Recommender(model, ServingOptions(k=10, mask_recent=0))
    plain = rec.step_batch([ev("u", "i3", T0)], {}, T0).recommendations[0]
    war = [item.item_id for item in plain.items[:4]]
    for item_id in war:
        rec.catalogue.apply(item_id, CatalogueItem(item_id, True, categories=("War",)))
    excluding = Event("e1", "v", "i3", "click", T0, None, ("War", "Horror"))
    result = rec.step_batch([excluding, ev("w", "i3", T0)], {}, T0)
    kept, untouched = result.recommendations
    assert len(kept.items) == 10 and not set(war) & {item.item_id for item in kept.items}
    assert [item.item_id for item in untouched.items] == [item.item_id for item in plain.items]
    rec.popularity.use_catalogue(model.item_ids, {war[0]: 100.0, "i5": 50.0})
    cold = Event("e2", "x", "unknown", "click", T0, None, ("War",))
    fallback = rec.step_batch([cold], {}, T0).recommendations[0]
    assert fallback.strategy == POPULAR and [item.item_id for item in fallback.items] == ["i5"]
