"""The Trainer, in RecBole's shape: it is handed a built model and its data, and owns the loop.

Adam over mini-batches, validation after every epoch, per-relation model selection, early
stopping, an atomic checkpoint every epoch and a resume that ends where an uninterrupted run
would.  It reads no input files and builds no graph (torch alone: the GPU hosts use it too);
:mod:`mmsc_dgl.train.build` assembles what it trains, and the
:class:`~mmsc_dgl.eval.evaluator.Evaluator` validates.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Union

import torch

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.determinism import deterministic_algorithms
from mmsc_dgl.errors import DataError, flag
from mmsc_dgl.progress import duration, eta, report
from mmsc_dgl.train.checkpoint import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from mmsc_dgl.data.dataset import Dataset

logger = logging.getLogger(__name__)

Batches = Callable[[torch.Generator], Iterable[dict]]
"""``batches(generator)``: one epoch of batches, everything random drawn from ``generator``
(seeded by ``(seed, epoch)``); ``len(batches)``, if defined, is the number of steps."""
Validator = Callable[[torch.nn.Module], Dict[str, Dict[str, float]]]
"""``validator(model)``: per relation, validation metrics holding ``"NDCG@10"``."""


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns."""

    history: List[dict] = field(default_factory=list)
    best_epoch: Dict[str, int] = field(default_factory=dict)
    relation_states: Dict[str, dict] = field(default_factory=dict)
    epochs_run: int = 0
    finished: bool = True
    """False when ``stop_after`` ended the call before training did."""


