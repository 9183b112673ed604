"""Sparse-dense products that hold under ``torch.autocast``."""
from __future__ import annotations

import torch

__all__ = ["sparse_mm"]


def sparse_mm(adjacency: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``adjacency @ dense`` for a sparse (COO or CSR) ``adjacency``, in float32 whatever the
    autocast region around it: autocast lowers ``mm`` to bf16 or fp16, which the sparse kernels
    do not implement ("addmm_out_sparse_csr_impl_mkl" not implemented for 'BFloat16').  A
    float64 input stays float64.

    Example:
        >>> adj = torch.eye(2).to_sparse()
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     sparse_mm(adj, torch.ones(2, 3)).dtype
        torch.float32
    """
    dtype = torch.float64 if torch.float64 in (adjacency.dtype, dense.dtype) else torch.float32
    with torch.autocast(device_type=dense.device.type, enabled=False):
        return torch.sparse.mm(adjacency.to(dtype), dense.to(dtype))
