"""Content tower: item rows from catalogue metadata, so that an item with a title, categories or
attributes but no clicks yet can be recommended.

Features: an item (``catalogue.CatalogueItem``: title, categories, attributes) becomes tokens of
three fields: its categories, the lower-cased words of its title (digits left out: numbers belong
in attributes) and its attributes (``key=value`` for strings and booleans; for numbers, the
quantile bucket at a coarse and a fine resolution, edges from the training items). Tokens carried
by fewer than ``min_items`` training items are dropped (a word of one title only identifies that
item, it cannot generalise), unknown tokens are ignored.

Tower: one ``EmbeddingBag`` sums the token vectors, each field weighted equally whatever its number
of tokens (a mean of field means), then a small MLP maps that to a full output row of the model:
``[item embedding | seen vector | bias]``. An item without any known token gets the tower's
constant row.

Training (``fit_tower``): the GRU is fitted first and frozen; its output vectors along the
training sequences are the contexts. In each batch a random tenth of the items (``swap``) have
their real row replaced by their content row, and the loss is the exact softmax cross-entropy of
every context's next item over that mixed table (the real rows' part of the normaliser is
precomputed once). That is the served situation: new items' content rows compete with the real
rows and with each other; a content row gains where its item is clicked and pays everywhere else,
so it cannot simply outscore everything. Early stopping on NDCG@20 of a tenth of the known items
(never trained on), all of them ranked by their content rows at once.

``with_content_rows`` registers catalogue-only items in a model (its registry extended, weights
kept) and writes their content rows into the item tables, so serving needs nothing new; a later
warm-started training copies those rows and the items' clicks refine them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, save

from .gru4rec import GRU4Rec
from .warm_start import warm_start

FIELDS = ("category", "title", "attribute")
BUCKETS = (4, 16)  # quantile buckets of a numeric attribute: coarse and fine
_WORD = re.compile(r"[^\W\d_]+")
TOWER_FILE, TOWER_META = "content.safetensors", "content.json"


def _get(item, name: str, default):
    """A field of a ``CatalogueItem`` or of its JSON dict."""
    value = item.get(name, default) if isinstance(item, Mapping) else getattr(item, name, default)
    return default if value is None else value


def _numeric(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def raw_tokens(item, edges: Mapping[str, Mapping[int, Sequence[float]]]) -> list[tuple[int, str]]:
    """(field index, token) pairs of an item; numeric attributes need ``edges`` (key -> number of
    buckets -> inner quantile edges) and are skipped for keys without them."""
    out = [(0, "c:" + str(c).strip().lower()) for c in _get(item, "categories", ())]
    out += [(1, "t:" + w) for w in _WORD.findall(str(_get(item, "title", "")).lower())]
    for key, value in sorted(_get(item, "attributes", {}).items()):
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if isinstance(v, bool | str):
                out.append((2, f"a:{key}={str(v).strip().lower()}"))
            elif _numeric(v) and key in edges:
                out += [(2, f"a:{key}/{n}#{int(np.searchsorted(e, v, side='right'))}")
                        for n, e in edges[key].items()]
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Vocabulary:
    """Token -> index (index 0 is never used: it is free for padding), plus numeric edges."""

    tokens: tuple[str, ...]
    edges: dict[str, dict[int, list[float]]]

    @classmethod
    def build(cls, items: Iterable, min_items: int = 2) -> Vocabulary:
        """The tokens carried by at least ``min_items`` of ``items``."""
        items = list(items)
        numbers: dict[str, list[float]] = {}
        for item in items:
            for key, value in _get(item, "attributes", {}).items():
                for v in value if isinstance(value, list | tuple) else [value]:
                    if _numeric(v):
                        numbers.setdefault(key, []).append(float(v))
        edges = {key: {n: np.unique(np.quantile(vals, np.arange(1, n) / n)).tolist() for n in BUCKETS}
                 for key, vals in sorted(numbers.items())}
        counts = Counter(tok for item in items for _, tok in raw_tokens(item, edges))
        return cls(tuple(sorted(t for t, c in counts.items() if c >= min_items)), edges)

    def __len__(self) -> int:
        return len(self.tokens) + 1

    def encode(self, items: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``EmbeddingBag`` input of ``items``: (token indices, offsets, weights); each field
        present shares the weight 1 equally among its tokens."""
        index = {t: n + 1 for n, t in enumerate(self.tokens)}
        ids, offsets, weights = [], [], []
        for item in items:
            offsets.append(len(ids))
            known = [(f, index[t]) for f, t in raw_tokens(item, self.edges) if t in index]
            per_field = Counter(f for f, _ in known)
            for f, t in known:
                ids.append(t)
                weights.append(1.0 / (len(per_field) * per_field[f]))
        return (torch.tensor(ids, dtype=torch.int64), torch.tensor(offsets, dtype=torch.int64),
                torch.tensor(weights, dtype=torch.float32))

    def to_meta(self) -> dict:
        return {"tokens": list(self.tokens), "edges": self.edges}

    @classmethod
    def from_meta(cls, meta: Mapping) -> Vocabulary:
        edges = {str(k): {int(n): [float(x) for x in e] for n, e in v.items()}
                 for k, v in meta["edges"].items()}
        return cls(tuple(str(t) for t in meta["tokens"]), edges)


