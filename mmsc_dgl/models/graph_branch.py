"""MMSC's graph branch: LightGCN's representation of every item per relation, concatenated to
the scoring rows (docs/real-data.md: what a co-purchase graph rewards)."""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import nn

from mmsc_dgl.models.base import GraphStateModule
from mmsc_dgl.ops.capped import capped_propagation, gather_rows
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
        cap: 0 (default): every call propagates over the whole graph, exact.  Above 0: the
            propagation is precomputed once as each item's ``cap`` largest entries of
            :math:`\frac{1}{K+1}\sum_k \hat A_r^k` (:func:`~mmsc_dgl.ops.capped.capped_propagation`),
            and a batch reads only its own rows: ``batch x cap`` work instead of ``K`` products
            with the whole graph.  Exact where no item reaches more than ``cap`` items in ``K`` hops.
    """

    _graph_state = ("_adjacency", "_columns", "_values")

    def __init__(self, num_items: int, hidden: int, layers: int, adjacency: Mapping[str, SparseMatrix],
                 cap: int = 0):
        super().__init__()
        self.layers = int(layers)
        self.cap = int(cap)
        self._adjacency: Dict[str, SparseMatrix] = dict(adjacency)
        self._columns: Dict[str, torch.Tensor] = {}
        self._values: Dict[str, torch.Tensor] = {}
        if self.cap:
            for r, adj in self._adjacency.items():
                self._columns[r], self._values[r] = capped_propagation(adj, self.layers, self.cap)
            self._adjacency = {}  # the capped table replaces it
        self.shared = nn.Embedding(num_items, hidden)
        self.relation = nn.ModuleDict({r: nn.Embedding(num_items, hidden) for r in (self._columns or self._adjacency)})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Small, as LightGCN's (``nn.Embedding``'s own is N(0, 1))."""
        for emb in [self.shared, *self.relation.values()]:
            nn.init.normal_(emb.weight, std=0.1)

    def forward(self, relation: str, nodes: Optional[torch.Tensor] = None) -> torch.Tensor:
        """:math:`L^r` of ``nodes`` [len(nodes), hidden], or of every item [num_items, hidden]."""
        if not self.cap:
            out = propagate(self._adjacency[relation], self.shared.weight + self.relation[relation].weight, self.layers)
            return out if nodes is None else out[nodes]
        if nodes is None:
            nodes = torch.arange(self.shared.num_embeddings, device=self._columns[relation].device)
        # the two tables' rows gathered apart: no item-sized sum in a step
        columns, values = self._columns[relation], self._values[relation]
        return (_capped_rows(self.shared, columns, values, nodes)
                + _capped_rows(self.relation[relation], columns, values, nodes))

    def extra_repr(self) -> str:
        cap = f", cap={self.cap}" if self.cap else ""
        return f"items={self.shared.num_embeddings:,}, hidden={self.shared.embedding_dim}, layers={self.layers}{cap}"


def _capped_rows(table: nn.Module, columns: torch.Tensor, values: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """:func:`~mmsc_dgl.ops.capped.gather_rows` of ``table``: from its weight where it holds one
    (``nn.Embedding``), otherwise from the rows it returns for the distinct columns that ``nodes``
    read (a table whose rows live elsewhere, e.g. sharded over DistDGL's servers: only those rows
    are fetched, and only they get a gradient).  The same sums, in the same order."""
    if isinstance(table, nn.Embedding):
        return gather_rows(columns, values, table.weight, nodes)
    needed, inverse = torch.unique(columns[nodes], return_inverse=True)
    every = torch.arange(nodes.numel(), device=nodes.device)
    return gather_rows(inverse.view(nodes.numel(), -1), values[nodes], table(needed), every)


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
