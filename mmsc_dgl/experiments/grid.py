"""Run an experiment grid: prepare each dataset once, train and evaluate every cell
(dataset x variant x seed x noise rate), and cache finished cells so a rerun only computes
what is missing.  ``mmsc-dgl experiment`` is :func:`run_experiment`."""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.data.dataset import dataset_fingerprint
from mmsc_dgl.errors import DataError
from mmsc_dgl.experiments.config import BEST_BASELINE, ExperimentConfig
from mmsc_dgl.fingerprint import fingerprint
from mmsc_dgl.io import atomic_write_json
from mmsc_dgl.lock import writer_lock
from mmsc_dgl.ownership import check_dir_parent, check_output_dir, inside, read_marker, write_marker
from mmsc_dgl.progress import eta, report

logger = logging.getLogger(__name__)

CELL_FILE = "cell.json"


@dataclass(frozen=True)
class Cell:
    dataset: str
    variant: str
    seed: int
    noise: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.variant}/noise-{self.noise:g}/seed-{self.seed}"


@dataclass
class ExperimentResult:
    out: Path
    rows: List[dict]
    skipped: Dict[str, str] = field(default_factory=dict)
    computed: int = 0
    cached: int = 0
    best_baseline: Dict[str, str] = field(default_factory=dict)


def _prepare_dataset(config: ExperimentConfig, name: str, out: Path, progress: bool) -> Optional[Path]:
    """The dataset directory for ``name`` (prepared once, reused while its spec is unchanged),
    or None when an optional dataset's inputs are missing."""
    from mmsc_dgl.data.prepare import prepare
    spec = config.datasets[name]
    if spec.path is not None:
        path = config.resolve(spec.path)
        if not (path / "dataset.json").exists():
            if spec.optional:
                return None
            raise DataError(f"dataset {name!r}: no prepared dataset here.", path=path,
                            fix="run mmsc-dgl prepare first, or fix datasets.{name}.path.")
        return path
    inputs = [config.resolve(p) for p in spec.inputs]
    missing = [p for p in inputs if not p.exists()]
    if missing:
        if spec.optional:
            return None
        raise DataError(f"dataset {name!r}: input file missing.", path=missing[0],
                        fix=f"fix datasets.{name}.inputs, or mark the dataset optional: true.")
    target = inside(out, out / "datasets" / name, f"dataset {name!r}")
    wanted = fingerprint({"spec": spec.model_dump(exclude={"train", "optional", "features"}),
                          "inputs": [str(p) for p in inputs]})
    stamp = target / "experiment.json"
    if not (stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == wanted):
        logger.info("preparing dataset %s -> %s", name, target)
        prepare(inputs, out=target, config=spec.prepare, synthetic=spec.synthetic, overwrite=True,
                progress=progress)
        atomic_write_json(stamp, {"fingerprint": wanted})
    if spec.features is not None:
        from mmsc_dgl.features.cache import extract_features
        # resumable and reused: finished chunks of a cache made with the same settings are kept
        extract_features(target, backend=spec.features, progress=progress)
    return target


def _e_llm_path(config: ExperimentConfig, variant: str, dataset_dir: Path) -> Path:
    spec = config.models[variant].e_llm
    assert spec is not None  # called for E_LLM variants only
    return dataset_dir / f"e_llm-{fingerprint(spec.model_dump())}.parquet"


def _e_llm_edges(config: ExperimentConfig, variant: str, dataset_dir: Path, seed: int, progress: bool) -> str:
    from mmsc_dgl.augment.select import augment
    spec = config.models[variant].e_llm
    assert spec is not None  # called for E_LLM variants only
    out = _e_llm_path(config, variant, dataset_dir)
    if not out.exists():
        augment(dataset_dir, judge=spec.judge, model=spec.model, threshold=spec.threshold,
                top_n=spec.top_n if spec.threshold is None else None, out=out, seed=0, progress=progress)
    return str(out)


