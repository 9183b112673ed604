"""``mmsc-dgl tune``: an Optuna search over MMSC's settings on one dataset, scored by validation
NDCG@10 (mean of both relations), with bad trials pruned epoch by epoch.

The study lives in ``DIR/study.db`` (SQLite), so a killed search resumes where it stopped: the
trial that was running when the process died is marked failed and queued again with the same
settings.  Each finished search writes ``DIR/best.yaml`` (a :class:`~mmsc_dgl.config.TrainConfig`
file that ``mmsc-dgl train --config`` takes) and ``DIR/trials.json`` (every trial).  Trials
train in memory: nothing but the study and those two files is written.

The search space (:data:`SEARCH_SPACE`) is documented in docs/training.md.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from mmsc_dgl.config import TrainConfig, merge
from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.io import atomic_write_json, atomic_write_text
from mmsc_dgl.lock import writer_lock
from mmsc_dgl.ownership import check_dir_parent, check_output_dir, read_marker, write_marker

logger = logging.getLogger(__name__)

STUDY = "study.db"
STUDY_NAME = "mmsc-tune"


def _space(trial) -> Dict[str, Any]:
    """One draw of the search space as TrainConfig overrides."""
    return {
        "lr": trial.suggest_float("lr", 1e-3, 3e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [512, 1024, 2048]),
        "max_neighbors": trial.suggest_categorical("max_neighbors", [8, 16, 32]),
        "weight_decay": trial.suggest_categorical("weight_decay", [0.0, 1e-5, 1e-4]),
        "model": {
            "hidden": trial.suggest_categorical("hidden", [32, 64, 128]),
            "negatives": trial.suggest_categorical("negatives", [4, 8, 16, 32]),
            "ssl_weight": trial.suggest_categorical("ssl_weight", [0.0, 0.05, 0.1]),
            "feat_drop": trial.suggest_float("feat_drop", 0.0, 0.3),
            "loss": trial.suggest_categorical("loss", ["softmax", "triplet"]),
            "margin": trial.suggest_categorical("margin", [0.25, 0.5, 1.0]),
            # the parts whose ablations on real data are close calls (docs/results.md)
            "graph_branch": trial.suggest_categorical("graph_branch", [0, 2, 3]),
            "task_gate": trial.suggest_categorical("task_gate", [True, False]),
            "semantic_fusion": trial.suggest_categorical("semantic_fusion", ["gate", "concat"]),
        },
    }


SEARCH_SPACE: Callable = _space
"""The documented search space: ``f(optuna trial) -> TrainConfig overrides``."""


class _Pruned(Exception):
    """Raised inside the trainer's validator to stop a trial Optuna prunes."""


def _mean_ndcg(metrics: dict) -> float:
    return sum(m["NDCG@10"] for m in metrics.values()) / len(metrics)


def tune(dataset_dir: os.PathLike | str, out: os.PathLike | str, trials: int, base: Optional[TrainConfig] = None,
         seed: int = 0, progress: bool = True, space: Callable = SEARCH_SPACE) -> dict:
    """Run (or continue) the search in ``out`` until it holds ``trials`` finished or pruned
    trials; returns the best trial's ``{"value", "params", "config"}``.

    Args:
        dataset_dir: a prepared dataset directory.
        out: the study directory (new, or one this function wrote: it is continued).
        trials: how many trials the study should hold when done.
        base: the TrainConfig the search varies (default: the defaults).
        seed: seed of the sampler and of every trial's training.
        space: ``f(trial) -> TrainConfig overrides`` (default :data:`SEARCH_SPACE`).
    """
    try:
        import optuna
    except ImportError as err:  # a declared dependency; an environment may still lack it
        raise DataError("mmsc-dgl tune needs Optuna.", fix="pip install 'optuna>=3.5,<5'.") from err
    from mmsc_dgl.data.dataset import load_dataset
    base = base or TrainConfig()
    out = Path(out)
    check_dir_parent(out)
    check_output_dir(out, "tune", resume=True, inputs=[dataset_dir])
    dataset = load_dataset(dataset_dir)
    problems = dataset.warnings()
    if problems:
        raise DataError("the dataset cannot be tuned on: " + " ".join(problems), path=dataset_dir,
                        fix=f"prepare it with more edges per item or a lower {flag('--min-degree', 'split.min_degree')}.")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with writer_lock(out, "this study"):
        out.mkdir(parents=True, exist_ok=True)
        if read_marker(out) is None:  # a continued tune keeps its marker as it is
            write_marker(out, "tune")
        study = optuna.create_study(
            study_name=STUDY_NAME, storage=f"sqlite:///{(out / STUDY).resolve()}", direction="maximize",
            load_if_exists=True, pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))
        _check_identity(study, _identity(dataset_dir, base, seed), out)
        # Seeded by the study's length too: a resumed search must not draw its first trials again.
        study.sampler = optuna.samplers.TPESampler(seed=seed * 1_000_003 + len(study.trials))
        _requeue_interrupted(study)
        done = lambda: sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # noqa: E731
                           for t in study.trials)
        while done() < trials:
            study.optimize(lambda trial: _objective(trial, dataset, base, seed, space), n_trials=1,
                           catch=(DataError,))
            last = study.trials[-1]
            logger.info("trial %d/%d: %s%s", done(), trials, last.state.name.lower(),
                        f" (validation NDCG@10 {last.value:.4f})" if last.value is not None else "")
        return _write_best(study, base, space, out)


