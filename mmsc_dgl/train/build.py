"""Assembling a run, in one place: the dataset (with training noise, if asked), content
features, the supervised training edges (the split's or E_LLM's), the meta-path tables and the
model, on a device.  ``mmsc-dgl train``, the experiment grid, the benchmarks and
``export-tensors`` all build their runs here; the :class:`~mmsc_dgl.train.trainer.Trainer` is
then handed the model, and the :class:`~mmsc_dgl.eval.evaluator.Evaluator` the dataset."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Optional, Union

import pyarrow.compute as pc
import torch

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.config import TrainConfig
from mmsc_dgl.data.edges import RelationEdges
from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.features.base import ItemFeatures
from mmsc_dgl.features.load import load_features
from mmsc_dgl.io import read_parquet_table
from mmsc_dgl.metapath.table import MetaPathTables
from mmsc_dgl.models.registry import USES_METAPATHS, build_model
from mmsc_dgl.train.batches import EdgeBatches

if TYPE_CHECKING:
    from mmsc_dgl.data.dataset import Dataset

logger = logging.getLogger(__name__)

TABLES = "metapaths.pt"


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when visible, else the CPU; a named CUDA device must be visible."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise DataError(f"{flag('--device', 'device=')} {device!r} is not a device.", fix="use auto, cpu, cuda or cuda:N.") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"{flag('--device', 'device=')} {device} was asked for, but no CUDA device is visible.",
                        fix="use " + flag('--device cpu', "device='cpu'") + ".")
    return chosen


def resolve_impl(impl: str, device: torch.device, import_dgl: bool = True) -> str:
    """On CPU, DGL's kernels when DGL is installed (2-4x the reference there); Triton on CUDA.
    ``import_dgl=False`` (a saved model answering queries): DGL's kernels only when DGL is
    already imported, so a first query does not pay DGL's import (3.5 s) for one pass."""
    if impl != "auto":
        return impl
    if device.type == "cpu" and not import_dgl:
        import sys
        return "dgl" if "dgl" in sys.modules else "reference"
    if device.type == "cpu":
        import importlib.util
        try:
            found = importlib.util.find_spec("dgl") is not None
        except (ImportError, ValueError):  # blocked or half-installed: as absent
            found = False
        return "dgl" if found else "reference"
    return "auto"


def _as_node_ids(table, dataset, path: str):
    """``src``/``dst`` as node ids: integer columns are node ids already (mmsc-dgl augment
    writes them); string columns are item ids, looked up in the catalog (an unknown one is an
    error naming it); any other type is an error naming the column."""
    import pyarrow as pa
    for name in ("src", "dst"):
        column = table.column(name)
        if pa.types.is_integer(column.type):
            continue
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise DataError(f"column {name!r} is of type {column.type}, not node ids (integers) or item ids "
                            f"(strings).", path=path, fix="write src and dst as integers or strings.")
        nodes = dataset.catalog.index_of(column.combine_chunks())
        if (nodes < 0).any():
            unknown = column.take(pa.array((nodes < 0).nonzero()[0][:3])).to_pylist()
            raise DataError(f"column {name!r} holds {int((nodes < 0).sum()):,} item ids that are not in the "
                            f"dataset, e.g. {unknown}.", path=path,
                            fix="use item ids of this dataset's items.parquet (or node ids as integers).")
        table = table.set_column(table.column_names.index(name), name, pa.array(nodes))
    return table


def load_train_edges(dataset, path: Optional[str]) -> Dict[str, RelationEdges]:
    """The supervised training edges: the split's, or a filtered subset (E_LLM) from a file."""
    if path is None:
        edges = dataset.splits.train
    else:
        table = read_parquet_table(path, ("relation", "src", "dst"), what="parquet edge table",
                                   fix="pass the parquet file written by mmsc-dgl augment (relation, src, dst "
                                       "node ids).")
        relation = table.column("relation").cast("string")
        table = _as_node_ids(table, dataset, path)
        edges = {}
        for r in RELATIONS:
            part = table.filter(pc.equal(relation, r))
            src, dst = part.column("src").to_numpy(), part.column("dst").to_numpy()
            if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= dataset.num_items):
                raise DataError(f"{r} edges refer to node ids outside 0..{dataset.num_items - 1}.", path=path,
                                fix="use node ids of this dataset.")
            edges[r] = RelationEdges(src, dst)
    for r in RELATIONS:
        if len(edges[r]) == 0:
            raise DataError(f"relation {r!r} has no training edges.", path=path,
                            fix="check the dataset or the training edge file.")
    return edges


