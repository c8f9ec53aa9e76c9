"""Settings: every ``STREAM_RECS_*`` variable declared once, and validated where it is loaded.

Each setting is a field of one of the frozen groups below, declared with ``setting(default,
help, ...)``: its default, type, allowed values and help text live there and nowhere else. Its
variable is ``STREAM_RECS_`` + the group's prefix + the field's name in capitals
(``Topics.clicks``: ``STREAM_RECS_TOPIC_CLICKS``; ``ServingOptions.k``: ``STREAM_RECS_K``).
``load_settings`` reads them from the environment, CLI flags on top; a value a setting cannot
take raises ``SettingsError``, naming the variable and what it accepts. ``settings_listing.py``
shows them (``stream-recs settings``, and the README's table, which a test compares with it).

``ServingOptions`` is what the recommender, its ranker child and the worker's flags take: built
once from the settings and handed on, never declared again.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

ENV_PREFIX = "STREAM_RECS_"
BOOTSTRAP_ALIAS = "KAFKA_BOOTSTRAP_SERVERS"


class SettingsError(ValueError):
    """A setting has a value it cannot take; the message names the variable."""


def default_home() -> Path:
    """Where the broker jars, the local broker's data and cached models live (outside the repo)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stream-recs"


def setting(
    default: object, help: str, *, choices: tuple = (), minimum: float | None = None,
    flag: bool = False, secret: bool = False, shown: str | None = None,
):
    """A setting's declaration. ``choices``: the values it accepts; ``minimum``: its least value;
    ``flag``: ``stream-recs worker`` has a flag for it; ``secret``: never shown (repr, listing);
    ``shown``: how the default reads in the listing (a callable ``default`` is a factory)."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "flag": flag, "secret": secret,
            "shown": shown}
    if callable(default):
        return field(default_factory=default, repr=not secret, metadata=meta)
    return field(default=default, repr=not secret, metadata=meta)


class _Group:
    """A frozen group of settings, checked as it is built (from the environment or in code)."""

    PREFIX: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for spec in _specs(type(self)):
            value = getattr(self, spec.name)
            if spec.choices and value not in spec.choices and value is not None:
                allowed = ", ".join(str(c) for c in spec.choices)
                raise SettingsError(f"{spec.variable} must be one of {allowed}; got {value!r}")
            if spec.minimum is not None and value < spec.minimum:
                raise SettingsError(f"{spec.variable} must be at least {spec.minimum}; got {value!r}")


@dataclass(frozen=True)
class Security(_Group):
    """How every Kafka client (Faust, aiokafka, kafka-python) authenticates."""

    PREFIX: ClassVar[str] = "SECURITY_"
    protocol: str = setting("PLAINTEXT", "how clients reach the brokers",
                            choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
    sasl_mechanism: str | None = setting(None, "SASL mechanism (PLAIN when unset)",
                                         choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"))
    sasl_username: str | None = setting(None, "SASL user")
    sasl_password: str | None = setting(None, "SASL password", secret=True)
    ssl_cafile: str | None = setting(None, "CA bundle that signs the brokers' certificates")
    ssl_certfile: str | None = setting(None, "client certificate (mutual TLS)")
    ssl_keyfile: str | None = setting(None, "client certificate's key (mutual TLS)")


@dataclass(frozen=True)
class Topics(_Group):
    """Names of the project's topics."""

    PREFIX: ClassVar[str] = "TOPIC_"
    clicks: str = setting("clicks", "the input: click events, keyed by user")
    recommendations: str = setting("recommendations", "the output: one recommendation per click")
    dead_letters: str = setting("dead-letters", "rejected records, each with its reason")
    model_updates: str = setting("model-updates", "checkpoint announcements (control)")
    forget: str = setting("forget", "requests to delete a user's state, keyed by user (control; "
                          "partitioned as clicks)")
    items: str = setting("items", "the catalogue: one record per item, keyed by item id (compacted)")

    @classmethod
    def tagged(cls, tag: str) -> Topics:
        """Every topic named ``<field>-<tag>``: a set of its own (a test's, a benchmark run's)."""
        return cls(*(f"{f.name}-{tag}" for f in dataclasses.fields(cls)))

    def env(self) -> dict[str, str]:
        """The ``STREAM_RECS_TOPIC_*`` variables that name these topics (for a child process)."""
        return {spec.variable: getattr(self, spec.name) for spec in _specs(type(self))}