def _load_row(run_dir: Path, cell: Cell, label: str, wall: Optional[float]) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").exists() else []
    cell_info = json.loads((run_dir / CELL_FILE).read_text()) if (run_dir / CELL_FILE).exists() else {}
    seconds = [h["seconds"] for h in history]
    # Validation NDCG@10 after each epoch, at the CPU seconds spent so far (time to a quality)
    validation, spent = [], 0.0
    for h in history:
        spent += h["seconds"]
        if all(f"val_{r}_NDCG@10" in h for r in RELATIONS):
            validation.append({"seconds": spent, **{r: h[f"val_{r}_NDCG@10"] for r in RELATIONS}})
    best = metrics.get("best_epoch") or {}
    # CPU time until the later relation's best validation epoch: what training needed
    last_best = max((int(e) for e in best.values() if e), default=len(seconds))
    return {"dataset": cell.dataset, "variant": cell.variant, "label": label, "seed": cell.seed,
            "noise": cell.noise, "test": metrics["test"], "cold": metrics.get("cold"),
            "warm_up": metrics.get("warm_up"),
            "epochs_run": metrics.get("epochs_run"), "best_epoch": metrics.get("best_epoch"),
            "epoch_seconds": float(np.mean(seconds)) if seconds else 0.0,
            "seconds_to_best": float(sum(seconds[:last_best])) if seconds else None,  # None: nothing trained
            "validation": validation,
            "wall_seconds": wall if wall is not None else cell_info.get("wall_seconds")}


def _cell_fingerprint(train_config, dataset_dir: Path) -> str:
    """What a finished cell was made of: its full train config and its dataset's content (the
    fingerprint ``dataset.json`` records), not where either lies, so an experiment directory can be
    moved or copied and its cells stay finished."""
    config = train_config.model_dump()
    if config.get("train_edges") and Path(config["train_edges"]).is_relative_to(dataset_dir):
        config["train_edges"] = str(Path(config["train_edges"]).relative_to(dataset_dir))  # E_LLM's edges
    return fingerprint({"config": config, "dataset": dataset_fingerprint(dataset_dir)})


def _expected_fingerprint(config: ExperimentConfig, cell: Cell, out: Path) -> str:
    """The fingerprint ``run_cell`` would stamp on ``cell`` now (nothing is computed)."""
    spec = config.datasets[cell.dataset]
    dataset_dir = config.resolve(spec.path) if spec.path is not None else out / "datasets" / cell.dataset
    train_config = config.train_config(cell.dataset, cell.variant, cell.seed, cell.noise)
    if config.models[cell.variant].e_llm is not None:
        train_config = train_config.model_copy(update={
            "train_edges": str(_e_llm_path(config, cell.variant, dataset_dir))})
    return _cell_fingerprint(train_config, dataset_dir)


def run_cell(config: ExperimentConfig, cell: Cell, dataset_dir: Path, out: Path, progress: bool = False):
    """Train and evaluate one cell unless its run directory already holds the same finished run.
    Returns ``(row, computed)``."""
    from mmsc_dgl.runs.training import train
    run_dir = inside(out, out / "cells" / cell.key, f"cell {cell.key}")
    train_config = config.train_config(cell.dataset, cell.variant, cell.seed, cell.noise)
    if config.models[cell.variant].e_llm is not None:
        train_config = train_config.model_copy(update={
            "train_edges": _e_llm_edges(config, cell.variant, dataset_dir, cell.seed, progress)})
    wanted = _cell_fingerprint(train_config, dataset_dir)
    stamp = run_dir / CELL_FILE
    try:
        same = stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == wanted
    except ValueError:
        same = False
    if same and (run_dir / "metrics.json").exists():
        return _load_row(run_dir, cell, config.label(cell.variant), None), False
    started = time.perf_counter()
    # The stamp is written once the cell is finished.  A run killed mid-way resumes from its last
    # epoch when train accepts it (same dataset and config); anything else starts clean.
    marker = read_marker(run_dir) if run_dir.is_dir() else None
    if run_dir.is_dir() and marker is None and {p.name for p in run_dir.iterdir()} <= {CELL_FILE}:
        shutil.rmtree(run_dir)  # a stamp left alone by an older version
    resumed = False
    if marker is not None and marker["kind"] == "run" and (run_dir / "checkpoint.pt").exists():
        try:
            train(str(dataset_dir), run_dir, train_config, resume=True, progress=progress)
            resumed = True
        except DataError as err:
            logger.info("%s: not resumable (%s); training it again", cell.key, err)
    if not resumed:
        train(str(dataset_dir), run_dir, train_config, overwrite=marker is not None, progress=progress)
    wall = round(time.perf_counter() - started, 2)
    atomic_write_json(stamp, {"fingerprint": wanted, "cell": cell.key, "wall_seconds": wall})
    return _load_row(run_dir, cell, config.label(cell.variant), wall), True


