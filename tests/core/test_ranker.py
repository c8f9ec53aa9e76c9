"""Ranker in a child process (ranker_child.py): a real child, no Kafka. It must give exactly the answers
of in-process ranking, and the worker must keep answering when the child is missing, dead, or
serves another model version."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import numpy as np
import pytest
import torch

from stream_recs import ranker_child
from stream_recs.config import ServingOptions
from stream_recs.events import Event
from stream_recs.models import save_model
from stream_recs.models.gru4rec import GRU4Rec
from stream_recs.ranker_child import Ranker, RankerError, RankerProcess
from stream_recs.scoring import Recommender

T0 = 1_700_000_000.0
ITEMS = ["[PAD]", *(f"i{i}" for i in range(1, 3000))]


def make_model(version: str, seed: int = 0) -> GRU4Rec:
    torch.manual_seed(seed)
    model = GRU4Rec(ITEMS, hidden_size=16, version=version)
    with torch.no_grad():
        model.item_embedding.weight.normal_(0, 0.5)
        model.item_bias.weight.normal_(0, 0.1)
    return model


@pytest.fixture
def checkpoints(tmp_path):
    """Two saved model versions: {version: directory}."""
    dirs = {}
    for seed, version in enumerate(("v1", "v2")):
        dirs[version] = tmp_path / version
        save_model(make_model(version, seed), dirs[version])
    return dirs


def waves(n_users: int = 40, length: int = 4, seed: int = 0) -> list[list[Event]]:
    rng = np.random.default_rng(seed)

    def click(u: int, t: int) -> Event:
        return Event(f"u{u}-{t}", f"u{u}", f"i{rng.integers(1, len(ITEMS))}", "click", T0 + t)

    return [[click(u, t) for u in range(n_users)] for t in range(length)]


async def serve(rec: Recommender, ranking: Ranker | None) -> list:
    """Each wave as one batch, ranked by ``ranking`` (None: ``step_batch``, in-process)."""
    states, answers = {}, []
    for wave in waves():
        if ranking is None:
            result = rec.step_batch(wave, states, T0 + 100)
        else:
            pending = rec.begin_batch(wave, states, T0 + 100)
            result = rec.finish_batch(pending, await ranking.top_k(pending))
        states.update(result.states)
        answers.append((result.recommendations, result.states))
    return answers


@pytest.mark.parametrize("bf16_screen", ["off", "on"])
async def test_the_child_ranks_exactly_as_the_worker_does(checkpoints, bf16_screen):
    rec = Recommender(make_model("v1"), ServingOptions(k=10, bf16_screen=bf16_screen))
    ranking = Ranker(rec.options, True, checkpoints["v1"], "v1", min_rows=1)
    await ranking.start()
    try:
        assert ranking.process is not None and ranking.process.version == "v1"
        live = rec.prepare(make_model("v1"))
        outputs = torch.randn(33, 16)
        for masked in (None, torch.randint(len(ITEMS), (33, 7))):
            remote = await ranking.process.top_k(outputs, masked)
            local = live.top_k(outputs, masked)
            assert torch.equal(remote[0], local[0]) and torch.equal(remote[1], local[1])
        expected = await serve(Recommender(make_model("v1"), rec.options), None)
        assert await serve(rec, ranking) == expected
        assert ranking.process is not None and ranking.child_ready
    finally:
        await ranking.close()


async def test_a_dead_child_is_replaced(checkpoints, caplog, monkeypatch):
    """Batches are ranked in-process while it is gone, then by its successor."""
    monkeypatch.setattr(ranker_child, "RESPAWN_DELAYS_S", (0.2, 0.4))
    rec = Recommender(make_model("v1"), ServingOptions(k=10))
    restarts = []
    ranking = Ranker(
        rec.options, True, checkpoints["v1"], "v1", min_rows=1, on_restart=lambda: restarts.append(1)
    )
    await ranking.start()
    dead = ranking.process
    dead.proc.kill()
    await dead.proc.wait()
    try:
        with caplog.at_level(logging.ERROR, logger="stream_recs.ranker_child"):
            answers = await serve(rec, ranking)
        assert ranking.process is None
        assert "ranking in-process until a new child is ready" in caplog.text
        assert answers == await serve(Recommender(make_model("v1"), ServingOptions(k=10)), None)
        for _ in range(300):  # the successor starts after the first delay
            if ranking.process is not None:
                break
            await asyncio.sleep(0.1)
        assert ranking.process is not dead and ranking.process.version == "v1" and restarts == [1]
        assert await serve(rec, ranking) == answers and ranking.child_ready
    finally:
        await ranking.close()


async def test_a_child_that_keeps_failing_is_restarted_ever_later(checkpoints, monkeypatch):
    """A checkpoint its children cannot load: each start fails, the next comes after a longer wait."""
    monkeypatch.setattr(ranker_child, "RESPAWN_DELAYS_S", (0.1, 0.3, 0.9))
    started, failed = [], []  # when each start began, when it failed
    original = RankerProcess.start

    async def start(*args, **kwargs):
        started.append(asyncio.get_running_loop().time())
        try:
            return await original(*args, **kwargs)
        finally:
            failed.append(asyncio.get_running_loop().time())

    monkeypatch.setattr(RankerProcess, "start", start)
    ranking = Ranker(ServingOptions(k=10), True, checkpoints["v1"], "v2")  # the version is wrong
    await ranking.start()
    try:
        for _ in range(600):
            if len(started) >= 4:
                break
            await asyncio.sleep(0.05)
        waits = [begun - ended for ended, begun in zip(failed, started[1:], strict=False)]
        assert len(waits) >= 3 and waits[0] < waits[1] < waits[2] and ranking.process is None
        assert waits[2] >= 0.9
    finally:
        await ranking.close()


async def test_a_child_of_another_version_is_not_used(checkpoints):
    rec = Recommender(make_model("v1"), ServingOptions(k=10))
    ranking = Ranker(rec.options, True, checkpoints["v1"], "v1", min_rows=1)
    await ranking.start()
    try:
        rec.swap_model(make_model("v2", seed=1))  # the batches now use v2; the child serves v1
        expected = await serve(Recommender(make_model("v2", seed=1), ServingOptions(k=10)), None)
        assert await serve(rec, ranking) == expected
        pid = ranking.process.proc.pid
        await ranking.load(checkpoints["v2"], "v2")
        assert ranking.process.version == "v2" and ranking.process.proc.pid == pid  # reloaded in place
        assert await serve(rec, ranking) == expected and ranking.child_ready
    finally:
        await ranking.close()


async def test_a_child_that_cannot_reload_is_retired_and_replaced(checkpoints, caplog, monkeypatch):
    # the respawn is due at once: the announcement below supersedes it instead of racing it
    monkeypatch.setattr(ranker_child, "RESPAWN_DELAYS_S", (0.0,))
    rec = Recommender(make_model("v1"), ServingOptions(k=10))
    ranking = Ranker(rec.options, True, checkpoints["v1"], "v1", min_rows=1)
    await ranking.start()
    first = ranking.process
    try:
        with caplog.at_level(logging.ERROR, logger="stream_recs.ranker_child"):
            await ranking.load(checkpoints["v1"], "v2")  # the checkpoint is not of that version
        assert "could not load" in caplog.text and "not the expected v2" in caplog.text
        assert ranking.process is None and first.proc.returncode is not None
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="stream_recs.ranker_child"):
            await ranking.load(checkpoints["v2"], "v2")  # a good announcement after it: a new child
        assert "starting a new ranker child" not in caplog.text  # the one start is this load's
        assert ranking.process is not None and ranking.process.version == "v2"
        assert ranking.process.proc.pid != first.proc.pid
    finally:
        await ranking.close()


async def test_the_newest_load_wins(checkpoints):
    rec = Recommender(make_model("v1"), ServingOptions(k=10))
    ranking = Ranker(rec.options, True, min_rows=1)
    try:
        await asyncio.gather(ranking.load(checkpoints["v1"], "v1"), ranking.load(checkpoints["v2"], "v2"))
        assert ranking.process.version == "v2"
    finally:
        await ranking.close()


async def test_a_child_that_cannot_start_is_reported(checkpoints, tmp_path, caplog):
    options = ServingOptions(k=10)
    with pytest.raises(RankerError, match="not a checkpoint directory"):
        await RankerProcess.start(tmp_path / "missing", options)
    with pytest.raises(RankerError, match="not the expected v2"):
        await RankerProcess.start(checkpoints["v1"], options, "v2")
    with pytest.raises(RankerError, match="not the one the worker loaded"):
        await RankerProcess.start(checkpoints["v1"], options, "v1", "0" * 64)
    ranking = Ranker(options, True, tmp_path / "missing", "v1")
    with caplog.at_level(logging.ERROR, logger="stream_recs.ranker_child"):
        await ranking.start()
    assert ranking.process is None and "did not start" in caplog.text


async def test_the_child_exits_when_closed(checkpoints):
    options = ServingOptions(k=10)
    process = await RankerProcess.start(checkpoints["v1"], options, "v1")
    await process.close()
    assert process.proc.returncode == 0
    with pytest.raises(RankerError, match="stopped"):
        await process.top_k(torch.randn(2, 16), None)


async def test_a_request_cut_short_retires_the_child(checkpoints, caplog):
    rec = Recommender(make_model("v1"), ServingOptions(k=10))
    ranking = Ranker(rec.options, True, checkpoints["v1"], "v1", min_rows=1)
    await ranking.start()
    process = ranking.process
    request = asyncio.create_task(process.top_k(torch.randn(64, 16), None))
    await asyncio.sleep(0)  # sent, not answered yet
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    with pytest.raises(RankerError, match="cut short"):  # its answer must not answer another batch
        await process.top_k(torch.randn(2, 16), None)
    with caplog.at_level(logging.ERROR, logger="stream_recs.ranker_child"):
        assert await serve(rec, ranking) == await serve(Recommender(make_model("v1"), rec.options), None)
    assert ranking.process is None and not ranking.child_ready
    assert process.proc.returncode is not None  # stopped


async def test_a_hung_child_is_given_up(checkpoints, monkeypatch):
    monkeypatch.setattr(ranker_child, "REQUEST_TIMEOUT_S", 0.5)
    rec = Recommender(make_model("v1"), ServingOptions(k=10))
    ranking = Ranker(rec.options, True, checkpoints["v1"], "v1", min_rows=1)
    await ranking.start()
    process = ranking.process
    os.kill(process.proc.pid, signal.SIGSTOP)
    assert await serve(rec, ranking) == await serve(Recommender(make_model("v1"), ServingOptions(k=10)), None)
    assert ranking.process is None
    assert process.proc.returncode == -signal.SIGKILL
    await ranking.close()


async def test_small_batches_are_ranked_in_process(checkpoints, monkeypatch):
    rec = Recommender(make_model("v1"), ServingOptions(k=10))
    ranking = Ranker(rec.options, True, checkpoints["v1"], "v1", min_rows=41)
    await ranking.start()
    asked, original = [], ranking.process.top_k

    def spy(*query):
        asked.append(len(query[0]))
        return original(*query)

    monkeypatch.setattr(ranking.process, "top_k", spy)
    try:
        pending = rec.begin_batch(waves(n_users=41)[0], {}, T0 + 100)
        await ranking.top_k(pending)
        assert asked == [41]
        await serve(rec, ranking)  # 40 users per batch
        assert asked == [41] and ranking.child_ready
    finally:
        await ranking.close()
