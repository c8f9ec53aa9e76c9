"""The Faust app factory (topology/app.py); no broker."""

from __future__ import annotations

import pytest

from stream_recs.config import load_settings
from stream_recs.topology.app import create_app


@pytest.mark.parametrize(("seconds", "expected_ms"), [("0.02", 20), ("1.5", 1500)])
async def test_the_worker_consumer_fetches_with_the_configured_wait(
    monkeypatch, tmp_path, seconds, expected_ms
):
    monkeypatch.setenv("STREAM_RECS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STREAM_RECS_FETCH_MAX_WAIT", seconds)
    app = create_app(load_settings(), "127.0.0.1:1").app
    consumer = app.consumer._thread._create_worker_consumer(app.transport)  # what Faust starts
    try:
        assert consumer._fetch_max_wait_ms == expected_ms
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("guarantee", "configured", "expected"),
    [
        ("at_least_once", None, 256 << 10),  # our records are 1.4 KB: Faust's 16 KiB holds 11
        ("exactly_once", None, 16 << 10),  # Faust's own size, until its kill -9 runs say otherwise
        ("exactly_once", "65536", 65_536),  # a configured size always wins
    ],
)
async def test_the_producer_batch_size(monkeypatch, tmp_path, guarantee, configured, expected):
    monkeypatch.setenv("STREAM_RECS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STREAM_RECS_PROCESSING_GUARANTEE", guarantee)
    if configured:
        monkeypatch.setenv("STREAM_RECS_PRODUCER_BATCH_BYTES", configured)
    app = create_app(load_settings(), "127.0.0.1:1").app
    producer = app.producer._new_producer()  # the aiokafka producer Faust starts
    try:
        assert producer._message_accumulator._batch_size == expected
    finally:
        await producer.stop()
