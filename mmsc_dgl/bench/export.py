"""``mmsc-dgl export-tensors``: everything a training run needs, as plain tensors in one file.

The GPU hosts have torch and Triton but no DGL (and no pyarrow or pydantic), so the CPU side
builds the meta-path tables, the content features and the validation negatives, and writes them
with ``torch.save``; :mod:`mmsc_dgl.bench.gpu_train` loads the file with ``weights_only=True``.

The file carries the whole model config and every training setting the trainer reads, so
``gpu_train`` trains the model ``mmsc-dgl train`` trains with the same config (path evidence,
links, content paths and the graph branch are built from the exported training edges and
features, as the CLI builds them) and validates it on the same queries and negatives.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.config import TrainConfig
from mmsc_dgl.io import atomic_path

logger = logging.getLogger(__name__)

FORMAT = "mmsc_dgl-tensors/2"
"""Version 2 (2026-12-06) added the trainer's settings (epochs, patience, steps, determinism) and
takes the validation queries from the config, as training does."""

TRAINER_SETTINGS = ("lr", "weight_decay", "batch_size", "seed", "epochs", "patience", "steps_per_epoch",
                    "deterministic", "val_queries", "ks", "cold_neighbors")
"""The TrainConfig fields the GPU trainer reads (as a namespace: the host has no pydantic)."""


def export_tensors(dataset_dir: os.PathLike | str, out: os.PathLike | str, config: Optional[TrainConfig] = None,
                   progress: bool = True, overwrite: bool = False) -> dict:
    """Write ``out`` (a ``.pt`` file) for ``dataset_dir`` under ``config`` (tables, features,
    model and trainer settings, and ``config.val_queries`` validation queries per relation with
    their negatives, the subset training validates on); returns a summary (sizes in MiB).  An
    existing ``out`` is replaced only with ``overwrite``."""
    from mmsc_dgl.data.dataset import load_dataset
    from mmsc_dgl.eval.evaluate import query_subset
    from mmsc_dgl.errors import DataError
    from mmsc_dgl.train.build import build_run
    from mmsc_dgl.ownership import check_output_file
    check_output_file(out, overwrite=overwrite, inputs=[dataset_dir])
    config = config or TrainConfig()
    if config.architecture != "mmsc":
        raise DataError(f"export-tensors prepares MMSC training; the config names {config.architecture!r}.",
                        fix="export with architecture: mmsc.")
    # The trainer's own preparation (noise injection, walk tables, features, E_LLM edges), so an
    # export trains exactly what `mmsc-dgl train` would.
    parts = build_run(load_dataset(dataset_dir), config, progress=progress)
    dataset, tables, features = parts.dataset, parts.tables, parts.features
    assert tables is not None  # an MMSC run has meta-path tables
    from mmsc_dgl.features.base import ContentFeatures
    if features is not None and not isinstance(features, ContentFeatures):
        raise DataError(f"export-tensors writes frozen feature tokens; {features.source} features are category "
                        "tokens whose embeddings are learnt, which the export does not carry yet.",
                        fix="export with features hashed, text, a feature file, or none.")
    sampler = dataset.negative_sampler()
    val = {}
    for r in RELATIONS:
        edges = dataset.splits.val[r]
        q = query_subset(len(edges), config.val_queries, config.seed)
        val[r] = {"src": torch.from_numpy(edges.src[q]), "dst": torch.from_numpy(edges.dst[q]),
                  "negatives": torch.from_numpy(np.ascontiguousarray(sampler.sample(r, "val", q, edges.src[q])))}
    payload = {
        "format": FORMAT, "num_items": dataset.num_items, "dataset": str(Path(dataset_dir).resolve()),
        "metapaths": {name: {"indptr": t.csr().indptr, "indices": t.csr().indices} for name, t in tables.items()},
        "features": None if features is None else {"tokens": features.tokens.contiguous(), "mask": features.mask},
        "train": {r: {"src": torch.from_numpy(parts.train_edges[r].src),
                      "dst": torch.from_numpy(parts.train_edges[r].dst)} for r in RELATIONS},
        "val": val,
        "model": config.model.model_dump(),
        "train_config": {name: getattr(config, name) for name in TRAINER_SETTINGS},
    }
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    size = Path(out).stat().st_size / 2**20
    summary = {"out": str(out), "items": dataset.num_items, "metapaths": len(tables),
               "pairs": int(sum(t.num_pairs for t in tables.values())), "mib": round(size, 1)}
    logger.info("exported %s", summary)
    return summary
