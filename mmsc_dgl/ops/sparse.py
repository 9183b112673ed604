"""Sparse-dense products that hold under ``torch.autocast`` and trace under ``torch.compile``."""
from __future__ import annotations

import warnings
from typing import Tuple, Union

import torch

from mmsc_dgl.ops.csr import CSR, is_compiling

__all__ = ["SparseMatrix", "sparse_mm", "propagate"]


class SparseMatrix:
    """A sparse matrix held as CSR arrays (an :class:`~mmsc_dgl.ops.CSR` of its non-zeros and
    their ``values``), for products with dense matrices: LightGCN's propagation matrix.

    Eager code multiplies through ``torch.sparse`` (built once, kept); code that
    ``torch.compile`` traces multiplies by a gather and an ``index_add`` over the same arrays,
    because dynamo cannot trace sparse tensors ("meta converter nyi with fake tensor
    propagation", torch 2.2).  The two agree to float rounding (``tests/test_ops.py``).

    Args:
        csr: the non-zeros, row ``i`` holding the columns of row ``i``.
        values: [num_edges] the value of each non-zero, in ``csr``'s order.
        num_cols: the number of columns (default: ``csr.num_src``).

    Example:
        >>> m = SparseMatrix(CSR(torch.tensor([0, 1, 2]), torch.tensor([1, 0])), torch.tensor([2.0, 3.0]))
        >>> (m @ torch.ones(2, 1)).flatten().tolist()
        [2.0, 3.0]
    """

    def __init__(self, csr: CSR, values: torch.Tensor):
        if values.shape != (csr.num_edges,):
            raise ValueError(f"values must be [num_edges={csr.num_edges}], got {tuple(values.shape)}")
        self.csr = csr
        self.values = values
        self._tensor: Union[torch.Tensor, None] = None

    @property
    def shape(self) -> Tuple[int, int]:
        return (self.csr.num_rows, self.csr.num_src)

    @property
    def device(self) -> torch.device:
        return self.csr.device

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    def to(self, device) -> "SparseMatrix":
        """A copy on ``device`` (this one when it is there already)."""
        if self.device == torch.device(device):
            return self
        return SparseMatrix(self.csr.to(device), self.values.to(device))

    def tensor(self) -> torch.Tensor:
        """The ``torch.sparse_csr_tensor`` of this matrix (made once)."""
        if self._tensor is None:
            with warnings.catch_warnings():  # "sparse CSR support is in beta": SpMM is all we use
                warnings.simplefilter("ignore", UserWarning)
                self._tensor = torch.sparse_csr_tensor(self.csr.indptr, self.csr.indices, self.values, self.shape)
        return self._tensor

    def __matmul__(self, dense: torch.Tensor) -> torch.Tensor:
        return sparse_mm(self, dense)

    def __repr__(self) -> str:
        return f"SparseMatrix(shape={self.shape}, nnz={self.csr.num_edges:,})"


def sparse_mm(adjacency: Union[SparseMatrix, torch.Tensor], dense: torch.Tensor) -> torch.Tensor:
    """``adjacency @ dense`` for a :class:`SparseMatrix` or a sparse (COO or CSR) tensor, in
    float32 whatever the autocast region around it: autocast lowers ``mm`` to bf16 or fp16,
    which the sparse kernels do not implement ("addmm_out_sparse_csr_impl_mkl" not implemented
    for 'BFloat16').  A float64 input stays float64.  Under ``torch.compile`` a
    :class:`SparseMatrix` multiplies by gather and scatter (sparse tensors do not trace).

    Example:
        >>> adj = torch.eye(2).to_sparse()
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     sparse_mm(adj, torch.ones(2, 3)).dtype
        torch.float32
    """
    dtype = torch.float64 if torch.float64 in (adjacency.dtype, dense.dtype) else torch.float32
    with torch.autocast(device_type=dense.device.type, enabled=False):
        if isinstance(adjacency, SparseMatrix):
            if not is_compiling():
                return torch.sparse.mm(adjacency.tensor().to(dtype), dense.to(dtype))
            csr = adjacency.csr
            messages = adjacency.values.to(dtype).unsqueeze(1) * dense.to(dtype)[csr.indices]
            out = torch.zeros((csr.num_rows,) + tuple(dense.shape[1:]), dtype=dtype, device=dense.device)
            return out.index_add(0, csr.row_ids(), messages)
        return torch.sparse.mm(adjacency.to(dtype), dense.to(dtype))


def propagate(adjacency: Union[SparseMatrix, torch.Tensor], x: torch.Tensor, layers: int) -> torch.Tensor:
    r"""LightGCN's propagation: the mean of :math:`x, Ax, \dots, A^K x` (``layers`` = K), each
    product by :func:`sparse_mm`.

    Example:
        >>> adj = SparseMatrix(CSR(torch.tensor([0, 1, 2]), torch.tensor([1, 0])), torch.ones(2))
        >>> propagate(adj, torch.tensor([[1.0], [3.0]]), 1).flatten().tolist()
        [2.0, 2.0]
    """
    layer, total = x, x
    for _ in range(layers):
        layer = sparse_mm(adjacency, layer)
        total = total + layer
    return total / (layers + 1)
