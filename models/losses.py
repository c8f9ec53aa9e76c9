"""Training losses over a score matrix ``r [n, C]`` whose row k has its positive in column
``pos[k]``; ``exclude`` marks columns that must not act as negatives (other copies of the target).

- cross-entropy with logQ correction: ``L_k = -log softmax(r_k - log q)[pos_k]``;
- BPR-max with score regularisation (Hidasi & Karatzoglou 2018): with negative weights
  ``s_kj = softmax_{j != pos_k}(r_kj)``,
  ``L_k = -log sum_j s_kj sigmoid(r_k,pos - r_kj) + bpreg * sum_j s_kj r_kj^2``.
Both return the mean over rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("xe", "bpr-max")


def final_activation(scores: torch.Tensor, name: str) -> torch.Tensor:
    """``linear`` or ``elu-<alpha>`` applied to scores (monotone, so rankings do not change)."""
    if name == "linear":
        return scores
    if name.startswith("elu-"):
        return F.elu(scores, alpha=float(name[4:]))
    raise ValueError(f"unknown final activation {name!r}")


def cross_entropy_logq(
    scores: torch.Tensor,
    pos: torch.Tensor,
    logq: torch.Tensor | None = None,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy; ``logq [C]`` (log sampling probability per column) is subtracted."""
    if logq is not None:
        scores = scores - logq
    if exclude is not None:
        scores = scores.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(scores, pos)


def bpr_max(
    scores: torch.Tensor,
    pos: torch.Tensor,
    bpreg: float = 1.0,
    exclude: torch.Tensor | None = None,
    final_act: str = "linear",
) -> torch.Tensor:
    """BPR-max loss with score regularisation ``bpreg``."""
    scores = final_activation(scores, final_act)
    rows = torch.arange(len(pos), device=scores.device)
    positive = scores[rows, pos]
    negative = torch.zeros_like(scores, dtype=torch.bool)
    negative[rows, pos] = True
    if exclude is not None:
        negative |= exclude
    weights = torch.softmax(scores.masked_fill(negative, float("-inf")), dim=1)
    ranked = (weights * torch.sigmoid(positive[:, None] - scores)).sum(1)
    reg = (weights * scores.square()).sum(1)
    return (-torch.log(ranked + 1e-24) + bpreg * reg).mean()


def sampled_columns(
    targets: torch.Tensor, extra: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Columns = in-batch targets then the shared extra samples.

    Returns (column items [C], positive column per row [n] (the diagonal), exclude mask [n, C]
    flagging other columns that hold the row's own target item).
    """
    columns = targets if extra is None else torch.cat((targets, extra))
    pos = torch.arange(len(targets))
    exclude = columns[None, :] == targets[:, None]
    exclude[pos, pos] = False
    return columns, pos, exclude
