"""Where a model command's events come from: ``--dataset`` (built in), ``--events`` (a CSV or
JSONL log) or ``--from-topic`` (a clicks topic, optionally only its last ``--since``), shared by
``train``, ``evaluate`` and ``tune``."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import click

# stream_recs.datasets.DATASETS, spelled out so that the CLI starts without importing numpy
_DATASETS = ("movielens-100k", "movielens-1m", "synthetic")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(ctx, param, value: str | None) -> float | None:
    """Seconds in ``7d``, ``12h``, ``30m``, ``90s`` or a plain number of seconds (a click callback)."""
    if value is None:
        return None
    text = value.strip().lower()
    scale = _DURATION_UNITS.get(text[-1:])
    try:
        seconds = float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration such as 7d, 12h, 30m or 90s") from None
    if seconds <= 0:
        raise click.BadParameter(f"{value!r} is not a positive duration")
    return seconds


@dataclass(frozen=True)
class DataSource:
    """Where a command's events come from: a built-in dataset, an event log, or a clicks topic."""

    dataset: str | None
    events_path: str | None
    from_topic: str | None
    since: float | None  # seconds
    n_events: int
    n_users: int
    n_items: int
    data_seed: int

    @property
    def name(self) -> str:
        return self.dataset or self.events_path or f"topic {self.from_topic}"

    @property
    def history_len(self) -> int:
        """Input items per evaluation case and per state rebuild, as the data set prescribes."""
        from stream_recs.datasets import history_len

        return history_len(self.dataset)

    def load(self):
        """The events (``click.UsageError`` unless exactly one source is given)."""
        from stream_recs.datasets import load_dataset, read_events

        if sum(map(bool, (self.dataset, self.events_path, self.from_topic))) != 1:
            raise click.UsageError("give exactly one of --dataset, --events and --from-topic")
        if self.since and not self.from_topic:
            raise click.UsageError("--since goes with --from-topic")
        if self.events_path:
            return read_events(self.events_path)
        if self.from_topic:
            return self._read_topic()
        options = {}
        if self.dataset == "synthetic":
            options = {"n_events": self.n_events, "n_users": self.n_users, "n_items": self.n_items,
                       "seed": self.data_seed}
        return load_dataset(self.dataset, **options)

    def _read_topic(self):
        """The topic's committed clicks (from ``--since`` ago, else from the start), decoded as
        the worker decodes them; what it rejects is skipped and counted, never fatal."""
        import time
        from collections import Counter

        from stream_recs.clicks_topic import read_kafka_clicks
        from stream_recs.kafka_clients import security_kwargs

        from .kafka import resolve_bootstrap
        from .settings import load_or_fail

        settings = load_or_fail()
        since = time.time() - self.since if self.since else None
        skipped: Counter = Counter()
        try:
            events = read_kafka_clicks(self.from_topic, resolve_bootstrap(settings), since=since,
                                       skipped=skipped, **security_kwargs(settings.security))
        except (ValueError, TimeoutError) as exc:
            raise click.ClickException(str(exc)) from exc
        detail = ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items()))
        click.echo(f"read {len(events):,} clicks from {self.from_topic}"
                   f"{f', skipped {detail}' if detail else ''}", err=True)
        if not len(events):
            raise click.ClickException(f"{self.from_topic} holds no valid click to read")
        return events


def data_options(func):
    """--dataset NAME | --events PATH | --from-topic TOPIC [--since AGE], plus the synthetic
    generator's size options; the command receives them as ``data`` (a ``DataSource``)."""
    options = [
        click.option("--dataset", type=click.Choice(_DATASETS), help="A built-in dataset."),
        click.option("--events", "events_path", type=click.Path(exists=True, dir_okay=False),
                     help="An event log (CSV or JSONL: user_id, item_id, timestamp[, session_id])."),
        click.option("--from-topic", help="A clicks topic (read_committed; malformed records "
                                          "are skipped and counted)."),
        click.option("--since", metavar="AGE", callback=_duration,
                     help="--from-topic: only records this recent, e.g. 7d, 12h, 30m."),
        click.option("--n-events", default=200_000, show_default=True,
                     help="synthetic: number of events."),
        click.option("--n-users", default=5_000, show_default=True, help="synthetic: users."),
        click.option("--n-items", default=2_000, show_default=True, help="synthetic: items."),
        click.option("--data-seed", default=0, show_default=True, help="synthetic: seed."),
    ]
    names = [field.name for field in dataclasses.fields(DataSource)]

    @functools.wraps(func)
    def command(**kwargs):
        return func(data=DataSource(**{name: kwargs.pop(name) for name in names}), **kwargs)

    for option in reversed(options):
        command = option(command)
    return command
