"""A compressed sparse row adjacency in plain torch tensors (no DGL).

Row ``i`` lists the *source* nodes whose messages node ``i`` aggregates: for a meta-path table,
the meta-path neighbours of item ``i``.  This is DGL's CSC / "in-edges by destination" view.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


class CSR:
    """Destination-major adjacency: ``indptr`` [num_rows + 1], ``indices`` [num_edges] (sources).

    Edge ``e`` goes from ``indices[e]`` to the row whose ``indptr`` range holds ``e``.  Derived
    arrays (the row of every edge, the transpose) are computed once and cached.

    Args:
        indptr: int64 row pointers, non-decreasing, ``indptr[0] == 0``.
        indices: int64 source node of each edge.
        num_src: number of source nodes (default: ``num_rows``).

    Example:
        >>> csr = CSR(torch.tensor([0, 2, 2, 3]), torch.tensor([1, 2, 0]))
        >>> csr.num_rows, csr.num_edges, csr.nonempty.tolist()
        (3, 3, [True, False, True])
    """

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, num_src: Optional[int] = None):
        if indptr.dim() != 1 or indices.dim() != 1:
            raise ValueError("indptr and indices must be 1-D")
        if indptr.numel() == 0 or int(indptr[0]) != 0 or int(indptr[-1]) != indices.numel():
            raise ValueError(f"indptr must start at 0 and end at len(indices)={indices.numel()}")
        self.indptr = indptr.to(torch.int64)
        self.indices = indices.to(torch.int64)
        self.num_src = int(num_src) if num_src is not None else self.num_rows
        self._rows: Optional[torch.Tensor] = None
        self._transpose: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None

    @classmethod
    def from_edges(cls, dst: torch.Tensor, src: torch.Tensor, num_rows: int,
                   num_src: Optional[int] = None) -> "CSR":
        """Build from edge lists (any order); edges are sorted by ``(dst, src)``."""
        dst = dst.to(torch.int64)
        src = src.to(torch.int64)
        order = torch.argsort(dst * max(int(num_src or num_rows), 1) + src)
        counts = torch.bincount(dst, minlength=num_rows)
        indptr = torch.zeros(num_rows + 1, dtype=torch.int64, device=dst.device)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(indptr, src[order], num_src)

    @property
    def num_rows(self) -> int:
        return self.indptr.numel() - 1

    @property
    def num_edges(self) -> int:
        return self.indices.numel()

    @property
    def device(self) -> torch.device:
        return self.indptr.device

    @property
    def degrees(self) -> torch.Tensor:
        return self.indptr[1:] - self.indptr[:-1]

    @property
    def nonempty(self) -> torch.Tensor:
        """Rows with at least one neighbour: the others must be handled by the caller."""
        return self.degrees > 0

    def __repr__(self) -> str:
        return f"CSR(rows={self.num_rows:,}, src={self.num_src:,}, edges={self.num_edges:,})"

    def to(self, device) -> "CSR":
        return CSR(self.indptr.to(device), self.indices.to(device), self.num_src)

    def select_rows(self, rows: torch.Tensor) -> "CSR":
        """The sub-adjacency of ``rows`` (in that order); sources keep their global ids."""
        rows = rows.to(self.device, torch.int64)
        starts = self.indptr[rows]
        degree = self.indptr[rows + 1] - starts
        indptr = torch.zeros(rows.numel() + 1, dtype=torch.int64, device=self.device)
        indptr[1:] = torch.cumsum(degree, 0)
        offsets = torch.arange(int(indptr[-1]), device=self.device) - torch.repeat_interleave(indptr[:-1], degree)
        return CSR(indptr, self.indices[torch.repeat_interleave(starts, degree) + offsets], self.num_src)

    def drop_edges(self, p: float, generator: Optional[torch.Generator] = None) -> "CSR":
        """A copy without each edge with probability ``p`` (graph-level dropout for views)."""
        if p <= 0:
            return self
        keep = torch.rand(self.num_edges, generator=generator).to(self.device) >= p
        counts = torch.zeros(self.num_rows, dtype=torch.int64, device=self.device)
        counts.index_add_(0, self.row_ids(), keep.to(torch.int64))
        indptr = torch.zeros(self.num_rows + 1, dtype=torch.int64, device=self.device)
        indptr[1:] = torch.cumsum(counts, 0)
        return CSR(indptr, self.indices[keep], self.num_src)

    def row_ids(self) -> torch.Tensor:
        """The destination row of every edge, [num_edges]."""
        if self._rows is None:
            self._rows = torch.repeat_interleave(torch.arange(self.num_rows, device=self.device), self.degrees)
        return self._rows

    def transpose(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Source-major view: ``(t_indptr [num_src + 1], t_rows [E], t_edge_ids [E])``.
        ``t_edge_ids`` are positions in this CSR's edge order."""
        if self._transpose is None:
            rows = self.row_ids()
            order = torch.argsort(self.indices * max(self.num_rows, 1) + rows)
            counts = torch.bincount(self.indices, minlength=self.num_src)
            t_indptr = torch.zeros(self.num_src + 1, dtype=torch.int64, device=self.device)
            t_indptr[1:] = torch.cumsum(counts, 0)
            self._transpose = (t_indptr, rows[order], order)
        return self._transpose
