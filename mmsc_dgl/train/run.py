"""Run directories: what ``mmsc-dgl train``, ``evaluate`` and ``recommend`` call.

A run directory holds ``.mmsc_dgl.json`` (the marker: this is a run), ``run.json`` (the
dataset it used, by path and fingerprint, and the config's fingerprint), ``config.json``, ``metapaths.pt``,
``checkpoint.pt`` (latest epoch), ``model.pt`` (the best epoch), ``history.json`` and
``metrics.json``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Union

import numpy as np
import pyarrow as pa
import torch

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.config import SyntheticConfig, TrainConfig
from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.fingerprint import file_fingerprint, fingerprint
from mmsc_dgl.io import atomic_write_json, atomic_write_parquet, atomic_write_text, human_size, resolve_path
from mmsc_dgl.lock import writer_lock
from mmsc_dgl.ownership import check_dir_parent, check_output_dir, check_output_file, clear_directory, read_marker, write_marker
from mmsc_dgl.eval.cold_start import ColdStart
from mmsc_dgl.eval.evaluator import Evaluator
from mmsc_dgl.data.node_features import FEATURE_FILE, write_feature_file
from mmsc_dgl.features.load import load_features
from mmsc_dgl.train.build import RunParts, build_run, load_train_edges, resolve_device
from mmsc_dgl.train.calibrate import calibrate
from mmsc_dgl.train.cold_start import fit_cold_start
from mmsc_dgl.train.checkpoint import load_checkpoint, save_checkpoint, state_dict_problem
from mmsc_dgl.train.item_model import ItemModel, catalog_pair_term, load_saved_model, sparse_pair_term
from mmsc_dgl.train.trainer import Trainer, TrainResult

if TYPE_CHECKING:
    from mmsc_dgl.data.dataset import Dataset

logger = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_ITEMS = 10_000
RUN_FILE = "run.json"
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "metrics.json"
EXPLAIN_BLOCK = 1 << 16
"""Pairs explained together by ``recommend --all --explain`` (bounds its memory)."""


RUN_FORMAT = 2


def read_run_record(run_dir: Path) -> dict:
    """``run.json``: the dataset a run was trained on (path and fingerprint) and its config's
    fingerprint.  A damaged file is a one-line :class:`DataError`."""
    path = run_dir / RUN_FILE
    if not path.exists():
        raise DataError("the run directory lacks run.json.", path=run_dir,
                        fix="point to a directory written by mmsc-dgl train --out.")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("dataset"), str):
            raise ValueError("no dataset entry")
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"run.json is damaged ({err}).", path=path,
                        fix=f"train the run again with {flag('--overwrite', 'overwrite=True')}.") from None
    return record


def _read_config(run_dir: Path) -> TrainConfig:
    path = run_dir / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data.get("model") if isinstance(data, dict) else None
        if isinstance(model, dict) and "architecture" not in model:
            # Written before per-model configs: it holds every model's fields; keep this one's.
            from mmsc_dgl.config import MODEL_CONFIGS
            fields = MODEL_CONFIGS[data.get("architecture", "mmsc")].model_fields
            data["model"] = {k: v for k, v in model.items() if k in fields}
        return TrainConfig.from_stored(data)
    except (ValueError, UnicodeDecodeError) as err:  # pydantic's ValidationError is a ValueError
        first = str(err).splitlines()[0]
        raise DataError(f"config.json is damaged ({first}).", path=path,
                        fix=f"train the run again with {flag('--overwrite', 'overwrite=True')}.") from None


FEATURE_KEYWORDS = ("auto", "hashed", "none", "categories")


def feature_file_of(config: TrainConfig) -> Optional[Path]:
    """The feature file (torch file or parquet cache) ``config.features`` names, resolved as
    training reads it (relative to the working directory); ``None`` for the keywords and for
    features handed over from Python."""
    spec = config.features
    if not isinstance(spec, str) or spec in FEATURE_KEYWORDS:
        return None
    path = resolve_path(spec)
    return path if path.is_file() else None


def write_run_record(run_dir: Path, dataset_path: Path, config: TrainConfig,
                     feature_file: Optional[Path] = None, extra: Optional[dict] = None) -> None:
    """``run.json``: the dataset (absolute, relative to the run, fingerprint), the config's
    fingerprint, the feature file if there is one, and ``extra`` entries (a distributed run's
    partition)."""
    from mmsc_dgl.data.dataset import dataset_fingerprint
    record = {
        "format_version": RUN_FORMAT, "dataset": str(dataset_path),
        "dataset_relative": os.path.relpath(dataset_path, run_dir.resolve()),
        "dataset_fingerprint": dataset_fingerprint(dataset_path),
        "config_fingerprint": fingerprint(config.resume_identity())}
    if feature_file is not None:
        # Found again like the dataset: relative to the run first, then where it was, or re-pointed.
        record["features"] = {"path": str(feature_file),
                              "relative": os.path.relpath(feature_file, run_dir.resolve()),
                              "fingerprint": file_fingerprint(feature_file)}
    record.update(extra or {})
    atomic_write_json(run_dir / RUN_FILE, record)


def record_weights(run_dir: Path) -> None:
    """Write the digest of ``run_dir/model.pt`` into ``run.json``: :func:`load_run` then refuses
    weights that are not the run's own (a ``model.pt`` of the same shapes copied from another run
    gave metrics that disagreed with the run's silently)."""
    record = read_run_record(run_dir)
    record["model_fingerprint"] = file_fingerprint(run_dir / MODEL)
    atomic_write_json(run_dir / RUN_FILE, record)


