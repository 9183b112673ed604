"""A finished run, loaded: evaluate it, or turn it into an :class:`~mmsc_dgl.runs.item_model.ItemModel`."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.io import atomic_write_json, resolve_path
from mmsc_dgl.lock import writer_lock
from mmsc_dgl.ownership import read_marker
from mmsc_dgl.eval.cold_start import ColdStart
from mmsc_dgl.eval.evaluator import Evaluator
from mmsc_dgl.train.build import RunParts, build_run
from mmsc_dgl.train.checkpoint import load_checkpoint, state_dict_problem
from mmsc_dgl.runs.item_model import ItemModel, load_saved_model
from mmsc_dgl.runs.record import (MODEL, RUN_FILE, check_weights, read_config, read_run_record, run_dataset_dir,
                                  run_feature_file)


logger = logging.getLogger(__name__)


class LoadedRun:
    """A finished run, loaded: its dataset, config, model and each relation's selected weights.

    Attributes:
        dataset: the :class:`~mmsc_dgl.data.dataset.Dataset` it was trained on.
        config: its :class:`~mmsc_dgl.config.TrainConfig`.
        model: the model (holding the weights of the relation last asked for).
        relation_states: per relation, the weights of its best validation epoch.
        features: its content features (or ``None``).
        cold_start: how it places items without edges (:class:`~mmsc_dgl.eval.cold_start.ColdStart`).
        evaluator: the :class:`~mmsc_dgl.eval.evaluator.Evaluator` of its dataset.
        record: its ``run.json`` (the dataset path and fingerprints).
    """

    def __init__(self, parts: RunParts, relation_states: Dict[str, dict], record: Optional[dict] = None,
                 cold_start: Optional[ColdStart] = None):
        self.dataset, self.config, self.model = parts.dataset, parts.config, parts.model
        self.record = record or {}
        self.features, self.device = parts.features, parts.device
        self.relation_states = relation_states
        self.tables, self.train_edges = parts.tables, parts.train_edges
        self.cold_start = cold_start or ColdStart(k=parts.config.cold_neighbors)
        self.evaluator = Evaluator(parts.dataset, parts.config, parts.features, parts.device,
                                   cold_start=self.cold_start)
        self._item_model: Optional[ItemModel] = None

    def use_relation(self, relation: str):
        """A separate model holding ``relation``'s selected weights, in eval mode (asking for the
        other relation later never changes it): :meth:`ItemModel.for_relation`."""
        return self.item_model().for_relation(relation)

    def item_model(self) -> ItemModel:
        """This run as a self-contained :class:`~mmsc_dgl.runs.item_model.ItemModel`: the query
        API (``topk``, ``score``, ``embed_new``) and ``save``."""
        if self._item_model is None:
            catalog = self.dataset.catalog
            titles = catalog.titles() if "title" in catalog.table.column_names else None
            tables = None if self.tables is None else {name: self.tables[name].csr() for name in self.tables}
            self._item_model = ItemModel(self.model, self.relation_states, catalog.ids.to_pylist(), self.config,
                                         self.features, titles, tables, self.train_edges,
                                         cold_start=self.cold_start)
        return self._item_model

    def embeddings(self) -> Optional[Dict[str, torch.Tensor]]:
        """Each relation's embeddings from its own selected weights."""
        return self.evaluator.embeddings(self.model, self.relation_states)

    def evaluate(self, pairs=None, full_catalog: bool = False) -> dict:
        """Test, cold-start and labelled-pair metrics (as at the end of training); with
        ``full_catalog`` also the test targets ranked against every item."""
        return self.evaluator.evaluate(self.model, self.relation_states, pairs=pairs, full_catalog=full_catalog)


