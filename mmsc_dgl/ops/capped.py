r"""LightGCN's propagation as a precomputed, capped table (PPRGo's trade, KDD 2020): the rows of
:math:`P = \frac{1}{K+1}\sum_{k=0}^{K} \hat A^k`, each kept to its ``cap`` largest entries, so
that an item's propagated embedding is a weighted sum of at most ``cap`` rows of a table.

A step then costs ``batch x cap`` rows, whatever the catalog, instead of ``K`` products with the
whole graph (about 9 s of every step at a million items, docs/benchmarks.md).  Where no row of
:math:`P` has more than ``cap`` entries the table is exact.  Where rows are cut, each hop's
rows are cut to ``cap`` before the next hop, so a hop costs ``nnz(A) x cap`` entries.

Torch only (no DGL, no scipy): the table is built wherever the model is built, GPU hosts included.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

from mmsc_dgl.ops.sparse import SparseMatrix

__all__ = ["capped_propagation", "gather_rows"]


def capped_propagation(adjacency: SparseMatrix, layers: int, cap: int,
                       budget: int = 1 << 23) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""The rows of :math:`\frac{1}{K+1}\sum_{k=0}^{K} \hat A^k` (``layers`` = K), each row's
    ``cap`` largest entries, as padded lists: ``(columns [n, cap] int64, values [n, cap] float32)``.

    Hop ``k`` is :math:`\hat A` times hop ``k - 1``, each of its rows cut to its ``cap`` largest
    entries (row ``i`` sums its neighbours' cut rows: ``nnz(A) x cap`` entries a hop, however
    the degrees are spread); the mean of the hops is cut again.  Ties keep the smaller column.
    A padded slot holds the row's own id with value 0 (it adds nothing, and no gradient).  Rows
    are built in chunks of about ``budget`` intermediate entries.

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
    device = csr.indptr.device
    values = adjacency.values.to(torch.float32)
    own = torch.arange(n, device=device).unsqueeze(1)
    hops = [(own, torch.ones((n, 1), dtype=torch.float32, device=device))]
    for _ in range(layers):
        prev_cols, prev_vals = hops[-1]
        width = prev_cols.shape[1]
        hop = _padded(n, cap, device)
        for start, end in _chunks(csr.indptr * width, budget):
            edges = slice(int(csr.indptr[start]), int(csr.indptr[end]))
            rows = torch.repeat_interleave(torch.arange(end - start, device=device), csr.indptr[start + 1: end + 1]
                                           - csr.indptr[start: end])
            nbr = csr.indices[edges]
            r = rows.repeat_interleave(width)
            c = prev_cols[nbr].flatten()
            v = (values[edges].unsqueeze(1) * prev_vals[nbr]).flatten()
            nonzero = v != 0
            r, c, v = _coalesce(r[nonzero], c[nonzero], v[nonzero], n)
            _fill(hop, start, *_top(r, c, v, cap, end - start))
        hops.append(hop)
    out = _padded(n, cap, device)
    step = max(1, budget // sum(h[0].shape[1] for h in hops))
    for start in range(0, n, step):
        end = min(n, start + step)
        rs, cs, vs = [], [], []
        for cols_k, vals_k in hops:
            keep = vals_k[start:end] != 0
            rs.append(keep.nonzero()[:, 0])
            cs.append(cols_k[start:end][keep])
            vs.append(vals_k[start:end][keep])
        r, c, v = _coalesce(torch.cat(rs), torch.cat(cs), torch.cat(vs) / (layers + 1), n)
        _fill(out, start, *_top(r, c, v, cap, end - start))
    return out


def _padded(n: int, cap: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Empty padded rows: every slot the row's own id, value 0."""
    return (torch.arange(n, device=device).unsqueeze(1).repeat(1, cap),
            torch.zeros((n, cap), dtype=torch.float32, device=device))


def _fill(table: Tuple[torch.Tensor, torch.Tensor], start: int, r: torch.Tensor, c: torch.Tensor,
          v: torch.Tensor, slot: torch.Tensor) -> None:
    table[0][start + r, slot] = c
    table[1][start + r, slot] = v


def _chunks(cost_before: torch.Tensor, budget: int):
    """``(start, end)`` row ranges whose cost (``cost_before``: the running total before each
    row, and the total last) is about ``budget`` each; a row costlier than that alone."""
    n = cost_before.numel() - 1
    start = 0
    while start < n:
        end = int(torch.searchsorted(cost_before, cost_before[start] + budget, right=True)) - 1
        end = min(n, max(end, start + 1))
        yield start, end
        start = end


def _coalesce(r: torch.Tensor, c: torch.Tensor, v: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Duplicate ``(row, column)`` entries summed; sorted by row, then column."""
    key, inverse = torch.unique(r * n + c, return_inverse=True)
    summed = torch.zeros(key.numel(), dtype=v.dtype, device=v.device).index_add_(0, inverse, v)
    return key // n, key % n, summed


def _top(r: torch.Tensor, c: torch.Tensor, v: torch.Tensor, cap: int,
         rows: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's ``cap`` largest entries (input sorted by row, then column; ties keep the
    smaller column) and each kept entry's slot in its row (column order).

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
            dense = torch.where(valid, v[idx.clamp(max=r.numel() - 1)], float("-inf"))
            kth = dense.topk(cap, dim=1).values[:, -1:]
            greater = dense > kth
            equal = dense == kth
            take = greater | (equal & (torch.cumsum(equal, 1) <= cap - greater.sum(1, keepdim=True)))
            chosen.append(idx[take])
            slots.append((torch.cumsum(take, 1) - 1)[take])
    pick = torch.cat(chosen)
    return r[pick], c[pick], v[pick], torch.cat(slots)


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
