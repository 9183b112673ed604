"""Run directories: what ``mmsc-dgl train``, ``evaluate`` and ``recommend`` call.

A run directory holds ``run.json`` (the dataset it used), ``config.json``, ``metapaths.pt``,
``checkpoint.pt`` (latest epoch), ``model.pt`` (the best epoch), ``history.json`` and
``metrics.json``.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pyarrow as pa
import torch

from mmsc_dgl import RELATIONS
from mmsc_dgl.config import SyntheticConfig, TrainConfig
from mmsc_dgl.errors import DataError
from mmsc_dgl.io import atomic_write_json, atomic_write_parquet
from mmsc_dgl.train.checkpoint import load_checkpoint
from mmsc_dgl.train.trainer import MODEL, Trainer, TrainResult

logger = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_ITEMS = 10_000
RUN_FILE = "run.json"


def _dataset_for_run(dataset_dir, run_dir: Path, seed: int, synthetic_items: int):
    from mmsc_dgl.data.dataset import Dataset, load_dataset
    if isinstance(dataset_dir, Dataset):
        if dataset_dir.root is None:
            dataset_dir.save(run_dir / "dataset", overwrite=True)
        return dataset_dir, Path(dataset_dir.root).resolve()
    if dataset_dir is not None:
        return load_dataset(dataset_dir), Path(dataset_dir).resolve()
    target = run_dir / "dataset"
    if target.exists():
        return load_dataset(target), target.resolve()
    from mmsc_dgl.data.prepare import prepare
    logger.info("no dataset given: preparing the built-in synthetic catalog (%d items, 20%% noise)", synthetic_items)
    dataset = prepare(synthetic=SyntheticConfig(num_items=synthetic_items, noise_rate=0.2, seed=seed), out=target)
    return dataset, target.resolve()


def train(dataset_dir=None, out: os.PathLike | str = "runs/mmsc", config: Optional[TrainConfig] = None,
          resume: bool = False, synthetic_items: int = DEFAULT_SYNTHETIC_ITEMS, progress: bool = True,
          stop_after: Optional[int] = None, overwrite: bool = False) -> TrainResult:
    """Train MMSC into the run directory ``out`` and evaluate it (``mmsc-dgl train`` is this).

    Args:
        dataset_dir: a prepared dataset directory, a :class:`~mmsc_dgl.data.dataset.Dataset`,
            or ``None`` for the built-in synthetic catalog (``synthetic_items`` items, 20% noise).
        out: the run directory.
        config: :class:`~mmsc_dgl.config.TrainConfig`.
        resume: continue the run in ``out`` from its last checkpoint.
        overwrite: delete an existing run in ``out`` first.
    """
    config = config or TrainConfig()
    run_dir = Path(out)
    if overwrite and not resume and run_dir.exists():
        import shutil
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume and (run_dir / RUN_FILE).exists() and dataset_dir is None:
        dataset_dir = json.loads((run_dir / RUN_FILE).read_text())["dataset"]
    dataset, dataset_path = _dataset_for_run(dataset_dir, run_dir, config.seed, synthetic_items)
    atomic_write_json(run_dir / RUN_FILE, {"dataset": str(dataset_path)})
    trainer = Trainer(dataset, run_dir, config, progress=progress)
    logger.info("%r on %s", trainer.model, trainer.device)
    return trainer.fit(resume=resume, stop_after=stop_after)


def load_run(run_dir: os.PathLike | str, device: Optional[str] = None) -> Trainer:
    """A trainer holding the run's best model, ready to evaluate or recommend."""
    run_dir = Path(run_dir)
    for name in (RUN_FILE, "config.json", MODEL):
        if not (run_dir / name).exists():
            raise DataError(f"the run directory lacks {name}.", path=run_dir,
                            fix="point to a finished mmsc-dgl train --out directory.")
    from mmsc_dgl.data.dataset import load_dataset
    config = TrainConfig.model_validate_json((run_dir / "config.json").read_text())
    if device is not None:
        config = config.model_copy(update={"device": device})
    dataset = load_dataset(json.loads((run_dir / RUN_FILE).read_text())["dataset"])
    trainer = Trainer(dataset, run_dir, config, progress=False)
    state = load_checkpoint(run_dir / MODEL)
    try:
        for r in RELATIONS:
            trainer.model.load_state_dict(state["states"][r])
    except (RuntimeError, KeyError) as err:
        raise DataError(f"model.pt does not fit this config: {err}", path=run_dir / MODEL,
                        fix="the run directory mixes two runs; train again.") from err
    trainer.relation_states = state["states"]
    trainer.model.eval()
    return trainer


