"""The KRaft cluster id handed to the storage tool."""

from __future__ import annotations

import base64
import uuid

from stream_recs import kafka_local


def test_cluster_id_never_starts_with_a_dash(monkeypatch):
    # 0xF8 makes the first base64 character "-": the storage tool would read it as an option
    dashed, plain = uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)
    drawn = iter([dashed, dashed, plain])
    monkeypatch.setattr(kafka_local.uuid, "uuid4", lambda: next(drawn))
    cluster_id = kafka_local._uuid_base64()
    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")
    assert base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")
