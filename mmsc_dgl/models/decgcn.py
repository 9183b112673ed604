r"""DecGCN-style model (Liu, Gu, Ding, Gao, Guo, Bao, Yan: "Decoupled Graph Convolution Network
for Inferring Substitutable and Complementary Items", CIKM 2020).

DecGCN keeps two relation-specific spaces per item -- one for substitutes, one for complements
-- convolves each over its own relation's graph, and lets the two spaces exchange information
through a co-attention step.  Written from the paper's description, per layer :math:`l`:

.. math::
    u_i^{r} &= \mathrm{ReLU}\Big(W^{r}_l \big[h_i^{r} \,\|\, \tfrac{1}{|\mathcal N_r(i)|}
               \textstyle\sum_{j \in \mathcal N_r(i)} h_j^{r}\big]\Big)
               \quad\text{(convolution inside relation } r\text{)} \\
    v_i^{r} &= T^{\bar r \to r}_l\, u_i^{\bar r} \quad\text{(the other space, mapped into } r\text{)} \\
    (\beta_1, \beta_2) &= \operatorname{softmax}\big(c_l^{r\top}\tanh u_i^{r},\ c_l^{r\top}\tanh v_i^{r}\big), \qquad
    h_i^{r} \leftarrow \beta_1 u_i^{r} + \beta_2 v_i^{r}

with :math:`h^{s}_0 = P_s q_i`, :math:`h^{c}_0 = P_c q_i` from the shared item input :math:`q`.
Scores are dot products (or cosines, ``config.score``) within each space; trained with MMSC's
triplet loss (DecGCN's own objective is also a margin over sampled negatives).  Full neighbourhoods replace the paper's sampling:
the training graphs here fit in memory.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Mapping, Optional

import torch
from torch import nn
from torch.nn import functional as F

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.config import DecGCNConfig
from mmsc_dgl.features.base import ItemFeatures
from mmsc_dgl.models.base import FullGraphRecommender, GraphStateModule, reset_children
from mmsc_dgl.models.inputs import ItemInput, adjacency, score_head

if TYPE_CHECKING:
    from mmsc_dgl.data.edges import RelationEdges

OTHER = {"substitute": "complement", "complement": "substitute"}


def _mean_neighbours(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    degree = (indptr[1:] - indptr[:-1]).clamp(min=1).unsqueeze(1).to(h.dtype)
    out = torch.zeros_like(h).index_add_(0, rows, h[indices])
    return out / degree


class DecGCN(GraphStateModule, FullGraphRecommender):
    """Two relation-specific spaces, convolved per relation and fused across relations.

    Args:
        num_items: number of items.
        train_edges: per relation, objects with ``src``/``dst`` node-id arrays.
        config: ``hidden``, ``layers``, ``feat_drop``, ``margin``.
        features: frozen content tokens, or None for id embeddings.

    Note:
        An item with no edge of relation :math:`r` aggregates a zero mean, so its :math:`r`
        representation comes from its own state and from the other space.
    """

    _graph_state = ("_csr",)

    def __init__(self, num_items: int, train_edges: Mapping[str, "RelationEdges"], config: DecGCNConfig,
                 features: Optional[ItemFeatures] = None):
        super().__init__()
        self.num_items = num_items
        self.config = config
        hidden = config.hidden
        self.input = ItemInput(num_items, hidden, features, config.id_embeddings)
        self.start = nn.ModuleDict({r: nn.Linear(hidden, hidden) for r in RELATIONS})
        self.conv = nn.ModuleDict({r: nn.ModuleList([nn.Linear(2 * hidden, hidden) for _ in range(config.layers)])
                                   for r in RELATIONS})
        self.cross = nn.ModuleDict({r: nn.ModuleList([nn.Linear(hidden, hidden, bias=False)
                                                      for _ in range(config.layers)]) for r in RELATIONS})
        self.attend = nn.ModuleDict({r: nn.ModuleList([nn.Linear(hidden, 1, bias=False)
                                                       for _ in range(config.layers)]) for r in RELATIONS})
        self.dropout = nn.Dropout(config.feat_drop)
        self._csr = {r: adjacency(train_edges[r].src, train_edges[r].dst, num_items) for r in RELATIONS}

    def reset_parameters(self) -> None:
        """Re-initialise every learnable part."""
        reset_children(self)

    def encode_all(self) -> Dict[str, torch.Tensor]:
        q = self.dropout(self.input())
        h = {r: self.start[r](q) for r in RELATIONS}
        for layer in range(self.config.layers):
            u = {}
            for r in RELATIONS:
                csr = self._csr[r]
                agg = _mean_neighbours(csr.indptr, csr.indices, csr.row_ids(), h[r])
                u[r] = F.relu(self.conv[r][layer](torch.cat([h[r], agg], dim=1)))
            new = {}
            for r in RELATIONS:
                v = self.cross[r][layer](u[OTHER[r]])
                logits = torch.cat([self.attend[r][layer](torch.tanh(u[r])),
                                    self.attend[r][layer](torch.tanh(v))], dim=1)
                beta = torch.softmax(logits, dim=1)
                new[r] = beta[:, :1] * u[r] + beta[:, 1:] * v
            h = new
        return {r: score_head(h[r], self.config.score) for r in RELATIONS}

    def __repr__(self) -> str:
        return f"DecGCN(items={self.num_items:,}, hidden={self.config.hidden}, layers={self.config.layers})"
