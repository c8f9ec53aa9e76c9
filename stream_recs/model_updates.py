"""Model updates: announce a checkpoint, verify and load an announced one, and what a worker
starts with.

Every worker reads every announcement (no consumer group; ``rollout_follower.py``), and starts
with the live model the topic's records make (``read_rollout``, ``starting_model``). An
announcement names a checkpoint directory, its version, the sha256 of its weights and, when it is
signed, an HMAC-SHA256 over the checkpoint's metadata and weights under a shared key (``sign``;
``messages.ModelUpdate``). A worker holding the key (``Trust``) refuses an unsigned or mis-signed
announcement, and one whose path lies outside its models root (symbolic links resolved). Each
checkpoint file is read once: what was verified is what is loaded (``load_update``). The ranker
child is told the sha256 of the metadata the worker loaded, which names the weights' sha256 in
turn, so it serves the very same checkpoint (``load_checkpoint``). A checkpoint whose item
registry disagrees with the live one about an index of their lineage (a branched lineage, whose
states would be misread) is refused too. A refused announcement is logged and counted with its
reason (``stream_recs_model_updates_refused_total{reason}``, one of ``messages.REFUSAL_REASONS``),
and the old model keeps serving.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from stream_recs.config import Settings
from stream_recs.kafka_clients import read_to_end
from stream_recs.keys import read_key
from stream_recs.messages import FULL, ModelUpdate, encode_model_update
from stream_recs.models import CheckpointError, GRU4Rec
from stream_recs.models.checkpoint import CheckpointFiles, read_checkpoint
from stream_recs.rollout import Rollout

if TYPE_CHECKING:  # the ranker child imports load_checkpoint, and needs none of these
    from stream_recs.config import Worker
    from stream_recs.metrics import Metrics

log = logging.getLogger(__name__)

SIGNED_PREFIX = b"stream-recs model announcement/1\n"  # what a signature signs starts with this
LATEST_TIMEOUT_S = 10.0  # the longest a start waits to read the model-updates topic


class Refused(Exception):
    """An announcement the worker will not serve; ``reason`` is one of ``messages.REFUSAL_REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Trust:
    """What an announcement must satisfy besides naming a valid checkpoint: a signature under
    ``key``, a path under ``root`` (each when set)."""

    key: bytes | None = field(default=None, repr=False)
    root: Path | None = None

    @classmethod
    def of(cls, worker: Worker) -> Trust:
        """The trust the worker settings configure (``KeyConfigError`` for a bad key)."""
        key = read_key(worker.model_signing_key, worker.model_signing_key_file, "model-signing key")
        return cls(key, Path(worker.models_root).resolve() if worker.models_root else None)


UNCHECKED = Trust()  # no key, no root: any valid checkpoint is served


def sign(key: bytes, files: CheckpointFiles) -> str:
    """HMAC-SHA256 under ``key`` over the checkpoint's metadata and weights (through their sha256)."""
    message = SIGNED_PREFIX + files.meta_digest + files.weights_digest
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def announce(producer, topic: str, path: str | Path, key: bytes | None, rollout: str = FULL) -> ModelUpdate:
    """Send the announcement of the checkpoint at ``path`` (signed with ``key`` when given; for
    ``rollout``, ``messages.FULL`` or ``CANARY``) on ``topic`` with the kafka-python ``producer``,
    and wait for the broker's acknowledgement; ``CheckpointError`` when the checkpoint would not
    load."""
    path = Path(path).resolve()
    files = _read(path)
    model = files.model()  # refuse to announce what would not load
    update = ModelUpdate(path=str(path), version=model.version, sha256=files.meta()["weights_sha256"],
                         signature=sign(key, files) if key is not None else None, rollout=rollout)
    producer.send(topic, key=b"model", value=encode_model_update(update)).get(60)
    return update


