"""Settings from ``STREAM_RECS_*`` environment variables, with CLI flags layered on top.

One frozen ``Settings`` object describes where Kafka is, how the clients authenticate, the topic
names and the worker's knobs. ``kafka_client_kwargs`` turns it into kafka-python keyword
arguments, so every client (admin, producer, consumer) is configured the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

ENV_PREFIX = "STREAM_RECS_"


def default_home() -> Path:
    """Where the broker jars, the local broker's data and cached models live (outside the repo)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stream-recs"


@dataclass(frozen=True)
class Security:
    """Kafka client security settings, passed through unchanged to every client."""

    protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None


@dataclass(frozen=True)
class Topics:
    """Names of the project's topics (DESIGN.md section 4)."""

    clicks: str = "clicks"
    recommendations: str = "recommendations"
    dead_letters: str = "dead-letters"
    model_updates: str = "model-updates"


@dataclass(frozen=True)
class Worker:
    """Knobs of the stream worker (``STREAM_RECS_<NAME>``, e.g. ``STREAM_RECS_K=10``)."""

    app_id: str = "stream-recs"
    k: int = 20
    batch_size: int = 256  # most events taken into one micro-batch
    batch_window: float = 0.015  # seconds to wait for a micro-batch to fill
    producer_linger: float = 0.005  # seconds the producer waits to fill a request
    producer_batch_bytes: int = 0  # largest producer batch per partition; 0: topology.app chooses
    fetch_max_wait: float = 0.02  # seconds the broker may hold a fetch with no new records
    session_gap: float = 1800.0  # inactivity (event time) that starts a new session
    history_len: int = 50
    mask_recent: int = 50  # how many of the user's latest items are never recommended (0: none)
    state_ttl: float = 30 * 86400.0  # idle users are forgotten after this (processing time)
    popularity_half_life: float = 3600.0
    max_record_bytes: int = 4096
    store: str = "rocksdb://"  # or memory://
    data_dir: str = ""  # Faust's data directory (tables); empty: <home>/worker/<app_id>
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9465
    processing_guarantee: str = "at_least_once"  # or exactly_once (Kafka transactions)
    commit_interval: float = 1.0
    torch_threads: int = 1
    ann_lists: int = 0  # >0: approximate scoring, faiss inverted file with this many cells (`ann` extra)
    ann_probes: int = 32  # cells scanned per event when ann_lists > 0
    bf16_screen: str = "auto"  # exact scoring through a bfloat16 matmul: auto (if the CPU has it), on, off
    ranker: str = "auto"  # top-K in a child process (ranker_child.py): auto (2+ CPUs usable), process, inline
    state_sweep_interval: float = 300.0  # seconds between deletions of states idle past state_ttl
    pseudonymise_key: str = field(default="", repr=False)  # HMAC key for user ids (privacy.py)
    pseudonymise_key_file: str = ""  # or a file holding it


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know about its environment."""

    bootstrap_servers: str | None = None  # None: use (and start) the embedded local broker
    home: Path = field(default_factory=default_home)
    security: Security = field(default_factory=Security)
    topics: Topics = field(default_factory=Topics)
    worker: Worker = field(default_factory=Worker)
    partitions: int = 4
    replication_factor: int = 1

    @property
    def embedded(self) -> bool:
        """True when no external cluster is configured and the local broker is used."""
        return self.bootstrap_servers is None


def _env(name: str) -> str | None:
    value = os.environ.get(ENV_PREFIX + name.upper())
    return value if value not in (None, "") else None


def _coerce(value: str, kind: type) -> object:
    if kind is int:
        return int(value)
    if kind is float:
        return float(value)
    if kind is Path:
        return Path(value).expanduser()
    return value


def _from_env(cls: type, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    hints = {f.name: f.type for f in fields(cls)}
    for name, hint in hints.items():
        raw = _env(prefix + name)
        if raw is None:
            continue
        kind = {"int": int, "float": float, "Path": Path}.get(str(hint).split(" ")[0], str)
        out[name] = _coerce(raw, kind)
    return out


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; non-None ``overrides`` (CLI flags) win.

    ``KAFKA_BOOTSTRAP_SERVERS`` is honoured as well as ``STREAM_RECS_BOOTSTRAP_SERVERS``.
    """
    values = _from_env(Settings)
    values.pop("security", None)
    values.pop("topics", None)
    values.pop("worker", None)
    if "bootstrap_servers" not in values and os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        values["bootstrap_servers"] = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    values["security"] = Security(**_from_env(Security, "security_"))
    values["topics"] = Topics(**_from_env(Topics, "topic_"))
    values["worker"] = Worker(**_from_env(Worker))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)


def kafka_client_kwargs(settings: Settings, bootstrap: str) -> dict[str, object]:
    """kafka-python keyword arguments (bootstrap plus security) for any client type."""
    sec = settings.security
    kwargs: dict[str, object] = {"bootstrap_servers": bootstrap.split(","), "security_protocol": sec.protocol}
    if sec.sasl_mechanism:
        kwargs["sasl_mechanism"] = sec.sasl_mechanism
        kwargs["sasl_plain_username"] = sec.sasl_username
        kwargs["sasl_plain_password"] = sec.sasl_password
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(sec, name):
            kwargs[name] = getattr(sec, name)
    return kwargs