def _check_weights(run_dir: Path, record: dict) -> None:
    recorded = record.get("model_fingerprint")
    if recorded is None:  # a run written before weights were recorded
        return
    found = file_fingerprint(run_dir / MODEL)
    if found != recorded:
        raise DataError(f"model.pt is not the weights this run wrote (digest {found}, the run recorded "
                        f"{recorded}): its metrics.json would not describe it.", path=run_dir / MODEL,
                        fix=f"put the run's own model.pt back, or train the run again with {flag('--overwrite', 'overwrite=True')}.")


def run_feature_file(run_dir: Path, record: dict, features: Optional[os.PathLike | str] = None) -> Optional[Path]:
    """The feature file a run was trained on: ``features`` if given (a moved file), else the
    recorded one (relative to the run first, so a run moved with its features still works),
    checked against the recorded fingerprint.  ``None`` for a run without a feature file."""
    info = record.get("features")
    if info is None:
        if features is not None:
            raise DataError("this run was not trained on a feature file; there is nothing to re-point.",
                            path=run_dir, fix="drop --features.")
        return None
    if features is not None:
        path = resolve_path(features)
        if not path.is_file():
            raise DataError("no feature file here.", path=features, fix="pass --features FILE where the run's "
                                                                          "feature file is now.")
    else:
        candidates = [run_dir / info["relative"], Path(info["path"])]
        path = next((p.resolve() for p in candidates if p.is_file()), None)
        if path is None:
            raise DataError(f"the feature file this run was trained on is no longer at {info['path']} "
                            "(moved or deleted).", path=run_dir,
                            fix="pass --features FILE (features= from Python) pointing to where it is now "
                                "(checked by fingerprint).")
    if file_fingerprint(path) != info["fingerprint"]:
        raise DataError(f"the feature file at {path} is not the one this run was trained on.", path=run_dir,
                        fix="pass --features FILE with the features it was trained on.")
    return path


def run_dataset_dir(run_dir: Path, record: dict, dataset: Optional[os.PathLike | str] = None) -> Path:
    """The dataset directory a run was trained on: ``dataset`` if given (a moved dataset),
    else the recorded one (relative to the run first, so a run moved with its dataset still
    works), checked against the recorded fingerprint."""
    from mmsc_dgl.data.dataset import dataset_fingerprint
    if dataset is not None:
        path = resolve_path(dataset)
        if not (path / "dataset.json").exists():
            raise DataError("not a dataset directory.", path=dataset, fix="pass --dataset DIR written by mmsc-dgl prepare.")
    else:
        candidates = [run_dir / record["dataset_relative"]] if record.get("dataset_relative") else []
        candidates.append(Path(record["dataset"]))
        path = next((p.resolve() for p in candidates if (p / "dataset.json").exists()), None)
        if path is None:
            raise DataError(f"the dataset this run was trained on is no longer at {record['dataset']} "
                            "(moved or deleted).", path=run_dir,
                            fix="pass --dataset DIR pointing to where it is now (checked by fingerprint).")
    wanted = record.get("dataset_fingerprint")
    if wanted is not None and dataset_fingerprint(path) != wanted:
        raise DataError(f"the dataset at {path} is not the one this run was trained on "
                        f"(fingerprint {dataset_fingerprint(path)}, the run's {wanted}).", path=run_dir,
                        fix="pass --dataset DIR with the dataset it was trained on.")
    return path


