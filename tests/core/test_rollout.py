"""The rollout read from model-updates records: every reader ends in the same state, whatever
decisions race for a candidate; a canary is replayed the way a worker lived it."""

from __future__ import annotations

from stream_recs.messages import (
    CANARY,
    CanaryDecision,
    ModelUpdate,
    encode_canary_decision,
    encode_model_update,
)
from stream_recs.rollout import CANDIDATE, LIVE, PROMOTED, ROLLED_BACK, Rollout

SHA = "0" * 64


def full(version: str) -> ModelUpdate:
    return ModelUpdate(f"/m/{version}", version, SHA)


def canary(version: str) -> ModelUpdate:
    return ModelUpdate(f"/m/{version}", version, SHA, rollout=CANARY)


def decision(version: str, what: str) -> CanaryDecision:
    return CanaryDecision(version, what, {"z": 3.0})


def test_a_canary_is_promoted_by_the_first_decision_and_a_late_rollback_is_ignored():
    state, change = Rollout().after(full("v1"))
    assert change == LIVE and state.live.version == "v1"
    state, change = state.after(canary("v2"))
    assert change == CANDIDATE and (state.live.version, state.candidate.version) == ("v1", "v2")
    state, change = state.after(decision("v2", "promote"))
    assert change == PROMOTED and state.live.version == "v2" and state.candidate is None
    assert state.live.rollout == "full"
    assert state.after(decision("v2", "rollback")) == (state, None)  # another worker, too late


def test_a_rollback_keeps_the_live_model_and_a_later_promotion_of_it_is_ignored():
    state = Rollout.replay([encode_model_update(full("v1")), encode_model_update(canary("v2"))])
    state, change = state.after(decision("v2", "rollback"))
    assert change == ROLLED_BACK and state.live.version == "v1" and state.candidate is None
    assert state.newest.version == "v2"  # its item indices are not to be given to other items
    assert state.after(decision("v2", "promote")) == (state, None)


def test_a_newer_canary_replaces_the_one_under_way_and_a_full_announcement_ends_it():
    state = Rollout.replay(encode_model_update(u) for u in (full("v1"), canary("v2"), canary("v3")))
    assert state.candidate.version == "v3"
    assert state.after(decision("v2", "promote"))[1] is None  # about a candidate no longer tried
    state, change = state.after(full("v4"))
    assert change == LIVE and state.live.version == "v4" and state.candidate is None


def test_a_canary_with_nothing_live_goes_live_and_malformed_records_change_nothing():
    state = Rollout.replay([b"{not json", encode_model_update(canary("v1")), b"",
                            encode_canary_decision(decision("v1", "rollback"))])
    assert state.live.version == "v1" and state.candidate is None


def test_the_live_model_announced_again_as_a_canary_changes_nothing():
    state = Rollout.replay([encode_model_update(full("v1"))])
    assert state.after(canary("v1")) == (state, None)
    assert state.after(full("v1")) == (state, None)
