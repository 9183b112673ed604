r"""LightGCN's propagation as a precomputed, capped table (PPRGo's trade, KDD 2020): the rows of
:math:`P = \frac{1}{K+1}\sum_{k=0}^{K} \hat A^k`, each kept to its ``cap`` largest entries, so
that an item's propagated embedding is a weighted sum of at most ``cap`` rows of a table.

A step then costs ``batch x cap`` rows, whatever the catalog, instead of ``K`` products with the
whole graph (about 14 s of every step at a million items, docs/benchmarks.md).  Where no row of
:math:`P` has more than ``cap`` entries the table is exact.  Where rows are cut, each hop's
rows are cut to ``cap`` before the next hop, so memory and time stay ``rows x cap x degree``.

Torch only (no DGL, no scipy): the table is built wherever the model is built, GPU hosts included.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from mmsc_dgl.ops.sparse import SparseMatrix

__all__ = ["capped_propagation", "gather_rows"]


def capped_propagation(adjacency: SparseMatrix, layers: int, cap: int,
                       budget: int = 1 << 24) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""The rows of :math:`\frac{1}{K+1}\sum_{k=0}^{K} \hat A^k` (``layers`` = K), each row's
    ``cap`` largest entries, as padded lists: ``(columns [n, cap] int64, values [n, cap] float32)``.

    Row ``i`` of hop ``k`` is row ``i`` of hop ``k - 1`` times :math:`\hat A`, cut to its ``cap``
    largest entries; the mean of the hops is cut again.  Ties keep the smaller column.  A padded
    slot holds the row's own id with value 0 (it adds nothing, and no gradient).  Rows are built
    in chunks of about ``budget`` intermediate entries.

    Example:
        >>> from mmsc_dgl.ops.csr import CSR
        >>> adj = SparseMatrix(CSR(torch.tensor([0, 1, 2]), torch.tensor([1, 0])), torch.ones(2))
        >>> cols, vals = capped_propagation(adj, 1, 2)
        >>> cols.tolist(), vals.tolist()
        ([[0, 1], [0, 1]], [[0.5, 0.5], [0.5, 0.5]])
    """
    if cap < 1 or layers < 0:
        raise ValueError(f"cap must be >= 1 and layers >= 0, got cap={cap}, layers={layers}")
    n, m = adjacency.shape
    if n != m:
        raise ValueError(f"the adjacency must be square, got {n} x {m}")
    csr = adjacency.csr
    indptr, indices = csr.indptr, csr.indices
    values = adjacency.values.to(torch.float32)
    degrees = indptr[1:] - indptr[:-1]
    mean_degree = max(1.0, float(csr.num_edges) / max(1, n))
    step = max(1, int(budget // (cap * mean_degree * max(1, layers))))
    cols = torch.empty((n, cap), dtype=torch.int64, device=indptr.device)
    vals = torch.zeros((n, cap), dtype=torch.float32, device=indptr.device)
    for start in range(0, n, step):
        rows = torch.arange(start, min(n, start + step), device=indptr.device)
        b = rows.numel()
        local = torch.arange(b, device=indptr.device)
        hop = (local, rows, torch.ones(b, dtype=torch.float32, device=indptr.device))
        hops = [hop]
        for _ in range(layers):
            hop = _top(*_coalesce(*_times(*hop, indptr, indices, values, degrees), n), cap, b)
            hops.append(hop)
        r, c, v = _coalesce(*(torch.cat(parts) for parts in zip(*hops)), n)
        r, c, v, rank = _top(r, c, v / (layers + 1), cap, b, with_rank=True)
        cols[start: start + b] = rows.unsqueeze(1)
        cols[start + r, rank] = c
        vals[start + r, rank] = v
    return cols, vals


def _times(r, c, v, indptr, indices, values, degrees):
    """The entries ``(row, column, value)`` times the adjacency, before summing duplicates."""
    counts = degrees[c]
    first = torch.repeat_interleave(indptr[c] - (torch.cumsum(counts, 0) - counts), counts)
    idx = first + torch.arange(first.numel(), device=first.device)
    return torch.repeat_interleave(r, counts), indices[idx], torch.repeat_interleave(v, counts) * values[idx]


def _coalesce(r, c, v, n):
    """Duplicate ``(row, column)`` entries summed; sorted by row, then column."""
    key, inverse = torch.unique(r * n + c, return_inverse=True)
    summed = torch.zeros(key.numel(), dtype=v.dtype, device=v.device).index_add_(0, inverse, v)
    return key // n, key % n, summed


def _top(r, c, v, cap, rows, with_rank=False):
    """Each row's ``cap`` largest entries (input sorted by row, then column; ties keep the
    smaller column); with ``with_rank`` also each kept entry's slot in its row (column order).

    A row with more than ``cap`` entries is laid out dense with its peers of about the same
    length (widths by powers of two) and cut at its ``cap``-th largest value by ``topk``: no
    sort of every entry."""
    counts = torch.bincount(r, minlength=rows)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(r.numel(), device=r.device) - start[r]
    over = counts > cap
    keep = ~over[r]
    chosen, slots = [keep.nonzero().flatten()], [rank[keep]]
    long_rows = over.nonzero().flatten()
    if long_rows.numel():
        widths = torch.pow(2, torch.ceil(torch.log2(counts[long_rows].double()))).long()
        for width in torch.unique(widths).tolist():
            these = long_rows[widths == width]
            at = torch.arange(width, device=r.device)
            idx = start[these].unsqueeze(1) + at
            valid = at < counts[these].unsqueeze(1)
            dense = torch.where(valid, v[idx.clamp(max=r.numel() - 1)], torch.tensor(float("-inf"), dtype=v.dtype))
            kth = dense.topk(cap, dim=1).values[:, -1:]
            greater = dense > kth
            equal = dense == kth
            take = greater | (equal & (torch.cumsum(equal, 1) <= cap - greater.sum(1, keepdim=True)))
            chosen.append(idx[take])
            slots.append((torch.cumsum(take, 1) - 1)[take])
    pick = torch.cat(chosen)
    out = (r[pick], c[pick], v[pick])
    return (*out, torch.cat(slots)) if with_rank else out


def gather_rows(columns: torch.Tensor, values: torch.Tensor, table: torch.Tensor,
                nodes: torch.Tensor) -> torch.Tensor:
    """Rows ``nodes`` of the capped product: ``sum_j values[i, j] * table[columns[i, j]]``
    [len(nodes), dim], by ``embedding_bag`` (no [len(nodes), cap, dim] intermediate).  Float32
    whatever the autocast region, as :func:`~mmsc_dgl.ops.sparse.sparse_mm`.

    Example:
        >>> gather_rows(torch.tensor([[0, 1]]), torch.tensor([[0.5, 0.5]]), torch.eye(2), torch.tensor([0])).tolist()
        [[0.5, 0.5]]
    """
    with torch.autocast(device_type=table.device.type, enabled=False):
        return F.embedding_bag(columns[nodes], table.float(), per_sample_weights=values[nodes].float(), mode="sum")