class ContentTower(torch.nn.Module):
    """Tokens -> a full output row ``[n, out_size + 1]`` (the last column is the bias)."""

    def __init__(self, vocabulary: Vocabulary, out_size: int, width: int = 64) -> None:
        super().__init__()
        self.vocabulary, self.out_size, self.width = vocabulary, out_size, width
        self.bag = torch.nn.EmbeddingBag(len(vocabulary), width, mode="sum")
        self.hidden = torch.nn.Linear(width, width)
        self.out = torch.nn.Linear(width, out_size + 1)
        torch.nn.init.normal_(self.bag.weight, std=width**-0.5)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        x = self.bag(ids, offsets, per_sample_weights=weights)
        return self.out(torch.nn.functional.gelu(self.hidden(x)))

    @torch.no_grad()
    def rows(self, items: Sequence) -> torch.Tensor:
        """Content rows of ``items`` (catalogue records or their dicts)."""
        return self.eval()(*self.vocabulary.encode(items))


# --- fitting ------------------------------------------------------------------------------
@torch.no_grad()
def training_contexts(
    model: GRU4Rec, sequences: Sequence[np.ndarray], max_events: int, seed: int = 0,
    batch: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(output vectors ``[n, d]``, next items ``[n]``) of the frozen ``model`` along
    ``sequences``, at most about ``max_events`` of them (positions drawn at random)."""
    model.eval()
    total = sum(max(len(s) - 1, 0) for s in sequences)
    keep_p = min(1.0, max_events / max(total, 1))
    rng = np.random.default_rng(seed)
    order = sorted((s for s in sequences if len(s) > 1), key=len)
    outputs, targets = [], []
    for start in range(0, len(order), batch):
        group = order[start:start + batch]
        lengths = np.array([len(s) for s in group])
        grid = np.zeros((len(group), lengths.max()), np.int64)
        for row, s in enumerate(group):
            grid[row, :len(s)] = s
        keep = (rng.random(grid.shape) < keep_p) & (np.arange(grid.shape[1]) < lengths[:, None] - 1)
        hidden = model.init_hidden(len(group))
        for t in range(grid.shape[1] - 1):
            live = np.flatnonzero(lengths > t + 1)
            hidden[live] = model.step(hidden[live], torch.from_numpy(grid[live, t]))
            rows = np.flatnonzero(keep[:, t])
            if len(rows):
                outputs.append(model.output_of(hidden[rows]))
                targets.append(torch.from_numpy(grid[rows, t + 1]))
    if not outputs:
        return torch.zeros(0, model.state_size), torch.zeros(0, dtype=torch.int64)
    return torch.cat(outputs), torch.cat(targets)


def _scores(model: GRU4Rec, outputs: torch.Tensor, chunk: int = 4096) -> Iterable[torch.Tensor]:
    weight, bias = model.output_embeddings()
    for start in range(0, len(outputs), chunk):
        yield torch.addmm(bias, outputs[start:start + chunk], weight.T)


def fit_tower(
    model: GRU4Rec, sequences: Sequence[np.ndarray], catalogue: Mapping[str, object], *,
    width: int = 64, min_items: int = 2, max_events: int = 200_000, epochs: int = 60,
    patience: int = 5, batch_size: int = 1024, swap: float = 0.1, lr: float = 3e-3,
    weight_decay: float = 1e-4, seed: int = 0, max_seconds: float | None = None, log=None,
) -> ContentTower:
    """A tower fitted on ``model``'s items that have a record in ``catalogue`` (item id ->
    record) and on its training ``sequences`` (model indices); see the module docstring.
    ``swap``: the share of the items whose rows are content rows in each batch's softmax.
    ``max_seconds``: no epoch starts after that long (the first always runs)."""
    started = time.monotonic()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    have = np.array([i for i, item in enumerate(model.item_ids) if item in catalogue], np.int64)
    if len(have) < 10:
        raise ValueError(f"{len(have)} of the model's items have a catalogue record: too few to fit")
    records = [catalogue[model.item_ids[i]] for i in have]
    vocabulary = Vocabulary.build(records, min_items)
    weight, bias = model.output_embeddings()
    tower = ContentTower(vocabulary, weight.shape[1], width)
    encoded = vocabulary.encode(records)
    slot = torch.full((model.n_items,), -1, dtype=torch.int64)
    slot[torch.from_numpy(have)] = torch.arange(len(have))
    outputs, targets = training_contexts(model, sequences, max_events, seed)
    rng = np.random.default_rng(seed)
    is_valid = torch.zeros(model.n_items, dtype=torch.bool)
    is_valid[torch.from_numpy(rng.choice(have, size=max(1, len(have) // 10), replace=False))] = True
    v_rows = is_valid[targets]
    train_out, train_tgt = outputs[~v_rows], targets[~v_rows]
    valid = _Validation(model, outputs[v_rows][:20_000], targets[v_rows][:20_000],
                        torch.nonzero(is_valid)[:, 0])
    # every real row's part of a training context's softmax: the normaliser before any swap
    lse = torch.cat([torch.logsumexp(s, 1) for s in _scores(model, train_out)])
    target_score = (train_out * weight[train_tgt]).sum(1) + bias[train_tgt]
    candidates = torch.from_numpy(have)[~is_valid[torch.from_numpy(have)]]
    n_swap = max(1, round(swap * len(candidates)))
    optimizer = torch.optim.Adam(tower.parameters(), lr=lr, weight_decay=weight_decay)
    best = (-1.0, -1, None)
    for epoch in range(epochs):
        tower.train()
        perm = torch.randperm(len(train_out), generator=gen)
        for start in range(0, len(perm), batch_size):
            rows = perm[start:start + batch_size]
            h, tgt = train_out[rows], train_tgt[rows]
            swapped = candidates[torch.randperm(len(candidates), generator=gen)[:n_swap]]
            position = torch.full((model.n_items,), -1, dtype=torch.int64)
            position[swapped] = torch.arange(n_swap)
            content = tower(*encoded)[slot[swapped]]
            real = h @ weight[swapped].T + bias[swapped]
            fake = h @ content[:, :-1].T + content[:, -1]
            # the normaliser with the swapped items' real rows taken out and their content rows in
            share = torch.exp(real - lse[rows, None]).sum(1).clamp(max=1 - 1e-6)
            norm = torch.logsumexp(torch.cat([(lse[rows] + torch.log1p(-share))[:, None], fake], 1), 1)
            pos = position[tgt]
            own = torch.where(pos >= 0, fake.gather(1, pos.clamp(min=0)[:, None])[:, 0],
                              target_score[rows])
            loss = (norm - own).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        score = valid.ndcg(tower, encoded, slot)
        if log is not None:
            log(f"content tower epoch {epoch + 1}: loss {loss.item():.4f}, valid ndcg@20 {score:.4f}")
        if score > best[0]:
            best = (score, epoch, {k: v.clone() for k, v in tower.state_dict().items()})
        elif epoch - best[1] >= patience:
            break
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            break
    tower.load_state_dict(best[2])
    return tower.eval()


class _Validation:
    """NDCG@20 of the contexts whose targets are validation items, all of these items ranked by
    their content rows among the real rows of the others: new items as served."""

    def __init__(self, model: GRU4Rec, outputs: torch.Tensor, targets: torch.Tensor,
                 items: torch.Tensor) -> None:
        self.outputs, self.items = outputs, items
        self.real = torch.cat(list(_scores(model, outputs))) if len(outputs) else None
        self.column = torch.full((model.n_items,), -1, dtype=torch.int64)
        self.column[items] = torch.arange(len(items))
        self.targets = self.column[targets]

    @torch.no_grad()
    def ndcg(self, tower: ContentTower, encoded, slot: torch.Tensor) -> float:
        if self.real is None:
            return 0.0
        content = tower.eval()(*encoded)[slot[self.items]]
        scores = self.real.clone()
        scores[:, self.items] = self.outputs @ content[:, :-1].T + content[:, -1]
        own = scores[torch.arange(len(scores)), self.items[self.targets]]
        ranks = (scores >= own[:, None]).sum(1).double()
        return float(torch.where(ranks <= 20, 1 / torch.log2(ranks + 1), 0.0).mean())


# --- into the item table ------------------------------------------------------------------
@torch.no_grad()
def with_content_rows(model: GRU4Rec, tower: ContentTower, records: Sequence) -> GRU4Rec:
    """``model`` with every record's item given its content row: items it lacks are appended to
    its registry (a new model, weights copied, ``version`` kept), rows of items it has are
    overwritten (pass only the items without clicks)."""
    ids = [str(_get(r, "item_id", "")) for r in records]
    missing = [i for i in dict.fromkeys(ids) if model.item_index(i) is None]
    if missing:
        grown = GRU4Rec(model.item_ids + missing, hidden_size=model.hidden_size,
                        n_layers=model.n_layers, dropout_embed=model.dropout_embed.p,
                        dropout_hidden=model.dropout_hidden.p, version=model.version,
                        seen_size=model.seen_size, seen_decay=model.seen_decay)
        grown.use_registry(model.registry.extend(missing))
        warm_start(grown, model)
        if model.item_counts:
            grown.item_counts = (*model.item_counts, *(0 for _ in missing))
        model = grown.eval()
    if records:
        rows = tower.rows(records)
        index = torch.tensor([model.item_index(i) for i in ids])
        d = model.hidden_size
        model.item_embedding.weight[index] = rows[:, :d]
        if model.seen_size:
            model.seen_embedding.weight[index] = rows[:, d:-1]
        model.item_bias.weight[index, 0] = rows[:, -1]
    return model


def unclicked(model: GRU4Rec, records: Iterable) -> list:
    """The available ``records`` whose items ``model`` never saw clicked: unregistered, or
    registered without a click (last seen 0, such as an earlier content row): those to give
    content rows, and only those (a clicked item's row is learned)."""
    last_seen = dict(zip(model.registry.ids, model.registry.last_seen, strict=True))
    return [r for r in records if _get(r, "available", True)
            and not last_seen.get(str(_get(r, "item_id", "")), 0)]


# --- persistence: beside a checkpoint, tied to its weights --------------------------------
def save_tower(tower: ContentTower, directory: str | Path, weights_sha256: str | None = None) -> None:
    """Write ``content.safetensors`` and ``content.json`` (vocabulary, sizes, the tower's sha256 and
    the checkpoint weights it was fitted on) into ``directory``."""
    directory = Path(directory)
    blob = save({k: v.contiguous() for k, v in tower.state_dict().items()})
    (directory / TOWER_FILE).write_bytes(blob)
    meta = {"out_size": tower.out_size, "width": tower.width, "vocabulary": tower.vocabulary.to_meta(),
            "sha256": hashlib.sha256(blob).hexdigest(), "model_weights_sha256": weights_sha256}
    (directory / TOWER_META).write_text(json.dumps(meta))


def load_tower(directory: str | Path, weights_sha256: str | None = None) -> ContentTower | None:
    """The tower saved in ``directory`` (None when there is none); ``ValueError`` when its files
    do not match each other or, given ``weights_sha256``, the checkpoint's weights."""
    directory = Path(directory)
    if not (directory / TOWER_META).is_file():
        return None
    meta = json.loads((directory / TOWER_META).read_text())
    blob = (directory / TOWER_FILE).read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise ValueError(f"{directory / TOWER_FILE} does not match its sha256 in {TOWER_META}")
    if weights_sha256 is not None and meta.get("model_weights_sha256") != weights_sha256:
        raise ValueError(f"the content tower in {directory} was fitted on other model weights")
    tower = ContentTower(Vocabulary.from_meta(meta["vocabulary"]), int(meta["out_size"]),
                         int(meta["width"]))
    tower.load_state_dict(load(blob), strict=True)
    return tower.eval()
