"""``stream-recs worker | produce | tail | publish-model | forget``: run and feed the stream."""

from __future__ import annotations

import time
from pathlib import Path

import click

from stream_recs.config import Settings
from stream_recs.kafka_clients import client_kwargs

from .kafka import resolve_bootstrap
from .settings import load_or_fail, setting_flags


def _producer(settings: Settings, bootstrap: str, **options: object):
    from kafka import KafkaProducer

    return KafkaProducer(**client_kwargs(settings, bootstrap), **options)


@click.command()
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False),
              help="Checkpoint to serve (none: popularity fallback until one is published).")
@setting_flags
def worker(model_dir, **flags) -> None:
    """Consume clicks, keep session state, produce recommendations (join the group)."""
    import torch

    from stream_recs.health import start_server
    from stream_recs.keys import KeyConfigError
    from stream_recs.metrics import Metrics
    from stream_recs.model_updates import Trust, load_checkpoint, read_rollout, starting_model
    from stream_recs.models import CheckpointError
    from stream_recs.ranker_child import Ranker
    from stream_recs.rollout import Rollout
    from stream_recs.rollout_follower import serving
    from stream_recs.scoring import Recommender
    from stream_recs.topology.agents import wire
    from stream_recs.topology.app import FaustWorker, create_app
    from stream_recs.topology.topics import TopicsError, apply_topics, topic_specs

    settings = load_or_fail(**flags)
    w = settings.worker
    torch.set_num_threads(w.torch_threads)
    try:
        trust = Trust.of(w)
        model, meta_sha256 = load_checkpoint(model_dir) if model_dir else (None, None)
    except KeyConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    except CheckpointError as exc:
        raise click.ClickException(f"cannot serve {model_dir}: {exc}") from exc
    bootstrap = resolve_bootstrap(settings)
    try:
        apply_topics(settings, bootstrap, topic_specs(settings, app_id=w.app_id))
    except TopicsError as exc:
        raise click.ClickException(str(exc)) from exc
    metrics = Metrics()
    read = read_rollout(settings, bootstrap)
    announced = read[0].live if read else None
    model, model_dir, meta_sha256 = starting_model(model, model_dir, meta_sha256, announced, trust, metrics)
    live = serving(model.version if model is not None else None, model_dir or "")
    if announced is not None and live is not None and live.version == announced.version:
        live = announced
    start = (Rollout(live, read[0].candidate), read[1]) if read else None  # then the candidate, if any
    recommender = Recommender(model, settings.serving)
    metrics.set_model(recommender.model_version)
    in_child = w.ranker_in_child()
    metrics.set_ranker_child_enabled(in_child)
    ranker = Ranker(settings.serving, in_child, model_dir, recommender.model_version, meta_sha256,
                    on_restart=metrics.record_ranker_restart)
    server = start_server(metrics, w.metrics_port, w.metrics_host, w.liveness_timeout)
    click.echo(f"metrics on http://{w.metrics_host}:{server.port}/metrics", err=True)
    topology = create_app(settings, bootstrap)
    try:
        wire(topology, recommender, metrics, bootstrap, ranker, trust, live, start)
    except KeyConfigError as exc:
        server.stop()
        raise click.ClickException(str(exc)) from exc
    try:
        FaustWorker(topology.app).execute_from_commandline()
    finally:
        server.stop()


@click.command()
@click.option("--dataset", required=True,
              help="movielens-100k, movielens-1m, synthetic, or a CSV/JSONL event log path.")
@click.option("--rate", type=float, default=1000.0, show_default=True, help="Events per second (0: max).")
@click.option("--limit", type=int, help="Send at most this many events.")
@click.option("--ts", "ts_mode", type=click.Choice(["now", "original"]), default="now", show_default=True,
              help="Event time: the send time, or the data set's own timestamps.")
