"""The demo's learning half: a trainer beside the worker, and what it and the canary decide, printed
as they decide it.

The trainer runs as ``stream-recs trainer`` (a subprocess, as a user would start it), with cycles
and a canary scaled down to the demo's few thousand clicks (``DEMO_SETTINGS``, given to the worker
too). Each cycle's verdict is read from the trainer's log; each announcement and canary decision
from the model-updates topic, which is what the workers act on.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from stream_recs.config import Settings
from stream_recs.devkit import free_port, stop_process
from stream_recs.kafka_clients import client_kwargs
from stream_recs.messages import CANARY, CanaryDecision, ModelUpdateError, decode_model_record

# a canary the demo's stream can decide (a quarter of the users, judged after 300 evaluations),
# every answer explained and carrying its catalogue title, for the samples it prints
DEMO_SETTINGS = {"STREAM_RECS_CANARY_SHARE": "0.25", "STREAM_RECS_CANARY_MIN_EVENTS": "300",
                 "STREAM_RECS_CANARY_MAX_EVENTS": "3000", "STREAM_RECS_EXPLAIN_SHARE": "1",
                 "STREAM_RECS_ITEM_DETAILS": "on"}
VERDICT = re.compile(r"cycle (published|rejected|failed): (.*)")


def demo_env() -> dict[str, str]:
    """The environment of the demo's worker and trainer."""
    return {**os.environ, **DEMO_SETTINGS}


class Learning:
    """The demo's trainer process and the news of its cycles and of the canary."""

    def __init__(self, settings: Settings, bootstrap: str, model: Path, events: int, log: Path) -> None:
        self.log, self.verdicts = log, {"published": 0, "rejected": 0, "failed": 0}
        self.decisions: list[str] = []
        args = [sys.executable, "-m", "stream_recs", "trainer", "--model", str(model),
                "--models-dir", str(settings.home / "demo-models"), "--epochs", "1",
                "--cycle-events", str(max(1000, events // 4)), "--cycle-seconds", "60",
                "--port", str(free_port())]
        with log.open("ab") as out:
            self._read_from = out.tell()
            self.proc = subprocess.Popen(args, env=demo_env(), stdout=out, stderr=subprocess.STDOUT)
        self._updates = KafkaConsumer(**client_kwargs(settings, bootstrap), enable_auto_commit=False)
        tp = TopicPartition(settings.topics.model_updates, 0)
        self._updates.assign([tp])
        self._updates.seek_to_end(tp)
        self._updates.position(tp)  # resolved now: only what this run announces is news

    def news(self) -> list[str]:
        """What the trainer and the canary decided since the last call, one line each."""
        lines = []
        with self.log.open("rb") as handle:
            handle.seek(self._read_from)
            text = handle.read().decode(errors="replace")
            self._read_from = handle.tell()
        for result, detail in VERDICT.findall(text):
            self.verdicts[result] += 1
            lines.append(f"trainer: cycle {result}: {detail.strip()}")
        for records in self._updates.poll(timeout_ms=0).values():
            for record in records:
                lines.extend(self._describe(record.value))
        return lines

    def _describe(self, raw: bytes | None) -> list[str]:
        try:
            record = decode_model_record(raw)
        except ModelUpdateError:
            return []
        if isinstance(record, CanaryDecision):
            if record.version in self.decisions:
                return []  # another worker's copy of the same decision
            self.decisions.append(record.version)
            live, candidate = record.evidence.get("live", {}), record.evidence.get("candidate", {})
            return [f"canary of {record.version}: {record.decision} (online HR@K "
                    f"{candidate.get('hr') or 0:.3f} over {candidate.get('evaluated')} evaluations against "
                    f"the live model's {live.get('hr') or 0:.3f} over {live.get('evaluated')}, "
                    f"z {record.evidence.get('z')})"]
        how = f"as a canary for {float(DEMO_SETTINGS['STREAM_RECS_CANARY_SHARE']):.0%} of users" \
            if record.rollout == CANARY else "for every user"
        return [f"announced {record.version} {how}"]

    def close(self) -> None:
        stop_process(self.proc)
        self._updates.close()
