"""``topics apply`` against the real broker: creates, is idempotent, grows, refuses to shrink."""

from __future__ import annotations

import dataclasses
import time

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from stream_recs.config import Topics, load_settings
from stream_recs.topology.topics import TopicsError, apply_topics, changelog_topic, topic_specs

pytestmark = pytest.mark.kafka


@pytest.fixture
def settings(new_topic_name):
    topics = Topics(*(new_topic_name(f.name) for f in dataclasses.fields(Topics)))
    return dataclasses.replace(load_settings(), topics=topics, partitions=2)


def _describe(bootstrap: str, names: list[str]) -> tuple[dict, dict]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        parts = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    finally:
        admin.close()
    return parts, {n: {k: v["value"] for k, v in c.items()} for n, c in configs["topic"].items()}


def test_apply_creates_then_is_idempotent_then_grows(kafka_bootstrap, settings, new_topic_name):
    app_id = new_topic_name("app")
    specs = topic_specs(settings, app_id=app_id)
    names = [s.name for s in specs]
    assert changelog_topic(app_id) in names

    first = apply_topics(settings, kafka_bootstrap, specs)
    assert sum(line.startswith("created") for line in first) == len(specs)
    parts, configs = _describe(kafka_bootstrap, names)
    assert parts[settings.topics.clicks] == 2 and parts[settings.topics.dead_letters] == 1
    assert configs[changelog_topic(app_id)]["cleanup.policy"] == "compact"
    assert configs[settings.topics.clicks]["retention.ms"] == str(18 * 3600 * 1000)  # 3/4 of a day
    assert configs[changelog_topic(app_id)]["delete.retention.ms"] == str(6 * 3600 * 1000)

    assert apply_topics(settings, kafka_bootstrap, specs) == []

    grown = topic_specs(dataclasses.replace(settings, partitions=3), app_id=app_id)
    changes = apply_topics(settings, kafka_bootstrap, grown)
    assert f"grew {settings.topics.clicks} from 2 to 3 partitions" in changes
    assert _describe(kafka_bootstrap, [settings.topics.clicks])[0][settings.topics.clicks] == 3

    with pytest.raises(TopicsError, match="cannot shrink"):
        apply_topics(settings, kafka_bootstrap, specs)


def test_apply_restores_a_changed_config(kafka_bootstrap, settings, new_topic_name):
    specs = topic_specs(settings, app_id=new_topic_name("app"))
    apply_topics(settings, kafka_bootstrap, specs)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, settings.topics.clicks, configs={"retention.ms": "1000"})]
    )
    admin.close()
    clicks = settings.topics.clicks
    deadline = time.monotonic() + 10  # config changes reach the broker asynchronously
    while _describe(kafka_bootstrap, [clicks])[1][clicks]["retention.ms"] != "1000":
        assert time.monotonic() < deadline, "the broker never showed the changed config"
        time.sleep(0.1)
    changes = apply_topics(settings, kafka_bootstrap, specs)
    assert changes == [f"set {settings.topics.clicks}: retention.ms={18 * 3600 * 1000}"]


def test_unreachable_broker_is_a_clear_error():
    settings = load_settings()
    with pytest.raises(TopicsError, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        apply_topics(settings, "127.0.0.1:1", topic_specs(settings))


def test_workers_applying_at_once_both_succeed(kafka_bootstrap, settings, new_topic_name):
    """Workers that start together race to create the same topics; neither may fail."""
    from concurrent.futures import ThreadPoolExecutor

    specs = topic_specs(settings, app_id=new_topic_name("app"))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: apply_topics(settings, kafka_bootstrap, specs), range(2)))
    created = [line for changes in results for line in changes if line.startswith("created")]
    assert sorted(created) == sorted(f"created {s.name}" for s in specs)