def run_tables(dataset, config: TrainConfig, run_dir: Optional[Path], device: torch.device,
               progress: bool = True) -> MetaPathTables:
    """The run's meta-path tables: ``run_dir/metapaths.pt`` when it was built with these
    settings, else random-walk tables built from the training graph (DGL) and saved there."""
    from mmsc_dgl.metapath.spec import parse_metapaths
    path = Path(run_dir) / TABLES if run_dir is not None else None
    paths = parse_metapaths(config.metapaths, dataset.relation_map, getattr(dataset, "side", None))
    names = [p.name for p in paths]
    wanted = {"strategy": "walk", "max_neighbors": config.max_neighbors, "num_walks": config.num_walks,
              "seed": config.seed, "metapaths": names,
              "train_noise": config.train_noise}
    if path is not None and path.exists():
        tables = MetaPathTables.load(path)
        if {k: tables.info.get(k) for k in wanted} == wanted:
            return tables
        logger.info("%s was built with other settings; rebuilding it", path)
    from mmsc_dgl.metapath.build import build_metapath_tables
    graph = dataset.train_graph(side=any(p.side_hops for p in paths))
    tables = build_metapath_tables(graph, paths, strategy="walk",
                                   max_neighbors=config.max_neighbors, num_walks=config.num_walks,
                                   seed=config.seed, progress=progress, device=str(device))
    tables.info["train_noise"] = config.train_noise
    if path is not None:
        tables.save(path)
    return tables


@dataclass
class RunParts:
    """Everything a run trains and evaluates with."""

    dataset: "Dataset"
    config: TrainConfig
    device: torch.device
    features: Optional[ItemFeatures]
    train_edges: Dict[str, RelationEdges]
    tables: Optional[MetaPathTables]
    model: torch.nn.Module

    def batches(self) -> EdgeBatches:
        """The epoch source over the training edges, for the trainer."""
        cfg = self.config
        edges = {r: (torch.from_numpy(self.train_edges[r].src), torch.from_numpy(self.train_edges[r].dst))
                 for r in RELATIONS}
        return EdgeBatches(edges, self.dataset.num_items, cfg.batch_size, cfg.model.negatives, cfg.steps_per_epoch,
                           self.device)


def build_run(dataset, config: TrainConfig, run_dir: Optional[Union[str, Path]] = None,
              tables: Optional[MetaPathTables] = None, model=None,
              features: Union[ItemFeatures, None, str] = "config",
              train_edges: Optional[Dict[str, RelationEdges]] = None, progress: bool = True) -> RunParts:
    """Assemble a run (reads files, builds tables; trains nothing).

    Args:
        dataset: a :class:`~mmsc_dgl.data.dataset.Dataset`.
        config: :class:`~mmsc_dgl.config.TrainConfig`.
        run_dir: where the meta-path tables are cached (``None``: not saved).
        tables: meta-path tables to use instead of building them.
        model: a ready model answering :class:`~mmsc_dgl.models.base.Recommender`, used in
            place of ``config.architecture`` (benchmarks compare outside encoders this way).
        features: content features already loaded for ``config.features`` (``None``: none);
            by default they are loaded here.
        train_edges: the supervised training edges already loaded for ``config.train_edges``;
            by default they are read here.
    """
    if config.train_noise > 0:
        if config.train_edges is not None:
            raise DataError("train_noise and train_edges were both given.",
                            fix="inject noise or filter the training edges (E_LLM), not both in one run.")
        from mmsc_dgl.data.noise import inject_training_noise
        dataset = inject_training_noise(dataset, config.train_noise, config.seed)
    device = resolve_device(config.device)
    # Inputs that can be wrong are read before anything is built or written.
    content = (load_features(config.features, dataset, config.feature_dim,
                             base=Path(run_dir) if run_dir is not None else None)
               if isinstance(features, str) else features)
    if train_edges is None:
        train_edges = load_train_edges(dataset, config.train_edges)
    if model is None and config.architecture in USES_METAPATHS:
        tables = tables or run_tables(dataset, config, Path(run_dir) if run_dir is not None else None, device, progress)
    torch.manual_seed(config.seed)
    if model is None:
        try:
            model = build_model(config.architecture, dataset.num_items, config.model, tables=tables,
                                train_edges=train_edges, features=content, impl=resolve_impl(config.impl, device))
        except ValueError as err:
            raise DataError(f"cannot build {config.architecture}: {err}",
                            fix="change the model settings or the features named above.") from err
    return RunParts(dataset, config, device, content, train_edges, tables, model.to(device))
