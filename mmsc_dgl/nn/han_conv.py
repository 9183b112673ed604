"""One HAN layer in one module: node-level attention per meta-path, then semantic attention."""
from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from mmsc_dgl.nn.metapath_attention import MetaPathAttention
from mmsc_dgl.nn.semantic_attention import SemanticAttention
from mmsc_dgl.ops.csr import graph_inputs

__all__ = ["HANConv"]


def _key(metapath: Hashable) -> str:
    """A ``ModuleDict`` key for a meta-path given as a name or a sequence of edge types."""
    if isinstance(metapath, str):
        return metapath
    if isinstance(metapath, (tuple, list)):
        return "-".join(_key(part) for part in metapath)
    return str(metapath)


class HANConv(nn.Module):
    r"""Heterogeneous graph attention over several meta-paths at once (HAN, Wang et al.,
    WWW 2019): the one-module encoder that PyG's ``HANConv`` and the ``HANLayer`` of DGL's HAN
    example are, built from this package's layers.

    For each meta-path :math:`\Phi` a :class:`~mmsc_dgl.nn.MetaPathAttention` (GAT attention
    over :math:`\Phi`'s neighbours, heads concatenated) gives :math:`z_i^\Phi`; a
    :class:`~mmsc_dgl.nn.SemanticAttention` weighs them into one row per node:

    .. math::
        z_i^\Phi = \big\Vert_{h} \sigma\Big(\sum_{j \in \mathcal{N}_\Phi(i)} \alpha_{ij}^{\Phi h}
                   W^{\Phi h} x_j + b^{\Phi h}\Big), \qquad
        p_i = \sum_\Phi \beta_\Phi z_i^\Phi

    Args:
        in_feats: input feature size, or ``(src_feats, dst_feats)`` for graphs whose sources and
            destinations differ (as ``GATConv`` and PyG's ``HANConv`` take it).
        out_feats: output size per head; the layer returns ``num_heads * out_feats`` per node.
        metapaths: the meta-paths, in order: names (``"s-c"``) or edge-type sequences
            (``("substitute", "complement")``); ``forward`` takes one graph per meta-path.
        num_heads: attention heads per meta-path. Default: 1.
        feat_drop: dropout on the input features. Default: 0.
        negative_slope: LeakyReLU slope of the node-level attention. Default: 0.2.
        semantic_hidden: size of the semantic attention's scoring MLP. Default: 128.
        per_item: semantic weights per node instead of HAN's weights averaged over the nodes
            (a node's output then does not depend on its mini-batch). Default: False.
        activation: applied to each meta-path's output, as in HAN. Default: ``F.elu``.
        impl: kernel of the softmax-aggregation (:func:`mmsc_dgl.ops.edge_softmax_aggregate`).

    Note:
        A node with no neighbour under a meta-path does not vote for that meta-path (its weights
        are renormalised over the meta-paths where it has neighbours); a node with no neighbour
        under any meta-path gets zeros.  DGL's ``GATConv`` refuses such nodes and PyG's
        ``HANConv`` gives them ``activation(0)`` for the meta-path; here they are explicit.

    Example:
        >>> import torch
        >>> from mmsc_dgl.ops import CSR
        >>> graphs = {"s": CSR(torch.tensor([0, 1, 2, 2]), torch.tensor([1, 0])),
        ...           "s-c": CSR(torch.tensor([0, 1, 1, 2]), torch.tensor([2, 0]))}
        >>> layer = HANConv(8, 4, metapaths=["s", "s-c"], num_heads=2)
        >>> out, (alpha, beta) = layer(graphs, torch.randn(3, 8), get_attention=True)
        >>> tuple(out.shape), tuple(beta.shape), sorted(alpha)
        ((3, 8), (3, 2), ['s', 's-c'])
    """

    def __init__(self, in_feats: Union[int, Tuple[int, int]], out_feats: int, metapaths: Sequence[Hashable],
                 num_heads: int = 1, feat_drop: float = 0.0, negative_slope: float = 0.2,
                 semantic_hidden: int = 128, per_item: bool = False,
                 activation: Optional[Callable[[torch.Tensor], torch.Tensor]] = F.elu, impl: str = "auto"):
        super().__init__()
        keys = [_key(m) for m in metapaths]
        if not keys:
            raise ValueError("HANConv needs at least one meta-path")
        if len(set(keys)) != len(keys):
            raise ValueError(f"metapaths name one meta-path twice: {keys}")
        self.metapaths = list(metapaths)
        self.in_feats, self.out_feats, self.num_heads = in_feats, out_feats, num_heads
        self.convs = nn.ModuleDict({key: MetaPathAttention(in_feats, out_feats, num_heads, feat_drop=feat_drop,
                                                           negative_slope=negative_slope, activation=activation,
                                                           impl=impl)
                                    for key in keys})
        self.semantic = SemanticAttention(out_feats * num_heads, semantic_hidden, per_item=per_item)

    def reset_parameters(self) -> None:
        for conv in self.convs.values():
            conv.reset_parameters()
        self.semantic.reset_parameters()

    def forward(self, graphs: Mapping[Hashable, Any],
                feat: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor], Mapping[Hashable, Any]],
                get_attention: bool = False):
        """
        Args:
            graphs: one graph per meta-path, keyed as ``metapaths`` names them (a name, or the
                edge-type sequence): :class:`~mmsc_dgl.ops.CSR` (a meta-path table), a DGL graph
                (``dgl.metapath_reachable_graph``) or block; all with the same destinations.
            feat: [num_nodes, in_feats], or ``(feat_src, feat_dst)`` (on a block, one tensor
                whose first ``num_dst_nodes()`` rows are the destinations); or a dict keyed as
                ``graphs`` with one of these per meta-path (blocks of different meta-paths have
                different source nodes).

        Returns:
            [num_dst, num_heads * out_feats]; with ``get_attention``, also
            ``(node_attention, semantic_weights)``: per meta-path the attention
            [num_edges, num_heads] (CSR edge order), and the weights [num_dst, num_metapaths].
        """
        given = {_key(k): g for k, g in graphs.items()}
        missing = [k for k in self.convs if k not in given]
        extra = [k for k in given if k not in self.convs]
        if missing or extra:
            raise ValueError(f"graphs must hold one graph per meta-path {list(self.convs)}"
                             + (f"; missing {missing}" if missing else "") + (f"; unknown {extra}" if extra else ""))
        feats = {_key(k): f for k, f in feat.items()} if isinstance(feat, Mapping) else None
        if feats is not None and sorted(feats) != sorted(self.convs):
            raise ValueError(f"a dict of features must hold one entry per meta-path {list(self.convs)}, "
                             f"got {list(feats)}")
        outputs, masks, attention = [], [], {}
        num_dst = None
        for key, conv in self.convs.items():
            csr, feat_src, feat_dst, same = graph_inputs(given[key], feat if feats is None else feats[key])
            if num_dst is not None and csr.num_rows != num_dst:
                raise ValueError(f"meta-path {key!r} has {csr.num_rows} destination nodes, the others {num_dst}: "
                                 "every graph must share the destinations")
            num_dst = csr.num_rows
            one = same and not isinstance(self.in_feats, (tuple, list))
            out, alpha = conv(csr, feat_src if one else (feat_src, feat_dst), get_attention=True)
            outputs.append(out.flatten(1))
            masks.append(csr.nonempty)
            attention[key] = alpha
        z = torch.stack(outputs, dim=1)                       # [N, P, heads * out]
        mask = torch.stack(masks, dim=1)                      # [N, P]
        out, beta = self.semantic(z, mask, get_attention=True)
        return (out, (attention, beta)) if get_attention else out

    def extra_repr(self) -> str:
        return f"{self.in_feats}, {self.out_feats}, heads={self.num_heads}, metapaths={list(self.convs)}"
