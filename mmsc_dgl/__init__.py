"""mmsc_dgl: multi-modal relational item representations for substitutes and complements.

The package root is light: importing it never imports DGL.  The parts that need DGL (graph
building, dataset loading with the graph) are reached lazily through PEP 562 ``__getattr__``,
so the encoder, trainer and evaluation run on machines where DGL cannot be installed.
"""
from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names load lazily (below)
    from mmsc_dgl.augment.select import augment
    from mmsc_dgl.config import ModelConfig, PrepareConfig, SplitConfig, SyntheticConfig, TrainConfig
    from mmsc_dgl.data.amazon import read_amazon
    from mmsc_dgl.data.catalog import ItemCatalog
    from mmsc_dgl.data.dataset import Dataset, load_dataset
    from mmsc_dgl.data.edgelist import read_edgelist
    from mmsc_dgl.data.graph import build_graph
    from mmsc_dgl.data.negatives import NegativeSampler
    from mmsc_dgl.data.noise import inject_training_noise
    from mmsc_dgl.data.parquet import read_parquet_inputs
    from mmsc_dgl.data.prepare import dataset_from_graph, prepare
    from mmsc_dgl.data.relations import RelationMap
    from mmsc_dgl.data.report import SkipReport
    from mmsc_dgl.data.splits import make_splits
    from mmsc_dgl.data.synthetic import generate_synthetic
    from mmsc_dgl.errors import DataError
    from mmsc_dgl.eval.retrieval import topk_all
    from mmsc_dgl.experiments.config import ExperimentConfig, load_experiment
    from mmsc_dgl.experiments.grid import run_experiment
    from mmsc_dgl.features.base import ContentFeatures
    from mmsc_dgl.features.cache import extract_features
    from mmsc_dgl.metapath.build import build_metapath_tables
    from mmsc_dgl.metapath.table import MetaPathTables
    from mmsc_dgl.models.mmsc import MMSC
    from mmsc_dgl.models.registry import ARCHITECTURES, build_model
    from mmsc_dgl.ops.csr import CSR
    from mmsc_dgl.runs.item_model import ItemModel, TopK
    from mmsc_dgl.runs.load import evaluate_run, load_model, load_run
    from mmsc_dgl.runs.query import recommend, recommend_new
    from mmsc_dgl.runs.training import train

from mmsc_dgl.schema import NODE_TYPE, RELATIONS, __version__

# public name -> "module:attribute"; resolved on first access.
_LAZY = {
    "DataError": "mmsc_dgl.errors:DataError",
    "SkipReport": "mmsc_dgl.data.report:SkipReport",
    "ItemCatalog": "mmsc_dgl.data.catalog:ItemCatalog",
    "RelationMap": "mmsc_dgl.data.relations:RelationMap",
    "read_amazon": "mmsc_dgl.data.amazon:read_amazon",
    "read_edgelist": "mmsc_dgl.data.edgelist:read_edgelist",
    "read_parquet_inputs": "mmsc_dgl.data.parquet:read_parquet_inputs",
    "build_graph": "mmsc_dgl.data.graph:build_graph",
    "generate_synthetic": "mmsc_dgl.data.synthetic:generate_synthetic",
    "make_splits": "mmsc_dgl.data.splits:make_splits",
    "prepare": "mmsc_dgl.data.prepare:prepare",
    "dataset_from_graph": "mmsc_dgl.data.prepare:dataset_from_graph",
    "train": "mmsc_dgl.runs.training:train",
    "load_run": "mmsc_dgl.runs.load:load_run",
    "evaluate_run": "mmsc_dgl.runs.load:evaluate_run",
    "recommend": "mmsc_dgl.runs.query:recommend",
    "recommend_new": "mmsc_dgl.runs.query:recommend_new",
    "MMSC": "mmsc_dgl.models.mmsc:MMSC",
    "augment": "mmsc_dgl.augment.select:augment",
    "extract_features": "mmsc_dgl.features.cache:extract_features",
    "TrainConfig": "mmsc_dgl.config:TrainConfig",
    "ModelConfig": "mmsc_dgl.config:ModelConfig",
    "MetaPathTables": "mmsc_dgl.metapath.table:MetaPathTables",
    "build_metapath_tables": "mmsc_dgl.metapath.build:build_metapath_tables",
    "Dataset": "mmsc_dgl.data.dataset:Dataset",
    "load_dataset": "mmsc_dgl.data.dataset:load_dataset",
    "NegativeSampler": "mmsc_dgl.data.negatives:NegativeSampler",
    "SplitConfig": "mmsc_dgl.config:SplitConfig",
    "SyntheticConfig": "mmsc_dgl.config:SyntheticConfig",
    "PrepareConfig": "mmsc_dgl.config:PrepareConfig",
    "build_model": "mmsc_dgl.models.registry:build_model",
    "ARCHITECTURES": "mmsc_dgl.models.registry:ARCHITECTURES",
    "inject_training_noise": "mmsc_dgl.data.noise:inject_training_noise",
    "ExperimentConfig": "mmsc_dgl.experiments.config:ExperimentConfig",
    "load_experiment": "mmsc_dgl.experiments.config:load_experiment",
    "run_experiment": "mmsc_dgl.experiments.grid:run_experiment",
    "topk_all": "mmsc_dgl.eval.retrieval:topk_all",
    "load_model": "mmsc_dgl.runs.load:load_model",
    "ItemModel": "mmsc_dgl.runs.item_model:ItemModel",
    "TopK": "mmsc_dgl.runs.item_model:TopK",
    "ContentFeatures": "mmsc_dgl.features.base:ContentFeatures",
    "CSR": "mmsc_dgl.ops.csr:CSR",
}

__all__ = ["RELATIONS", "NODE_TYPE", "__version__", *_LAZY]


if not TYPE_CHECKING:  # hidden from type checkers, so a misspelt name is an error there
    def __getattr__(name: str) -> Any:
        target = _LAZY.get(name)
        if target is None:
            raise AttributeError(f"module 'mmsc_dgl' has no attribute {name!r}")
        module_name, attr = target.split(":")
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _CallableTrainPackage(types.ModuleType):
    """``mmsc_dgl.train`` names both the harness package and the function
    :func:`~mmsc_dgl.runs.training.train`: once any of the package's modules is imported, Python
    binds the package to ``mmsc_dgl.train``, so the package is made callable, and calls it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from mmsc_dgl.runs.training import train as run
        return run(*args, **kwargs)


if not TYPE_CHECKING:
    importlib.import_module("mmsc_dgl.train").__class__ = _CallableTrainPackage  # its __init__ imports nothing
