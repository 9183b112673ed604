"""The slow, obvious reference: edge softmax and weighted sum with torch scatter ops.

Every fast implementation is tested against this one (values and gradients).  Autograd comes
from torch itself.  Runs on CPU and CUDA.
"""
from __future__ import annotations

from typing import Optional

import torch

from mmsc_dgl.ops.csr import CSR


def edge_softmax(csr: CSR, logits: torch.Tensor) -> torch.Tensor:
    """Softmax of ``logits`` [E, H] over the edges of each row."""
    rows = csr.row_ids()
    heads = logits.shape[1]
    index = rows.unsqueeze(1).expand(-1, heads)
    with torch.no_grad():  # the shift cancels in the softmax; no gradient needed through it
        row_max = torch.full((csr.num_rows, heads), float("-inf"), dtype=logits.dtype, device=logits.device)
        row_max = row_max.scatter_reduce(0, index, logits, reduce="amax", include_self=True)
    shifted = torch.exp(logits - row_max[rows])
    denom = torch.zeros((csr.num_rows, heads), dtype=logits.dtype, device=logits.device).index_add(0, rows, shifted)
    return shifted / denom[rows]


def edge_softmax_aggregate(csr: CSR, logits: torch.Tensor, feat: torch.Tensor,
                           return_attention: bool = False, edge_weight: Optional[torch.Tensor] = None):
    """``out[i, h] = sum_e softmax_e(logits[:, h]) * feat[indices[e], h]`` over row ``i``'s edges.

    Args:
        csr: the adjacency; row ``i`` aggregates from ``csr.indices`` of its edges.
        logits: [E, H] attention logits.
        feat: [num_src, H, D] source features.
        edge_weight: [E] weights multiplied into the normalised attention (GATConv's
            ``edge_weight``; the rows then no longer sum to one), in CSR edge order.

    Returns:
        out [num_rows, H, D] (zero for rows without edges), and the attention [E, H] if asked
        (weighted, with ``edge_weight``).
    """
    alpha = edge_softmax(csr, logits)
    if edge_weight is not None:
        alpha = alpha * edge_weight.unsqueeze(1).to(alpha.dtype)
    messages = alpha.unsqueeze(-1) * feat[csr.indices]
    # in the messages' dtype: under autocast the logits and the features may differ (bf16 / fp32)
    out = torch.zeros((csr.num_rows,) + feat.shape[1:], dtype=messages.dtype, device=feat.device)
    out = out.index_add(0, csr.row_ids(), messages)
    return (out, alpha) if return_attention else out