def check_resume(run_dir: Path, marker: Optional[dict], config: TrainConfig) -> dict:
    """Refuse a resume that would continue something else: no run, another config."""
    if marker is None:
        raise DataError(f"{flag('--resume', 'resume=True')}: there is no run here to continue.", path=run_dir,
                        fix=f"train without {flag('--resume', 'resume=True')} to start one.")
    if not (run_dir / RUN_FILE).exists():
        raise DataError(f"{flag('--resume', 'resume=True')}: this run was stopped before it began training (no run.json), so there is "
                        "nothing to continue.", path=run_dir, fix=f"start it again with {flag('--overwrite', 'overwrite=True')} instead of {flag('--resume', 'resume=True')}.")
    record = read_run_record(run_dir)
    wanted = record.get("config_fingerprint")
    if wanted is not None and wanted != fingerprint(config.resume_identity()):
        changed = "another config"
        if (run_dir / "config.json").exists():
            before = _read_config(run_dir).resume_identity()
            now = config.resume_identity()
            diff = sorted(k for k in now if now[k] != before.get(k))
            changed = "other settings (" + ", ".join(f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in diff) + ")"
        raise DataError(f"{flag('--resume', 'resume=True')} with {changed} than the run was trained with.", path=run_dir,
                        fix="resume with the run's own config (only epochs, patience, device, impl and "
                            "deterministic may change), or train into a new --out.")
    return record


def _inputs_of(dataset_dir, config: TrainConfig) -> list:
    from mmsc_dgl.data.dataset import Dataset
    inputs = [config.train_edges]
    if isinstance(config.features, str) and config.features not in FEATURE_KEYWORDS:
        inputs.append(config.features)
    if dataset_dir is not None and not isinstance(dataset_dir, Dataset):
        inputs.append(dataset_dir)
    elif isinstance(dataset_dir, Dataset) and dataset_dir.root is not None:
        inputs.append(dataset_dir.root)
    return inputs