@dataclass(frozen=True)
class ServingOptions(_Group):
    """What a recommendation is made of: the recommender's, and its ranker child's, options."""

    k: int = setting(20, "recommendations per event", minimum=1, flag=True)
    session_gap: float = setting(1800.0, "seconds of inactivity (event time) that start a new session",
                                 minimum=0, flag=True)
    history_len: int = setting(50, "items kept per user (masking, explanations, state rebuilds)",
                               minimum=1)
    mask_recent: int = setting(50, "the user's latest items never recommended (0: none)", minimum=0)
    never_recommend: tuple[str, ...] = setting(("[PAD]", "<pad>", "[UNK]", "<unk>"),
                                               "item ids never recommended (comma-separated)")
    state_ttl: float = setting(30 * 86400.0, "seconds idle (processing time) before a user is new again",
                               minimum=0)
    popularity_half_life: float = setting(3600.0, "half-life in seconds of the fallback's item counts",
                                          minimum=1e-9)
    popularity_items: int = setting(1000, "known items the fallback keeps per clicks partition (the most "
                                    "popular: bounds its memory and each partition's snapshot)", minimum=1)
    ann_lists: int = setting(0, "approximate scoring: cells of a faiss inverted file (0: exact)", minimum=0)
    ann_probes: int = setting(32, "approximate scoring: cells scanned per event", minimum=1)
    bf16_screen: str = setting("auto", "exact scoring through a bfloat16 matmul (auto: where the CPU has "
                               "bfloat16 dot products)", choices=("auto", "on", "off"), flag=True)
    explain: str = setting("replay", "what each recommended item's because is: replay (the item of the "
                           "current session whose removal lowers its score most, by a leave-one-out "
                           "replay of the last 10), similarity (the history item of the most similar "
                           "embedding) or off", choices=("replay", "similarity", "off"), flag=True)
    explain_share: float = setting(0.25, "replay: the share of model answers explained (chosen by a hash of "
                                   "the event id; the others' because is null), which bounds its cost",
                                   minimum=0, flag=True)
    item_details: str = setting("off", "on: each recommended item also carries its catalogue title and "
                                "categories, where the items topic has them", choices=("off", "on"),
                                flag=True)


@dataclass(frozen=True)
class Worker(_Group):
    """How the stream worker runs."""

    app_id: str = setting("stream-recs", "consumer group and table namespace", flag=True)
    batch_size: int = setting(256, "most events taken into one micro-batch", minimum=1, flag=True)
    batch_window: float = setting(0.010, "seconds a micro-batch may wait to fill", minimum=0, flag=True)
    fetch_max_wait: float = setting(0.02, "seconds the broker may hold a fetch with no new clicks",
                                    minimum=0.001)
    producer_linger: float = setting(0.005, "seconds the producer waits to fill a request", minimum=0)
    producer_batch_bytes: int = setting(0, "largest producer batch per partition (0: 256 KiB under "
                                        "at-least-once, Faust's default under exactly-once)", minimum=0)
    max_record_bytes: int = setting(4096, "largest click record accepted (bytes)", minimum=1)
    store: str = setting("rocksdb://", "the sessions table's store", choices=("rocksdb://", "memory://"),
                         flag=True)
    data_dir: str = setting("", "where the worker keeps its tables (empty: worker/APP_ID under "
                            "STREAM_RECS_HOME)", flag=True)
    metrics_host: str = setting("127.0.0.1", "bind address of /metrics, /healthz, /readyz", flag=True)
    metrics_port: int = setting(9465, "port of /metrics (0: any free port)", minimum=0, flag=True)
    liveness_timeout: float = setting(5.0, "seconds without an event-loop heartbeat before /healthz fails",
                                      minimum=1)
    processing_guarantee: str = setting("at_least_once", "delivery guarantee (exactly_once: through "
                                        "Kafka transactions)", choices=("at_least_once", "exactly_once"),
                                        flag=True)
    commit_interval: float = setting(1.0, "seconds between offset commits", minimum=0.001)
    torch_threads: int = setting(1, "torch threads of the worker and of its ranker child", minimum=1)
    ranker: str = setting("auto", "where each batch's top-K runs: a child process, or inline (auto: a "
                          "child where 2 or more CPUs are usable)", choices=("auto", "process", "inline"),
                          flag=True)
    standby_replicas: int = setting(0, "other workers that keep a warm copy of each sessions partition "
                                    "(a failover restores less; each copy reads the changelog)", minimum=0)
    state_sweep_interval: float = setting(300.0, "seconds between deletions of states idle past the TTL",
                                          minimum=1)
    popularity_interval: float = setting(10.0, "seconds between writes of each clicks partition's fallback "
                                         "counts to their changelog (a crash loses at most these)",
                                         minimum=0.1)
    pseudonymise_key: str = setting("", "HMAC key that replaces user ids by pseudonyms (16+ bytes)",
                                    secret=True)
    pseudonymise_key_file: str = setting("", "a file holding that key")
    model_signing_key: str = setting("", "HMAC key every model announcement must be signed with (16+ "
                                     "bytes; empty: unsigned announcements are accepted)", secret=True)
    model_signing_key_file: str = setting("", "a file holding that key")
    models_root: str = setting("", "directory every announced checkpoint must lie under (empty: any)")

    def ranker_in_child(self) -> bool:
        """Rank in a child process? ``auto``: where this process may use 2 or more CPUs."""
        return {"process": True, "inline": False}.get(self.ranker, len(os.sched_getaffinity(0)) > 1)


