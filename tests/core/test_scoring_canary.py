"""A candidate in its canary: its share of users is served by it with states of their own, the
others by the live model; online evaluations count for a side only against that side's answers;
a promotion serves everyone without replaying the candidate's users; a rolled-back candidate's
item indices are never given to other items."""

from __future__ import annotations

import torch

from stream_recs.canary import CANDIDATE_ARM, LIVE_ARM, in_canary
from stream_recs.config import ServingOptions
from stream_recs.models import GRU4Rec
from stream_recs.models.registry import ItemRegistry
from stream_recs.scoring import Recommender
from stream_recs.state import fingerprint
from tests.core.test_scoring import T0, ev

LIVE = ItemRegistry.new([f"a{i}" for i in range(30)])
GROWN = LIVE.extend([f"b{i}" for i in range(5)])
SHARE = 0.3


def model(registry: ItemRegistry, version: str, seed: int) -> GRU4Rec:
    torch.manual_seed(seed)
    built = GRU4Rec(registry.ids, hidden_size=8, version=version)
    built.use_registry(registry)
    return built


def serving_canary() -> Recommender:
    rec = Recommender(model(LIVE, "v1", 1), ServingOptions(k=5, mask_recent=0))
    rec.install_candidate(rec.prepare(model(GROWN, "v2", 2)), SHARE)
    return rec


USERS = [f"u{n}" for n in range(60)]
SIDE = {user: in_canary(user, "v2", SHARE) for user in USERS}


def clicks(step: int) -> list:
    return [ev(user, f"a{(n + step) % 30}", T0 + step, step) for n, user in enumerate(USERS)]


def test_each_user_is_served_by_one_side_and_evaluated_against_that_side_only():
    assert 5 < sum(SIDE.values()) < 35
    rec = serving_canary()
    states: dict = {}
    for step in range(3):
        result = rec.step_batch(clicks(step), states, T0 + step)
        states.update(result.states)
        for event, answer, arm in zip(clicks(step), result.recommendations, result.arms, strict=True):
            assert arm == (CANDIDATE_ARM if SIDE[event.user_id] else LIVE_ARM)
            assert answer.model_version == ("v2" if SIDE[event.user_id] else "v1")
            assert states[event.user_id].model == fingerprint(answer.model_version)
    counted = list(rec.canary_evaluations(result))
    assert len(counted) == len(USERS)  # every user continued a session answered by their side
    assert {arm for _, arm, _ in counted} == {LIVE_ARM, CANDIDATE_ARM}
    assert all(result.judged[i] == ("v2" if arm else "v1") for i, arm, _ in counted)


def test_answers_of_the_other_side_are_not_counted_for_the_canary():
    rec = Recommender(model(LIVE, "v1", 1), ServingOptions(k=5, mask_recent=0))
    states = rec.step_batch(clicks(0), {}, T0).states  # every user answered by v1
    rec.install_candidate(rec.prepare(model(GROWN, "v2", 2)), SHARE)
    result = rec.step_batch(clicks(1), states, T0 + 1)
    counted = {USERS[i] for i, _, _ in rec.canary_evaluations(result)}
    assert counted == {user for user in USERS if not SIDE[user]}
    assert all(result.judged[i] == "v1" for i in range(len(USERS)))  # still on the dashboard


def test_a_promotion_serves_everyone_and_keeps_the_candidates_hidden_states():
    rec = serving_canary()
    states = rec.step_batch(clicks(0), {}, T0).states
    rec.promote()
    assert (rec.model_version, rec.candidate_version) == ("v2", None)
    result = rec.step_batch(clicks(1), states, T0 + 1)
    assert {answer.model_version for answer in result.recommendations} == {"v2"}
    counted = {USERS[i] for i, _, _ in rec.canary_evaluations(result)}
    assert counted == {user for user in USERS if SIDE[user]}  # their answers were v2's already


def test_a_rollback_serves_everyone_with_the_live_model_and_guards_the_candidates_indices():
    rec = serving_canary()
    canary_user = next(user for user in USERS if SIDE[user])
    states = rec.step_batch([ev(canary_user, "b3", T0), ev(canary_user, "a1", T0 + 1, 1)], {}, T0 + 1).states
    rec.install_candidate(None, SHARE)
    result = rec.step_batch([ev(canary_user, "a2", T0 + 2, 2)], states, T0 + 2)
    assert result.recommendations[0].model_version == "v1"
    assert [LIVE.ids[i] for i in result.states[canary_user].history] == ["a1", "a2"]  # b3: unknown to v1
    renumbered = model(LIVE.extend(["x0", "b0", "b1", "b2", "b3"]), "v3", 3)
    assert "branched" in rec.lineage_conflict(renumbered)
    assert rec.lineage_conflict(model(GROWN.extend(["c0"]), "v4", 4)) is None
