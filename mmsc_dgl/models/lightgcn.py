r"""LightGCN (He, Deng, Wang, Li, Zhang, Wang: "LightGCN: Simplifying and Powering Graph
Convolution Network for Recommendation", SIGIR 2020) for two item-item relations.

Each item has a shared embedding and one per relation.  For relation :math:`r`, with
:math:`\hat A_r = D_r^{-1/2} A_r D_r^{-1/2}` the normalised training graph of :math:`r`:

.. math::
    e^{(0)}_r = E + E_r, \qquad e^{(k+1)}_r = \hat A_r\, e^{(k)}_r, \qquad
    z_r = \frac{1}{K + 1} \sum_{k=0}^{K} e^{(k)}_r, \qquad \mathrm{score}_r(i, j) = z_{r,i}^\top z_{r,j}

There is no feature transform and no non-linearity: propagation only.  Trained with BPR on the
training edges, plus L2 on the layer-0 embeddings of the batch (both as in the paper).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.config import LightGCNConfig
from mmsc_dgl.models.base import GraphStateModule, Recommender
from mmsc_dgl.models.inputs import adjacency
from mmsc_dgl.ops.paths import normalised
from mmsc_dgl.ops.sparse import SparseMatrix, propagate

if TYPE_CHECKING:
    from mmsc_dgl.data.edges import RelationEdges


def _normalised(src, dst, num_items: int) -> SparseMatrix:
    return normalised(adjacency(src, dst, num_items))


class LightGCN(GraphStateModule, Recommender):
    """LightGCN with a shared embedding plus one per relation.

    Args:
        num_items: number of items.
        train_edges: per relation, objects with ``src``/``dst`` node-id arrays (the training graph).
        config: ``hidden`` (embedding size), ``layers`` (K), ``embedding_l2``.

    Note:
        An item with no training edge (a cold item) keeps only :math:`e^{(0)} / (K + 1)`: its
        embedding is learned from negatives alone.  It has no content to fall back on.
    """

    _graph_state = ("_adj",)

    def __init__(self, num_items: int, train_edges: Mapping[str, "RelationEdges"], config: LightGCNConfig):
        super().__init__()
        self.num_items = num_items
        self.config = config
        self.shared = nn.Embedding(num_items, config.hidden)
        self.relation = nn.ModuleDict({r: nn.Embedding(num_items, config.hidden) for r in RELATIONS})
        self._adj = {r: _normalised(train_edges[r].src, train_edges[r].dst, num_items) for r in RELATIONS}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.shared.weight, std=0.1)
        for emb in self.relation.values():
            nn.init.normal_(emb.weight, std=0.1)


    def propagate(self, relation: str) -> torch.Tensor:
        return propagate(self._adj[relation], self.shared.weight + self.relation[relation].weight, self.config.layers)

    def loss(self, batch: dict) -> Dict[str, torch.Tensor]:
        bpr = torch.zeros((), device=self.shared.weight.device)
        l2 = torch.zeros((), device=self.shared.weight.device)
        for r in RELATIONS:
            if r not in batch:
                continue
            src, pos, neg = batch[r]
            z = self.propagate(r)
            s_pos = (z[src] * z[pos]).sum(-1, keepdim=True)
            s_neg = (z[src].unsqueeze(1) * z[neg]).sum(-1)
            bpr = bpr - F.logsigmoid(s_pos - s_neg).mean()
            ego = self.shared.weight + self.relation[r].weight
            nodes = torch.cat([src, pos, neg.flatten()])
            l2 = l2 + ego[nodes].pow(2).sum() / (2 * src.numel())
        return {"bpr": bpr, "l2": l2, "total": bpr + self.config.embedding_l2 * l2}

    def score(self, src: torch.Tensor, dst: torch.Tensor, relation: str) -> torch.Tensor:
        z = self.propagate(relation)
        return (z[src] * z[dst]).sum(-1)

    @torch.no_grad()
    def embed(self, relation: str) -> torch.Tensor:
        return self.propagate(relation)

    def __repr__(self) -> str:
        return f"LightGCN(items={self.num_items:,}, hidden={self.config.hidden}, layers={self.config.layers})"
