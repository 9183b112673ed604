r"""The obvious alternative a DGL user would write: HAN as DGL's own example builds it.

Every meta-path becomes a full graph with ``dgl.metapath_reachable_graph``; each gets a
``dgl.nn.GATConv``; semantic attention (HAN's, averaged over all items) mixes them.  The whole
catalog is encoded at every step (full-graph training, as in ``examples/pytorch/han``).  It uses
the same item input, dims, heads, meta-paths, scoring and triplet loss as MMSC's HAN
configuration, so a benchmark measures the neighbourhood transform and the kernels, not the
architecture.

Self-loops are added to every meta-path graph: GATConv refuses zero in-degree nodes, and the
alternative (``allow_zero_in_degree=True``) gives them a bias-only output.

This module imports DGL: it is a benchmark comparison, above the line, never used by the
library.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.config import HANConfig
from mmsc_dgl.errors import DataError
from mmsc_dgl.features.base import ItemFeatures
from mmsc_dgl.models.base import FullGraphRecommender, GraphStateModule
from mmsc_dgl.models.inputs import ItemInput, score_head
from mmsc_dgl.nn import SemanticAttention

BYTES_PER_PAIR = 40
"""What one reachable pair costs while DGL builds and holds the graph (scipy product, COO/CSR
copies, self-loop copy); measured in benchmarks/results/metapath_100k_cpu.json as about 30."""


def reachable_graphs(train_graph, metapaths: Sequence[str], memory_budget: int = 8 << 30):
    """``dgl.metapath_reachable_graph`` (+ self-loops) per meta-path, after checking that the
    products fit ``memory_budget`` bytes; raises :class:`DataError` with the estimate if not."""
    import dgl

    from mmsc_dgl.metapath import MetaPath, estimate_pairs
    paths = [MetaPath.parse(p) for p in metapaths]
    estimate = {p.name: estimate_pairs(train_graph, p) for p in paths}
    need = sum(estimate.values()) * BYTES_PER_PAIR
    if need > memory_budget:
        raise DataError(f"dgl.metapath_reachable_graph would hold up to {sum(estimate.values()):,} pairs "
                        f"(~{need / 2**30:.1f} GiB) for {len(paths)} meta-paths, over the "
                        f"{memory_budget / 2**30:.1f} GiB budget; largest: "
                        + ", ".join(f"{k}={v:,}" for k, v in sorted(estimate.items(), key=lambda kv: -kv[1])[:3]),
                        fix="this is the full-product approach's limit; MMSC's bounded tables do not have it.")
    graphs = {}
    for p in paths:
        # Reversed: GATConv aggregates in-edges, and row i of a meta-path table lists the items
        # reachable *from* i.
        g = dgl.reverse(dgl.metapath_reachable_graph(train_graph, list(p.relations)))
        graphs[p.name] = dgl.add_self_loop(dgl.remove_self_loop(g))
    return graphs, estimate


class DGLHAN(GraphStateModule, FullGraphRecommender):
    """Full-graph HAN on DGL reachable graphs and ``dgl.nn.GATConv`` (see the module docstring).

    Args:
        num_items: number of items.
        graphs: meta-path name -> homogeneous DGL graph over the items (from :func:`reachable_graphs`).
        config: ``hidden``, ``heads``, ``semantic_hidden``, ``feat_drop``, ``margin``.
        features: content tokens, or None for id embeddings.
    """

    _graph_state = ("_graphs",)

    def __init__(self, num_items: int, graphs: Dict[str, object], config: HANConfig,
                 features: Optional[ItemFeatures] = None):
        super().__init__()
        from dgl.nn import GATConv
        self.num_items = num_items
        self.config = config
        self.metapaths = list(graphs)
        self._graphs: Dict[str, Any] = dict(graphs)
        hidden = config.hidden
        self.input = ItemInput(num_items, hidden, features, config.id_embeddings)
        self.gat = nn.ModuleList([GATConv(hidden, hidden // config.heads, config.heads, feat_drop=config.feat_drop,
                                          activation=F.elu) for _ in self.metapaths])
        self.semantic = nn.ModuleDict({r: SemanticAttention(hidden, config.semantic_hidden) for r in RELATIONS})
        self.project = nn.ModuleDict({r: nn.Linear(hidden, hidden) for r in RELATIONS})


    @property
    def num_pairs(self) -> int:
        return sum(g.num_edges() for g in self._graphs.values())

    def encode_all(self) -> Dict[str, torch.Tensor]:
        q = self.input()
        z = torch.stack([conv(self._graphs[name], q).flatten(1) for name, conv in zip(self.metapaths, self.gat)], 1)
        return {r: score_head(self.project[r](self.semantic[r](z)), self.config.score) for r in RELATIONS}

    def __repr__(self) -> str:
        return f"DGLHAN(items={self.num_items:,}, metapaths={len(self.metapaths)}, pairs={self.num_pairs:,})"
