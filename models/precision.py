"""The number format of training's matrix products: float32, or bfloat16 under autocast (the
weights, the optimiser state and the recurrent state stay float32; only the products' inputs are
rounded). ``auto`` takes bfloat16 only on CPUs that multiply it natively (AMX tiles or AVX-512
BF16), where its products are faster; elsewhere it would be emulated and slower."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("float32", "bfloat16", "auto")


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str) -> str:
    """``float32`` or ``bfloat16`` for a configured precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return "bfloat16" if native_bf16() else "float32"
    return precision


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """The context that training's forward pass and loss run in (``precision`` resolved)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")
