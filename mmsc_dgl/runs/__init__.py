"""Run directories, the floor above the training harness: train into one
(:func:`~mmsc_dgl.runs.training.train`), finish a fit (:func:`~mmsc_dgl.runs.finishing.finish`),
load and evaluate one (:mod:`mmsc_dgl.runs.load`), query it (:mod:`mmsc_dgl.runs.query`) and
serve a trained model without it (:class:`~mmsc_dgl.runs.item_model.ItemModel`).

The names below load lazily, so importing this package imports none of its modules.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmsc_dgl.runs.finishing import finish
    from mmsc_dgl.runs.item_model import ItemModel, TopK
    from mmsc_dgl.runs.load import LoadedRun, evaluate_run, load_model, load_run
    from mmsc_dgl.runs.query import recommend, recommend_new
    from mmsc_dgl.runs.training import train

_LAZY = {
    "train": "mmsc_dgl.runs.training",
    "finish": "mmsc_dgl.runs.finishing",
    "load_run": "mmsc_dgl.runs.load",
    "load_model": "mmsc_dgl.runs.load",
    "evaluate_run": "mmsc_dgl.runs.load",
    "LoadedRun": "mmsc_dgl.runs.load",
    "recommend": "mmsc_dgl.runs.query",
    "recommend_new": "mmsc_dgl.runs.query",
    "ItemModel": "mmsc_dgl.runs.item_model",
    "TopK": "mmsc_dgl.runs.item_model",
}

__all__ = sorted(_LAZY)

if not TYPE_CHECKING:
    def __getattr__(name: str) -> Any:
        if name not in _LAZY:
            raise AttributeError(f"module 'mmsc_dgl.runs' has no attribute {name!r}")
        return getattr(importlib.import_module(_LAZY[name]), name)
