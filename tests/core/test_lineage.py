"""States across model versions of one item-registry lineage: read as they are by any later (or,
after a rollback, earlier) model, with no vocabulary kept in memory; retired items never served;
a branched lineage refused."""

from __future__ import annotations

import torch

from stream_recs.config import ServingOptions
from stream_recs.metrics import Metrics
from stream_recs.models import GRU4Rec, save_model
from stream_recs.models.registry import ItemRegistry
from stream_recs.rollout_follower import ModelFollower
from stream_recs.scoring import MODEL, Recommender
from tests.core.test_scoring import T0, ev, reference_hidden
from tests.fault.test_model_updates import announce_good


def child(registry: ItemRegistry, version: str, seed: int) -> GRU4Rec:
    torch.manual_seed(seed)
    model = GRU4Rec(registry.ids, hidden_size=8, version=version)
    model.use_registry(registry)
    return model


V1 = ItemRegistry.new([f"a{i}" for i in range(20)])
V2 = V1.extend([f"b{i}" for i in range(10)])
V3 = V2.extend([f"c{i}" for i in range(10)])


def test_a_state_written_under_v1_is_served_by_v3_in_a_fresh_worker():
    v1, v3 = child(V1, "v1", 1), child(V3, "v3", 3)
    clicks = [ev("u", "a3", T0, 0), ev("u", "a7", T0 + 1, 1), ev("u", "a5", T0 + 2, 2)]
    states = Recommender(v1, ServingOptions(k=5)).step_batch(clicks, {}, T0 + 2).states
    fresh = Recommender(v3, ServingOptions(k=5))  # as after a restart: no vocabulary remembered
    result = fresh.step_batch([ev("u", "c4", T0 + 3, 3)], states, T0 + 3)
    state = result.states["u"]
    assert [V3.ids[i] for i in state.history] == ["a3", "a7", "a5", "c4"]
    assert state.session_len == 4 and state.vocab == V1.lineage
    assert state.hidden == reference_hidden(v3, ["a3", "a7", "a5", "c4"]).half().numpy().tobytes()
    assert result.recommendations[0].strategy == MODEL
    assert result.ranks[0] == 0  # the v1 answer is still evaluated (c4 could not be in it)


def test_after_a_rollback_the_older_model_drops_only_the_items_it_lacks():
    v2, v3 = child(V2, "v2", 2), child(V3, "v3", 3)
    clicks = [ev("u", "a1", T0, 0), ev("u", "c2", T0 + 1, 1), ev("u", "b3", T0 + 2, 2)]
    states = Recommender(v3, ServingOptions(k=5)).step_batch(clicks, {}, T0 + 2).states
    result = Recommender(v2, ServingOptions(k=5)).step_batch([ev("u", "a9", T0 + 3, 3)], states, T0 + 3)
    state = result.states["u"]
    assert [V2.ids[i] for i in state.history] == ["a1", "b3", "a9"] and state.session_len == 3


def test_retired_items_are_never_recommended():
    model = child(V2.retire([f"a{i}" for i in range(15)]), "v2r", 2)
    with torch.no_grad():  # make the retired items the model's favourites
        model.item_bias.weight[:15] = 10.0
    rec = Recommender(model, ServingOptions(k=10, mask_recent=0))
    result = rec.step_batch([ev("u", "b1", T0)], {}, T0)
    served = [item.item_id for item in result.recommendations[0].items]
    assert len(served) == 10 and not {f"a{i}" for i in range(15)} & set(served)


async def test_a_branched_lineage_is_refused_and_a_true_child_swapped_in(tmp_path):
    recommender, metrics = Recommender(child(V2, "live", 2), ServingOptions(k=5)), Metrics()
    branched = V1.extend([f"x{i}" for i in range(10)])  # another child of v1: index 20 differs
    bad = save_model(child(branched, "v2", 4), tmp_path / "branched")  # announce_good says "v2"
    assert await ModelFollower(recommender, metrics).apply(announce_good(bad)) is False
    refused = metrics.registry.get_sample_value(
        "stream_recs_model_updates_refused_total", {"reason": "branched_lineage"})
    assert recommender.model_version == "live" and refused == 1
    good = save_model(child(V3, "v2", 3), tmp_path / "v3")
    assert await ModelFollower(recommender, metrics).apply(announce_good(good)) is True
    assert recommender.model_version == "v2"
