"""Training loop: session-parallel mini-batches, sampled negatives, XE-logQ or BPR-max loss,
row-sparse Adagrad with momentum, one-step or windowed truncated backprop through time.

With ``bptt=1`` the hidden state is detached after every step (GRU4Rec's default). With
``bptt=T`` the loss of T consecutive steps is summed and back-propagated through those T steps
(lanes that start a new sequence inside the window still begin from a zero state), which suits
long user histories trained without session resets.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stream_recs.datasets import Events, to_sequences

from .batching import Step, session_parallel
from .gru4rec import GRU4Rec
from .losses import LOSSES, bpr_max, cross_entropy_logq, sampled_columns
from .optim import AdagradMomentum
from .precision import autocast, resolve_precision
from .registry import ItemRegistry
from .sampling import PopularitySampler
from .warm_start import init_from_neighbours, item_rows_scale, warm_start


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (the checkpoint stores them)."""

    hidden_size: int = 64
    n_layers: int = 1
    batch_size: int = 64
    learning_rate: float = 0.05
    momentum: float = 0.0
    lr_decay: float = 1.0  # epoch e (from 0) trains at learning_rate * lr_decay**e
    seen_size: int = 0  # seen-memory width (0: none), see GRU4Rec
    seen_decay: float = 0.97
    mask_seen: bool = False  # the items a sequence already holds are no negatives of its later steps
    dropout_embed: float = 0.0
    dropout_hidden: float = 0.0
    loss: str = "xe"
    n_sample: int = 2048  # extra shared negatives; >= n_items means a full softmax
    alpha: float = 0.5  # sampling P(i) ~ support(i)^alpha
    logq: bool = True
    bpreg: float = 1.0
    final_act: str = "linear"
    bptt: int = 1
    chunk_len: int = 0  # split training sequences into pieces of this many steps (0: never)
    epochs: int = 10  # fixed epochs; with validation, the most that early stopping may run
    patience: int = 3  # with validation: stop after this many epochs without a new best
    precision: str = "float32"  # of the matrix products: float32, bfloat16 or auto (models/precision.py)
    seed: int = 0
    max_len: int = 50  # inference: the state is rebuilt from at most this many recent items

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}")
        if self.bptt < 1 or self.batch_size < 1 or self.epochs < 0 or self.patience < 1:
            raise ValueError("bptt, batch_size, patience must be >= 1 and epochs >= 0")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError("lr_decay must be in (0, 1]")
        resolve_precision(self.precision)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def split_long(sequences: Sequence[np.ndarray], chunk_len: int) -> list[np.ndarray]:
    """Cut sequences into pieces of ``chunk_len`` transitions (consecutive pieces share one item,
    so no transition is lost). Pieces are ordered by piece number, then by sequence order: the
    lanes stay full to the end of an epoch instead of a few long histories running alone on tiny
    batches, and the latest parts of all histories come last."""
    if chunk_len <= 0:
        return list(sequences)
    pieces = []
    for order, seq in enumerate(sequences):
        for k, start in enumerate(range(0, max(len(seq) - 1, 1), chunk_len)):
            pieces.append((k, order, seq[start:start + chunk_len + 1]))
    pieces.sort(key=lambda piece: piece[:2])
    return [piece[2] for piece in pieces]


