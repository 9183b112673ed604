"""Degree-normalised aggregation over every neighbour (the propagation of GCN and LightGCN)."""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from mmsc_dgl.ops import CSR
from mmsc_dgl.ops.csr import as_csr, edge_weight_in_csr_order

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

    def forward(self, graph: Union[CSR, Any], feat: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]],
                edge_weight: Optional[torch.Tensor] = None, deg_dst: Optional[torch.Tensor] = None,
                deg_src: Optional[torch.Tensor] = None, *, etype: Any = None) -> torch.Tensor:
        """
        Args:
            graph: a ``DGLGraph``, ``DGLBlock`` (one edge type) or :class:`~mmsc_dgl.ops.CSR`;
                messages flow from sources to destinations.
            feat: [num_src, in] source features (a block's or a pair's destination features are
                not needed: the layer has no self term).
            edge_weight: [num_edges] multiplied into each message (graph edge order, as DGL's
                ``GraphConv``).
            deg_dst, deg_src: the degrees to normalise by, when the graph is a part of a larger
                one (a mini-batch's rows): the full graph's degree of each row and of each
                source.  By default, the graph's own in-degrees and out-degrees.
            etype: on a DGL graph with several edge types, the one to aggregate over.

        Returns:
            [num_dst, out_feats]
        """
        csr = as_csr(graph, etype)
        feat_src = feat[0] if isinstance(feat, tuple) else feat
        if feat_src.shape[0] != csr.num_src:
            raise ValueError(f"features for {feat_src.shape[0]} sources, but the graph has {csr.num_src}")
        rows = csr.row_ids()
        if deg_dst is None:
            deg_dst = csr.degrees
        if deg_src is None:
            # a scatter, not bincount: its output size is static, so torch.compile traces it
            deg_src = torch.zeros(csr.num_src, dtype=torch.int64, device=csr.device).index_add(
                0, csr.indices, torch.ones_like(csr.indices))
        weight = (deg_dst[rows] * deg_src[csr.indices]).clamp(min=1).to(feat_src.dtype).rsqrt()
        extra = edge_weight_in_csr_order(csr, edge_weight)
        if extra is not None:
            weight = weight * extra.to(weight.dtype)
        messages = feat_src[csr.indices] * weight.unsqueeze(1)
        agg = torch.zeros(csr.num_rows, feat_src.shape[1], device=feat_src.device, dtype=messages.dtype)
        agg = agg.index_add(0, rows, messages)
        out = self.linear(agg)
        if self.activation is not None:
            out = self.activation(out)
        return out * csr.nonempty.unsqueeze(1).to(out.dtype)

    def forward_padded(self, feat_nbr: torch.Tensor, mask: torch.Tensor, deg_dst: torch.Tensor,
                       deg_src: torch.Tensor) -> torch.Tensor:
        """The same layer over padded neighbour lists (:meth:`CSR.padded <mmsc_dgl.ops.CSR.padded>`):
        ``feat_nbr`` [B, K, in] the features of each destination's K neighbour slots, ``mask``
        [B, K] True for a real neighbour, ``deg_dst`` [B] and ``deg_src`` [B, K] the degrees to
        normalise by.  Returns [B, out_feats], equal to :meth:`forward` on those rows; every
        shape static, so ``torch.compile`` traces it whole."""
        weight = (deg_dst.unsqueeze(1) * deg_src).clamp(min=1).to(feat_nbr.dtype).rsqrt() * mask.to(feat_nbr.dtype)
        out = self.linear((feat_nbr * weight.unsqueeze(-1)).sum(1))
        if self.activation is not None:
            out = self.activation(out)
        return out * mask.any(1, keepdim=True).to(out.dtype)

    def __prepare_scriptable__(self):
        raise RuntimeError(f"{type(self).__name__} is not TorchScript-able (it takes DGL graphs at run time); "
                           "use torch.compile or torch.export instead")