def train(dataset_dir: Union[os.PathLike, str, "Dataset", None] = None, out: os.PathLike | str = "runs/mmsc", config: Optional[TrainConfig] = None,
          resume: bool = False, synthetic_items: int = DEFAULT_SYNTHETIC_ITEMS, progress: bool = True,
          stop_after: Optional[int] = None, overwrite: bool = False) -> TrainResult:
    """Train MMSC into the run directory ``out`` and evaluate it (``mmsc-dgl train`` is this).

    Everything that can refuse is checked before anything is written: ``out`` must be new,
    empty, or an mmsc_dgl run (replaced with ``overwrite``, continued with ``resume``, which
    also needs the same dataset and config); the dataset must have training, validation and
    test edges for both relations.  The run directory is locked while training.

    Args:
        dataset_dir: a prepared dataset directory, a :class:`~mmsc_dgl.data.dataset.Dataset`,
            or ``None`` for the built-in synthetic catalog (``synthetic_items`` items, 20% noise).
        out: the run directory.
        config: :class:`~mmsc_dgl.config.TrainConfig`.
        resume: continue the run in ``out`` from its last checkpoint.
        overwrite: replace the mmsc_dgl run already in ``out``.

    Example:
        >>> result = mmsc_dgl.train("runs/beauty", out="runs/beauty-mmsc",
        ...                         config=mmsc_dgl.TrainConfig(epochs=30, patience=3))  # doctest: +SKIP
        >>> result.metrics["test"]["complement"]["NDCG@10"], result.best_epoch  # doctest: +SKIP
    """
    from mmsc_dgl.data.dataset import Dataset, dataset_fingerprint, load_dataset
    config = config or TrainConfig()
    run_dir = Path(out)
    if resume and overwrite:
        raise DataError(f"{flag('--resume', 'resume=True')} and {flag('--overwrite', 'overwrite=True')} were both given.", fix="continue the run or replace it, not both.")
    resolve_device(config.device)
    check_dir_parent(run_dir)
    inputs = _inputs_of(dataset_dir, config)
    marker = check_output_dir(run_dir, "run", overwrite=overwrite, resume=resume, inputs=inputs)
    record = check_resume(run_dir, marker, config) if resume else None
    dataset = None
    if isinstance(dataset_dir, Dataset):
        dataset = dataset_dir
    elif dataset_dir is not None:
        dataset = load_dataset(dataset_dir)
        if record is not None and record.get("dataset_fingerprint") not in (None, dataset_fingerprint(dataset_dir)):
            raise DataError(f"{flag('--resume', 'resume=True')} with another dataset ({dataset_dir}) than the run was trained on "
                            f"({record['dataset']}).", path=run_dir,
                            fix="resume without DATASET_DIR (or with the run's own), or train into a new --out.")
    elif record is not None:
        dataset = load_dataset(run_dataset_dir(run_dir, record))
    _check_ks(config.ks, dataset.splits.num_negatives + 1 if dataset is not None else 1001)
    from mmsc_dgl.metapath.spec import parse_metapaths
    # a bad spec is refused here, not after the run directory is made (names: the dataset's relation map)
    parse_metapaths(config.metapaths, dataset.relation_map if dataset is not None else None,
                    getattr(dataset, "side", None))
    features, train_edges = "config", None
    if dataset is not None:
        problems = dataset.warnings()
        if problems:
            raise DataError("the dataset cannot be trained and evaluated: " + " ".join(problems),
                            path=dataset.root,
                            fix=f"prepare it with more edges per item, a lower {flag('--min-degree', 'min_degree')}, or a "
                                f"{flag('--relation-map', 'relation_map')} that fills both relations.")
        # The inputs a user names are read (and refused) before the run directory is touched.
        features = load_features(config.features, dataset, config.feature_dim)
        if config.train_edges is not None and config.train_noise == 0:
            train_edges = load_train_edges(dataset, config.train_edges)
    with writer_lock(run_dir, "this run"):
        marker = check_output_dir(run_dir, "run", overwrite=overwrite, resume=resume, inputs=inputs)
        if overwrite and marker is not None:
            clear_directory(run_dir, "run")
        existed = run_dir.exists()
        fresh = not resume
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            if dataset is None:
                target = run_dir / "dataset"
                from mmsc_dgl.data.prepare import prepare
                logger.info("no dataset given: preparing the built-in synthetic catalog (%d items, 20%% noise)",
                            synthetic_items)
                dataset = prepare(synthetic=SyntheticConfig(num_items=synthetic_items, noise_rate=0.2,
                                                            seed=config.seed), out=target, progress=progress)
            elif dataset.root is None:
                dataset.save(run_dir / "dataset")
            if fresh:
                write_marker(run_dir, "run")
            if not isinstance(config.features, str) and not isinstance(features, str) and features is not None:
                # Features handed over from Python are kept with the run, so load_run and
                # evaluate find them after this process ends (and after the run is moved).
                write_feature_file(run_dir / FEATURE_FILE, dataset.catalog.ids.to_pylist(), features.tokens,
                                   features.mask)
                config = config.model_copy(update={"features": FEATURE_FILE})
            if record is None:
                write_run_record(run_dir, resolve_path(dataset.root), config, feature_file_of(config))
            parts = build_run(dataset, config, run_dir, features=features, train_edges=train_edges,
                              progress=progress)
        except BaseException:
            if fresh:  # leave no half-made run behind: the directory was new or empty, so all of it is ours
                if existed:
                    for entry in run_dir.iterdir():
                        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
                else:
                    shutil.rmtree(run_dir, ignore_errors=True)
            raise
        logger.info("%r on %s", parts.model, parts.device)
        return _fit(parts, run_dir, resume, stop_after, progress)


def _check_ks(ks: List[int], candidates: int) -> None:
    """HR/MRR/NDCG@k ranks a query's true item among ``candidates`` items: a k at or beyond it
    scores every query 1 (HR@1001 of 1,001 candidates), so it is refused before any work."""
    too_big = [k for k in ks if k >= candidates]
    if too_big:
        raise DataError(f"ks {too_big}: each query ranks its item among {candidates:,} candidates, so @k "
                        f"must be below {candidates:,} to mean anything.",
                        fix=f"use ks between 1 and {candidates - 1:,} (e.g. [10]), or prepare the dataset "
                            f"with more --num-negatives.")


