"""Degree-normalised aggregation over every neighbour (the propagation of GCN and LightGCN)."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F

from mmsc_dgl.ops import CSR

__all__ = ["NormalisedConv"]


class NormalisedConv(nn.Module):
    r"""One graph convolution over all of an item's neighbours, with LightGCN's symmetric
    normalisation:

    .. math::
        p_i = \sigma\Big(W \sum_{k \in \mathcal N(i)} \frac{x_k}{\sqrt{d_i d_k}} + b\Big)

    Unlike :class:`~mmsc_dgl.nn.MetaPathAttention` over a capped table, no neighbour is left out
    and a neighbour's weight falls with both degrees (a hub says little about any one item).

    Args:
        in_feats: input size.
        out_feats: output size.
        activation: applied to the output (default ELU).

    Note:
        Rows without neighbours get exactly zero, as in :class:`~mmsc_dgl.nn.MetaPathAttention`.
    """

    def __init__(self, in_feats: int, out_feats: int,
                 activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = F.elu):
        super().__init__()
        self.linear = nn.Linear(in_feats, out_feats)
        self.activation = activation

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()

    def forward(self, csr: CSR, feat_src: torch.Tensor, deg_dst: torch.Tensor, deg_src: torch.Tensor) -> torch.Tensor:
        """``csr`` [rows x sources], ``feat_src`` [num_src, in], ``deg_dst`` [rows] and ``deg_src``
        [num_src]: the full-graph degrees of each row's item and of each source."""
        rows = csr.row_ids()
        weight = (deg_dst[rows] * deg_src[csr.indices]).clamp(min=1).to(feat_src.dtype).rsqrt()
        agg = torch.zeros(csr.num_rows, feat_src.shape[1], device=feat_src.device, dtype=feat_src.dtype)
        agg.index_add_(0, rows, feat_src[csr.indices] * weight.unsqueeze(1))
        out = self.linear(agg)
        if self.activation is not None:
            out = self.activation(out)
        return out * csr.nonempty.unsqueeze(1).to(out.dtype)
