"""Adagrad with momentum that updates only the rows a sparse gradient touches.

For a parameter row with gradient g: ``G += g^2``, ``v = momentum * v + lr * g / sqrt(G + eps)``,
``w -= v``. Sparse gradients (from ``nn.Embedding(sparse=True)``) are coalesced and only their rows
of ``G``, ``v`` and ``w`` change; dense gradients update the whole tensor. ``row_scale`` gives a
parameter's rows their own multiple of ``lr``: a fine-tuned model's new item rows can learn at a
from-scratch rate while the rows it inherited move gently.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


class AdagradMomentum(torch.optim.Optimizer):
    """Adagrad + momentum with row-sparse updates."""

    def __init__(self, params, lr: float = 0.05, momentum: float = 0.0, eps: float = 1e-6,
                 row_scale: Mapping[torch.Tensor, torch.Tensor] | None = None):
        if lr <= 0 or not 0.0 <= momentum < 1.0:
            raise ValueError("need lr > 0 and 0 <= momentum < 1")
        super().__init__(params, {"lr": lr, "momentum": momentum, "eps": eps})
        self.row_scale = dict(row_scale or {})  # parameter -> a multiple of lr per row

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["sum"] = torch.zeros_like(p)
                    if momentum:
                        state["velocity"] = torch.zeros_like(p)
                grad = p.grad
                if grad.is_sparse:
                    grad = grad.coalesce()
                    rows, values = grad.indices()[0], grad.values()
                    acc = state["sum"].index_add_(0, rows, values.square())[rows]
                    update = lr * values / (acc + eps).sqrt()
                    if p in self.row_scale:
                        _scale_rows(update, self.row_scale[p][rows])
                    if momentum:
                        velocity = state["velocity"]
                        update = velocity[rows].mul_(momentum).add_(update)
                        velocity[rows] = update
                    p.index_add_(0, rows, update, alpha=-1.0)
                else:
                    acc = state["sum"].addcmul_(grad, grad)
                    update = lr * grad / (acc + eps).sqrt()
                    if p in self.row_scale:
                        _scale_rows(update, self.row_scale[p])
                    if momentum:
                        update = state["velocity"].mul_(momentum).add_(update)
                    p.sub_(update)


def _scale_rows(update: torch.Tensor, scale: torch.Tensor) -> None:
    """Multiply each row of ``update`` by its entry of ``scale``, in place."""
    update.mul_(scale.view(-1, *[1] * (update.dim() - 1)))
