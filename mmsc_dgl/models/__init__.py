"""Models answering one small contract (:class:`~mmsc_dgl.models.base.Recommender`): MMSC and
the baselines it is compared with, one a file.

Names are imported on first use (PEP 562), so ``mmsc_dgl.models.mmsc`` loads with torch alone
(the GPU hosts have neither pydantic nor pyarrow).
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Recommender": "base", "MMSC": "mmsc", "HAN": "han", "GATPerRelation": "gat", "LightGCN": "lightgcn",
    "DecGCN": "decgcn", "ContentCosine": "content", "NeighbourhoodHeuristic": "heuristic",
    "ARCHITECTURES": "registry", "build_model": "registry",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"mmsc_dgl.models.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'mmsc_dgl.models' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