def _read(path: str | Path) -> CheckpointFiles:
    try:
        return read_checkpoint(path)
    except (OSError, ValueError) as exc:  # an odd path: a NUL byte, a name too long
        raise CheckpointError(f"{path!r} cannot be read: {exc}") from exc


def _model(files: CheckpointFiles, version: str | None) -> GRU4Rec:
    model = files.model()
    if version is not None and model.version != version:
        raise CheckpointError(f"{files.directory}: version {model.version} is not the expected {version}")
    return model


def load_checkpoint(
    path: str | Path, version: str | None = None, meta_sha256: str | None = None
) -> tuple[GRU4Rec, str]:
    """The checkpoint at ``path`` and the sha256 of its metadata, if it is of this ``version`` and
    its metadata has this sha256 (each checked when given); else ``CheckpointError``."""
    files = _read(path)
    if meta_sha256 is not None and files.meta_sha256 != meta_sha256:
        raise CheckpointError(f"{path}: meta.json is not the one the worker loaded")
    return _model(files, version), files.meta_sha256


def load_update(update: ModelUpdate, trust: Trust) -> tuple[GRU4Rec, str]:
    """The announced checkpoint and the sha256 of its metadata, if the announcement satisfies
    ``trust`` and names that checkpoint's version and weights; else ``Refused``."""
    try:
        path = Path(update.path).resolve()
    except (OSError, ValueError) as exc:
        raise Refused("bad_checkpoint", f"{update.path!r} cannot be resolved: {exc}") from exc
    if trust.root is not None and not path.is_relative_to(trust.root):
        raise Refused("outside_root", f"{path} is outside the models root {trust.root}")
    try:
        files = _read(path)
        if trust.key is not None:
            if update.signature is None:
                raise Refused("unsigned", f"the announcement of {path} is not signed")
            if not hmac.compare_digest(update.signature, sign(trust.key, files)):
                raise Refused("bad_signature", f"the signature of {path} does not match its files")
        if files.meta()["weights_sha256"] != update.sha256:
            raise CheckpointError(f"{path}: the weights' sha256 is not the announced one")
        return _model(files, update.version), files.meta_sha256
    except CheckpointError as exc:
        raise Refused("bad_checkpoint", str(exc)) from exc


def read_rollout(
    settings: Settings, bootstrap: str, timeout_s: float = LATEST_TIMEOUT_S
) -> tuple[Rollout, int] | None:
    """The rollout the model-updates topic holds (``rollout.py``, replayed from its first record)
    and the offset after the last record read; None when it could not be read in ``timeout_s``."""
    read = read_to_end(settings, bootstrap, settings.topics.model_updates, timeout_s)
    if read is None:
        return None
    records, end = read
    return Rollout.replay(r.value for r in records), end


def starting_model(
    given: GRU4Rec | None, given_dir: str | None, given_sha256: str | None, update: ModelUpdate | None,
    trust: Trust, metrics: Metrics,
) -> tuple[GRU4Rec | None, str | None, str | None]:
    """The model a worker starts with, its directory and its metadata's sha256: the announced
    live model (``update``) when it satisfies ``trust`` and keeps the given model's item indices,
    else the given one. A worker must not answer a click with its command line's model when a
    later one was announced: that answer would go out under the wrong version, and its state
    would drop the items only the announced model knows (``SessionState.within``)."""
    if update is None or (given is not None and update.version == given.version):
        return given, given_dir, given_sha256
    try:
        model, meta_sha256 = load_update(update, trust)
        conflict = given.registry.conflict_with(model.registry) if given is not None else None
        if conflict is not None:
            raise Refused("branched_lineage", f"{update.path}: {conflict}")
    except Refused as exc:
        log.error("the announced live model is refused (%s), the given model serves: %s",
                  exc.reason, exc)
        metrics.record_refused_update(exc.reason)
        return given, given_dir, given_sha256
    log.warning("starting with %s, the announced live model", model.version)
    return model, update.path, meta_sha256
