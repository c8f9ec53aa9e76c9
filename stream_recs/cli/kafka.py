"""``stream-recs kafka up|down|status`` and ``stream-recs topics apply``."""

from __future__ import annotations

import sys
import time

import click

from stream_recs.config import Settings
from stream_recs.kafka_local import DEFAULT_PORT, BrokerInfo, KafkaLocalError, LocalKafka, local_kafka

from .settings import load_or_fail


def resolve_bootstrap(settings: Settings, start: bool = True) -> str:
    """The bootstrap address to use: the configured cluster, else the local broker (started
    when ``start`` and not running yet)."""
    if not settings.embedded:
        return settings.bootstrap_servers  # type: ignore[return-value]
    broker = local_kafka(settings.home)
    info = broker.running()
    if info is None:
        if not start:
            raise click.ClickException("the local Kafka broker is not running: `stream-recs kafka up`")
        click.echo("starting the local Kafka broker ...", err=True)
        info = _start(broker)
    return info.bootstrap


def _start(broker: LocalKafka) -> BrokerInfo:
    try:
        return broker.start()
    except KafkaLocalError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def kafka() -> None:
    """Run the embedded single-node Apache Kafka (KRaft) on 127.0.0.1."""


def _local(settings: Settings, note: str) -> bool:
    """True when the local broker is the one to use; else say which cluster is (its address last)."""
    if settings.embedded:
        return True
    click.echo(f"using the configured cluster{note}\n{settings.bootstrap_servers}")
    return False


def _describe(broker: LocalKafka, info: BrokerInfo, what: str) -> None:
    """The broker's version, pid and ``what``, then its bootstrap address on the last line."""
    click.echo(f"Apache Kafka {broker.served_version() or info.version} (KRaft, pid {info.pid}) {what}")
    click.echo(info.bootstrap)


@kafka.command()
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True,
              help="Preferred port; a free one is picked when it is taken.")
def up(port: int) -> None:
    """Start the local broker (resolving its jars with Maven the first time)."""
    settings = load_or_fail()
    if not _local(settings, ", nothing started"):
        return
    broker = local_kafka(settings.home, port=port)
    started = time.monotonic()
    was_running = broker.running()
    info = _start(broker)
    what = "already running" if was_running else f"started in {time.monotonic() - started:.1f} s"
    _describe(broker, info, f"{what}; log: {broker.log_file}")


@kafka.command()
def down() -> None:
    """Stop the local broker (controlled shutdown)."""
    broker = local_kafka(load_or_fail().home)
    click.echo("stopped" if broker.stop() else "not running")


@kafka.command()
def status() -> None:
    """Say whether the local broker runs; the last line is its bootstrap address."""
    settings = load_or_fail()
    if not _local(settings, ""):
        return
    broker = local_kafka(settings.home)
    info = broker.running()
    if info is None:
        click.echo("not running")
        sys.exit(1)
    _describe(broker, info, "running")


@click.group()
def topics() -> None:
    """Manage the project's topics (declared in stream_recs.topology.topics)."""


@topics.command()
def apply() -> None:
    """Create or update every topic of the spec; safe to run again."""
    from stream_recs.topology.topics import TopicsError, apply_topics, topic_specs

    settings = load_or_fail()
    bootstrap = resolve_bootstrap(settings)
    specs = topic_specs(settings, app_id=settings.worker.app_id)
    try:
        changes = apply_topics(settings, bootstrap, specs)
    except TopicsError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in changes or ["all topics up to date"]:
        click.echo(line)
    for spec in specs:
        configs = " ".join(f"{k}={v}" for k, v in spec.configs.items())
        click.echo(f"  {spec.name}: {spec.partitions} partitions, rf {spec.replication}, {configs}")


COMMANDS = [kafka, topics]
