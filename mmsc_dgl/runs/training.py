"""Train into a run directory: ``mmsc-dgl train`` and :func:`mmsc_dgl.train`.

Everything that can refuse is checked before anything is written; the fit itself is
:class:`~mmsc_dgl.train.trainer.Trainer`'s, and what follows it is :func:`~mmsc_dgl.runs.finishing.finish`.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Union

from mmsc_dgl.config import SyntheticConfig, TrainConfig
from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.io import atomic_write_text, resolve_path
from mmsc_dgl.lock import writer_lock
from mmsc_dgl.ownership import check_dir_parent, check_output_dir, clear_directory, write_marker
from mmsc_dgl.eval.evaluator import Evaluator
from mmsc_dgl.data.node_features import FEATURE_FILE, write_feature_file
from mmsc_dgl.features.load import load_features
from mmsc_dgl.train.build import RunParts, build_run, load_train_edges, resolve_device
from mmsc_dgl.train.trainer import Trainer, TrainResult
from mmsc_dgl.runs.record import CHECKPOINT, FEATURE_KEYWORDS, check_resume, feature_file_of, run_dataset_dir, write_run_record
from mmsc_dgl.runs.finishing import finish

if TYPE_CHECKING:
    from mmsc_dgl.data.dataset import Dataset

logger = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_ITEMS = 10_000


def _inputs_of(dataset_dir, config: TrainConfig) -> list:
    from mmsc_dgl.data.dataset import Dataset
    inputs: List[Any] = [config.train_edges]
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
                            fix=f"resume without {flag('DATASET_DIR', 'a dataset')} (or with the run's own), or train into a new {flag('--out', 'out')}.")
    elif record is not None:
        dataset = load_dataset(run_dataset_dir(run_dir, record))
    _check_ks(config.ks, dataset.splits.num_negatives + 1 if dataset is not None else 1001)
    from mmsc_dgl.metapath.spec import parse_metapaths
    # a bad spec is refused here, not after the run directory is made (names: the dataset's relation map)
    parse_metapaths(config.metapaths, dataset.relation_map if dataset is not None else None,
                    getattr(dataset, "side", None))
    features: Any = "config"
    train_edges = None
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
            assert dataset.root is not None  # loaded from, prepared into or saved to a directory
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
                            f"with more {flag('--num-negatives', 'split.num_negatives')}.")


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
    _, metrics = finish(parts.model, fit, evaluator, config, run_dir)
    return TrainResult(run_dir, metrics, fit.history, fit.best_epoch, parts.dataset)
