"""Top-K of scores ``outputs @ weight.T + bias`` per row: exact (block maxima; the bfloat16
screen, exact at the bfloat16 matmul's speed) or approximate (an inverted-file index, ``ann``)."""

from __future__ import annotations

import math

import numpy as np
import torch

_SELECT_WIDTH = 200  # rows up to this wide are ranked by one sort (``_sorted_top_k``)


def select_block(k: int) -> int:
    """Items per block in ``top_k`` for a given ``k``: 1 means plain ``torch.topk``."""
    return max(1, _SELECT_WIDTH // max(k, 1))


def _sorted_top_k(
    values: torch.Tensor, k: int, columns: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (values, columns) of each row of a narrow float32 ``values``, best first;
    ``columns[i, j]`` is the index that ``values[i, j]`` stands for (default: ``j``). One numpy
    sort of int64 keys, each the score's bits made to sort as the float does, above its column:
    numpy sorts such narrow rows with SIMD, faster than ``torch.topk`` (which wins on wide rows:
    ``bench/model.py``). Of equal scores, the larger column comes first."""
    bits = values.numpy().view(np.int32)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: flip all but the sign
    cols = columns.numpy() if columns is not None else np.arange(values.shape[1])
    keys = np.sort((ordered.astype(np.int64) << 32) | cols, axis=1)[:, : -k - 1 : -1]
    best = (keys >> 32).astype(np.int32)
    best ^= (best >> 31) & 0x7FFFFFFF
    return torch.from_numpy(best.view(np.float32)), torch.from_numpy(keys & 0xFFFFFFFF)


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` (values as float32, indices) per row of a row-major float32 or bfloat16
    ``scores``, best first, as ``torch.topk`` gives them (of equal scores, either may be chosen),
    and faster on wide rows (``bench/model.py``): each row is cut into ``w / b`` interleaved
    blocks of ``b`` items (item i in block ``i mod (w / b)``), the ``k`` blocks with the largest
    maxima (found the same way, recursively) are gathered and only their ``k * b <= 200`` items
    ranked, by one sort. Exact, because a block that holds a top-``k`` item is beaten only by
    blocks holding a better item, which are fewer than ``k``. Rows whose width is not a multiple
    of ``b`` are padded with -inf (a copy: callers that score many items size their matrices to
    avoid it, see ``select_block``).
    """
    if scores.dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"top_k ranks float32 or bfloat16 scores (their bits are sorted), not {scores.dtype}")
    rows, width = scores.shape
    k = min(k, width)
    block = select_block(k)
    if block == 1:  # k > 100: blocks would not pay off
        values, indices = torch.topk(scores, k, dim=1)
        return values.float(), indices
    if width <= _SELECT_WIDTH:
        return _sorted_top_k(scores.float(), k)
    if width % block:
        scores = torch.nn.functional.pad(scores, (0, block - width % block), value=float("-inf"))
    blocks = scores.shape[1] // block
    maxima = scores.view(rows, block, blocks).amax(dim=1).float()
    _, best = top_k(maxima, k)
    members = (best[:, :, None] + torch.arange(0, blocks * block, blocks)).view(rows, -1)
    return _sorted_top_k(scores.gather(1, members).float(), k, members)


def top_k_scores(
    outputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    k: int,
    masked: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` (values, indices) of ``outputs @ weight.T + bias`` per row, best first,
    with ``masked[i]`` (indices) excluded from row i (scored -inf). ``out``: a reused
    ``[len(outputs), len(weight)]`` buffer for the scores; a fresh matrix this large costs page
    faults comparable to the matmul itself (``bench/model.py`` measures both).
    """
    scores = torch.addmm(bias, outputs, weight.T, out=out)
    if masked is not None:
        scores.scatter_(1, masked, float("-inf"))
    return top_k(scores, k)


_SCREEN_CANDIDATES = (2, 4)  # BF16Screen ranks each row's best 2k, then 4k where the bound needs more


def padded_multiple(k: int) -> int:
    """Catalogues padded to a multiple of this many items are ranked without a copy of the scores,
    by ``top_k`` for ``k`` and by ``BF16Screen`` for its candidate counts."""
    return math.lcm(*(select_block(n * k) for n in (1, *_SCREEN_CANDIDATES)))


_BF16_UNIT = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits)
_BF16_MINUS_INF_BITS = -128  # 0xFF80 as int16


def bf16_screen_available() -> bool:
    """True when this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX), where
    torch's bfloat16 matmul runs several times faster than float32 (``bench/model.py``)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


class BF16Screen:
    """Exact top-``k`` of ``outputs @ weight.T + bias`` at the bfloat16 matmul's speed.

    Every item is scored in bfloat16 (``[h | 1 | 1] . [e | b_hi | b_lo]``, the bias split in two
    parts so it loses almost nothing), the ``2k`` best of those are rescored in float32 and ranked.
    A rounding bound makes the answer exact: an item left out has a bfloat16 score at most the
    smallest candidate's ``c``, so its float32 score is at most ``c + u/(1-u)|c| + a |[h, 1]| M``
    (``u`` = 2^-8; ``a`` = 2u + u^2 + accumulation, for the rounding of h, e and the products' sum;
    ``M``, the largest ``|[e, b]|`` of a recommendable item). A row whose ``k``-th rescored score
    does not beat that is settled the same way from its ``4k`` best (``rows_widened`` counts
    them), and failing that scored again in float32 over every item (``rows_rescored``;
    ``bench/model.py`` reports both shares). Biases of -inf (padding, ``never_recommend``) are -1e30
    in the table and -inf when rescored.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.weight, self.bias = weight, bias
        finite = torch.isfinite(bias)
        b = torch.where(finite, bias, torch.full_like(bias, -1e30))
        high = b.bfloat16()
        low = (b - high.float()).bfloat16()
        self.table = torch.cat([weight.bfloat16(), high[:, None], low[:, None]], dim=1).contiguous()
        items = torch.cat([weight, b[:, None]], dim=1)[finite]
        self.reach = float(items.norm(dim=1).max()) if len(items) else 0.0
        u, terms = _BF16_UNIT, weight.shape[1] + 2
        self.slack = 2 * u + u * u + 2 * terms * 2.0**-24
        self.rows = self.rows_widened = self.rows_rescored = 0  # rows ranked; of those, settled late
        self._scores = torch.empty(0, len(weight), dtype=torch.bfloat16)  # reused, as is
        self._vectors = torch.empty(0, weight.shape[1])  # the candidates' vectors

    def top_k(
        self, outputs: torch.Tensor, k: int, masked: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``top_k_scores`` (exact, best first), with ``masked[i]`` excluded from row i."""
        rows, width = len(outputs), len(self.weight)
        if len(self._scores) < rows:
            self._scores = torch.empty(rows, width, dtype=torch.bfloat16)
        scores = self._scores[:rows]
        queries = torch.cat([outputs, outputs.new_ones(rows, 2)], dim=1).bfloat16()
        torch.mm(queries, self.table.T, out=scores)
        if masked is not None:  # torch's bfloat16 scatter is far slower than its int16 one
            scores.view(torch.int16).scatter_(1, masked, _BF16_MINUS_INF_BITS)
        k = min(k, width)
        first, wider = (min(n * k, width) for n in _SCREEN_CANDIDATES)
        values, indices, sure = self._settle(outputs, scores, k, first)
        self.rows += rows
        if not bool(sure.all()):  # a wider candidate set from the same scores, then float32
            again = (~sure).nonzero()[:, 0]
            self.rows_widened += len(again)
            values[again], indices[again], sure = self._settle(outputs[again], scores[again], k, wider)
            again = again[~sure]
            if len(again):
                self.rows_rescored += len(again)
                values[again], indices[again] = top_k_scores(
                    outputs[again], self.weight, self.bias, k, masked[again] if masked is not None else None
                )
        return values, indices

    def _settle(
        self, outputs: torch.Tensor, scores: torch.Tensor, k: int, count: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The top-``k`` of each row's best ``count`` by ``scores``, rescored in float32, and
        whether the bound proves it the row's exact top-``k``."""
        rough, candidates = top_k(scores, count)
        flat = candidates.reshape(-1)
        if self._vectors.numel() < len(flat) * outputs.shape[1]:
            self._vectors = torch.empty(len(flat), outputs.shape[1])
        vectors = torch.index_select(self.weight, 0, flat, out=self._vectors[: len(flat)])
        vectors = vectors.view(*candidates.shape, -1).mul_(outputs[:, None, :])
        exact = vectors.sum(dim=2) + self.bias.index_select(0, flat).view_as(rough)
        exact.masked_fill_(torch.isneginf(rough), float("-inf"))
        values, order = torch.topk(exact, k, dim=1)
        last = rough[:, -1]
        reach = outputs.norm(dim=1).hypot(outputs.new_ones(())) * self.reach  # |[h, 1]| M
        # 1e-30: bfloat16 dot products may flush subnormal inputs and results to zero
        bound = last + last.abs() * (_BF16_UNIT / (1 - _BF16_UNIT)) + reach * self.slack + 1e-30
        sure = (values[:, -1] > bound) | torch.isneginf(last) | (count == scores.shape[1])
        return values, candidates.gather(1, order), sure


def ivf_index(weight: torch.Tensor, bias: torch.Tensor, lists: int, probes: int):
    """An inverted-file index (faiss ``IndexIVFFlat``, inner product) over ``[E | b]``, so that
    ``[h | 1] . [e | b] = h . e + b`` is the exact score of every item it visits. Items whose
    bias is -inf (``never_recommend``) are left out. ``probes`` of the ``lists`` k-means cells
    closest to a query are scanned."""
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    keep = torch.isfinite(bias).nonzero()[:, 0]
    vectors = torch.cat([weight[keep], bias[keep, None]], dim=1).contiguous().numpy()
    lists = max(1, min(lists, len(vectors)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(vectors.shape[1]), vectors.shape[1], lists,
                               faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add_with_ids(vectors, keep.numpy().astype(np.int64))
    index.nprobe = max(1, min(probes, lists))
    return index


def ann_top_k(index, outputs: torch.Tensor, k: int, masked: torch.Tensor | None):
    """Approximate ``top_k_scores``: the index's best ``k`` + ``masked.shape[1]`` candidates per
    row, the masked ones and misses (-1) scored -inf, then the best ``k`` of those."""
    extra = masked.shape[1] if masked is not None else 0
    queries = torch.cat([outputs, torch.ones(len(outputs), 1)], dim=1).contiguous().numpy()
    found, ids = index.search(queries, k + extra)
    scores, ids = torch.from_numpy(found), torch.from_numpy(ids)
    drop = ids < 0
    if masked is not None:
        drop |= (ids[:, :, None] == masked[:, None, :]).any(dim=2)
    scores = scores.masked_fill(drop, float("-inf"))
    values, pos = torch.topk(scores, min(k, scores.shape[1]), dim=1)
    return values, ids.gather(1, pos).clamp_min(0)
