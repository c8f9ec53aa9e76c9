"""``stream-recs trainer``: the continuous-learning service (``stream_recs/trainer.py``)."""

from __future__ import annotations

import os
import signal

import click

from .kafka import resolve_bootstrap
from .settings import load_or_fail, trainer_flags


@click.command()
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False),
              help="The checkpoint to start from (default: the live model announced on model-updates; "
                   "an announced one takes over once trusted).")
@click.option("--models-dir", required=True, type=click.Path(file_okay=False),
              help="Where each published checkpoint is written (a directory the workers read).")
@click.option("--window-dir", type=click.Path(file_okay=False),
              help="The rolling window's directory (default: trainer/APP_ID under STREAM_RECS_HOME).")
@trainer_flags
def trainer(model_dir, models_dir, window_dir, **flags) -> None:
    """Learn from the clicks: fine-tune, gate, publish and announce new models, in cycles."""
    from pathlib import Path

    import torch
    from prometheus_client import start_http_server

    from stream_recs.keys import KeyConfigError
    from stream_recs.model_updates import Refused, Trust, load_update, read_rollout
    from stream_recs.models import CheckpointError
    from stream_recs.topology.topics import TopicsError, apply_topics, topic_specs
    from stream_recs.trainer import TrainerService, load_live
    from stream_recs.trainer_metrics import TrainerMetrics

    settings = load_or_fail(**flags)
    w, t = settings.worker, settings.trainer
    lower_priority(t.priority)  # training can wait; an answer cannot
    torch.set_num_threads(w.torch_threads)
    bootstrap = resolve_bootstrap(settings)
    try:
        apply_topics(settings, bootstrap, topic_specs(settings, app_id=w.app_id))
        if model_dir is None:
            read = read_rollout(settings, bootstrap)
            announced = read[0].live if read else None
            if announced is None:
                raise click.ClickException("no live model is announced on model-updates: give --model")
            live = load_live(announced.path, load_update(announced, Trust.of(w))[0])
        else:
            live = load_live(model_dir)
    except (TopicsError, CheckpointError, KeyConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    except Refused as exc:
        raise click.ClickException(f"the announced live model is refused ({exc.reason}): {exc}") from exc
    metrics = TrainerMetrics()
    server, _ = start_http_server(t.port, addr=w.metrics_host, registry=metrics.registry)
    click.echo(f"metrics on http://{w.metrics_host}:{server.server_port}/metrics", err=True)
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: stopping.append(number))
    window = Path(window_dir) if window_dir else settings.home / "trainer" / w.app_id
    try:
        service = TrainerService(settings, bootstrap, live, models_dir, window, metrics)
    except KeyConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        service.run(lambda: bool(stopping))
    finally:
        service.close()
        server.shutdown()


def lower_priority(priority: str) -> None:
    """Lower this process's CPU priority (before it starts threads, which inherit it): ``idle``,
    SCHED_IDLE where the OS has it, so the scheduler runs the trainer only on a core no one
    else wants and preempts it the moment a worker wakes; ``low``, niceness +10."""
    if priority == "idle" and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif priority != "normal":
        os.nice(19 if priority == "idle" else 10)


COMMANDS = [trainer]
