"""The project's topics, declared once, and an idempotent ``apply`` with kafka-python's admin.

Faust creates its own changelog topic for a table when it is missing; declaring it here as well
means it gets the right partition count (equal to the clicks topic, which Faust requires) and
compaction before the first worker starts.

Every topic that holds user data is bounded by ``Settings.forget_within`` (W): a record, and a
forgotten user's state, is gone from it within W while the topic receives writes (Kafka rolls a
segment by time only on an append; an idle topic keeps its last segment).
- clicks, forget, recommendations, dead-letters (deleted by age): a segment rolls W/8 after its
  first record and is deleted once its newest is 3W/4 old, so a record lives at most 7W/8 plus the
  broker's retention check interval (``log.retention.check.interval.ms``, 5 minutes by default).
  The forget topic may see no append for days, so its last segment would never roll: workers
  also delete the requests they have handled (``timers.py``).
- the sessions changelog (compacted): the forget tombstone's segment rolls within W/4, the
  cleaner must compact records W/4 old, which removes the user's earlier states, and the
  tombstone itself (it holds the user id as its key) is dropped W/4 after that compaction, at
  the next one: within W in all.
- model-updates holds no user data: 30 days; nor does the items catalogue (compacted: each item's
  latest record, kept).
- the shared-counts changelog (compacted) holds no user data either, only each clicks partition's
  item counts and canary counts, rewritten every few seconds: its segments roll and are compacted every 10
  minutes, so a worker restores little more than the latest snapshot of each partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stream_recs.config import Settings
from stream_recs.kafka_clients import client_kwargs

DAY_MS = 24 * 3600 * 1000
APP_ID = "stream-recs"
SESSIONS_TABLE = "sessions"
COUNTS_TABLE = "popularity"  # the shared counts; named for the popularity counts, which came first
COUNTS_COMPACTION_MS = str(10 * 60 * 1000)
# how long new topics may take to get a leader for every partition: a broker on busy cores that has
# just started can take more than the admin client's default 10 s
TOPICS_READY_MS = 60_000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: name, partitions, replication and topic-level configs."""

    name: str
    partitions: int
    replication: int
    configs: dict[str, str] = field(default_factory=dict)


def changelog_topic(app_id: str = APP_ID, table: str = SESSIONS_TABLE) -> str:
    """Faust's name for a table's changelog topic."""
    return f"{app_id}-{table}-changelog"


def topic_specs(settings: Settings, app_id: str = APP_ID) -> list[TopicSpec]:
    """The declarative spec: every topic the project reads or writes."""
    t, p, r = settings.topics, settings.partitions, settings.replication_factor
    within_ms = int(settings.forget_within * 1000)
    quarter = str(within_ms // 4)
    aged = {"retention.ms": str(within_ms * 3 // 4), "segment.ms": str(within_ms // 8)}
    compacted = {
        "cleanup.policy": "compact", "segment.ms": quarter, "max.compaction.lag.ms": quarter,
        "delete.retention.ms": quarter, "min.compaction.lag.ms": "0",
    }
    counts = {
        "cleanup.policy": "compact", "segment.ms": COUNTS_COMPACTION_MS,
        "max.compaction.lag.ms": COUNTS_COMPACTION_MS, "min.compaction.lag.ms": "0",
    }
    return [
        TopicSpec(t.clicks, p, r, aged),
        TopicSpec(t.forget, p, r, aged),  # co-partitioned with clicks (same count, same key)
        TopicSpec(t.recommendations, p, r, aged),
        TopicSpec(t.dead_letters, 1, r, aged),
        TopicSpec(t.model_updates, 1, r, {"retention.ms": str(30 * DAY_MS)}),
        TopicSpec(t.items, 1, r, {"cleanup.policy": "compact"}),  # every worker reads it all
        TopicSpec(changelog_topic(app_id), p, r, compacted),
        TopicSpec(changelog_topic(app_id, COUNTS_TABLE), p, r, counts),
    ]


class TopicsError(RuntimeError):
    """The topics could not be applied; the message says why."""


def apply_topics(settings: Settings, bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    """Create missing topics, grow partition counts, and set configs. Returns what changed.

    Never shrinks a topic (Kafka cannot) or changes its replication: those are reported as errors.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType
    from kafka.errors import KafkaError, NoError, TopicAlreadyExistsError, for_code

    try:
        admin = KafkaAdminClient(**client_kwargs(settings, bootstrap), request_timeout_ms=15000)
    except KafkaError as exc:
        raise TopicsError(f"cannot reach Kafka at {bootstrap}: no broker answered ({exc})") from exc
    changes: list[str] = []
    try:
        existing = {t["name"]: t for t in admin.describe_topics() if not t.get("error_code")}
        missing = [s for s in specs if s.name not in existing]
        if missing:
            created = admin.create_topics(
                {
                    s.name: {
                        "num_partitions": s.partitions,
                        "replication_factor": s.replication,
                        "configs": s.configs,
                    }
                    for s in missing
                },
                raise_errors=False,  # another worker may create the same topic at the same moment
            )
            for topic in created["topics"]:
                error = for_code(topic["error_code"])
                if error is TopicAlreadyExistsError:
                    continue
                if error is not NoError:
                    raise TopicsError(f"creating {topic['name']} failed: {error.__name__}")
                changes.append(f"created {topic['name']}")
            admin.wait_for_topics([s.name for s in missing], timeout_ms=TOPICS_READY_MS)
        grow = {}
        for spec in specs:
            if spec.name not in existing:
                continue
            have = len(existing[spec.name]["partitions"])
            if have < spec.partitions:
                grow[spec.name] = spec.partitions
                changes.append(f"grew {spec.name} from {have} to {spec.partitions} partitions")
            elif have > spec.partitions:
                raise TopicsError(
                    f"{spec.name} has {have} partitions, the spec asks for {spec.partitions}: "
                    "Kafka cannot shrink a topic"
                )
        if grow:
            admin.create_partitions(grow)
        present = [s for s in specs if s.name in existing]
        if present:
            described = admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in present]
            )
            current = described.get("topic", {})
            alter = []
            for spec in present:
                have = {k: v.get("value") for k, v in current.get(spec.name, {}).items()}
                diff = {k: v for k, v in spec.configs.items() if have.get(k) != v}
                if diff:
                    alter.append(ConfigResource(ConfigResourceType.TOPIC, spec.name, configs=diff))
                    changes.append(f"set {spec.name}: " + ", ".join(f"{k}={v}" for k, v in diff.items()))
            if alter:
                admin.alter_configs(alter)
    except KafkaError as exc:
        raise TopicsError(f"applying topics on {bootstrap} failed: {exc}") from exc
    finally:
        admin.close()
    return changes