def best_baseline(config: ExperimentConfig, rows: Sequence[dict], dataset: str) -> Optional[str]:
    """The baseline with the best mean test NDCG@10 over both relations (and seeds) on ``dataset``."""
    scores = {}
    for variant in config.baselines:
        vals = [np.mean([r["test"][rel]["NDCG@10"] for rel in RELATIONS]) for r in rows
                if r["dataset"] == dataset and r["variant"] == variant and r["noise"] == 0]
        if vals:
            scores[variant] = float(np.mean(vals))
    return max(scores, key=lambda v: scores[v]) if scores else None


def main_cells(config: ExperimentConfig, datasets: Sequence[str], seeds: Sequence[int]) -> List[Cell]:
    return [Cell(d, v, s) for d in datasets for v in config.models for s in seeds]


def noise_cells(config: ExperimentConfig, datasets: Sequence[str], seeds: Sequence[int],
                best: Dict[str, str]) -> List[Cell]:
    if config.noise is None:
        return []
    cells = []
    for d in config.noise.datasets or list(config.datasets):
        if d not in datasets:
            continue
        for name in config.noise.models:
            variant = best.get(d) if name == BEST_BASELINE else name
            if variant is None:
                continue
            noise_seeds = list(seeds)[: config.noise.num_seeds] if config.noise.num_seeds else seeds
            cells += [Cell(d, variant, s, rate) for rate in config.noise.rates if rate > 0 for s in noise_seeds]
    return cells


def _worker_init(threads: int) -> None:
    """A cell process: its share of the cores, and the parent's log level."""
    import torch
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)