def evaluate_run(run_dir: os.PathLike | str, pairs: Optional[os.PathLike | str] = None,
                 device: Optional[str] = None) -> dict:
    """Test, cold-start and (optionally) labelled-pair metrics of a finished run."""
    trainer = load_run(run_dir, device)
    pair_table = None
    if pairs is not None:
        from mmsc_dgl.data.prepare import pairs_as_nodes
        from mmsc_dgl.data.relations import RelationMap
        from mmsc_dgl.data.report import SkipReport
        report = SkipReport()
        relation_map = RelationMap.edgelist(",".join(f"{k}={v}" for k, v in trainer.dataset.relation_map.items()
                                                      if v in RELATIONS) or None)
        pair_table = pairs_as_nodes(pairs, trainer.dataset.catalog, relation_map, "auto", report)
        if report.total:
            logger.warning("pairs: %s", "; ".join(report.format()))
    metrics = trainer.evaluate(pairs=pair_table)
    atomic_write_json(Path(run_dir) / "evaluation.json", metrics)
    return metrics


def recommend(run_dir: os.PathLike | str, relation: str, k: int = 10, item: Optional[str] = None,
              device: Optional[str] = None, out: Optional[os.PathLike | str] = None) -> List[Dict]:
    """Top-``k`` items for one item (``item``) or for every item (written to ``out`` as parquet)."""
    if relation not in RELATIONS:
        raise DataError(f"unknown relation {relation!r}.", fix=f"use one of {', '.join(RELATIONS)}.")
    trainer = load_run(run_dir, device)
    if not trainer.model.has_embeddings:
        raise DataError(f"{trainer.config.architecture} scores pairs and has no item embeddings to retrieve with.",
                        path=run_dir, fix="recommend from an embedding model's run (mmsc, lightgcn, ...).")
    catalog = trainer.dataset.catalog
    emb = trainer.use_relation(relation).embed(relation).cpu()
    ids = catalog.ids.to_pylist()
    titles = catalog.titles()
    if item is not None:
        node = catalog.node(item)
        scores = emb @ emb[node]
        scores[node] = float("-inf")
        top = torch.topk(scores, min(k, len(ids) - 1))
        return [{"rank": i + 1, "item_id": ids[j], "title": titles[j], "score": float(s)}
                for i, (s, j) in enumerate(zip(top.values.tolist(), top.indices.tolist()))]
    if out is None:
        raise DataError("--all needs --out FILE.parquet.", fix="pass --out recs.parquet.")
    from mmsc_dgl.eval.retrieval import topk_all
    scores, top = topk_all(emb, k)
    width = top.shape[1]
    src = torch.arange(len(ids)).repeat_interleave(width).numpy()
    dst = top.flatten().numpy()
    rows_score = [scores.flatten().numpy()]
    rows_rank = [np.tile(np.arange(1, width + 1), len(ids))]
    id_array = pa.array(ids)
    table = pa.table({"item_id": id_array.take(pa.array(src)), "rank": np.concatenate(rows_rank).astype(np.int32),
                      "recommended_id": id_array.take(pa.array(dst)), "score": np.concatenate(rows_score),
                      "relation": pa.array([relation] * len(src))})
    atomic_write_parquet(out, table)
    return [{"items": len(ids), "rows": table.num_rows, "out": os.fspath(out)}]


def format_metrics(metrics: dict) -> List[str]:
    lines = []
    for split in ("test", "cold"):
        if split not in metrics:
            continue
        block = metrics[split]
        names = [m for m in next(iter(block.values())) if m != "queries"]
        lines.append(f"{split:<6}{'relation':<12}" + "".join(f"{m:>10}" for m in names) + f"{'queries':>9}")
        for r in RELATIONS:
            lines.append(f"{'':<6}{r:<12}" + "".join(f"{block[r][m]:>10.4f}" for m in names) + f"{block[r]['queries']:>9,}")
    if "pairs" in metrics:
        lines.append(f"pairs {'relation':<12}{'ROC-AUC':>10}{'PR-AUC':>10}{'F1':>10}{'pairs':>9}")
        for r, m in metrics["pairs"].items():
            lines.append(f"{'':<6}{r:<12}{m['ROC-AUC']:>10.4f}{m['PR-AUC']:>10.4f}{m['F1']:>10.4f}{m['pairs']:>9,}")
    return lines
