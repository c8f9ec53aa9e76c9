"""The popularity fallback's counts: decay, known items only, replays counted once, bounded size,
snapshots per clicks partition, ownership moving between workers, the training-count seed."""

from __future__ import annotations

import orjson
import pytest

from stream_recs.popularity import SNAPSHOT_BYTES, Popularity, Shard

T0 = 1_700_000_000.0
KNOWN = [f"i{n}" for n in range(10)]


def popularity(partitions: int = 1, max_items: int = 100, known=KNOWN, seed=None) -> Popularity:
    pop = Popularity(half_life=10.0, max_items=max_items, partitions=partitions, refresh=0.0)
    pop.use_catalogue(known, seed)
    return pop


def items(pop: Popularity, now: float = T0) -> list[str]:
    return [item for item, _ in pop.top(100, now)]


def test_counts_decay_by_half_life_and_offer_shares():
    pop = popularity()
    pop.count([(0, 0, "i1")], T0)
    pop.count([(0, 1, "i2")], T0 + 10)
    pop.count([(0, 2, "i3"), (0, 3, "i3")], T0 + 20)
    # at T0 + 20: i1 1/4, i2 1/2, i3 2 -> shares 1/11, 2/11, 8/11
    assert pop.top(3, T0 + 20) == [
        ("i3", pytest.approx(8 / 11)), ("i2", pytest.approx(2 / 11)), ("i1", pytest.approx(1 / 11)),
    ]
    assert pop.top(1, T0 + 1000) == [("i3", pytest.approx(8 / 11))]  # decay alone changes no share


def test_only_known_items_are_counted_and_offered():
    pop = popularity()
    pop.count([(0, n, f"evil{n}") for n in range(500)] + [(0, 500, "i1")], T0)
    assert items(pop) == ["i1"]
    pop.use_catalogue(["i2"])  # i1 retired, say
    assert items(pop) == []
    pop.count([(0, 501, "i2")], T0)
    assert items(pop) == ["i2"]


def test_without_a_model_nothing_is_counted_and_what_is_held_is_offered():
    pop = popularity()
    pop.count([(0, 0, "i1")], T0)
    pop.use_catalogue(None)
    pop.count([(0, 1, "i2"), (0, 2, "evil")], T0)
    assert items(pop) == ["i1"]


def test_replayed_offsets_are_not_counted_twice():
    pop = popularity()
    pop.count([(0, 5, "i1"), (0, 6, "i1")], T0)
    pop.count([(0, 5, "i1"), (0, 6, "i1"), (0, 7, "i2")], T0)  # a replay from offset 5
    assert pop.top(2, T0) == [("i1", pytest.approx(2 / 3)), ("i2", pytest.approx(1 / 3))]


def test_a_partition_keeps_its_most_popular_items():
    pop = popularity(max_items=2, known=[f"x{n}" for n in range(10)])
    clicks = [("x0", 5), ("x1", 4), ("x2", 3), ("x3", 2), ("x4", 1)]
    offset = 0
    for item, times in clicks:
        for _ in range(times):
            pop.count([(0, offset, item)], T0)
            offset += 1
    assert items(pop) == ["x0", "x1"]  # 5 items > 2 * 2: pruned to the best 2
    shard = Shard.decode(pop.snapshots([0])[0])
    assert shard.weights == {"x0": 5.0, "x1": 4.0} and shard.offset == offset


def test_snapshot_stays_under_its_byte_limit():
    long_ids = [f"{n:04d}" + "x" * 250 for n in range(4000)]
    shard = Shard(T0, 7, {item: float(n) for n, item in enumerate(long_ids)})
    raw = shard.encode(4000)
    assert len(raw) <= SNAPSHOT_BYTES
    decoded = Shard.decode(raw)
    assert decoded.offset == 7 and 1000 < len(decoded.weights) < 4000
    assert long_ids[-1] in decoded.weights  # the most popular are kept


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", orjson.dumps({"format": 2}),
                                 orjson.dumps({"format": 1, "t_ref": 0, "offset": -1, "items": []}),
                                 orjson.dumps({"format": 1, "t_ref": 0, "offset": 0, "items": [["a", -1]]})])
def test_malformed_snapshots_are_refused(raw):
    with pytest.raises(ValueError):
        Shard.decode(raw)
    pop = popularity()
    pop.observe(0, raw)  # ignored (logged)
    assert items(pop) == []


def test_snapshots_only_of_held_partitions_that_changed():
    pop = popularity(partitions=2)
    pop.count([(0, 0, "i1"), (1, 0, "i2")], T0)
    assert set(pop.snapshots([0])) == {0}
    assert pop.snapshots([0]) == {}  # unchanged since
    pop.release([1])
    assert pop.snapshots([0, 1]) == {}  # no longer counted here


def test_counts_move_with_their_partition_between_workers():
    """Worker a counts partition 0, b partition 1; each offers both through the snapshots it
    reads; a restarted worker takes a partition from its stored snapshot and goes on counting."""
    a, b = popularity(partitions=2), popularity(partitions=2)
    a.count([(0, 0, "i1"), (0, 1, "i1")], T0)
    b.count([(1, 0, "i2")], T0)
    written = {**a.snapshots([0]), **b.snapshots([1])}
    for reader in (a, b):
        for partition, raw in written.items():
            reader.observe(partition, raw)
    assert items(a) == items(b) == ["i1", "i2"]

    stored = Shard(T0, 2, {"i1": 2.0}).encode(100)
    restarted = popularity(partitions=2)
    restarted.take(0, stored, T0)
    restarted.count([(0, 1, "i1"), (0, 2, "i3")], T0)  # offset 1 is a replay
    assert restarted.top(2, T0) == [("i1", pytest.approx(2 / 3)), ("i3", pytest.approx(1 / 3))]


def test_newest_counts_win_on_take_and_observe():
    pop = popularity()
    pop.count([(0, 10, "i1")], T0)
    pop.take(0, Shard(T0, 5, {"i2": 9.0}).encode(100), T0)  # an older stored snapshot: kept ours
    assert items(pop) == ["i1"]
    pop.observe(0, Shard(T0, 50, {"i2": 9.0}).encode(100))  # counted here: ignored
    assert items(pop) == ["i1"]
    pop.release([0])
    pop.observe(0, Shard(T0, 5, {"i2": 9.0}).encode(100))  # older than what is held
    assert items(pop) == ["i1"]
    pop.observe(0, Shard(T0, 50, {"i2": 9.0}).encode(100))  # the next owner's, newer
    assert items(pop) == ["i2"]
    pop.take(0, Shard(T0, 60, {"i3": 1.0}).encode(100), T0)
    assert items(pop) == ["i3"]


def test_partitions_nobody_counted_hold_their_share_of_the_training_counts():
    pop = popularity(partitions=4, seed={"i1": 40, "i2": 20, "evil": 1000, "i3": 0})
    assert pop.top(3, T0) == [("i1", pytest.approx(2 / 3)), ("i2", pytest.approx(1 / 3))]
    pop.count([(0, 0, "i2"), (0, 1, "i2")], T0)  # partition 0: its seed (10, 5), then 2 clicks
    assert pop.top(2, T0) == [("i1", pytest.approx(40 / 62)), ("i2", pytest.approx(22 / 62))]
    shard = Shard.decode(pop.snapshots([0])[0])
    assert shard.weights == {"i1": 10.0, "i2": 7.0}