def _cells_in_processes(config: ExperimentConfig, cells: List[Cell], dataset_dirs: Dict[str, Path], out: Path,
                        jobs: int):
    """``run_cell`` for every cell, ``jobs`` at a time, each in its own process with
    ``cores // jobs`` threads; yields ``(index, row, computed)`` as cells finish.  E_LLM's edges
    are made first, once per dataset and model, so no two processes make the same file."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    for cell in cells:
        if config.models[cell.variant].e_llm is not None:
            _e_llm_edges(config, cell.variant, dataset_dirs[cell.dataset], cell.seed, progress=False)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(threads,))
    try:
        running = {pool.submit(run_cell, config, cell, dataset_dirs[cell.dataset], out): i
                   for i, cell in enumerate(cells)}
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                row, computed = future.result()  # a failed cell stops the grid (the others are cancelled)
                yield running.pop(future), row, computed
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_experiment(config: ExperimentConfig, out: os.PathLike | str, seeds: Optional[Sequence[int]] = None,
                   progress: bool = True, report: bool = True, publish: Optional[os.PathLike | str] = None,
                   jobs: int = 1) -> ExperimentResult:
    """Run (or complete) the grid of ``config`` into ``out``, then write the report
    (``results.json``, ``results.md`` and PNG plots; :mod:`mmsc_dgl.experiments.report`), with a
    copy in ``publish`` if given.  ``jobs`` cells are computed at once, each in its own process
    with an equal share of the cores (cells are independent; the report is the same).

    Example:
        >>> config = mmsc_dgl.load_experiment("examples/experiments/fast.yaml")  # doctest: +SKIP
        >>> run_experiment(config, "runs/experiments/fast").rows[:2]             # doctest: +SKIP
    """
    out = Path(out)
    check_dir_parent(out)
    check_output_dir(out, "experiment", resume=True, inputs=[config.source] if config.source else ())
    with writer_lock(out, "this experiment"):
        out.mkdir(parents=True, exist_ok=True)
        if read_marker(out) is None:  # a continued experiment keeps its marker as it is
            write_marker(out, "experiment")
        return _run_experiment(config, out, seeds, progress, report, publish, jobs)


def _run_experiment(config: ExperimentConfig, out: Path, seeds: Optional[Sequence[int]], progress: bool,
                    write: bool, publish: Optional[os.PathLike | str], jobs: int = 1) -> ExperimentResult:
    from tqdm.auto import tqdm
    seeds = list(seeds) if seeds is not None else list(config.seeds)
    result = ExperimentResult(out, [])
    dataset_dirs: Dict[str, Path] = {}
    for name in config.datasets:
        path = _prepare_dataset(config, name, out, progress)
        if path is None:
            result.skipped[name] = "inputs missing (optional dataset)"
            logger.warning("dataset %s skipped: its inputs are missing", name)
        else:
            dataset_dirs[name] = path

    def run_all(cells: List[Cell], stage: str) -> None:
        bar = tqdm(total=len(cells), desc=stage, disable=None if progress else True)
        started, ran = time.perf_counter(), 0
        rows: Dict[int, dict] = {}
        if jobs > 1 and len(cells) > 1:
            finished = _cells_in_processes(config, cells, dataset_dirs, out, min(jobs, len(cells)))
        else:
            finished = ((i, *run_cell(config, cell, dataset_dirs[cell.dataset], out)) for i, cell in enumerate(cells))
        for i, row, computed in finished:
            rows[i] = row
            result.computed += computed
            result.cached += not computed
            ran += computed
            bar.update(1)
            bar.set_postfix_str(cells[i].key)
            report("%s cell %d/%d %s %s: test NDCG@10 substitute %.4f, complement %.4f | ETA %s", stage, len(rows),
                   len(cells), "ran" if computed else "cached", cells[i].key, row["test"]["substitute"]["NDCG@10"],
                   row["test"]["complement"]["NDCG@10"],
                   eta(ran, ran + len(cells) - len(rows), time.perf_counter() - started) if ran else "-")
        bar.close()
        result.rows.extend(rows[i] for i in sorted(rows))  # the grid's order, however the cells finished

    run_all(main_cells(config, list(dataset_dirs), seeds), "main grid")
    result.best_baseline = {d: b for d in dataset_dirs if (b := best_baseline(config, result.rows, d))}
    run_all(noise_cells(config, list(dataset_dirs), seeds, result.best_baseline), "noise")
    if write:
        from mmsc_dgl.experiments.report import write_report
        write_report(config, result, publish)
    logger.info("experiment %s: %d cells computed, %d cached -> %s", config.name, result.computed, result.cached, out)
    return result


def report_only(config: ExperimentConfig, out: os.PathLike | str,
                publish: Optional[os.PathLike | str] = None) -> ExperimentResult:
    """Rebuild the report from finished cells in ``out`` without training anything."""
    out = Path(out)
    if not out.is_dir() or (read_marker(out) or {}).get("kind") != "experiment":
        raise DataError("no experiment here.", path=out, fix="run mmsc-dgl experiment without --report-only first.")
    with writer_lock(out, "this experiment"):
        return _report_only(config, out, publish)


def _report_only(config: ExperimentConfig, out: Path, publish: Optional[os.PathLike | str]) -> ExperimentResult:
    from mmsc_dgl.experiments.report import write_report
    result = ExperimentResult(out, [])
    stale: List[str] = []
    for stamp in sorted((out / "cells").glob(f"*/*/noise-*/seed-*/{CELL_FILE}")):
        run_dir = stamp.parent
        if not (run_dir / "metrics.json").exists():
            continue
        dataset, variant, noise, seed = run_dir.relative_to(out / "cells").parts
        if dataset not in config.datasets or variant not in config.models:
            continue
        cell = Cell(dataset, variant, int(seed[5:]), float(noise[6:]))
        try:
            stamped = json.loads(stamp.read_text()).get("fingerprint")
        except ValueError:
            stamped = None
        if stamped != _expected_fingerprint(config, cell, out):
            stale.append(cell.key)  # made with other settings than the config now asks for
            continue
        result.rows.append(_load_row(run_dir, cell, config.label(variant), None))
        result.cached += 1
    if stale:
        logger.warning("%d cell(s) were made with other settings than the config asks for and are left out "
                       "of the report (run without --report-only to recompute them): %s", len(stale),
                       ", ".join(stale[:5]) + (", ..." if len(stale) > 5 else ""))
    if not result.rows:
        raise DataError("no finished cell to report.", path=out, fix="run mmsc-dgl experiment without --report-only.")
    result.skipped = {d: "no finished cell" for d in config.datasets if not any(r["dataset"] == d for r in result.rows)}
    result.best_baseline = {d: b for d in config.datasets if (b := best_baseline(config, result.rows, d))}
    write_report(config, result, publish)
    return result
