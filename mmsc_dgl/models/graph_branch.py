"""MMSC's graph branch: LightGCN's representation of every item per relation, concatenated to
the scoring rows (docs/real-data.md: what a co-purchase graph rewards)."""
from __future__ import annotations

from typing import Dict, Mapping

import torch
from torch import nn

from mmsc_dgl.models.base import GraphStateModule
from mmsc_dgl.ops.sparse import SparseMatrix, propagate

__all__ = ["GraphBranch", "IdSmoothing"]


class GraphBranch(GraphStateModule):
    r""":math:`L^r = \frac{1}{K+1}\sum_{k=0}^{K} (\hat A_r)^k (E + E_r)`: shared plus per-relation id
    embeddings, propagated over relation :math:`r`'s normalised graph :math:`\hat A_r` (LightGCN).

    Args:
        num_items: rows of the embeddings.
        hidden: their width.
        layers: propagation layers :math:`K`.
        adjacency: per relation, :math:`\hat A_r` (:func:`~mmsc_dgl.ops.paths.normalised_adjacency`);
            graph state, never in the ``state_dict``.
    """

    _graph_state = ("_adjacency",)

    def __init__(self, num_items: int, hidden: int, layers: int, adjacency: Mapping[str, SparseMatrix]):
        super().__init__()
        self.layers = int(layers)
        self._adjacency: Dict[str, SparseMatrix] = dict(adjacency)
        self.shared = nn.Embedding(num_items, hidden)
        self.relation = nn.ModuleDict({r: nn.Embedding(num_items, hidden) for r in self._adjacency})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small, as LightGCN's (``nn.Embedding``'s own is N(0, 1))."""
        for emb in [self.shared, *self.relation.values()]:
            nn.init.normal_(emb.weight, std=0.1)

    def forward(self, relation: str) -> torch.Tensor:
        """:math:`L^r` for every item [num_items, hidden]."""
        return propagate(self._adjacency[relation], self.shared.weight + self.relation[relation].weight, self.layers)

    def extra_repr(self) -> str:
        return f"items={self.shared.num_embeddings:,}, hidden={self.shared.embedding_dim}, layers={self.layers}"


class IdSmoothing(GraphStateModule):
    """``propagate_ids``: an id embedding table smoothed over one normalised graph (the union of
    the relations), LightGCN's layer mean.  Nothing to learn; the table is the caller's.

    Args:
        layers: propagation layers.
        adjacency: the normalised graph (graph state).
    """

    _graph_state = ("_adjacency",)

    def __init__(self, layers: int, adjacency: SparseMatrix):
        super().__init__()
        self.layers = int(layers)
        self._adjacency = {"union": adjacency}

    def forward(self, table: torch.Tensor) -> torch.Tensor:
        return propagate(self._adjacency["union"], table, self.layers)

    def extra_repr(self) -> str:
        return f"layers={self.layers}"

