"""SASRec-style reference model (Kang & McAuley 2018), for comparison only (the stream serves the GRU).

Causal self-attention over the last ``max_len`` items: item embedding (tied with the output)
scaled by sqrt(d) plus a learned position embedding, pre-norm transformer blocks, a final layer
norm; the score of item j after position t is ``h_t . e_j``. Trained with full-softmax
cross-entropy at every position of windows of ``max_len + 1`` items cut from the end of each
training sequence backwards, every ``stride`` items (overlapping windows show a transition in
more than one context), Adam.

Like the baselines, it trains in its constructor on sequences of dataset item codes and exposes
``score_prefixes(prefixes, users) -> np.ndarray [n, n_items]``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclasses.dataclass(frozen=True)
class SASRecConfig:
    """Hyper-parameters. The defaults scored best on MovieLens-100K's validation part of three
    settings tried (64 units, dropout 0.2 or 0.5, stride 50; this one)."""

    dims: int = 128
    blocks: int = 2
    heads: int = 2
    dropout: float = 0.5
    learning_rate: float = 1e-3
    batch_size: int = 128
    epochs: int = 50
    max_len: int = 50
    stride: int = 25
    seed: int = 0
    max_seconds: float | None = None  # no epoch starts after this much training time (None: all)


class SelfAttentive(nn.Module):
    """The network: ``forward(items [b, L]) -> [b, L, d]``, inputs right-aligned, 0 = padding."""

    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__()
        d, length = config.dims, config.max_len
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)  # index = item code + 1
        self.position = nn.Embedding(length, d)
        self.dropout = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(
            d, config.heads, d, config.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, config.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(length))
        nn.init.normal_(self.item.weight, std=d**-0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        d, length = self.item.embedding_dim, items.shape[1]
        x = self.item(items) * d**0.5 + self.position.weight[-length:]
        x = self.dropout(x) * (items > 0)[..., None]
        x = self.blocks(x, mask=self.causal[-length:, -length:], is_causal=True)
        return self.norm(x)

    def logits(self, outputs: torch.Tensor) -> torch.Tensor:
        """Scores of every item (dataset code order) for outputs ``[n, d]``."""
        return outputs @ self.item.weight[1:].T


def training_windows(sequences: Sequence[np.ndarray], max_len: int, stride: int) -> torch.Tensor:
    """``[w, max_len + 1]`` windows of item codes + 1, left-padded, ending at each sequence's end
    and every ``stride`` items before it (``stride = max_len``: every transition in exactly one)."""
    windows = []
    for seq in sequences:
        seq = np.asarray(seq, np.int64) + 1
        for end in range(len(seq), 1, -stride):
            window = seq[max(0, end - max_len - 1) : end]
            windows.append(np.pad(window, (max_len + 1 - len(window), 0)))
    if not windows:
        raise ValueError("no sequence has two items to learn from")
    return torch.from_numpy(np.stack(windows))


class SASRec:
    """Trains on ``sequences`` (dataset item codes, ``n_items`` of them), then scores prefixes."""

    name = "SASRec-style"

    def __init__(
        self, sequences: Sequence[np.ndarray], n_items: int, config: SASRecConfig = SASRecConfig()
    ) -> None:
        self.config = config
        torch.manual_seed(config.seed)
        self.network = SelfAttentive(n_items, config)
        self.losses = self._fit(training_windows(sequences, config.max_len, config.stride))

    def _fit(self, windows: torch.Tensor) -> list[float]:
        """Adam over shuffled batches of windows, ``epochs`` of them or as many as start within
        ``max_seconds``; returns the mean loss of each epoch."""
        cfg, net = self.config, self.network
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
        net.train()
        losses, started = [], time.perf_counter()
        for _ in range(cfg.epochs):
            if cfg.max_seconds is not None and time.perf_counter() - started >= cfg.max_seconds:
                break
            total, count = 0.0, 0
            for batch in windows[torch.randperm(len(windows))].split(cfg.batch_size):
                inputs, targets = batch[:, :-1], batch[:, 1:]
                real = targets > 0
                loss = F.cross_entropy(net.logits(net(inputs)[real]), targets[real] - 1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * int(real.sum())
                count += int(real.sum())
            losses.append(total / count)
        net.eval()
        return losses

    @torch.inference_mode()
    def score_prefixes(self, prefixes, users=None) -> np.ndarray:
        length = self.config.max_len
        items = np.zeros((len(prefixes), length), np.int64)
        for row, prefix in enumerate(prefixes):
            prefix = np.asarray(prefix, np.int64)[-length:]
            if len(prefix):
                items[row, length - len(prefix) :] = prefix + 1
        outputs = self.network(torch.from_numpy(items))[:, -1]
        return self.network.logits(outputs).numpy()