@click.option("--n-events", default=100_000, show_default=True, help="synthetic: number of events.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def produce(dataset, rate, limit, ts_mode, n_events, quiet) -> None:
    """Replay a data set as click events in time order, keyed by user."""
    import orjson
    from tqdm import tqdm

    from stream_recs.datasets import load_dataset, read_events, sort_by_time

    settings = load_or_fail()
    if Path(dataset).is_file():
        events = read_events(dataset)
    else:
        options = {"n_events": n_events} if dataset == "synthetic" else {}
        try:
            events = load_dataset(dataset, **options)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--dataset") from exc
    events = sort_by_time(events)
    total = min(len(events), limit or len(events))
    producer = _producer(settings, resolve_bootstrap(settings), linger_ms=5, acks="all")
    topic, started = settings.topics.clicks, time.monotonic()
    name = Path(dataset).stem
    with tqdm(total=total, unit="ev", disable=quiet, desc=f"-> {topic}") as bar:
        for sent, event in enumerate(events.records()):
            if sent >= total:
                break
            if rate > 0:
                delay = started + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            event["event_id"] = f"{name}-{event['event_id']}"
            if ts_mode == "now":
                event["ts"] = time.time()
            producer.send(topic, key=event["user_id"].encode(), value=orjson.dumps(event))
            bar.update()
    producer.flush()
    producer.close()
    click.echo(f"sent {total} events to {topic} in {time.monotonic() - started:.1f} s")


@click.command()
@click.option("--from-beginning", is_flag=True, help="Start at the oldest recommendation.")
@click.option("--limit", type=int, help="Stop after this many recommendations.")
@click.option("--timeout", type=float, help="Stop after this many seconds without a message.")
def tail(from_beginning, limit, timeout) -> None:
    """Print recommendations as they arrive: user, event item, top items and why."""
    import orjson
    from kafka import KafkaConsumer

    from stream_recs.messages import because_of

    settings = load_or_fail()
    consumer = KafkaConsumer(
        settings.topics.recommendations,
        **client_kwargs(settings, resolve_bootstrap(settings, start=False)),
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout * 1000) if timeout else float("inf"),
    )
    try:
        for shown, record in enumerate(consumer, start=1):
            rec = orjson.loads(record.value)
            items = ", ".join(f"{it['item_id']}{_why(because_of(it))}" for it in rec["items"][:5])
            click.echo(f"{rec['user_id']} [{rec['strategy']} {rec['model_version'] or '-'}] -> {items}")
            if limit and shown >= limit:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def _why(because: tuple[str, float | None] | None) -> str:
    """`` (because ITEM WEIGHT)`` for ``tail``, of either shape of ``because`` (no weight: schema 1)."""
    if because is None:
        return ""
    item, weight = because
    return f" (because {item}{'' if weight is None else f' {weight:.2f}'})"


@click.command("publish-model")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--canary", is_flag=True, help="Serve it to the canary share of users first; the workers "
              "promote it or roll it back on its online HR (STREAM_RECS_CANARY_*).")
def publish_model(model_dir, canary) -> None:
    """Announce a checkpoint on the model-updates topic; every worker swaps it in (or, with
    --canary, tries it on a share of users first). With a model-signing key set, the
    announcement is signed with it."""
    from stream_recs.keys import KeyConfigError
    from stream_recs.messages import CANARY, FULL
    from stream_recs.model_updates import Trust, announce
    from stream_recs.models import CheckpointError

    settings = load_or_fail()
    try:
        key = Trust.of(settings.worker).key
    except KeyConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    producer = _producer(settings, resolve_bootstrap(settings), acks="all")
    try:
        update = announce(producer, settings.topics.model_updates, model_dir, key, CANARY if canary else FULL)
    except CheckpointError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        producer.close()
    click.echo(f"published {update.version} ({update.path}){', signed' if update.signature else ''}"
               f"{', as a canary' if canary else ''}")


@click.command()
@click.argument("user_id")
def forget(user_id) -> None:
    """Delete USER_ID's session state on every worker (a tombstone in the changelog).

    Sends the control record {"user_id": USER_ID, "type": "forget"} to the forget topic keyed by
    the user; the worker handles it after the user's clicks sent before it; with pseudonymisation
    on, pass the original user id (the worker hashes it as it does for clicks)."""
    import uuid

    from stream_recs.events import Forget
    from stream_recs.messages import encode_forget

    settings = load_or_fail()
    producer = _producer(settings, resolve_bootstrap(settings), acks="all")
    request = Forget(f"forget-{uuid.uuid4().hex}", user_id)
    meta = producer.send(settings.topics.forget, key=user_id.encode(), value=encode_forget(request)).get(60)
    producer.close()
    click.echo(f"forget request {request.event_id} sent to {meta.topic} partition {meta.partition}")


@click.command()
@click.option("--events", default=20_000, show_default=True, help="Clicks to replay.")
@click.option("--rate", default=1000.0, show_default=True, help="Replay rate, events/s.")
def demo(events, rate) -> None:
    """Everything end to end on the local Kafka: train (cached), serve, replay, report."""
    from stream_recs.demo import run_demo

    run_demo(load_or_fail(), events, rate, say=click.echo)


COMMANDS = [worker, produce, tail, publish_model, forget, demo]
