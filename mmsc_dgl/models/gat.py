r"""GAT per relation (Veličković, Cucurull, Casanova, Romero, Liò, Bengio: "Graph Attention
Networks", ICLR 2018) on the decoupled homogeneous graphs: one GAT over the substitute training
graph, another over the complement graph, from the same item input.

For relation :math:`r` and layer :math:`l` (the neighbourhood includes the item itself):

.. math::
    \alpha_{ij}^{h} = \operatorname{softmax}_{j \in \mathcal{N}_r(i) \cup \{i\}}
        \mathrm{LeakyReLU}\big(a^{h\top} [W^h h_i \,\|\, W^h h_j]\big), \qquad
    h_i^{(l+1)} = \big\Vert_{h} \, \mathrm{ELU}\Big(\sum_j \alpha_{ij}^{h} W^h h_j^{(l)}\Big)

:math:`h^{(0)} = q` (content tokens pooled by attention, or id embeddings, as MMSC's input).
Scores use a per-relation projection and MMSC's scoring (``config.score``: dot product by
default, cosine as an option) and MMSC's triplet loss, so the comparison isolates the encoder.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Mapping, Optional

import torch
from torch import nn
from torch.nn import functional as F

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.config import GATConfig
from mmsc_dgl.features.base import ItemFeatures
from mmsc_dgl.models.base import FullGraphRecommender, GraphStateModule, reset_children
from mmsc_dgl.models.inputs import ItemInput, adjacency, score_head
from mmsc_dgl.nn import MetaPathAttention

if TYPE_CHECKING:
    from mmsc_dgl.data.edges import RelationEdges


class GATPerRelation(GraphStateModule, FullGraphRecommender):
    """Two independent ``layers``-deep GATs, one per relation's training graph.

    Args:
        num_items: number of items.
        train_edges: per relation, objects with ``src``/``dst`` node-id arrays.
        config: ``hidden``, ``heads``, ``layers``, ``feat_drop``, ``margin``.
        features: frozen content tokens, or None for id embeddings.
        impl: kernel of the attention layers.

    Note:
        Self-loops are added, as in the GAT paper, so an item with no edge (a cold item) keeps a
        representation of its own input instead of an empty aggregation.
    """

    _graph_state = ("_csr",)

    def __init__(self, num_items: int, train_edges: Mapping[str, "RelationEdges"], config: GATConfig,
                 features: Optional[ItemFeatures] = None, impl: str = "auto"):
        super().__init__()
        if config.hidden % config.heads:
            raise ValueError(f"hidden={config.hidden} must be a multiple of heads={config.heads}")
        self.num_items = num_items
        self.config = config
        self.input = ItemInput(num_items, config.hidden, features, config.id_embeddings)
        self.layers = nn.ModuleDict({r: nn.ModuleList([
            MetaPathAttention(config.hidden, config.hidden // config.heads, num_heads=config.heads,
                              feat_drop=config.feat_drop, activation=F.elu, impl=impl)
            for _ in range(config.layers)]) for r in RELATIONS})
        self.project = nn.ModuleDict({r: nn.Linear(config.hidden, config.hidden) for r in RELATIONS})
        self._csr = {r: adjacency(train_edges[r].src, train_edges[r].dst, num_items, self_loops=True)
                     for r in RELATIONS}

    def reset_parameters(self) -> None:
        """Re-initialise every learnable part."""
        reset_children(self)

    def encode(self, relation: str) -> torch.Tensor:
        h = self.input()
        for layer in self.layers[relation]:
            h = layer(self._csr[relation], h).flatten(1)
        return score_head(self.project[relation](h), self.config.score)

    def encode_all(self) -> Dict[str, torch.Tensor]:
        return {r: self.encode(r) for r in RELATIONS}

    def __repr__(self) -> str:
        return (f"GATPerRelation(items={self.num_items:,}, hidden={self.config.hidden}, heads={self.config.heads}, "
                f"layers={self.config.layers}, input={self.input!r})")