def _fit(parts: RunParts, run_dir: Path, resume: bool, stop_after: Optional[int], progress: bool) -> TrainResult:
    """Train the assembled run, then write its best weights, history and test metrics."""
    config = parts.config
    evaluator = Evaluator(parts.dataset, config, parts.features, parts.device)
    trainer = Trainer(parts.model, config, checkpoint=run_dir / CHECKPOINT, progress=progress,
                      identity=json.dumps(config.resume_identity(), sort_keys=True))
    if resume:
        trainer.resume_checkpoint()  # refuses a damaged or foreign checkpoint before config.json changes
    atomic_write_text(run_dir / "config.json", config.model_dump_json(indent=2))
    fit = trainer.fit(parts.batches(), evaluator.validate, resume=resume, stop_after=stop_after)
    if not fit.finished:
        return TrainResult(run_dir, {}, fit.history, fit.best_epoch, parts.dataset)
    states, calibration = calibrate(parts.model, fit.relation_states, evaluator,
                                    getattr(config.model, "calibrate", False))
    cold_report: dict = {}
    if config.cold_start == "tower":
        evaluator.cold_start, cold_report = fit_cold_start(parts.model, states, evaluator, k=config.cold_neighbors,
                                                           seed=config.seed)
    save_checkpoint(run_dir / MODEL, {"states": states, "config": config.model_dump_json(),
                                      "best_epoch": fit.best_epoch,
                                      "cold_start": evaluator.cold_start.state()
                                      if evaluator.cold_start is not None and evaluator.cold_start.towers else None})
    record_weights(run_dir)
    metrics = evaluator.evaluate(parts.model, states)
    if calibration:
        metrics["calibration"] = calibration
    if cold_report:
        metrics["cold_start"] = cold_report
    metrics["best_epoch"] = fit.best_epoch
    metrics["epochs_run"] = fit.epochs_run
    atomic_write_json(run_dir / METRICS, metrics)
    atomic_write_json(run_dir / "history.json", fit.history)
    return TrainResult(run_dir, metrics, fit.history, fit.best_epoch, parts.dataset)


def next_steps(result: TrainResult) -> List[str]:
    """What ``mmsc-dgl train`` prints at the end: where the run is, what the numbers mean, and
    the next commands to try, with a real item of the dataset."""
    lines = [f"run written to {result.run_dir}"]
    dataset = result.dataset
    negatives = dataset.splits.num_negatives if dataset is not None else 1000
    lines.append(f"HR@10 = share of held-out edges ranked in the top 10 of {negatives + 1:,} candidates (the true "
                 f"item and {negatives:,} sampled non-neighbours); MRR and NDCG@10 also reward a higher rank.")
    if dataset is None or not result.metrics:
        return lines
    ids = dataset.catalog.ids.to_pylist()
    titles = dataset.catalog.titles() if "title" in dataset.catalog.table.column_names else [None] * len(ids)
    test = dataset.splits.test["complement"].src
    pick = next((int(i) for i in test if titles[int(i)]), int(test[0]) if len(test) else 0)
    title = f"   # {' '.join(str(titles[pick]).split())}" if titles[pick] else ""  # one line, whatever the title holds
    run = _quote(result.run_dir)
    lines.append("next:")
    lines.append(f"  mmsc-dgl recommend {run} --item {_quote(ids[pick])} --relation complement -k 10{title}")
    lines.append(f"  mmsc-dgl evaluate {run}          # the same metrics again, written to evaluation.json")
    return lines