def load_run(run_dir: os.PathLike | str, device: Optional[str] = None,
             dataset: Optional[os.PathLike | str] = None,
             features: Optional[os.PathLike | str] = None) -> LoadedRun:
    """A finished run, ready to evaluate or recommend.

    Args:
        run_dir: a finished run directory.
        device: where to load it (default: the run's config).
        dataset: the run's dataset directory, if it moved (checked by fingerprint).
        features: the run's feature file, if it moved (checked by fingerprint); a run trained on
            a file finds it relative to the run directory first, then where it was.

    Example:
        >>> run = mmsc_dgl.load_run("runs/beauty-mmsc")                        # doctest: +SKIP
        >>> run.item_model().topk(["B00005N7P0"], "complement", k=5).item_ids  # doctest: +SKIP
        >>> run.evaluate()["test"]                                            # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or (read_marker(run_dir) or {}).get("kind") != "run":
        raise DataError("not an mmsc_dgl run directory.", path=run_dir,
                        fix="point to a directory written by mmsc-dgl train --out.")
    record = read_run_record(run_dir)
    for name in ("config.json", MODEL):
        if not (run_dir / name).exists():
            raise DataError(f"the run directory lacks {name} (unfinished run?).", path=run_dir,
                            fix="finish it with mmsc-dgl train --out RUN --resume.")
    check_weights(run_dir, record)
    from mmsc_dgl.data.dataset import load_dataset
    config = read_config(run_dir)
    if device is not None:
        config = config.model_copy(update={"device": device})
    dataset_path = run_dataset_dir(run_dir, record, dataset)
    feature_file = run_feature_file(run_dir, record, features)
    if feature_file is not None:
        config = config.model_copy(update={"features": str(feature_file)})
    parts = build_run(load_dataset(dataset_path), config, run_dir, progress=False)
    state = load_checkpoint(run_dir / MODEL)
    try:
        for r in RELATIONS:
            parts.model.load_state_dict(state["states"][r])
    except (RuntimeError, KeyError, TypeError) as err:
        raise DataError(f"model.pt does not fit this run's config ({state_dict_problem(err)}).", path=run_dir / MODEL,
                        fix=f"the run directory mixes two runs; train it again with {flag('--overwrite', 'overwrite=True')}.") from None
    parts.model.eval()
    try:
        cold_start = ColdStart.from_state(state.get("cold_start"), k=config.cold_neighbors).to(parts.device)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"model.pt's cold-start tower is damaged ({type(err).__name__}: {err}).", path=run_dir / MODEL,
                        fix=f"train the run again with {flag('--overwrite', 'overwrite=True')}.") from None
    return LoadedRun(parts, state["states"], record, cold_start=cold_start)


def load_model(path: Union[str, os.PathLike], device: Optional[str] = None,
               dataset: Optional[Union[str, os.PathLike]] = None,
               features: Optional[Union[str, os.PathLike]] = None) -> ItemModel:
    """A trained model, ready to answer queries: from a file written by :meth:`ItemModel.save`
    (needs neither DGL nor the dataset) or from a run directory (``dataset`` and ``features``
    re-point a run whose dataset or feature file moved).

    Args:
        path: a saved model file, or a finished run directory.
        device: where to load it (default: CUDA when visible, else the CPU).
        dataset: for a run directory, its dataset's new place.
        features: for a run directory trained on a feature file, the file's new place.

    Example:
        >>> model = mmsc_dgl.load_model("products.mmsc", device="cpu")  # doctest: +SKIP
        >>> model.score("SKU-7", ["SKU-9", "SKU-12"], "substitute")    # doctest: +SKIP
    """
    if Path(path).is_dir():
        return load_run(path, device=device, dataset=dataset, features=features).item_model()
    if dataset is not None or features is not None:
        raise DataError("dataset= and features= re-point a run directory; a saved model file holds its own.",
                        path=path, fix="drop them, or pass the run directory.")
    return load_saved_model(path, device)


def evaluate_run(run_dir: os.PathLike | str, pairs: Optional[os.PathLike | str] = None,
                 device: Optional[str] = None, dataset: Optional[os.PathLike | str] = None,
                 features: Optional[os.PathLike | str] = None, full_catalog: bool = False) -> dict:
    """Test, cold-start and (optionally) labelled-pair metrics of a finished run, written to
    ``evaluation.json``.  ``dataset`` and ``features`` re-point a run whose dataset or feature
    file moved (checked by fingerprint; ``run.json`` is updated).  ``full_catalog`` also ranks
    each test target against every item (``test_full_catalog``), not only sampled negatives.

    Example:
        >>> mmsc_dgl.evaluate_run("runs/beauty-mmsc", pairs="test_pairs.txt")["pairs"]  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir, device, dataset, features)
    pair_table = _read_pairs(run, pairs) if pairs is not None else None
    with writer_lock(run_dir, "this run"):
        metrics = run.evaluate(pairs=pair_table, full_catalog=full_catalog)
        record = dict(run.record)
        if dataset is not None and Path(record["dataset"]) != resolve_path(dataset):
            path = resolve_path(dataset)
            record.update(dataset=str(path), dataset_relative=os.path.relpath(path, run_dir.resolve()))
            logger.warning("run.json now points to the dataset at %s", path)
        if features is not None and record["features"]["path"] != str(resolve_path(features)):
            path = resolve_path(features)
            record["features"] = {**record["features"], "path": str(path),
                                  "relative": os.path.relpath(path, run_dir.resolve())}
            logger.warning("run.json now points to the feature file at %s", path)
        if record != run.record:  # both were checked by fingerprint when the run was loaded
            atomic_write_json(run_dir / RUN_FILE, record)
        atomic_write_json(run_dir / "evaluation.json", metrics)
    return metrics


def _read_pairs(run: LoadedRun, pairs: os.PathLike | str):
    """A labelled pair file as node ids, its relation keys read with the dataset's own map."""
    from mmsc_dgl.data.prepare import pairs_as_nodes
    from mmsc_dgl.data.relations import RelationMap
    from mmsc_dgl.data.report import SkipReport
    report = SkipReport()
    mapped = {k: v for k, v in run.dataset.relation_map.items() if v in RELATIONS}
    known = ", ".join(sorted(mapped)) or "substitute, complement, s, c"
    relation_map = RelationMap(RelationMap.edgelist(",".join(f"{k}={v}" for k, v in mapped.items()) or None).mapping,
                               unknown_fix=f"use the relation keys the dataset was prepared with ({known}).")
    table = pairs_as_nodes(pairs, run.dataset.catalog, relation_map, "auto", report)
    if report.total:
        logger.warning("pairs: %s", "; ".join(report.format()))
    return table
