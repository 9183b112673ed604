"""What happens once training has ended, written once for every trainer: the single-machine
run (:func:`~mmsc_dgl.runs.training.train`), the distributed one
(:mod:`mmsc_dgl.distributed.training`) and the training benchmark (:mod:`mmsc_dgl.bench.train`).

The sequence: the model's own after-training step (:meth:`Recommender.after_training
<mmsc_dgl.models.base.Recommender.after_training>`; MMSC calibrates its path evidence there),
the cold-start tower where the config asks for one, the weights written (``model.pt``, its
digest in ``run.json``), the test metrics, then ``metrics.json`` and ``history.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple, Union

from torch import nn

from mmsc_dgl.io import atomic_write_json
from mmsc_dgl.train.checkpoint import save_checkpoint
from mmsc_dgl.train.cold_start import fit_cold_start
from mmsc_dgl.train.trainer import FitResult

if TYPE_CHECKING:  # the GPU trainer finishes its fit on a host without pydantic (runs.record needs it)
    from types import SimpleNamespace

    from mmsc_dgl.config import TrainConfig


def after_training(model: nn.Module, relation_states: Dict[str, dict], evaluator) -> Tuple[Dict[str, dict], dict]:
    """The model's after-training step, or nothing for a module without one (the trainer takes
    any module with a ``loss``): ``(states to save and test, report for metrics.json)``."""
    hook = getattr(model, "after_training", None)
    if hook is None:
        return relation_states, {}
    return hook(relation_states, evaluator)


def finish(model: nn.Module, fit: FitResult, evaluator, config: Union["TrainConfig", "SimpleNamespace"], run_dir: Optional[Path] = None,
           writer: bool = True, tower: bool = True,
           agree: Optional[Callable[[], None]] = None, test: bool = True,
           mark: Optional[Callable[[str], None]] = None) -> Tuple[Dict[str, dict], dict]:
    """Turn a finished fit into a run's weights and metrics.

    Args:
        model: the trained model.
        fit: what :meth:`Trainer.fit <mmsc_dgl.train.trainer.Trainer.fit>` returned (finished).
        evaluator: the run's :class:`~mmsc_dgl.eval.evaluator.Evaluator`; a cold-start tower
            fitted here becomes its ``cold_start``.
        config: the run's config (``cold_start``, ``cold_neighbors``, ``cold_rounds``, ``seed``),
            or a namespace with the same fields where pydantic is not installed (the GPU host).
        run_dir: where ``model.pt``, ``metrics.json`` and ``history.json`` go; ``None`` writes
            nothing (the benchmark).
        writer: whether this process writes (rank 0 of a distributed job); every process
            computes the same states and takes part in the evaluation.
        tower: fit the cold-start tower when ``config.cold_start`` is ``"tower"`` or ``"aldi"`` (the distributed
            trainer and the benchmark place cold items with Eq. 12).
        agree: called before anything is written (the distributed job checks that every rank
            holds rank 0's weights).
        test: compute the test metrics; ``False`` where the evaluator knows the validation
            split only (the GPU trainer, :mod:`mmsc_dgl.bench.gpu_train`): the metrics are then
            the after-training report and the epochs.
        mark: called with ``"calibrated"`` after the model's after-training step and
            ``"evaluated"`` after the test metrics (the distributed trainer's memory phases).

    Returns:
        ``(states, metrics)``: each relation's weights as saved, and the metrics as written.
    """
    states, report = after_training(model, fit.relation_states, evaluator)
    if mark is not None:
        mark("calibrated")
    cold_report: dict = {}
    if tower and config.cold_start in ("tower", "aldi"):
        evaluator.cold_start, cold_report = fit_cold_start(model, states, evaluator, k=config.cold_neighbors,
                                                           seed=config.seed, rounds=config.cold_rounds,
                                                           distill=config.cold_start == "aldi")
    if agree is not None:
        agree()
    target = run_dir if writer else None
    if target is not None:
        from mmsc_dgl.runs.record import HISTORY, METRICS, MODEL, record_weights
        cold = evaluator.cold_start
        save_checkpoint(target / MODEL, {"states": states, "config": config.model_dump_json(),
                                          "best_epoch": fit.best_epoch,
                                          "cold_start": cold.state() if cold is not None and cold.towers else None})
        record_weights(target)
    metrics = evaluator.evaluate(model, states) if test else {}
    if mark is not None:
        mark("evaluated")
    metrics.update(report)
    if cold_report:
        metrics["cold_start"] = cold_report
    metrics["best_epoch"] = fit.best_epoch
    metrics["epochs_run"] = fit.epochs_run
    if target is not None:
        atomic_write_json(target / METRICS, metrics)
        atomic_write_json(target / HISTORY, fit.history)
    return states, metrics