@dataclass(frozen=True)
class Canary(_Group):
    """How the workers try a candidate model on a share of users before all of them get it
    (``stream_recs/canary.py``)."""

    PREFIX: ClassVar[str] = "CANARY_"
    share: float = setting(0.1, "share of users a candidate serves until it is promoted or rolled back "
                           "(0: candidates go live for everyone at once)", minimum=0, flag=True)
    min_events: int = setting(2000, "online evaluations of the candidate before it may be judged",
                              minimum=1)
    max_events: int = setting(20_000, "online evaluations of the candidate after which it is rolled back "
                              "unless shown not worse", minimum=1)
    tolerance: float = setting(0.05, "the candidate's online HR@K may be this share below the live "
                               "model's and still count as not worse", minimum=0)
    z: float = setting(2.33, "one-sided z a difference must reach to decide (2.33: 1% per look)",
                       minimum=0.5)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.share > 0.5:
            raise SettingsError(f"{ENV_PREFIX}{self.PREFIX}SHARE must be at most 0.5; got {self.share!r}")
        if self.max_events < self.min_events:
            raise SettingsError(f"{ENV_PREFIX}{self.PREFIX}MAX_EVENTS must be at least "
                                f"{ENV_PREFIX}{self.PREFIX}MIN_EVENTS")


@dataclass(frozen=True)
class Trainer(_Group):
    """How the continuous-learning trainer runs (``stream-recs trainer``)."""

    PREFIX: ClassVar[str] = "TRAINER_"
    cycle_seconds: float = setting(300.0, "seconds between training cycles (or sooner: cycle_events)",
                                   minimum=1, flag=True)
    cycle_events: int = setting(20_000, "new clicks that start a cycle before cycle_seconds", minimum=1,
                                flag=True)
    min_item_count: int = setting(5, "clicks in the window before a new item gets a row in the model",
                                  minimum=1, flag=True)
    window_events: int = setting(200_000, "most recent clicks kept on disk for training", minimum=100,
                                 flag=True)
    window_age: float = setting(86400.0, "oldest click kept in the window (seconds before the newest)",
                                minimum=60)
    window_bytes: int = setting(256 << 20, "disk budget of the window and its replay sample (bytes)",
                                minimum=1 << 20)
    replay_events: int = setting(50_000, "clicks evicted from the window kept as a replay sample, "
                                 "mixed into each cycle against forgetting (0: none)", minimum=0)
    epochs: int = setting(2, "fine-tuning epochs per cycle", minimum=1, flag=True)
    learning_rate_scale: float = setting(0.2, "fine-tuning's learning rate as a share of the live "
                                         "model's (which was chosen to train from scratch)", minimum=0.001)
    holdout: float = setting(0.1, "newest share of the window's time span held out for the gate",
                             minimum=0.01)
    gate_tolerance: float = setting(0.05, "a candidate is published when its held-out HR@20 is at least "
                                    "(1 - this) x the live model's", minimum=0)
    retire_after: float = setting(0.0, "seconds an item may go unclicked before it is retired (0: never)",
                                  minimum=0)
    content_refit: float = setting(600.0, "seconds between fits of the content tower that gives the "
                                   "catalogue's items without clicks their rows (0: no content rows)",
                                   minimum=0)
    content_fit_seconds: float = setting(60.0, "time budget of one content tower fit", minimum=1)
    keep_models: int = setting(5, "checkpoints kept under --models-dir: the newest, besides the live "
                               "model, a candidate and the newest announced one", minimum=1)
    port: int = setting(9466, "port of the trainer's /metrics (0: any free port)", minimum=0, flag=True)
    priority: str = setting("idle", "the trainer's CPU priority on a machine shared with workers: idle "
                            "(CPU time no other process wants: SCHED_IDLE, else niceness 19), low "
                            "(niceness +10) or normal", choices=("idle", "low", "normal"))


