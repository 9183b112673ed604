"""Models by name, so configs and the experiment grid can say ``architecture: lightgcn``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Union

import torch

from mmsc_dgl.config import ARCHITECTURES as _ARCHITECTURES
from mmsc_dgl.features.base import ItemFeatures

if TYPE_CHECKING:
    from mmsc_dgl.data.edges import RelationEdges
    from mmsc_dgl.metapath.table import MetaPathTables
    from mmsc_dgl.ops import CSR

ARCHITECTURES: Dict[str, str] = {name: spec[1] for name, spec in _ARCHITECTURES.items()}
"""Every architecture name and what it is (from :data:`mmsc_dgl.config.ARCHITECTURES`, the one list)."""

USES_METAPATHS = frozenset({"mmsc", "han"})


def build_model(architecture: str, num_items: int, config: Any, *,
                tables: Optional[Union["MetaPathTables", Mapping[str, "CSR"]]] = None,
                train_edges: Optional[Mapping[str, "RelationEdges"]] = None,
                features: Optional[ItemFeatures] = None, impl: str = "auto") -> torch.nn.Module:
    """An untrained model of ``architecture`` (a key of :data:`ARCHITECTURES`).

    ``config`` is the model config of that architecture (:data:`mmsc_dgl.config.MODEL_CONFIGS`);
    ``tables`` (meta-path tables) is needed by ``mmsc`` and ``han``; ``train_edges`` (per relation,
    ``src``/``dst`` arrays) by the graph baselines; ``features`` by ``content``.

    Example:
        >>> model = build_model("lightgcn", 1000, model_config("lightgcn"), train_edges=edges)  # doctest: +SKIP

    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    if architecture in USES_METAPATHS and tables is None:
        raise ValueError(f"{architecture} needs meta-path tables")
    if architecture not in USES_METAPATHS and architecture not in ("content", "two-tower") and train_edges is None:
        raise ValueError(f"{architecture} needs the training edges")
    edges: Mapping[str, "RelationEdges"] = train_edges or {}  # refused above where a model needs them
    if architecture == "mmsc":
        assert tables is not None
        from mmsc_dgl.models.mmsc import MMSC
        return MMSC(num_items, tables, config, features, impl=impl, graph_edges=train_edges)
    if architecture == "han":
        assert tables is not None
        from mmsc_dgl.models.han import HAN
        return HAN(num_items, tables, config, features, impl=impl)
    if architecture == "gat":
        from mmsc_dgl.models.gat import GATPerRelation
        return GATPerRelation(num_items, edges, config, features, impl=impl)
    if architecture == "lightgcn":
        from mmsc_dgl.models.lightgcn import LightGCN
        return LightGCN(num_items, edges, config)
    if architecture == "decgcn":
        from mmsc_dgl.models.decgcn import DecGCN
        return DecGCN(num_items, edges, config, features)
    if architecture == "two-tower":
        from mmsc_dgl.models.two_tower import ContentTwoTower
        return ContentTwoTower(features, config)
    if architecture == "content":
        from mmsc_dgl.models.content import ContentCosine
        return ContentCosine(features)
    from mmsc_dgl.models.heuristic import NeighbourhoodHeuristic
    return NeighbourhoodHeuristic(num_items, edges, architecture.replace("-", "_"),
                                  links=getattr(config, "links", False))
