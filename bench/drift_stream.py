"""The drift benchmark's click stream: seeded sessions over a catalogue that churns.

Every simulated hour a batch of new items is born; an item's pull is its own popularity (log-normal)
times ``exp(-age / tau)``, so a new item is at its most popular when it appears and fades over a few
hours, and it leaves the catalogue after ``3 tau``. Each item belongs to one topic and has a place
on that topic's tour; a session follows a topic and mostly walks its tour (one or two places on),
sometimes jumps to a popular place of it, sometimes clicks a popular item anywhere. Only the items
alive when the session starts are on the tour, so a new item changes which item follows which: a
model that never learns it misses both the item and the transitions around it. Halfway through,
the topics' popularity is reversed (the popularity shift). Sessions of one user never overlap.

Timestamps are simulated seconds from 0; the replay adds a wall-clock offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stream_recs.datasets import Events, sort_by_time

HOUR = 3600.0
LIFE_TAUS = 3.0  # an item leaves the catalogue this many tau after its birth


@dataclass(frozen=True)
class StreamOptions:
    """The shape of the stream (the defaults make the default run)."""

    hours: int = 12
    events_per_hour: int = 2500
    new_per_hour: int = 30
    tau_hours: float = 3.0
    n_topics: int = 20
    n_users: int = 400
    mean_session_len: float = 8.0
    p_next: float = 0.6
    p_jump: float = 0.25
    seed: int = 0
    extra_hours: int = 0  # hours generated after the measured ones (the serving phase's clicks)


@dataclass
class Stream:
    """The clicks (``events``, sorted by time) and each item's birth time (simulated seconds,
    negative for the catalogue the stream starts with). The topics' popularity is reversed
    halfway through the measured hours."""

    events: Events
    birth: np.ndarray
    options: StreamOptions

    @property
    def shift_at(self) -> float:
        return self.options.hours * HOUR / 2

    def new_items(self, since: float = 1.0) -> list[int]:
        """Codes of the items born from ``since`` (simulated seconds) to the end of the measured hours."""
        return np.flatnonzero((self.birth >= since) & (self.birth < self.options.hours * HOUR)).tolist()


def _draw(rng: np.random.Generator, weights: np.ndarray) -> int:
    cdf = np.cumsum(weights)
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1])), len(weights) - 1)


def generate(options: StreamOptions) -> Stream:
    """The stream for ``options`` (same options, same stream)."""
    o = options
    rng = np.random.default_rng(o.seed)
    tau, life = o.tau_hours * HOUR, LIFE_TAUS * o.tau_hours * HOUR
    n_initial = round(o.new_per_hour * LIFE_TAUS * o.tau_hours)
    birth = np.concatenate([
        -rng.uniform(0, life, size=n_initial),
        np.repeat(np.arange(1, o.hours + o.extra_hours) * HOUR, o.new_per_hour),
    ])
    n_items = len(birth)
    pull = rng.lognormal(0.0, 1.0, size=n_items)
    topic = rng.integers(0, o.n_topics, size=n_items)
    place = rng.random(n_items)
    topic_pop = 1.0 / np.arange(1, o.n_topics + 1) ** 0.8
    before = rng.permutation(o.n_topics)
    after = before[::-1]

    span = o.hours + o.extra_hours
    n_sessions = int(span * o.events_per_hour / o.mean_session_len)
    starts = np.sort(rng.uniform(0, span * HOUR - 20 * 120.0, size=n_sessions))
    user_pop = 1.0 / np.arange(1, o.n_users + 1) ** 0.5
    busy_until = np.full(o.n_users, -np.inf)
    users, items, stamps, sessions = [], [], [], []
    cache: dict[int, tuple] = {}
    for s, start in enumerate(starts):
        tick = int(start // 600)  # the catalogue's state every 10 simulated minutes
        if tick not in cache:
            t = tick * 600.0
            age = t - birth
            alive = np.flatnonzero((age >= 0) & (age < life))
            weight = pull[alive] * np.exp(-age[alive] / tau)
            tours = {}
            for k in range(o.n_topics):
                mine = np.flatnonzero(topic[alive] == k)
                mine = mine[np.argsort(place[alive][mine])]
                tours[k] = (alive[mine], weight[mine])
            order = after if t >= o.hours * HOUR / 2 else before
            pops = np.empty(o.n_topics)
            pops[order] = topic_pop
            pops *= np.array([len(tours[k][0]) > 1 for k in range(o.n_topics)])
            cache = {tick: (alive, weight, tours, pops)}
        alive, weight, tours, pops = cache[tick]
        k = _draw(rng, pops)
        tour, tour_w = tours[k]
        length = 1 + int(rng.geometric(1.0 / max(o.mean_session_len - 1.0, 1.0)))
        pos = _draw(rng, tour_w)
        clicks = [int(tour[pos])]
        for _ in range(length - 1):
            u = rng.random()
            if u < o.p_next:
                pos = (pos + int(rng.integers(1, 3))) % len(tour)
                clicks.append(int(tour[pos]))
            elif u < o.p_next + o.p_jump:
                pos = _draw(rng, tour_w)
                clicks.append(int(tour[pos]))
            else:
                clicks.append(int(alive[_draw(rng, weight)]))
        gaps = np.cumsum(np.concatenate([[0.0], rng.uniform(20.0, 120.0, size=len(clicks) - 1)]))
        for _ in range(20):  # a user is in one session at a time
            user = _draw(rng, user_pop)
            if busy_until[user] < start:
                break
        else:
            user = int(np.argmin(busy_until))
        busy_until[user] = start + gaps[-1] + 1.0
        users += [user] * len(clicks)
        items += clicks
        stamps += (start + gaps).tolist()
        sessions += [s] * len(clicks)
    events = Events(np.asarray(users, np.int64), np.asarray(items, np.int64), np.asarray(stamps),
                    [f"u{i}" for i in range(o.n_users)], [f"n{i}" for i in range(n_items)],
                    np.asarray(sessions, np.int64))
    return Stream(sort_by_time(events), birth, options)


def serving_hours(options: StreamOptions, serving_seconds: float = 120.0, rate: float = 100.0) -> int:
    """The hours generated after the measured ones for a serving phase of ``serving_seconds`` at
    ``rate`` clicks/s (one spare)."""
    return math.ceil(serving_seconds * rate / options.events_per_hour) + 1
