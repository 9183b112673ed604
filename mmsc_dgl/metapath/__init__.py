"""Meta-path neighbourhoods as a precomputed, capped transform (never a side effect of forward).

The specs and the table type need no DGL; building tables from a heterograph does, and is
imported lazily.
"""
from __future__ import annotations

import importlib
from typing import Any

from mmsc_dgl.metapath.spec import MetaPath, default_metapaths, parse_metapaths
from mmsc_dgl.metapath.table import MetaPathTable, MetaPathTables

_BUILD = {"build_metapath_tables", "dataset_metapath_tables", "estimate_pairs", "count_paths", "relation_matrices", "exact_table",
          "topk_table", "walk_table", "STRATEGIES"}

__all__ = ["MetaPath", "MetaPathTable", "MetaPathTables", "default_metapaths", "parse_metapaths", *sorted(_BUILD)]


def __getattr__(name: str) -> Any:
    if name in _BUILD:
        return getattr(importlib.import_module("mmsc_dgl.metapath.build"), name)
    raise AttributeError(f"module 'mmsc_dgl.metapath' has no attribute {name!r}")