@dataclass
class TrainResult:
    """What :func:`mmsc_dgl.train <mmsc_dgl.runs.training.train>` returns."""

    run_dir: Path
    metrics: dict
    history: List[dict] = field(default_factory=list)
    best_epoch: Dict[str, int] = field(default_factory=dict)
    dataset: Optional["Dataset"] = None
    """The dataset the run was trained on."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    """Trains a handed model.

    Args:
        model: a :class:`~mmsc_dgl.models.base.Recommender` (``loss``, ``trainable``) on its device.
        config: anything with ``lr``, ``weight_decay``, ``epochs``, ``patience``, ``seed`` and
            ``deterministic`` (:class:`~mmsc_dgl.config.TrainConfig`, or a namespace on a host
            without pydantic).
        checkpoint: the checkpoint file (written after every epoch); ``None`` for none.
        identity: what a checkpoint must have been made with to be resumed (a config
            fingerprint); a mismatch is refused.
        progress: draw a bar per epoch on a terminal.
        sync: for data-parallel training (:mod:`mmsc_dgl.distributed.training`), an object with
            ``gradients(model)`` (called after every ``backward``: average the gradients over
            the processes) and ``agree(metrics)`` (every process takes one process's validation
            metrics, so all stop and select alike); ``None`` on one process.
        writes_checkpoints: False on every data-parallel process but the one that writes the run
            (they still read the checkpoint to resume).
        sharded: tables whose rows live outside the model's ``state_dict`` and are updated by
            their own (sparse) optimiser (:mod:`mmsc_dgl.distributed.sharded`), or ``None``: an
            object with ``step()`` (after every dense optimiser step), ``keep_best(relation)``
            (the relation's best epoch so far is this one: keep the rows as they are now),
            ``save(epoch)`` (before the epoch's checkpoint is written; every process) and
            ``restore(epoch)`` (after a checkpoint of that epoch was loaded to resume).
    """

    def __init__(self, model: torch.nn.Module, config, checkpoint: Optional[Union[str, Path]] = None,
                 identity: Optional[str] = None, progress: bool = True, sync=None, writes_checkpoints: bool = True,
                 sharded=None):
        self.model = model
        self.config = config
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.identity = identity
        self.progress = progress
        self.sync = sync
        self.writes_checkpoints = writes_checkpoints
        self.sharded = sharded
        self._state: Optional[dict] = None
        params = list(model.parameters())
        self.optimizer = (torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
                          if getattr(model, "trainable", True) and params else None)

    @property
    def device(self) -> torch.device:
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def fit(self, batches: Batches, validator: Validator, resume: bool = False,
            stop_after: Optional[int] = None) -> FitResult:
        """Train until ``config.epochs`` or early stopping (no relation better on validation NDCG@10
        for ``patience`` epochs).  Each relation keeps the weights of its best epoch.  With
        ``resume``, continue from the checkpoint if there is one (:meth:`resume_checkpoint`, unless
        already called).  ``stop_after`` ends after that many epochs of this call (to test
        interrupted runs)."""
        with deterministic_algorithms(self.config.deterministic):
            return self._fit(batches, validator, resume, stop_after)

    @staticmethod
    def _fresh_state() -> dict:
        return {"epoch": 0, "best": {r: -1.0 for r in RELATIONS}, "best_epoch": {r: -1 for r in RELATIONS},
                "bad_epochs": 0, "history": [], "best_state": {r: None for r in RELATIONS}}

    def resume_checkpoint(self) -> int:
        """Load the checkpoint (model, optimiser, RNG, history) if there is one; the next
        :meth:`fit` continues from it.  Returns the epochs already done (0 without one).
        A damaged checkpoint, or one made under another identity, is refused."""
        self._state = self._load_state()
        return self._state["epoch"]

    def _load_state(self) -> dict:
        state = self._fresh_state()
        path = self.checkpoint
        if path is None or not path.exists():
            return state
        ckpt = load_checkpoint(path)
        missing = [k for k in ("config", "model", "optimizer", "rng_state", *state) if k not in ckpt]
        if missing:
            raise DataError(f"the checkpoint lacks {', '.join(missing)}.", path=path,
                            fix=f"train the run again from scratch with {flag('--overwrite', 'overwrite=True')}.")
        if self.identity is not None and ckpt["config"] != self.identity:
            raise DataError("the checkpoint was made with another config.", path=path,
                            fix=f"resume with the same config, or train into a new {flag('--out', 'out')}.")
        self.model.load_state_dict(ckpt["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_state"])
        if self.sharded is not None:
            self.sharded.restore(int(ckpt["epoch"]))
        logger.info("resumed %s at epoch %d", path.parent, ckpt["epoch"])
        return {k: ckpt[k] for k in state}

    def _bar(self, batches: Batches, generator: torch.Generator, desc: str):
        """The epoch's batches, under a tqdm bar on a terminal (tqdm is optional on GPU hosts)."""
        epoch = batches(generator)
        if not self.progress:
            return epoch
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - a bare GPU host
            return epoch
        return tqdm(epoch, desc=desc, leave=False, total=len(batches) if hasattr(batches, "__len__") else None,
                    disable=None)

    def _fit(self, batches: Batches, validator: Validator, resume: bool, stop_after: Optional[int]) -> FitResult:
        cfg = self.config
        path = self.checkpoint
        if resume and self._state is None:
            self.resume_checkpoint()
        elif not resume and path is not None and path.exists() and self.writes_checkpoints:
            raise DataError(f"{path.parent} already holds a run.", path=path,
                            fix=f"pass {flag('--resume', 'resume=True')} to continue it, {flag('--overwrite', 'overwrite=True')} to replace it, or choose another {flag('--out', 'out')}.")
        state: dict = self._state if resume and self._state is not None else self._fresh_state()
        self._state = None
        self.model.train()
        device = self.device
        ran = 0
        fit_started = time.perf_counter()
        optimizer = self.optimizer
        if optimizer is None:  # nothing to learn (content cosine, heuristics): evaluate as is
            logger.info("%r has nothing to train; evaluating it as it is", self.model)
            state["epoch"] = cfg.epochs
        while optimizer is not None and state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
            epoch = state["epoch"]
            generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            _sync(device)
            started = time.perf_counter()
            sums: Dict[str, float] = {}
            steps = edges = 0
            bar = self._bar(batches, generator, f"epoch {epoch + 1}/{cfg.epochs}")
            for batch in bar:
                parts = self.model.loss(batch)
                optimizer.zero_grad(set_to_none=True)
                parts["total"].backward()
                if self.sync is not None:
                    self.sync.gradients(self.model)
                optimizer.step()
                if self.sharded is not None:
                    self.sharded.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                if not math.isfinite(sums["total"]):  # a diverged model must not go on to be evaluated
                    raise DataError(f"training diverged: the loss became {float(parts['total'])} at epoch "
                                    f"{epoch + 1}, step {steps + 1}.",
                                    fix=f"lower the learning rate ({flag('--lr', 'TrainConfig.lr')}), or check the features for extreme values.")
                steps += 1
                edges += sum(batch[r][0].numel() for r in RELATIONS if r in batch)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{float(parts['total']):.4f}")
            _sync(device)
            train_seconds = time.perf_counter() - started
            val = validator(self.model)
            if self.sync is not None:
                val = self.sync.agree(val)
            self.model.train()
            record = {"epoch": epoch + 1, **{f"loss_{k}": v / max(steps, 1) for k, v in sums.items()},
                      "train_seconds": round(train_seconds, 3), "steps": steps, "edges": edges,
                      **{f"val_{r}_{m}": val[r][m] for r in RELATIONS for m in ("HR@10", "NDCG@10") if m in val[r]},
                      "seconds": round(time.perf_counter() - started, 2)}
            state["history"].append(record)
            improved = False
            for r in RELATIONS:
                if val[r]["NDCG@10"] > state["best"][r]:
                    improved = True
                    state["best"][r] = val[r]["NDCG@10"]
                    state["best_epoch"][r] = epoch + 1
                    state["best_state"][r] = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                    if self.sharded is not None:
                        self.sharded.keep_best(r)
            state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
            state["epoch"] = epoch + 1
            if self.checkpoint is not None and self.sharded is not None:
                self.sharded.save(epoch + 1)  # every process its shards, before the checkpoint names the epoch
            if self.checkpoint is not None and self.writes_checkpoints:
                save_checkpoint(self.checkpoint, {**state, "model": self.model.state_dict(),
                                                  "optimizer": optimizer.state_dict(),
                                                  "rng_state": torch.get_rng_state(), "config": self.identity})
            # Printed once the epoch's checkpoint is on disk: a line seen is an epoch kept.
            report("epoch %d/%d: loss %.4f | val NDCG@10 substitute %.4f, complement %.4f | %s | ETA %s (at most)",
                   epoch + 1, cfg.epochs, record.get("loss_total", float("nan")),
                   val["substitute"]["NDCG@10"], val["complement"]["NDCG@10"], duration(record["seconds"]),
                   eta(ran + 1, ran + 1 + cfg.epochs - epoch - 1, time.perf_counter() - fit_started))
            ran += 1
            if stop_after is not None and ran >= stop_after:
                return FitResult(state["history"], dict(state["best_epoch"]), {}, state["epoch"], finished=False)
        states = {r: state["best_state"][r] or self.model.state_dict() for r in RELATIONS}
        return FitResult(state["history"], dict(state["best_epoch"]), states, state["epoch"])