def window_forward(
    model: GRU4Rec, hidden: torch.Tensor, window: Sequence[Step]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time forward over consecutive steps: (last hidden state, outputs [rows, d]).

    Equal to calling ``model.forward`` step by step (lanes reset to zero or dropped as the steps
    say), but the input embedding, its dropout and the first layer's input projection run once
    for the whole window, which roughly halves the per-step work.
    """
    items = torch.cat([s.inputs for s in window])
    inputs = model.dropout_embed(model.item_embedding(items))
    first = model.cells[0]
    sizes = [len(s.inputs) for s in window]
    # one split per window, not a slice per step: autograd then joins the steps' gradients once
    projected = torch.nn.functional.linear(inputs, first.weight_ih, first.bias_ih).split(sizes)
    seen_vectors = model.seen_embedding(items).split(sizes) if model.seen_size else None
    size = model.hidden_size
    outputs, seen = [], []
    for k, step in enumerate(window):
        if step.keep is not None:
            hidden = hidden[step.keep]
        if step.reset.any():
            hidden = hidden.masked_fill(step.reset[:, None], 0.0)
        first_hidden = hidden if hidden.shape[1] == size else hidden[:, :size]
        x_rz, x_n = projected[k].split((2 * size, size), 1)
        h_rz, h_n = torch.nn.functional.linear(first_hidden, first.weight_hh, first.bias_hh).split(
            (2 * size, size), 1)
        reset_gate, update_gate = torch.sigmoid(x_rz + h_rz).chunk(2, 1)
        candidate = torch.tanh(x_n + reset_gate * h_n)
        x = candidate + update_gate * (first_hidden - candidate)
        layers = [x]
        for depth in range(1, model.n_layers):
            x = model.cells[depth](x, hidden[:, depth * size : (depth + 1) * size])
            layers.append(x)
        if seen_vectors is not None:
            layers.append(model.seen_step(hidden, seen_vectors[k]))
            seen.append(layers[-1])
        hidden = torch.cat(layers, dim=1) if len(layers) > 1 else x
        outputs.append(x)
    outputs = model.dropout_hidden(torch.cat(outputs))
    if seen:
        outputs = torch.cat([outputs, model.seen_scale * torch.cat(seen)], dim=1)
    return hidden, outputs


def training_sequences(
    events: Events, session_gap: float | None, parent: ItemRegistry | None = None, min_count: int = 1,
) -> tuple[ItemRegistry, list[np.ndarray]]:
    """A model's item registry for ``events`` and the item-index sequences to train it on (see
    ``to_sequences``). The registry is ``parent``'s extended by the items it lacks that occur at
    least ``min_count`` times (rarer ones are left out of the sequences: too few clicks to learn
    from), or a new lineage; either way the new items come sorted, and every registered item's
    last-seen time is folded in."""
    counts, newest = item_clicks(events)
    known = set(parent.ids) if parent else set()
    codes = [c for c in np.flatnonzero(counts).tolist()
             if counts[c] >= min_count or events.item_ids[c] in known]
    item_ids = sorted(events.item_ids[c] for c in codes)
    registry = parent.extend(item_ids) if parent else ItemRegistry.new(item_ids)
    registry = registry.seen({events.item_ids[c]: int(newest[c]) for c in codes})
    index = registry.index()
    return registry, to_sequences(events, session_gap, index).items


def item_clicks(events: Events) -> tuple[np.ndarray, np.ndarray]:
    """How often each of ``events``' item codes is clicked, and its newest click time."""
    counts = np.bincount(events.item, minlength=len(events.item_ids))
    newest = np.full(len(events.item_ids), -np.inf)
    np.maximum.at(newest, events.item, events.ts)
    return counts, newest


