"""Node-level attention over one meta-path's neighbours."""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from mmsc_dgl.ops import CSR, edge_softmax_aggregate
from mmsc_dgl.ops.csr import edge_weight_in_csr_order, graph_inputs

__all__ = ["MetaPathAttention"]


class MetaPathAttention(nn.Module):
    r"""GAT-style, multi-head attention over the neighbours of a meta-path (node level of HAN,
    Wang et al., WWW 2019; attention of GAT, Veličković et al., ICLR 2018), as used for the
    behaviour branch of MMSC (arXiv 2507.22268).

    .. math::
        z_j = W x_j, \qquad
        s_{ij}^{h} = \mathrm{LeakyReLU}\big(a_l^{h\top} z_j^{h} + a_r^{h\top} z_i^{h}\big), \qquad
        \alpha_{ij}^{h} = \operatorname{softmax}_{j \in \mathcal{N}_\Phi(i)} s_{ij}^{h}, \qquad
        p_i^{h} = \sigma\Big(\sum_{j \in \mathcal{N}_\Phi(i)} \alpha_{ij}^{h} z_j^{h} + b^{h}\Big)

    where :math:`\mathcal{N}_\Phi(i)` are item :math:`i`'s neighbours under meta-path
    :math:`\Phi` (a row of a meta-path table).

    Args:
        in_feats: input feature size; or ``(src_feats, dst_feats)`` for sources and destinations
            of different sizes (bipartite graphs, as ``GATConv`` takes it: two projections,
            ``fc_src`` and ``fc_dst``, and ``feat`` must then be a pair).
        out_feats: output size per head.
        num_heads: attention heads. Default: 1.
        feat_drop: dropout on the input features. Default: 0.
        negative_slope: LeakyReLU slope of the attention logits. Default: 0.2.
        residual: add a linear projection of the item's own features. Default: False.
        activation: applied to the output, e.g. ``F.elu``. Default: None.
        bias: learn an additive bias. Default: True.
        impl: kernel for the softmax-aggregation, see :func:`mmsc_dgl.ops.edge_softmax_aggregate`.
            Default: ``"auto"`` (fused Triton on CUDA, torch reference elsewhere).

    Note:
        An item with no neighbour under the meta-path gets an output of exactly zero: no bias,
        no residual, no activation of a bias.  It is never given a bias-only embedding.  Use
        ``csr.nonempty`` to find such items and fall back to another representation (MMSC falls
        back to the content embedding through :class:`~mmsc_dgl.nn.NeuralGate`'s mask).

    Example:
        >>> import torch
        >>> from mmsc_dgl.ops import CSR
        >>> csr = CSR(torch.tensor([0, 2, 3, 3]), torch.tensor([1, 2, 0]))
        >>> layer = MetaPathAttention(8, 4, num_heads=2)
        >>> out, attn = layer(csr, torch.randn(3, 8), get_attention=True)
        >>> tuple(out.shape), tuple(attn.shape), out[2].abs().sum().item()
        ((3, 2, 4), (3, 2), 0.0)
    """

    def __init__(self, in_feats: Union[int, Tuple[int, int]], out_feats: int, num_heads: int = 1,
                 feat_drop: float = 0.0,
                 negative_slope: float = 0.2, residual: bool = False,
                 activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, bias: bool = True,
                 impl: str = "auto"):
        super().__init__()
        self.in_feats = in_feats
        self.out_feats = out_feats
        self.num_heads = num_heads
        self.negative_slope = negative_slope
        self.activation = activation
        self.impl = impl
        if isinstance(in_feats, (tuple, list)):
            src_feats, dst_feats = (int(x) for x in in_feats)
            self.fc_src = nn.Linear(src_feats, out_feats * num_heads, bias=False)
            self.fc_dst = nn.Linear(dst_feats, out_feats * num_heads, bias=False)
            self.register_module("fc", None)
        else:
            src_feats = dst_feats = int(in_feats)
            self.fc = nn.Linear(src_feats, out_feats * num_heads, bias=False)
        self.attn_l = nn.Parameter(torch.empty(1, num_heads, out_feats))
        self.attn_r = nn.Parameter(torch.empty(1, num_heads, out_feats))
        self.feat_drop = nn.Dropout(feat_drop)
        if bias:
            self.bias = nn.Parameter(torch.empty(num_heads * out_feats))
        else:
            self.register_parameter("bias", None)
        if residual:
            self.res_fc = nn.Linear(dst_feats, out_feats * num_heads, bias=False)
        else:
            self.register_module("res_fc", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        gain = nn.init.calculate_gain("relu")
        for fc in (self.fc,) if self.fc is not None else (self.fc_src, self.fc_dst):
            nn.init.xavier_normal_(fc.weight, gain=gain)
        nn.init.xavier_normal_(self.attn_l, gain=gain)
        nn.init.xavier_normal_(self.attn_r, gain=gain)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        if self.res_fc is not None:
            nn.init.xavier_normal_(self.res_fc.weight, gain=gain)

    def forward(self, graph: Union[CSR, Any], feat: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]],
                edge_weight: Optional[torch.Tensor] = None, get_attention: bool = False, *, etype: Any = None):
        """
        Args:
            graph: the adjacency, as DGL's ``GATConv`` takes it: a ``DGLGraph`` or ``DGLBlock``
                with one edge type (e.g. a ``dgl.metapath_reachable_graph``, or a block from
                ``dgl.dataloading.MultiLayerFullNeighborSampler``), or a :class:`~mmsc_dgl.ops.CSR`
                (a meta-path table's: row ``i`` lists ``i``'s neighbours).  Messages flow from
                sources to destinations.
            feat: [num_nodes, in_feats]; or ``(feat_src, feat_dst)`` when rows and neighbours
                are different node sets (bipartite graphs, mini-batches).  On a block, one tensor
                holds the source nodes and its first ``num_dst_nodes()`` rows are the destinations.
            edge_weight: [num_edges] (or [num_edges, 1]) weights, in the graph's edge order (DGL's
                edge ids; a CSR's own order), multiplied into the normalised attention as
                ``GATConv`` does: meta-path counts, say.  The softmax then runs through the
                reference kernel.
            get_attention: also return the attention [num_edges, num_heads] (CSR edge order;
                ``csr.edge_ids`` maps it to DGL's).
            etype: on a DGL graph with several edge types, the one to aggregate over (a name or
                a canonical ``(src, etype, dst)``), as ``graph[etype]`` would pick it.

        Returns:
            [num_dst, num_heads, out_feats], and the attention if asked.
        """
        csr, feat_src, feat_dst, same = graph_inputs(graph, feat, etype)
        if feat_dst.shape[0] != csr.num_rows or feat_src.shape[0] != csr.num_src:
            raise ValueError(f"features for {feat_src.shape[0]} sources and {feat_dst.shape[0]} destinations, "
                             f"but the graph has {csr.num_src} and {csr.num_rows}")
        h_src = self.feat_drop(feat_src)
        h_dst = h_src if same else self.feat_drop(feat_dst)
        if self.fc is not None:
            z_src = self.fc(h_src).view(-1, self.num_heads, self.out_feats)
            z_dst = z_src if same else self.fc(h_dst).view(-1, self.num_heads, self.out_feats)
        else:  # in_feats=(src, dst): a projection of each side
            if not isinstance(feat, tuple):
                raise ValueError(f"in_feats={self.in_feats} has a size per side: pass feat=(feat_src, feat_dst)")
            z_src = self.fc_src(h_src).view(-1, self.num_heads, self.out_feats)
            z_dst = self.fc_dst(h_dst).view(-1, self.num_heads, self.out_feats)
        el = (z_src * self.attn_l).sum(-1)
        er = (z_dst * self.attn_r).sum(-1)
        logits = F.leaky_relu(el[csr.indices] + er[csr.row_ids()], self.negative_slope)
        # with edge weights the dispatcher runs the reference (the fused kernels have none)
        result = edge_softmax_aggregate(csr, logits, z_src, impl=self.impl, return_attention=get_attention,
                                        edge_weight=edge_weight_in_csr_order(csr, edge_weight))
        out, attention = result if get_attention else (result, None)
        out = self._finish(out, h_dst, csr.nonempty)
        return (out, attention) if get_attention else out

    def forward_padded(self, feat_nbr: torch.Tensor, feat_dst: torch.Tensor, mask: torch.Tensor,
                       get_attention: bool = False):
        """The same layer over padded neighbour lists (:meth:`CSR.padded
        <mmsc_dgl.ops.CSR.padded>`), as GraphSAGE- and PinSage-style mini-batches hold them.

        Args:
            feat_nbr: [B, K, in_feats] the features of each destination's K neighbour slots.
            feat_dst: [B, in_feats] the destinations' own features.
            mask: [B, K] bool, True for a real neighbour (padding is never attended to).
            get_attention: also return the attention [B, K, num_heads] (zero on padding).

        Returns:
            [B, num_heads, out_feats], equal to :meth:`forward` on the adjacency of those rows
            (``tests/test_nn.py``).  Every shape is known before the data is read, so
            ``torch.compile`` traces it whole; it costs ``B x K`` slots, not the edges.
        """
        batch, slots = mask.shape
        h_src = self.feat_drop(feat_nbr)
        h_dst = self.feat_drop(feat_dst)
        fc_src = self.fc if self.fc is not None else self.fc_src
        fc_dst = self.fc if self.fc is not None else self.fc_dst
        z_src = fc_src(h_src).view(batch, slots, self.num_heads, self.out_feats)
        z_dst = fc_dst(h_dst).view(batch, self.num_heads, self.out_feats)
        el = (z_src * self.attn_l).sum(-1)                        # [B, K, H]
        er = (z_dst * self.attn_r).sum(-1)                        # [B, H]
        logits = F.leaky_relu(el + er.unsqueeze(1), self.negative_slope)
        # Softmax and sum in float32 (float64 if either is), as the dispatcher runs every edge
        # kernel under autocast; the output in the features' dtype, the attention in the logits'.
        common = torch.float64 if torch.float64 in (logits.dtype, z_src.dtype) else torch.float32
        nonempty = mask.any(1)
        keep = mask.unsqueeze(-1)
        scores = logits.to(common).masked_fill(~keep, float("-inf")).masked_fill(~nonempty.view(-1, 1, 1), 0.0)
        alpha = torch.softmax(scores, dim=1) * keep
        out = (alpha.unsqueeze(-1) * z_src.to(common)).sum(1).to(z_src.dtype)
        out = self._finish(out, h_dst, nonempty)
        return (out, alpha.to(logits.dtype)) if get_attention else out

    def _finish(self, out: torch.Tensor, h_dst: torch.Tensor, nonempty: torch.Tensor) -> torch.Tensor:
        """Residual, bias and activation of the aggregated ``out`` [N, H, D]; exactly zero for
        a destination without neighbours."""
        if self.res_fc is None and self.bias is None and self.activation is None:
            return out
        if self.res_fc is not None:
            out = out + self.res_fc(h_dst).view(-1, self.num_heads, self.out_feats)
        if self.bias is not None:
            out = out + self.bias.view(1, self.num_heads, self.out_feats)
        if self.activation is not None:
            out = self.activation(out)
        return torch.where(nonempty.view(-1, 1, 1), out, torch.zeros_like(out))

    def __prepare_scriptable__(self):
        raise RuntimeError(f"{type(self).__name__} is not TorchScript-able (it takes DGL graphs and dispatches "
                           "on kernels at run time); use torch.compile or torch.export instead")

    def extra_repr(self) -> str:
        return (f"{self.in_feats}, {self.out_feats}, heads={self.num_heads}"
                + (", residual=True" if self.res_fc is not None else "") + f", impl={self.impl!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
