"""Seeded click-session generators of shapes other than ``datasets.synthetic_sessions``, used to
check that the training defaults hold on data they were not chosen on (``bench/defaults.py``).

- :func:`journey_sessions`: forward walks along fixed routes (a travel or checkout funnel). The
  next item is mostly the route's next stop, but popular stops are shared by many routes, so the
  last item alone is ambiguous there and the path so far tells the route.
- :func:`shopping_sessions`: browsing within a category, often going back to items already
  viewed in the session, sometimes to an item's complement in a related category; co-occurrence
  (session-kNN) finds much of it, the click order little.
"""

from __future__ import annotations

import numpy as np

from .datasets import Events, sort_by_time


def _zipf(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def _draw(rng: np.random.Generator, cdf: np.ndarray, size: int | None = None) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(size)), len(cdf) - 1)


def _as_events(sessions: list[list[int]], n_users: int, n_items: int, days: float,
               rng: np.random.Generator) -> Events:
    """Sessions of item codes as an event table: start times uniform over ``days``, 20-120 s
    between clicks, users drawn with a skew (some return often)."""
    lengths = np.array([len(s) for s in sessions])
    item = np.concatenate([np.asarray(s, np.int64) for s in sessions])
    session = np.repeat(np.arange(len(sessions)), lengths)
    start = np.sort(rng.uniform(0, days * 86_400.0, size=len(sessions)))
    offset = np.arange(len(item)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ts = 1.7e9 + np.repeat(start, lengths) + offset * rng.uniform(20.0, 120.0, size=len(item))
    user = _draw(rng, np.cumsum(_zipf(n_users, 0.5)), len(sessions))[session]
    return sort_by_time(Events(user.astype(np.int64), item, ts, [f"u{i}" for i in range(n_users)],
                               [f"i{i}" for i in range(n_items)], session.astype(np.int64)))


def _lengths(rng: np.random.Generator, n_events: int, mean_len: float) -> list[int]:
    lengths, total = [], 0
    while total < n_events:
        length = 2 + int(rng.geometric(1.0 / max(mean_len - 1.0, 1.0)))
        lengths.append(min(length, n_events - total) if n_events - total >= 2 else 2)
        total += lengths[-1]
    return lengths


def journey_sessions(n_users: int = 5_000, n_items: int = 2_000, n_events: int = 100_000,
                     seed: int = 0, n_routes: int = 300, route_len: int = 12,
                     p_skip: float = 0.1, p_noise: float = 0.05, mean_session_len: float = 7.0,
                     days: float = 30.0) -> Events:
    """Forward journeys: each session picks a route (popularity-skewed), enters it near its
    start and moves one stop on (``p_skip``: two), with ``p_noise`` of clicks on a popular item
    elsewhere; a session that reaches the route's end stops there. Route stops are drawn ~
    sqrt(popularity), so popular items are stops of many routes (hubs)."""
    rng = np.random.default_rng(seed)
    popularity = _zipf(n_items, 1.0)
    perm = rng.permutation(n_items)
    member = np.sqrt(popularity) / np.sqrt(popularity).sum()
    routes = perm[np.stack([rng.choice(n_items, size=route_len, replace=False, p=member)
                            for _ in range(n_routes)])]
    route_cdf, pop_cdf = np.cumsum(_zipf(n_routes, 0.8)), np.cumsum(popularity)
    sessions = []
    for length in _lengths(rng, n_events, mean_session_len):
        route = routes[_draw(rng, route_cdf)]
        pos = int(rng.integers(0, route_len // 3))
        clicks = []
        while len(clicks) < length and pos < route_len:
            if clicks and rng.random() < p_noise:
                clicks.append(int(perm[_draw(rng, pop_cdf)]))
                continue
            clicks.append(int(route[pos]))
            pos += 2 if rng.random() < p_skip else 1
        if len(clicks) >= 2:
            sessions.append(clicks)
    return _as_events(sessions, n_users, n_items, days, rng)


def shopping_sessions(n_users: int = 5_000, n_items: int = 2_000, n_events: int = 100_000,
                      seed: int = 0, n_categories: int = 60, p_revisit: float = 0.3,
                      p_complement: float = 0.1, p_switch: float = 0.05,
                      mean_session_len: float = 9.0, days: float = 30.0) -> Events:
    """Shopping: each session browses a category (popularity-skewed), new items drawn by their
    popularity within it; with ``p_revisit`` a click goes back to an item viewed earlier in the
    session (recent ones likelier), with ``p_complement`` to the current item's complement (a
    fixed item of the next category), with ``p_switch`` to another category."""
    rng = np.random.default_rng(seed)
    category = rng.integers(0, n_categories, size=n_items)
    members = [np.flatnonzero(category == c) for c in range(n_categories)]
    in_cat_cdf = [np.cumsum(_zipf(len(m), 1.0)) for m in members]
    complement = np.array([
        members[(category[i] + 1) % n_categories][_draw(rng, in_cat_cdf[(category[i] + 1) % n_categories])]
        if len(members[(category[i] + 1) % n_categories]) else i for i in range(n_items)])
    cat_cdf = np.cumsum(_zipf(n_categories, 0.7))
    sessions = []
    for length in _lengths(rng, n_events, mean_session_len):
        cat = int(_draw(rng, cat_cdf))
        while not len(members[cat]):
            cat = (cat + 1) % n_categories
        clicks = [int(members[cat][_draw(rng, in_cat_cdf[cat])])]
        while len(clicks) < length:
            u = rng.random()
            if u < p_revisit and len(clicks) > 1:
                back = _zipf(len(clicks) - 1, 1.0)[::-1]  # the last-but-one likeliest
                clicks.append(clicks[int(rng.choice(len(clicks) - 1, p=back))])
                continue
            if u < p_revisit + p_complement:
                clicks.append(int(complement[clicks[-1]]))
                cat = int(category[clicks[-1]])
                continue
            if u < p_revisit + p_complement + p_switch:
                cat = int(_draw(rng, cat_cdf))
                while not len(members[cat]):
                    cat = (cat + 1) % n_categories
            clicks.append(int(members[cat][_draw(rng, in_cat_cdf[cat])]))
        sessions.append(clicks)
    return _as_events(sessions, n_users, n_items, days, rng)


GENERATORS = {"journey": journey_sessions, "shopping": shopping_sessions}