def _identity(dataset_dir: os.PathLike | str, base: TrainConfig, seed: int) -> Dict[str, str]:
    """What makes a study what it is: its dataset (fingerprint), the settings it varies and its
    seed.  The device and kernel do not change what a trial learns."""
    from mmsc_dgl.data.dataset import dataset_fingerprint
    from mmsc_dgl.fingerprint import fingerprint
    settings = {k: v for k, v in base.model_dump(mode="json").items() if k not in ("device", "impl", "seed")}
    return {"dataset_fingerprint": dataset_fingerprint(dataset_dir), "settings": fingerprint(settings),
            "seed": str(seed), "dataset": str(Path(dataset_dir).resolve())}


def _check_identity(study, identity: Dict[str, str], out: Path) -> None:
    """A new study records ``identity``; a study continued must have been made with the same
    dataset, settings and seed, or its trials (and best.yaml) would mix two searches."""
    recorded = study.user_attrs.get("identity")
    if recorded is None:
        if study.trials:  # a study from before identities were recorded: adopt it as it is
            logger.warning("%s records no dataset; continuing it as the study of %s", out / STUDY,
                           identity["dataset"])
        study.set_user_attr("identity", identity)
        return
    if recorded.get("dataset_fingerprint") != identity["dataset_fingerprint"]:
        raise DataError(f"this study was made on another dataset ({recorded.get('dataset')}); continuing it "
                        f"would mix trials of both.", path=out, fix=f"choose a new {flag('--out', 'out')} for this dataset.")
    changed = [name for name in ("settings", "seed") if recorded.get(name) != identity[name]]
    if changed:
        raise DataError(f"this study was made with another {' and '.join(changed)} (--config / --seed); "
                        f"continuing it would mix two searches.", path=out,
                        fix="pass the study's own --config and --seed, or choose a new --out.")


def _requeue_interrupted(study) -> None:
    """Trials left RUNNING by a killed process fail, and are queued again with their settings."""
    import optuna
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params)
        logger.warning("trial %d was interrupted; queued again", trial.number)


def trial_config(base: TrainConfig, overrides: Dict[str, Any], seed: int) -> TrainConfig:
    return TrainConfig.from_mapping(merge(base.model_dump(), {**overrides, "seed": seed}))


def _objective(trial, dataset, base: TrainConfig, seed: int, space: Callable) -> float:
    import optuna

    from mmsc_dgl.eval.evaluator import Evaluator
    from mmsc_dgl.train.build import build_run
    from mmsc_dgl.train.trainer import Trainer
    config = trial_config(base, space(trial), seed)
    parts = build_run(dataset, config, progress=False)
    evaluator = Evaluator(parts.dataset, config, parts.features, parts.device)
    best = {"value": float("-inf")}
    started = time.perf_counter()

    def validate(model):
        metrics = evaluator.validate(model)
        value = _mean_ndcg(metrics)
        best["value"] = max(best["value"], value)
        step = len(trial.user_attrs.get("curve", []))
        trial.set_user_attr("curve", trial.user_attrs.get("curve", []) + [round(value, 5)])
        trial.report(value, step)
        if trial.should_prune():
            raise _Pruned()
        return metrics

    try:
        Trainer(parts.model, config, progress=False).fit(parts.batches(), validate)
    except _Pruned:
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        raise optuna.TrialPruned() from None
    trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
    return best["value"]


def _write_best(study, base: TrainConfig, space: Callable, out: Path) -> dict:
    import optuna
    import yaml  # type: ignore[import-untyped]
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not finished:
        raise DataError("no trial of the study finished (all were pruned or failed).", path=out / STUDY,
                        fix=f"run more {flag('--trials', 'trials')}.")
    best = study.best_trial
    config = trial_config(base, space(optuna.trial.FixedTrial(best.params)), base.seed)
    data = {k: v for k, v in config.model_dump(mode="json").items() if k != "seed"}
    text = ("# The best settings of mmsc-dgl tune (validation NDCG@10 "
            f"{best.value:.4f}, trial {best.number}); use with: mmsc-dgl train --config best.yaml\n"
            + yaml.safe_dump(data, sort_keys=False))
    atomic_write_text(out / "best.yaml", text)
    rows = [{"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params,
             "curve": t.user_attrs.get("curve", []), "seconds": t.user_attrs.get("seconds")}
            for t in study.trials]
    atomic_write_json(out / "trials.json", {"best": {"number": best.number, "value": best.value,
                                                     "params": best.params}, "trials": rows})
    return {"value": best.value, "params": best.params, "config": data, "trials": len(rows)}