def _quote(value) -> str:
    import shlex
    return shlex.quote(os.fspath(value))


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
        """This run as a self-contained :class:`~mmsc_dgl.train.item_model.ItemModel`: the query
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
    _check_weights(run_dir, record)
    from mmsc_dgl.data.dataset import load_dataset
    config = _read_config(run_dir)
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


def recommend(run_dir: os.PathLike | str, relation: str, k: int = 10, item: Optional[str] = None,
              device: Optional[str] = None, out: Optional[os.PathLike | str] = None, overwrite: bool = False,
              dataset: Optional[os.PathLike | str] = None, explain: bool = False,
              features: Optional[os.PathLike | str] = None, ann: bool = False) -> List[Dict]:
    """Top-``k`` items for one item (``item``) or for every item (written to ``out`` as parquet;
    an existing file is replaced only with ``overwrite``).  ``k`` is capped at the number of
    other items; the summary row of ``--all`` says how many were written per item.

    Scores are the model's own: the embedding dot product plus, for MMSC, its path-evidence
    term, over the whole catalog (exact).  ``explain`` adds, per pick, the embedding term, the
    structural term's share per meta-path, the number of paths of each meta-path and one
    intermediate item (:mod:`mmsc_dgl.eval.explain`).  From Python, :meth:`ItemModel.topk` is
    the same ranking without reading the run directory again per call.

    ``ann`` adds a candidate stage for large catalogs: a FAISS index over the embeddings
    (:func:`~mmsc_dgl.eval.retrieval.faiss_search`; ``pip install mmsc_dgl[faiss]``) gives each
    item's nearest neighbours, which, with the items its meta-paths and edges reach, are
    re-ranked by the model's exact score.  Approximate only where the index misses.

    Example:
        >>> rows = mmsc_dgl.recommend("runs/beauty-mmsc", "complement", k=5, item="B00005N7P0",
        ...                           explain=True)  # doctest: +SKIP
        >>> [(r["rank"], r["item_id"], r["score"]) for r in rows]  # doctest: +SKIP
    """
    if relation not in RELATIONS:
        raise DataError(f"unknown relation {relation!r}.", fix=f"use one of {', '.join(RELATIONS)}.")
    if item is None:
        if out is None:
            raise DataError("--all needs --out FILE.parquet.", fix="pass --out recs.parquet.")
        inputs = [run_dir] + ([dataset] if dataset else []) + ([features] if features else [])
        check_output_file(out, overwrite=overwrite, inputs=inputs)
        with writer_lock(out, "this output file"):  # one writer; checked again now that it is ours
            check_output_file(out, overwrite=overwrite, inputs=inputs)
            return _recommend(run_dir, relation, k, item, device, out, dataset, explain, features, ann)
    return _recommend(run_dir, relation, k, item, device, out, dataset, explain, features, ann)


def _recommend(run_dir: os.PathLike | str, relation: str, k: int, item: Optional[str], device: Optional[str],
               out: Optional[os.PathLike | str], dataset: Optional[os.PathLike | str], explain: bool,
               features: Optional[os.PathLike | str], ann: bool) -> List[Dict]:
    run = load_run(run_dir, device, dataset, features)
    if not run.model.has_embeddings:
        raise DataError(f"{run.config.architecture} scores pairs and has no item embeddings to retrieve with.",
                        path=run_dir, fix="recommend from an embedding model's run (mmsc, lightgcn, ...).")
    catalog = run.dataset.catalog
    answers = run.item_model()  # the query API of mmsc_dgl.load_model: the CLI answers through it
    model = answers.for_relation(relation)
    emb = answers.embed(relation)
    targets = answers.targets(relation)
    search = _ann_index(targets) if ann else None
    ids = catalog.ids.to_pylist()
    titles = catalog.titles()
    from mmsc_dgl.eval.explain import explain_columns, explain_pairs
    from mmsc_dgl.eval.retrieval import topk_all, topk_searched
    if item is not None:
        node = catalog.node(item)
        if k > len(ids) - 1:
            logger.warning("-k %d is more than the %d other items; showing all of them", k, len(ids) - 1)
        top = answers.topk(node, relation, k, search=search)
        picks = top.nodes[0].tolist()
        rows = [{"rank": i + 1, "item_id": ids[j], "title": titles[j], "score": float(s)}
                for i, (s, j) in enumerate(zip(top.scores[0].tolist(), picks))]
        if explain:
            for row, extra in zip(rows, explain_pairs(model, emb, relation, node, picks, ids, titles)):
                row.update(extra)
        return rows
    with torch.no_grad():
        if search is not None:
            scores, top = topk_searched(emb, k, search, sparse_term=sparse_pair_term(answers.pair_term(relation)),
                                         targets=targets)
        else:
            term = catalog_pair_term(answers.pair_term(relation), len(catalog))
            block = 2048 if term is None else 256
            _announce_ranking(len(catalog), k, block, term is not None)
            scores, top = topk_all(emb, k, block_size=block, pair_term=term, targets=targets)
    width = top.shape[1]
    src = torch.arange(len(ids)).repeat_interleave(width).numpy()
    dst = top.flatten().numpy()
    id_array = pa.array(ids)
    columns = {"item_id": id_array.take(pa.array(src)),
               "rank": np.tile(np.arange(1, width + 1), len(ids)).astype(np.int32),
               "recommended_id": id_array.take(pa.array(dst)), "score": scores.flatten().numpy(),
               "relation": pa.array([relation] * len(src))}
    if explain:  # every pick at once, a block of pairs at a time (the order of the rows above)
        extras: Dict[str, list] = {}
        pairs_src, pairs_dst = torch.from_numpy(src), top.flatten()
        for at in range(0, len(src), EXPLAIN_BLOCK):
            block = explain_columns(model, emb, relation, pairs_src[at: at + EXPLAIN_BLOCK],
                                    pairs_dst[at: at + EXPLAIN_BLOCK], ids, titles)
            for key, values in block.items():
                extras.setdefault(key, []).extend(values)
        columns.update(extras)
    table = pa.table(columns)
    atomic_write_parquet(out, table)
    return [{"items": len(ids), "rows": table.num_rows, "k": width, "out": os.fspath(out)}]


def _announce_ranking(n: int, k: int, block: int, pairwise: bool) -> None:
    """Say before the exact ranking of every item what it will hold in memory: a block of
    scores against the whole catalog (twice with a pairwise term: the term and the sum) and
    the answers; its time follows in the progress lines (top-k: ... ETA)."""
    from mmsc_dgl.progress import report
    working = block * n * 4 * (3 if pairwise else 1) + n * min(k, n) * 12
    report("recommend --all: ranking %s items against all %s, %s queries at a time; about %s of "
           "working memory (--ann ranks only candidates for large catalogs)", f"{n:,}", f"{n:,}", f"{block:,}",
           human_size(working))


def recommend_new(run_dir: os.PathLike | str, items: os.PathLike | str, relation: str, k: int = 10,
                  edges: Optional[os.PathLike | str] = None, device: Optional[str] = None,
                  out: Optional[os.PathLike | str] = None, overwrite: bool = False,
                  dataset: Optional[os.PathLike | str] = None, explain: bool = False,
                  features: Optional[os.PathLike | str] = None) -> List[Dict]:
    """Top-``k`` catalog items (and other new items) for items the run was not trained on.

    ``items``: a parquet file with the catalog's columns (``item_id``, and the title, category,
    brand, description or image columns that the run's features read); their features are
    extracted with the run's own extractor (:func:`~mmsc_dgl.features.new_items.new_item_features`).
    ``edges``: a parquet file of their known edges, columns ``src``, ``dst`` (external ids, at
    least one end new) and ``relation``.  The items join the model as
    :meth:`ItemModel.add_items` has them (placed by content, moved toward their partners, paths
    counted through them); nothing on disk changes.  One row per pick, as for ``item``; with
    ``out``, the picks of every new item are written there as ``--all`` writes them.

    Example:
        >>> rows = mmsc_dgl.recommend_new("runs/magazine", "new.parquet", "complement", k=5)  # doctest: +SKIP
        >>> [(r["query_id"], r["rank"], r["item_id"]) for r in rows][:2]                     # doctest: +SKIP
    """
    if relation not in RELATIONS:
        raise DataError(f"unknown relation {relation!r}.", fix=f"use one of {', '.join(RELATIONS)}.")
    if out is not None:
        inputs = [run_dir, items] + ([edges] if edges else []) + ([dataset] if dataset else [])
        check_output_file(out, overwrite=overwrite, inputs=inputs)
        with writer_lock(out, "this output file"):
            check_output_file(out, overwrite=overwrite, inputs=inputs)
            return _recommend_new(run_dir, items, relation, k, edges, device, out, dataset, explain, features)
    return _recommend_new(run_dir, items, relation, k, edges, device, out, dataset, explain, features)


def _read_parquet(path: os.PathLike | str, columns: List[str], what: str, fix: str) -> pa.Table:
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:  # missing, not parquet, damaged (ArrowInvalid is a ValueError)
        raise DataError(f"cannot read {what} ({type(err).__name__}).", path=path, fix=fix) from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{what} have no column {missing[0]!r} (columns: {', '.join(table.column_names)}).",
                        path=path, fix=fix)
    return table


def _recommend_new(run_dir, items_path, relation: str, k: int, edges_path, device, out, dataset, explain: bool,
                   features) -> List[Dict]:
    from mmsc_dgl.data.catalog import ITEM_ID
    from mmsc_dgl.features.new_items import new_item_features
    from mmsc_dgl.eval.explain import explain_pairs
    run = load_run(run_dir, device, dataset, features)
    if not run.model.has_embeddings:
        raise DataError(f"{run.config.architecture} scores pairs and has no item embeddings to place new items with.",
                        path=run_dir, fix="recommend from an embedding model's run (mmsc, lightgcn, ...).")
    table = _read_parquet(items_path, [ITEM_ID], "the new items",
                          f"write a parquet file with an {ITEM_ID!r} column and the catalog's content columns.")
    ids = [None if i is None else str(i) for i in table.column(ITEM_ID).to_pylist()]
    if not ids:
        raise DataError("the new items file has no rows.", path=items_path, fix="add at least one new item.")
    new_edges: Dict[str, list] = {r: [] for r in RELATIONS}
    if edges_path is not None:
        e = _read_parquet(edges_path, ["src", "dst", "relation"], "the new edges",
                          "write a parquet file with columns src, dst (external ids) and relation.")
        for line, (a, b, r) in enumerate(zip(e.column("src").to_pylist(), e.column("dst").to_pylist(),
                                             e.column("relation").to_pylist())):
            if r not in RELATIONS:
                raise DataError(f"row {line}: relation {r!r} is not one of {', '.join(RELATIONS)}.", path=edges_path,
                                fix="map your edge names to substitute or complement first.")
            new_edges[r].append((str(a), str(b)))
    answers = run.item_model()
    content = new_item_features(answers.features, run.dataset.catalog.table, table, path=items_path)
    titles = [" ".join(str(t).split()) if t else None for t in table.column("title").to_pylist()] \
        if "title" in table.column_names else None
    try:
        answers.add_items(ids, content, edges=new_edges, titles=titles)
    except DataError as err:
        where = edges_path if err.reason.startswith("edges") and edges_path is not None else items_path
        raise DataError(err.reason, path=where, fix=err.fix) from None
    nodes = answers.node_ids(ids)
    top = answers.topk(nodes, relation, k)
    all_titles = answers.titles or [None] * answers.num_items
    rows: List[Dict] = []
    for q, (item, picks, scores) in enumerate(zip(ids, top.nodes.tolist(), top.scores.tolist())):
        mine = [{"query_id": item, "rank": i + 1, "item_id": answers.item_ids[j], "title": all_titles[j],
                 "score": float(s)} for i, (s, j) in enumerate(zip(scores, picks))]
        if explain:
            model = answers.for_relation(relation)
            for row, extra in zip(mine, explain_pairs(model, answers.embed(relation), relation, int(nodes[q]), picks,
                                                      answers.item_ids, all_titles, answers.evidence(relation),
                                                      answers.targets(relation))):
                row.update(extra)
        rows += mine
    if out is None:
        return rows
    columns = {"item_id": [r["query_id"] for r in rows], "rank": np.array([r["rank"] for r in rows], dtype=np.int32),
               "recommended_id": [r["item_id"] for r in rows], "score": [r["score"] for r in rows],
               "relation": [relation] * len(rows)}
    for key in (rows[0] if explain and rows else {}):
        if key not in ("query_id", "rank", "item_id", "title", "score"):
            columns[key] = [r.get(key) for r in rows]
    result = pa.table(columns)
    atomic_write_parquet(out, result)
    return [{"items": len(ids), "rows": result.num_rows, "k": top.nodes.shape[1], "out": os.fspath(out)}]


def _ann_index(embedding: torch.Tensor):
    """The FAISS candidate stage of ``recommend --ann``, or a one-line error without FAISS."""
    from mmsc_dgl.eval.retrieval import faiss_search
    try:
        return faiss_search(embedding)
    except ImportError:
        raise DataError("--ann needs FAISS, which is not installed.",
                        fix="pip install 'mmsc_dgl[faiss]', or drop --ann (the exact ranking).") from None


def _cell(value) -> str:
    return f"{'-':>10}" if value is None or value != value else f"{value:>10.4f}"


def format_metrics(metrics: dict) -> List[str]:
    lines = []
    for split in ("test", "test_full_catalog", "cold"):
        if split not in metrics:
            continue
        block = metrics[split]
        names = [m for m, v in next(iter(block.values())).items()
                 if m not in ("queries", "reason") and not isinstance(v, dict)]
        if split == "test_full_catalog":
            lines.append("test, each target ranked against every item of the catalog (not sampled negatives):")
            split = ""
        lines.append(f"{split:<6}{'relation':<12}" + "".join(f"{m:>10}" for m in names) + f"{'queries':>9}")
        for r in RELATIONS:
            lines.append(f"{'':<6}{r:<12}" + "".join(_cell(block[r][m]) for m in names) + f"{block[r]['queries']:>9,}"
                         + (f"  ({block[r]['reason']})" if block[r].get("reason") else ""))
    if "pairs" in metrics:
        lines.append(f"pairs {'relation':<12}{'ROC-AUC':>10}{'PR-AUC':>10}{'F1':>10}{'pairs':>9}")
        for r, m in metrics["pairs"].items():
            lines.append(f"{'':<6}{r:<12}{_cell(m['ROC-AUC'])}{_cell(m['PR-AUC'])}{_cell(m['F1'])}{m['pairs']:>9,}")
    return lines
