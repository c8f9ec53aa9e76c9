"""The trainer's rolling window: count, age and byte bounds, crash safety at the manifest, reloads,
unicode ids, and the replay reservoir (bounded, only evicted clicks, uniform)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from stream_recs import window as window_module
from stream_recs.window import MANIFEST, REPLAY_LOG_FACTOR, RollingWindow

T0 = 1_700_000_000.0
DAY = 86_400.0


def open_window(directory, max_events=1000, max_age=DAY, max_bytes=1 << 20, max_replay=100):
    return RollingWindow(directory, max_events, max_age, max_bytes, max_replay)


def clicks(start, n, item_len=0, session=True):
    """Clicks numbered start.. with items i<n> (padded to item_len), one second apart."""
    return [(f"u{k % 7}", f"i{k}".ljust(item_len, "é"), T0 + k, f"s{k % 3}" if session else None)
            for k in range(start, start + n)]


def items(events):
    return [events.item_ids[c] for c in events.item]


def numbers(events):
    return [int(i.rstrip("é")[1:]) for i in items(events)]


def disk_bytes(directory):
    return sum(f.stat().st_size for f in directory.iterdir())


def test_count_bound_is_exact_and_keeps_the_latest(tmp_path):
    w = open_window(tmp_path, max_events=10)
    for batch in range(5):
        w.append(clicks(7 * batch, 7), {"clicks:0": 7 * batch + 7})
        assert len(w) == min(10, 7 * batch + 7)
    assert numbers(w.events()) == list(range(25, 35))
    assert w.offsets == {"clicks:0": 35}
    assert w.stats()["evicted"] == 25


def test_age_bound_against_newest_event_and_now(tmp_path):
    w = open_window(tmp_path, max_age=100.0)
    w.append(clicks(0, 51), {"clicks:0": 51})  # ts T0..T0+50
    w.append(clicks(200, 1), {"clicks:0": 52})  # horizon T0+100: all earlier clicks leave
    assert numbers(w.events()) == [200]
    w.append([("u0", "late", T0 + 60, "s0")], {"clicks:0": 53})  # older than the horizon
    assert numbers(w.events()) == [200]
    w.trim(T0 + 295.0)  # horizon T0+195
    assert numbers(w.events()) == [200]
    w.append([("u1", "i300", T0 + 300, "s1"), ("u2", "i220", T0 + 220, "s2"), ("u3", "i310", T0 + 310, "s3")],
             {"clicks:1": 3})
    assert sorted(numbers(w.events())) == [220, 300, 310]  # horizon T0+210
    w.append(clicks(330, 1), {"clicks:1": 4})  # horizon T0+230: the straggler 220 leaves, 300 stays
    events = w.events()
    assert numbers(events) == [300, 310, 330]
    assert events.ts.min() >= events.ts.max() - 100.0
    assert w.stats() | {"bytes": 0} == {
        "events": 3, "segments": 1, "bytes": 0, "replay_events": 54, "evicted": 54,
        "oldest_ts": T0 + 300, "newest_ts": T0 + 330, "span_s": 30.0}
    assert set(items(w.replay(1000))) == {f"i{k}" for k in [*range(51), 200, 220]} | {"late"}


def test_byte_bound_holds_after_every_append(tmp_path):
    budget = 12_000
    w = open_window(tmp_path, max_bytes=budget, max_replay=5)
    appended = 0
    for n in [5] * 30 + [60]:  # ~320-byte clicks; the last batch alone is over the budget
        w.append(clicks(appended, n, item_len=150), {"clicks:0": appended + n})
        appended += n
        assert w.size_bytes == disk_bytes(tmp_path) <= budget
        kept = numbers(w.events())
        assert kept == list(range(appended - len(kept), appended))  # the latest clicks
        assert len(kept) >= min(appended, budget // 2 // 320)  # most of the budget holds clicks
    assert len(w.replay(100)) == 5


def test_reservoir_that_outgrows_the_budget_shrinks(tmp_path):
    budget = 20_000
    w = open_window(tmp_path, max_events=5, max_bytes=budget, max_replay=1000)
    for start in range(0, 300, 10):
        w.append(clicks(start, 10, item_len=100), {"clicks:0": start + 10})
        assert w.size_bytes == disk_bytes(tmp_path) <= budget
        assert len(w) == 5
    kept = len(w.replay(1000))
    assert 0 < kept < 295
    reopened = open_window(tmp_path, max_events=5, max_bytes=budget, max_replay=1000)
    assert reopened.replay(1000, seed=3).fingerprint() == w.replay(1000, seed=3).fingerprint()


def test_reload_gives_identical_window_offsets_and_replay(tmp_path):
    params = {"max_events": 30, "max_age": 40.0, "max_bytes": 16 * 300, "max_replay": 10}
    w = open_window(tmp_path / "w", **params)
    for start in range(0, 120, 9):
        w.append(clicks(start, 9), {"clicks:0": start + 9, "clicks:1": start})
    w.append(clicks(60, 3), {"clicks:1": 200})  # stragglers
    w.trim(T0 + 150.0)
    again = open_window(tmp_path / "w", **params)
    assert len(again) == len(w) > 0
    assert again.events().fingerprint() == w.events().fingerprint()
    assert again.offsets == w.offsets == {"clicks:0": 126, "clicks:1": 200}
    assert again.replay(5, seed=1).fingerprint() == w.replay(5, seed=1).fingerprint()
    assert again.stats() == w.stats()
    shutil.copytree(tmp_path / "w", tmp_path / "copy")
    copy = open_window(tmp_path / "copy", **params)
    for window in (w, copy):  # both go on alike
        window.append(clicks(126, 4), {"clicks:0": 130})
    assert copy.events().fingerprint() == w.events().fingerprint()


def test_crash_between_segment_and_manifest_reloads_the_previous_window(tmp_path, monkeypatch):
    params = {"max_events": 25, "max_bytes": 16 * 200, "max_replay": 8}
    live = tmp_path / "live"
    w = open_window(live, **params)
    w.append(clicks(0, 20), {"clicks:0": 20})
    w.append(clicks(20, 3), {"clicks:0": 23})
    committed = w.events().fingerprint(), w.replay(8, seed=0).fingerprint(), w.stats()
    real_replace = window_module.os.replace

    def crash(*args):  # kill -9 just before the manifest is renamed into place
        shutil.copytree(live, tmp_path / "crashed")
        raise OSError("killed")

    monkeypatch.setattr(window_module.os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        w.append(clicks(23, 30), {"clicks:0": 53})  # grows a segment, adds some, evicts
    monkeypatch.setattr(window_module.os, "replace", real_replace)
    crashed = tmp_path / "crashed"
    assert disk_bytes(crashed) > w.size_bytes  # the crash left new data behind
    (crashed / "seg-999999999999.jsonl").write_bytes(b'["u", "i", 1.0, nu')  # a torn segment
    (crashed / (MANIFEST + ".tmp")).write_bytes(b'{"format": 1, "segm')  # a torn manifest
    for directory in (crashed, live):  # after a restart, and in the process that saw the error
        reloaded = open_window(directory, **params)
        assert (reloaded.events().fingerprint(), reloaded.replay(8, seed=0).fingerprint(),
                reloaded.stats()) == committed
        assert reloaded.offsets == {"clicks:0": 23}
        assert reloaded.size_bytes == disk_bytes(directory)  # strays deleted, torn tails cut
    assert (w.events().fingerprint(), w.replay(8, seed=0).fingerprint(), w.stats()) == committed
    w.append(clicks(23, 30), {"clicks:0": 53})  # the retry commits
    assert numbers(w.events()) == list(range(28, 53))
    assert open_window(live, **params).events().fingerprint() == w.events().fingerprint()


def test_kill_9_leaves_the_window_its_offsets_cover(tmp_path):
    script = (
        "import sys\n"
        "from stream_recs.window import RollingWindow\n"
        "w = RollingWindow(sys.argv[1], 10**6, 1e9, 1 << 20, 10)\n"
        "n = 0\n"
        "while True:\n"
        "    w.append([(f'u{k}', f'i{k}', float(k), None) for k in range(n, n + 7)], {'clicks:0': n + 7})\n"
        "    n += 7\n"
        "    print(n, flush=True)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(20):  # some appends returned
            child.stdout.readline()
        time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
    w = open_window(tmp_path, max_events=10**6)
    n = w.offsets["clicks:0"]
    assert n >= 140
    assert numbers(w.events()) == list(range(n))  # exactly the clicks before the offset
    assert w.size_bytes == disk_bytes(tmp_path)


def test_unicode_ids_round_trip(tmp_path):
    ids = ["日本語", "🎬🍿", "עברית", "e\u0301", 'q"b\\s', "new\nline\ttab\r", "nul\x00", "\u2028",
           "🏳️‍🌈" * 60, "x" * 400, ""]
    rows = [(ids[k], ids[-1 - k], T0 + k, ids[k // 2]) for k in range(len(ids))]
    w = open_window(tmp_path, max_events=len(ids) - 3, max_replay=10)
    w.append(rows, {"clicks:ünïcode": 1})
    for window in (w, open_window(tmp_path, max_events=len(ids) - 3, max_replay=10)):
        events = window.events()
        got = [(events.user_ids[u], events.item_ids[i], t)
               for u, i, t in zip(events.user, events.item, events.ts, strict=True)]
        assert got == [(u, i, t) for u, i, t, _ in rows[3:]]
        pairs = set(zip((s for *_, s in rows[3:]), events.session, strict=True))
        assert len(pairs) == len({s for *_, s in rows[3:]}) == len(set(events.session))  # same sessions
        assert sorted(items(window.replay(10))) == sorted(i for _, i, _, _ in rows[:3])
        assert window.offsets == {"clicks:ünïcode": 1}


def test_replay_is_bounded_and_holds_only_evicted_clicks(tmp_path):
    w = open_window(tmp_path, max_events=20, max_replay=15)
    for start in range(0, 200, 10):
        w.append(clicks(start, 10), {"clicks:0": start + 10})
        replayed = numbers(w.replay(1000, seed=start))
        assert len(replayed) == min(15, start + 10 - 20) if start + 10 > 20 else replayed == []
        assert all(k < start + 10 - 20 for k in replayed)  # evicted, never in the window
    assert len(set(numbers(w.replay(15)))) == 15
    assert w.stats()["evicted"] == 180


def test_replay_is_a_uniform_sample_of_all_evicted(tmp_path):
    w = open_window(tmp_path, max_events=1, max_replay=400)
    for start in range(0, 20_000, 1000):
        w.append(clicks(start, 1000, session=False), {"clicks:0": start + 1000})
    evicted = np.array(numbers(w.replay(400)))
    assert len(evicted) == 400
    quartiles = np.bincount(evicted * 4 // 19_999, minlength=4)
    assert quartiles.min() > 60  # 100 each when uniform; ~0 for the first or last evicted
    log = next(tmp_path.glob("replay-*.jsonl")).read_bytes()
    assert log.count(b"\n") <= REPLAY_LOG_FACTOR * 400  # the log is compacted


def test_sessions_only_when_every_click_has_one(tmp_path):
    w = open_window(tmp_path)
    w.append(clicks(0, 4), {})
    assert w.events().session is not None
    w.append(clicks(4, 1, session=False), {})
    assert w.events().session is None


def test_a_bad_row_writes_nothing(tmp_path):
    w = open_window(tmp_path)
    w.append(clicks(0, 3), {"clicks:0": 3})
    before = sorted((f.name, f.read_bytes()) for f in tmp_path.iterdir())
    for bad in [("u", 5, T0, None), ("u", "i", float("nan"), None), ("u", "\ud800", T0, None),
                ("u", "i", "soon", None)]:
        with pytest.raises(ValueError):
            w.append([*clicks(3, 2), bad], {"clicks:0": 6})
    with pytest.raises(ValueError):
        w.append([], {"clicks:0": -1})
    assert sorted((f.name, f.read_bytes()) for f in tmp_path.iterdir()) == before
    assert len(w) == 3 and w.offsets == {"clicks:0": 3}


def test_reopened_with_smaller_bounds_applies_them_at_the_next_commit(tmp_path):
    w = open_window(tmp_path, max_events=50, max_replay=40)
    w.append(clicks(0, 100), {"clicks:0": 100})
    smaller = open_window(tmp_path, max_events=10, max_replay=5)
    smaller.trim(T0)
    assert numbers(smaller.events()) == list(range(90, 100))
    assert len(smaller.replay(100)) == 5
    assert open_window(tmp_path, max_events=10, max_replay=5).stats() == smaller.stats()


def test_forget_erases_a_users_clicks_from_the_window_the_replay_sample_and_the_disk(tmp_path):
    w = open_window(tmp_path, max_events=20, max_replay=50)
    w.append(clicks(0, 60), {"clicks:0": 60})  # 40 evicted: some of u3's are in the reservoir
    assert any(b'"u3"' in f.read_bytes() for f in tmp_path.iterdir())
    before_window, before_replay = w.events(), w.replay(50, seed=0)
    expected = [n for n in numbers(before_window) if n % 7 != 3]
    erased = w.forget(["u3"])
    assert erased == (len(before_window) + len(before_replay)) - len(expected) - sum(
        n % 7 != 3 for n in numbers(before_replay))
    assert numbers(w.events()) == expected and "u3" not in w.replay(50, seed=0).user_ids
    assert not any(b'"u3"' in f.read_bytes() for f in tmp_path.iterdir())
    again = open_window(tmp_path, max_events=20, max_replay=50)  # durable, and appends go on
    assert numbers(again.events()) == expected and again.offsets == {"clicks:0": 60}
    again.append(clicks(60, 1), {"clicks:0": 61})
    assert numbers(again.events())[-1] == 60 and again.forget(["nobody"]) == 0
