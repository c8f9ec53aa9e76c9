"""A model swap under load that adds items, then kill -9 and a restart: no user loses history.

The new model extends the old one's item registry, so the states written under either are read
as they are. The restarted worker is started with the model it was first given (its command line
did not change), yet it must serve the announced one from its first answer: had it answered a
single click with the old model first, that model, lacking the new items, would have dropped them
from the user's history.
"""

from __future__ import annotations

import signal

import orjson
import pytest

from tests.harness import N_ITEMS, make_child, make_model

from .load import SteadyLoad, Tally, read_all, shrunk_histories
from .test_crash import clicked_histories, stored_histories, wait_answered

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RATE = 400.0
USERS = 100
SETTLE = 2_000  # clicks answered before the swap, after it, and after the restart
NEW_ITEMS = [f"n{i}" for i in range(30)]
RECENT = 40  # of the 50 items a stored history keeps


def test_a_swap_that_adds_items_then_a_restart_loses_no_history(stream, workers, tmp_path):
    v1 = make_model(tmp_path / "v1", "v1", seed=1)
    v2 = make_child(tmp_path / "v2", v1, "v2", NEW_ITEMS, seed=2)
    first = workers("first", v1).start()
    load = SteadyLoad(stream.bootstrap, stream.topics.clicks, RATE, USERS, seed=5).start()
    try:
        wait_answered(first, SETTLE)
        published = stream.cli("publish-model", str(v2))
        assert published.returncode == 0, published.stderr
        first.wait_until(lambda: first.value("stream_recs_model_info", version="v2") == 1.0,
                         "v2 never went live")
        load.items = load.items + NEW_ITEMS
        wait_answered(first, first.answered() + SETTLE)
        first.stop(signal.SIGKILL)
        restarted_at = load.sent
        second = workers("second", v1).start(timeout_s=240)  # waits out the killed member's session
        wait_answered(second, SETTLE, timeout_s=240)
        load.stop()
    finally:
        load.halt()
    assert not load.failed

    records = read_all(stream.bootstrap, stream.topics.recommendations, len(load.acked), timeout_s=240)
    answers = [orjson.loads(r.value) for r in records]
    tally = Tally.of("swap adding items, kill -9, restart", load.acked,
                     [a["event_id"] for a in answers], placed=load.placed)
    late = {a["model_version"] for a in answers if int(a["event_id"][1:]) >= restarted_at}
    states, shrunk = shrunk_histories(stream)
    # a user whose last clicks hold a new item must still hold one (replays may add a few repeats
    # to a stored history, so its last 50 items start a little later than the last 50 clicked)
    stored = stored_histories(stream)
    clicked_new = [u for u, items in clicked_histories(load, v2, RECENT).items() if max(items) >= N_ITEMS]
    dropped = [u for u in clicked_new if not any(i >= N_ITEMS for i in stored.get(u, ()))]
    tally.report(f"{states} states written, {len(shrunk)} users with a shrunk history, "
                 f"{len(clicked_new) - len(dropped)} of the {len(clicked_new)} users whose last "
                 f"{RECENT} clicks hold a new item hold one; after the restart served by {sorted(late)}")
    assert not tally.lost, tally.lost_summary()
    assert not tally.unexpected
    assert late == {"v2"}
    assert clicked_new and not dropped, f"{len(dropped)} users lost their new items, e.g. {dropped[:5]}"
    assert not shrunk, f"{len(shrunk)} users lost history, e.g. {shrunk[:5]}"
