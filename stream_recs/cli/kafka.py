"""``stream-recs kafka up|down|status`` and ``stream-recs topics apply``."""

from __future__ import annotations

import sys
import time

import click

from stream_recs.config import Settings, load_settings
from stream_recs.kafka_local import DEFAULT_PORT, KafkaLocalError, local_kafka


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
        try:
            info = broker.start()
        except KafkaLocalError as exc:
            raise click.ClickException(str(exc)) from exc
    return info.bootstrap


@click.group()
def kafka() -> None:
    """Run the embedded single-node Apache Kafka (KRaft) on 127.0.0.1."""


@kafka.command()
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True,
              help="Preferred port; a free one is picked when it is taken.")
def up(port: int) -> None:
    """Start the local broker (resolving its jars with Maven the first time)."""
    settings = load_settings()
    if not settings.embedded:
        click.echo(f"using the configured cluster, nothing started\n{settings.bootstrap_servers}")
        return
    broker = local_kafka(settings.home, port=port)
    started = time.monotonic()
    was_running = broker.running()
    try:
        info = broker.start()
    except KafkaLocalError as exc:
        raise click.ClickException(str(exc)) from exc
    what = "already running" if was_running else f"started in {time.monotonic() - started:.1f} s"
    version = broker.served_version() or info.version
    click.echo(f"Apache Kafka {version} (KRaft, pid {info.pid}) {what}; log: {broker.log_file}")
    click.echo(info.bootstrap)


@kafka.command()
def down() -> None:
    """Stop the local broker (controlled shutdown)."""
    broker = local_kafka(load_settings().home)
    click.echo("stopped" if broker.stop() else "not running")


@kafka.command()
def status() -> None:
    """Say whether the local broker runs; the last line is its bootstrap address."""
    settings = load_settings()
    if not settings.embedded:
        click.echo(f"using the configured cluster\n{settings.bootstrap_servers}")
        return
    broker = local_kafka(settings.home)
    info = broker.running()
    if info is None:
        click.echo("not running")
        sys.exit(1)
    click.echo(f"Apache Kafka {broker.served_version() or info.version} (KRaft, pid {info.pid}) running")
    click.echo(info.bootstrap)


@click.group()
def topics() -> None:
    """Manage the project's topics (declared in stream_recs.topology.topics)."""


@topics.command()
def apply() -> None:
    """Create or update every topic of the spec; safe to run again."""
    from stream_recs.topology.topics import TopicsError, apply_topics, topic_specs

    settings = load_settings()
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
