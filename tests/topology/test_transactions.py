"""Exactly-once wiring (topology/transactions.py): which transaction an output joins, and commits
held between batches; no broker (the kill -9 test in tests/fault checks the outcome)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust
from faust.types import Message

from stream_recs.topology.transactions import BatchGate, output_sender


def app_with(guarantee: str, name: str) -> faust.App:
    return faust.App(f"tx-{name}", broker="kafka://127.0.0.1:1", processing_guarantee=guarantee)


def sent_with(app: faust.App, monkeypatch) -> list[dict]:
    calls: list[dict] = []

    async def send(topic, key, value, partition, timestamp, headers, **kwargs):
        calls.append({"topic": topic, "partition": partition, **kwargs})

    monkeypatch.setattr(app.producer, "send", send)
    return calls


async def test_exactly_once_outputs_join_their_clicks_partition_transaction(monkeypatch):
    app = app_with("exactly_once", "eos-send")
    app.assignor._topic_groups = {"clicks": 1}  # what the assignment gives the worker
    calls = sent_with(app, monkeypatch)
    click = Message("clicks", 3, 17, 0.0, 0, {}, b"u", b"{}", None)
    await output_sender(SimpleNamespace(app=app))("recommendations", b"u", b"{}", click)
    # Faust commits partition 3's offsets in the transaction "<app id>-<group>-3"
    assert calls == [{"topic": "recommendations", "partition": None, "transactional_id": "tx-eos-send-1-3"}]


async def test_at_least_once_outputs_go_to_the_plain_producer(monkeypatch):
    app = app_with("at_least_once", "alo-send")
    calls = sent_with(app, monkeypatch)
    click = Message("clicks", 3, 17, 0.0, 0, {}, b"u", b"{}", None)
    await output_sender(SimpleNamespace(app=app))("recommendations", b"u", b"{}", click)
    assert calls == [{"topic": "recommendations", "partition": None}]


async def test_an_exactly_once_commit_waits_for_the_batch_in_flight():
    app = app_with("exactly_once", "eos-gate")
    gate = BatchGate(app)
    async with gate.batch():
        commit = asyncio.ensure_future(app.consumer.commit())
        await asyncio.sleep(0.05)
        assert not commit.done()  # the batch's answers are sent, its acks not yet made
    assert await asyncio.wait_for(commit, 5) is False  # nothing was acked: nothing to commit


async def test_at_least_once_commits_are_not_held():
    app = app_with("at_least_once", "alo-gate")
    async with BatchGate(app).batch():
        assert await asyncio.wait_for(app.consumer.commit(), 5) is False
