"""The canary's pure parts: who is in the share, the counts that follow partitions and skip
replays, and the statistical test that promotes or rolls back."""

from __future__ import annotations

import pytest

from stream_recs.canary import CANDIDATE_ARM, LIVE_ARM, Arm, CanaryCounts, in_canary, judge, z_score
from stream_recs.config import Canary
from stream_recs.messages import PROMOTE, ROLLBACK

RULES = Canary(share=0.1, min_events=500, max_events=10_000, tolerance=0.05, z=2.33)


def test_the_share_is_deterministic_near_its_size_and_drawn_afresh_per_candidate():
    users = [f"u{n}" for n in range(20_000)]
    first = {u for u in users if in_canary(u, "v2", 0.1)}
    assert first == {u for u in users if in_canary(u, "v2", 0.1)}
    assert 1800 < len(first) < 2200
    second = {u for u in users if in_canary(u, "v3", 0.1)}
    assert 100 < len(first & second) < 350  # about 10% of 10%: independent draws
    assert not any(in_canary(u, "v2", 0.0) for u in users[:1000])


def test_an_equal_candidate_is_promoted_and_a_worse_one_rolled_back():
    live = Arm(50_000, 15_000, 7000.0)  # HR 0.30
    assert judge(live, Arm(400, 120, 50.0), RULES) is None  # too few evaluations yet
    assert judge(live, Arm(1500, 455, 200.0), RULES) is None  # as good, but not shown yet
    promoted = judge(live, Arm(8000, 2410, 1100.0), RULES)
    assert promoted.decision == PROMOTE and promoted.evidence["candidate"]["evaluated"] == 8000
    rolled = judge(live, Arm(1500, 330, 150.0), RULES)  # HR 0.22
    assert rolled.decision == ROLLBACK and rolled.evidence["z"] <= -RULES.z


def test_an_undecided_candidate_is_rolled_back_at_max_events():
    live, candidate = Arm(90_000, 27_000, 0.0), Arm(10_000, 2860, 0.0)  # HR 0.286: within the noise
    assert -RULES.z < z_score(live, candidate, RULES.tolerance) < RULES.z
    assert judge(live, candidate, RULES).decision == ROLLBACK
    assert judge(live, Arm(9999, 2860, 0.0), RULES) is None


def test_a_slightly_worse_candidate_within_the_tolerance_is_not_rolled_back():
    live = Arm(100_000, 30_000, 0.0)
    assert z_score(live, Arm(100_000, 29_400, 0.0), 0.05) > RULES.z  # 2% worse, tolerance 5%
    assert z_score(live, Arm(100_000, 29_400, 0.0), 0.0) < 0


def test_counts_skip_replays_move_with_partitions_and_keep_only_the_current_candidate():
    here, there = CanaryCounts(), CanaryCounts()
    for counts in (here, there):
        counts.follow("v2")
    here.take(0, None, 0.0)
    here.count([(0, 10, LIVE_ARM, 1), (0, 11, CANDIDATE_ARM, 0), (0, 12, CANDIDATE_ARM, 2)])
    here.count([(0, 11, CANDIDATE_ARM, 1)])  # a replay after a crash: counted once
    assert here.totals() == (Arm(1, 1, 1.0), Arm(2, 1, 0.5))
    snapshot = here.snapshots([0])[0]
    assert here.snapshots([0]) == {}  # nothing new since
    there.observe(0, snapshot)
    assert there.totals() == here.totals()
    there.take(0, snapshot, 0.0)  # the partition moves: the next holder goes on from there
    there.count([(0, 12, LIVE_ARM, 1), (0, 13, LIVE_ARM, 0)])
    assert there.totals() == (Arm(2, 1, 1.0), Arm(2, 1, 0.5))
    there.follow("v3")  # a new candidate starts from nothing; old snapshots are not its
    assert there.totals() == (Arm(), Arm())
    there.observe(1, snapshot)
    assert there.totals() == (Arm(), Arm())


@pytest.mark.parametrize("raw", [b"{not json", b'{"format": 1}', b'{"format": 9, "arms": []}'])
def test_a_bad_snapshot_is_ignored(raw):
    counts = CanaryCounts()
    counts.follow("v2")
    counts.observe(3, raw)
    assert counts.totals() == (Arm(), Arm())


def test_snapshots_read_before_the_candidate_is_known_count_once_it_is():
    before, restarted = CanaryCounts(), CanaryCounts()
    before.follow("v2")
    before.take(0, None, 0.0)
    before.count([(0, 5, CANDIDATE_ARM, 1), (0, 6, LIVE_ARM, 0)])
    snapshot = before.snapshots([0])[0]
    restarted.take(0, snapshot, 0.0)  # its partitions come back before the rollout is read
    restarted.observe(1, snapshot)
    assert restarted.totals() == (Arm(), Arm())
    restarted.follow("v2")
    live, candidate = restarted.totals()
    assert live.evaluated == 2 and candidate.evaluated == 2  # partitions 0 and 1
    restarted.count([(0, 6, LIVE_ARM, 1)])  # a replay of what the snapshot counted
    assert restarted.totals()[0].evaluated == 2