def item_support(sequences: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """How often each item occurs in the training sequences."""
    if not sequences:
        return np.zeros(n_items)
    return np.bincount(np.concatenate(sequences), minlength=n_items).astype(np.float64)


class Trainer:
    """Owns the optimiser, sampler and loss of one model; ``fit`` runs epochs."""

    def __init__(self, model: GRU4Rec, sequences: Sequence[np.ndarray], config: TrainConfig,
                 row_scale: dict[torch.Tensor, torch.Tensor] | None = None):
        self.model = model
        self.sequences = split_long(sequences, config.chunk_len)
        self.config = config
        self.precision = resolve_precision(config.precision)
        torch.manual_seed(config.seed)
        self.optimizer = AdagradMomentum(
            model.parameters(), lr=config.learning_rate, momentum=config.momentum, row_scale=row_scale
        )
        support = item_support(self.sequences, model.n_items)
        self.full_softmax = config.n_sample >= model.n_items
        self.sampler = None
        if config.n_sample > 0 and not self.full_softmax:
            self.sampler = PopularitySampler(support, config.n_sample, config.alpha, seed=config.seed)
        with np.errstate(divide="ignore"):
            # in-batch columns are drawn ~ support, extra ones ~ support^alpha
            self.log_support = torch.from_numpy(np.log(support / max(support.sum(), 1.0))).float()
        self.log_sample = None if self.sampler is None else self.sampler.log_probs()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, extra: torch.Tensor | None = None,
             seen: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of output vectors ``[n, d]`` against their next items ``[n]``, with the shared
        ``extra`` negatives; ``seen`` (bool ``[n, columns]``, see ``seen_columns``) flags columns
        that are no negatives of a row."""
        cfg, model = self.config, self.model
        if self.full_softmax:
            scores = model.logits(outputs)
            if seen is not None:
                seen[torch.arange(len(targets)), targets] = False
            if cfg.loss == "xe":
                return cross_entropy_logq(scores, targets, exclude=seen)
            return bpr_max(scores, targets, cfg.bpreg, seen, cfg.final_act)
        columns, pos, exclude = sampled_columns(targets, extra)
        if seen is not None:
            seen[pos, pos] = False
            exclude |= seen
        scores = model.logits(outputs, columns)
        if cfg.loss == "xe":
            logq = None
            if cfg.logq:
                logq = self.log_support[targets]
                if extra is not None:
                    logq = torch.cat((logq, self.log_sample[extra]))
            return cross_entropy_logq(scores, pos, logq, exclude)
        return bpr_max(scores, pos, cfg.bpreg, exclude, cfg.final_act)

    def columns(self, targets: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The shared extra negatives of one update and the items its score columns hold (None:
        every item, a full softmax)."""
        if self.full_softmax:
            return None, None
        extra = None if self.sampler is None else self.sampler.sample()
        return extra, targets if extra is None else torch.cat((targets, extra))

    def seen_columns(self, seen: torch.Tensor, window: Sequence[Step],
                     columns: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Walk the lanes' item sets ``seen`` (bool ``[n_items, lanes]``: an item's lanes are
        adjacent, so a step gathers its columns as whole rows) through ``window``'s steps;
        returns them and, per output row, which ``columns`` (None: all items) its sequence holds
        up to and including the row's input (bool ``[rows, columns]``)."""
        parts = []
        for step in window:
            if step.keep is not None:
                seen = seen[:, step.keep]
            if step.reset.any():
                seen[:, step.reset] = False
            seen[step.inputs, torch.arange(len(step.inputs))] = True
            parts.append(seen.clone() if columns is None else seen.index_select(0, columns))
        return seen, torch.cat(parts, dim=1).T

    def _update(self, outputs: torch.Tensor, targets: torch.Tensor, extra: torch.Tensor | None,
                seen: torch.Tensor | None) -> tuple[float, int]:
        """One optimiser step on a window's outputs; returns (mean loss, number of events)."""
        with autocast(self.precision):
            loss = self.loss(outputs, targets, extra, seen)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        value = loss.detach().item()
        if not math.isfinite(value):
            raise FloatingPointError("loss is not finite; lower the learning rate")
        return value, len(targets)

    def train_epoch(self, progress: Callable[[int, float], None] | None = None) -> dict:
        """One pass over all sequences. ``progress(events, loss)`` is called after each update."""
        model, cfg = self.model, self.config
        model.train()
        # session_parallel drops one-item sequences (no target): size the lanes without them
        trainable = sum(1 for s in self.sequences if len(s) >= 2)
        hidden = model.init_hidden(min(cfg.batch_size, max(trainable, 1)))
        lanes_seen = torch.zeros(model.n_items, len(hidden), dtype=torch.bool) if cfg.mask_seen else None
        total_loss, n_events = 0.0, 0
        started = time.perf_counter()
        steps = session_parallel(self.sequences, cfg.batch_size)
        while True:
            window = list(itertools.islice(steps, cfg.bptt))
            if not window:
                break
            targets = torch.cat([step.targets for step in window])
            extra, columns = self.columns(targets)
            seen = None
            if lanes_seen is not None:
                lanes_seen, seen = self.seen_columns(lanes_seen, window, columns)
            with autocast(self.precision):
                hidden, outputs = window_forward(model, hidden, window)
            value, n = self._update(outputs, targets, extra, seen)
            hidden = hidden.detach()
            total_loss += value * n
            n_events += n
            if progress is not None:
                progress(n, value)
        seconds = time.perf_counter() - started
        return {
            "loss": total_loss / max(n_events, 1),
            "events": n_events,
            "seconds": seconds,
            "events_per_s": n_events / max(seconds, 1e-9),
        }


def train_model(
    sequences: Sequence[np.ndarray],
    items: Sequence[str] | ItemRegistry,
    config: TrainConfig,
    version: str,
    show_progress: bool = True,
    on_epoch: Callable[[int, GRU4Rec, dict], None] | None = None,
    parent: GRU4Rec | None = None,
    from_neighbours: bool = False,
    validate: Callable[[GRU4Rec], float] | None = None,
    row_scale: np.ndarray | None = None,
) -> tuple[GRU4Rec, list[dict]]:
    """Build and train a model on item-index ``sequences`` over ``items`` (their registry, or
    the ids of a new lineage); returns it with per-epoch stats. With ``parent``, training starts
    from its weights (``warm_start``), and with ``from_neighbours`` the items the parent lacks
    start from the known items clicked next to them (``init_from_neighbours``). ``row_scale``: a
    multiple of ``config.learning_rate`` for each item's rows.

    Without ``validate`` it runs ``config.epochs`` epochs. With it (a score of the model on held
    out data, higher is better), it runs at most ``config.epochs``, stops after
    ``config.patience`` epochs without a new best, and returns the best epoch's weights; each
    epoch's stats then hold its ``valid`` score and ``best`` marks the chosen one.

    The progress bar shows the running loss and events/s; ``on_epoch(epoch, model, stats)`` runs
    after every epoch (e.g. validation).
    """
    from tqdm import tqdm

    registry = items if isinstance(items, ItemRegistry) else ItemRegistry.new(items)
    torch.manual_seed(config.seed)
    model = GRU4Rec(
        registry.ids, hidden_size=config.hidden_size, n_layers=config.n_layers,
        dropout_embed=config.dropout_embed, dropout_hidden=config.dropout_hidden, version=version,
        seen_size=config.seen_size, seen_decay=config.seen_decay,
    )
    model.use_registry(registry)
    model.item_counts = tuple(int(c) for c in item_support(sequences, model.n_items))
    if parent is not None:
        warm_start(model, parent)
        if from_neighbours:
            init_from_neighbours(model, parent.n_items, sequences)
    scale = None if row_scale is None else item_rows_scale(model, row_scale)
    trainer = Trainer(model, sequences, config, scale)
    n_targets = sum(max(len(s) - 1, 0) for s in trainer.sequences)
    history: list[dict] = []
    best: tuple[float, int, dict] | None = None  # (score, epoch index, weights)
    for epoch in range(config.epochs):
        for group in trainer.optimizer.param_groups:
            group["lr"] = config.learning_rate * config.lr_decay ** epoch
        with tqdm(total=n_targets, desc=f"epoch {epoch + 1}/{config.epochs}", unit="ev",
                  disable=not show_progress, leave=False) as bar:
            started = time.perf_counter()

            def progress(n: int, loss: float, bar=bar, started=started) -> None:
                bar.update(n)
                rate = bar.n / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{loss:.4f}", ev_s=f"{rate:,.0f}", refresh=False)

            stats = trainer.train_epoch(progress)
        stats["epoch"] = epoch + 1
        history.append(stats)
        if validate is not None:
            stats["valid"] = float(validate(model))
            model.train()
            if best is None or stats["valid"] > best[0]:
                best = (stats["valid"], epoch, copy.deepcopy(model.state_dict()))
        if show_progress:
            valid = f", valid {stats['valid']:.4f}" if "valid" in stats else ""
            tqdm.write(f"epoch {epoch + 1}: loss {stats['loss']:.4f}{valid}, "
                       f"{stats['events_per_s']:,.0f} events/s, {stats['seconds']:.1f}s")
        if on_epoch is not None:
            on_epoch(epoch, model, stats)
            model.train()
        if best is not None and epoch - best[1] >= config.patience:
            break
    if best is not None:
        model.load_state_dict(best[2])
        history[best[1]]["best"] = True
    return model.eval(), history
