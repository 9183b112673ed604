"""Neighbourhood heuristics on the union of both relations' training graphs.

* Common neighbours: :math:`|N(i) \\cap N(j)|`.
* Adamic-Adar (Adamic and Adar, "Friends and neighbors on the Web", Social Networks 2003):
  :math:`\\sum_{z \\in N(i) \\cap N(j)} 1 / \\log |N(z)|`.

Both are strong on real co-purchase data (items bought with the same things are related), so a
learned model has to beat them.  They score pairs; there is no per-item embedding.

With ``links`` a pair that is already a training edge of the *other* relation ranks above every
pair that is not, and the heuristic orders within each group (on the Amazon sets a quarter to a
half of the held-out pairs are edges of the other relation).  This is the baseline for MMSC's
own link features (``MMSCConfig.evidence_links``): the same evidence, without learning.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Mapping, Optional

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from mmsc_dgl.models.base import NothingToLearn, Recommender
from mmsc_dgl.ops.paths import PathCounter, undirected

if TYPE_CHECKING:
    from mmsc_dgl.data.edges import RelationEdges

METHODS = ("common_neighbors", "adamic_adar")


class NeighbourhoodHeuristic(nn.Module, Recommender):
    """Pair scores from shared neighbours in the training graph (both relations, made undirected).

    Args:
        num_items: number of items.
        train_edges: per relation, objects with ``src`` and ``dst`` node-id arrays.
        method: ``"common_neighbors"`` or ``"adamic_adar"``.

    Note:
        Most pairs share no neighbour and score 0.  The ranking protocol counts ties against the
        positive, so a held-out pair with no common neighbour ranks below every negative that
        also scores 0 -- the heuristic gets no credit for a lucky tie.
    """

    trainable = False
    has_embeddings = False

    def __init__(self, num_items: int, train_edges: Mapping[str, "RelationEdges"], method: str = "adamic_adar",
                 links: bool = False):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        self.num_items = num_items
        self.method = method
        # Each relation's own undirected graph, for the edge lookups of ``links``.
        self._links: Optional[PathCounter] = PathCounter({
            r: undirected(torch.as_tensor(np.asarray(e.src)), torch.as_tensor(np.asarray(e.dst)), num_items)
            for r, e in train_edges.items()}) if links else None
        src = np.concatenate([np.asarray(e.src) for e in train_edges.values()])
        dst = np.concatenate([np.asarray(e.dst) for e in train_edges.values()])
        keep = src != dst
        rows, cols = np.r_[src[keep], dst[keep]], np.r_[dst[keep], src[keep]]
        adj = sp.csr_matrix((np.ones(len(rows), np.float64), (rows, cols)), shape=(num_items, num_items))
        adj.data[:] = 1.0  # duplicates summed above: back to 0/1
        degree = np.asarray(adj.sum(1)).ravel()
        if method == "adamic_adar":
            # A common neighbour has degree >= 2, so log(degree) > 0 wherever it is used.
            weight = np.where(degree >= 2, 1.0 / np.log(np.maximum(degree, 2)), 0.0)
        else:
            weight = np.ones(num_items)
        self._adj = adj
        self._weight = weight
        # Above any heuristic score: every middle item counted, each with its largest weight.
        self._link_bonus = float(weight.sum()) + 1.0

    def loss(self, batch: dict) -> Dict[str, torch.Tensor]:
        raise NothingToLearn(f"{self.method} has no parameters to train")

    @torch.no_grad()
    def score(self, src: torch.Tensor, dst: torch.Tensor, relation: str) -> torch.Tensor:
        s = src.detach().cpu().numpy().ravel()
        d = dst.detach().cpu().numpy().ravel()
        common = self._adj[s].multiply(self._adj[d])
        out = np.asarray(common @ self._weight).ravel()
        if self._links is not None:
            out = out + self._links_term(torch.from_numpy(s), torch.from_numpy(d), relation).numpy()
        # float64: a float32 bonus would swallow the heuristic's differences within the linked group
        return torch.from_numpy(out).to(torch.float64).to(src.device).view(src.shape)

    @torch.no_grad()
    def catalog_scores(self, src: torch.Tensor, relation: str) -> torch.Tensor:
        """:meth:`score` of each of ``src`` with every item [B, num_items] (float64), one sparse
        product instead of a pair at a time."""
        s = src.detach().cpu().numpy().ravel()
        out = torch.from_numpy(np.asarray((self._adj[s].multiply(self._weight[None, :]).tocsr() @ self._adj).todense()))
        if self._links is not None:
            out = out + self._links_term(torch.from_numpy(s).unsqueeze(1).expand(-1, self.num_items),
                                         torch.arange(self.num_items).expand(len(s), -1), relation)
        return out.to(src.device)

    def _links_term(self, src: torch.Tensor, dst: torch.Tensor, relation: str) -> torch.Tensor:
        """The bonus of pairs that are training edges of another relation (float64, CPU)."""
        out = torch.zeros(src.shape, dtype=torch.float64)
        assert self._links is not None  # built with links=True
        for other in self._links.graphs:
            if other != relation:
                out = out + self._link_bonus * self._links.linked(other, src, dst).double()
        return out

    def embed(self, relation: str) -> torch.Tensor:
        raise NotImplementedError(f"{self.method} scores pairs; it has no item embeddings (use score)")

    def embed_all(self) -> Dict[str, torch.Tensor]:
        return {"substitute": self.embed("substitute")}

    def __repr__(self) -> str:
        links = ", links" if self._links is not None else ""
        return f"NeighbourhoodHeuristic({self.method}{links}, items={self.num_items:,}, edges={self._adj.nnz:,})"