@dataclass(frozen=True)
class Settings(_Group):
    """Everything a command needs to know about its environment."""

    bootstrap_servers: str | None = setting(None, f"an existing cluster, host:port[,...] (also "
                                            f"{BOOTSTRAP_ALIAS}); unset: the local broker")
    home: Path = setting(default_home, "broker jars and data, worker tables, the demo's model",
                         shown="$XDG_CACHE_HOME/stream-recs or ~/.cache/stream-recs")
    partitions: int = setting(4, "partitions of clicks, recommendations and the changelog", minimum=1)
    replication_factor: int = setting(1, "replication of the topics the project creates", minimum=1)
    forget_within: float = setting(86400.0, "seconds within which a forgotten user's data leaves every "
                                   "topic the project owns (sets their retention and compaction)",
                                   minimum=20)
    security: Security = field(default_factory=Security)
    topics: Topics = field(default_factory=Topics)
    serving: ServingOptions = field(default_factory=ServingOptions)
    worker: Worker = field(default_factory=Worker)
    canary: Canary = field(default_factory=Canary)
    trainer: Trainer = field(default_factory=Trainer)

    @property
    def embedded(self) -> bool:
        """True when no external cluster is configured and the local broker is used."""
        return self.bootstrap_servers is None


GROUPS = (Settings, Security, Topics, ServingOptions, Worker, Canary, Trainer)
_NESTED = {name: kind for name, kind in typing.get_type_hints(Settings).items() if kind in GROUPS}


@dataclass(frozen=True)
class Spec:
    """One setting: its group, field, variable, type (``base``: without ``| None``) and declaration."""

    group: type
    name: str
    variable: str
    kind: object
    base: object
    default: object
    help: str
    choices: tuple
    minimum: float | None
    flag: bool
    secret: bool
    shown: str | None


@functools.cache
def _specs(group: type) -> tuple[Spec, ...]:
    hints = typing.get_type_hints(group)
    found = []
    for f in dataclasses.fields(group):
        if not f.metadata:
            continue  # a nested group
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        variable = ENV_PREFIX + group.PREFIX + f.name.upper()
        kind = hints[f.name]
        base = kind
        if isinstance(kind, types.UnionType):  # ``X | None``
            base = next(k for k in typing.get_args(kind) if k is not type(None))
        found.append(Spec(group, f.name, variable, kind, base, default, **f.metadata))
    return tuple(found)


def specs() -> list[Spec]:
    """Every setting, group by group."""
    return [spec for group in GROUPS for spec in _specs(group)]


def _parse(spec: Spec, raw: str) -> object:
    kind = spec.base
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        raise SettingsError(f"{spec.variable} must be a number ({kind.__name__}); got {raw!r}") from None
    if kind is Path:
        return Path(raw).expanduser()
    if typing.get_origin(kind) is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def _group_from(group: type, environ: Mapping[str, str], overrides: dict[str, object]) -> object:
    values = {}
    for spec in _specs(group):
        raw = environ.get(spec.variable)
        if raw not in (None, ""):
            values[spec.name] = _parse(spec, raw)
        if overrides.get(spec.name) is not None:
            values[spec.name] = overrides.pop(spec.name)
    return values


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from the environment (``os.environ`` unless given), with non-None ``overrides``
    (CLI flags, by field name: ``k=10``, ``store="memory://"``) on top."""
    environ = os.environ if environ is None else environ
    pending = dict(overrides)
    values = _group_from(Settings, environ, pending)
    if "bootstrap_servers" not in values and environ.get(BOOTSTRAP_ALIAS):
        values["bootstrap_servers"] = environ[BOOTSTRAP_ALIAS]
    for name, group in _NESTED.items():
        values[name] = group(**_group_from(group, environ, pending))
    unknown = {name for name, value in pending.items() if value is not None}
    if unknown:
        raise TypeError(f"no such setting: {', '.join(sorted(unknown))}")
    return Settings(**values)


def value_of(settings: Settings, spec: Spec) -> object:
    """The value ``settings`` holds for the setting ``spec``."""
    group = settings if spec.group is Settings else getattr(
        settings, next(name for name, kind in _NESTED.items() if kind is spec.group))
    return getattr(group, spec.name)
