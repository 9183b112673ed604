"""MMSC training on a device from an exported tensor file: reference kernel against the fused
Triton kernel (or DGL's on CPU), epoch time and training edges per second.

Torch-only on purpose (the GPU hosts have neither DGL, pyarrow nor pydantic):

    python -m mmsc_dgl.bench.gpu_train --export runs/export/syn10k.pt --device cuda --json out.json

The export comes from ``mmsc-dgl export-tensors`` on a CPU machine, and this trains the model
``mmsc-dgl train`` trains with the export's config: the same :class:`~mmsc_dgl.models.mmsc.MMSC`
(path evidence, links, content paths, graph branch), the same
:class:`~mmsc_dgl.train.trainer.Trainer`, the same validation
(:class:`~mmsc_dgl.eval.evaluator.Evaluator` on the exported queries and negatives) and the same
calibration after training.  Every kernel starts from the same weights and sees the same
batches; the table gives the validation NDCG@10 of each, before and after calibration, so a
faster kernel never hides a different model.  The cold-start tower (``cold_start: tower``)
places cold items only, which validation never ranks, so it is not trained here.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, cast

import numpy as np
import torch

from mmsc_dgl.schema import RELATIONS
logger = logging.getLogger("gpu_train")

FORMAT = "mmsc_dgl-tensors/2"  # mmsc_dgl.bench.export.FORMAT (that module needs pydantic)


def load_export(path) -> dict:
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an mmsc-dgl export-tensors file of this version (format "
                         f"{data.get('format')!r}, expected {FORMAT!r}); write one with mmsc-dgl export-tensors")
    return data


class ExportedEdges:
    """Held-out edges as numpy ``src``/``dst`` (the role of :class:`~mmsc_dgl.data.edges.RelationEdges`,
    which needs pyarrow)."""

    def __init__(self, split: dict):
        self.src, self.dst = split["src"].numpy(), split["dst"].numpy()

    def __len__(self) -> int:
        return len(self.src)


class ExportedNegatives:
    """The validation negatives as exported, in the :class:`~mmsc_dgl.data.negatives.NegativeSampler`
    role: row ``q`` of the exported queries has the negatives the split's sampler drew for it."""

    def __init__(self, val: Dict[str, dict]):
        self.val = val

    def sample(self, relation: str, split: str, query: np.ndarray, src: np.ndarray) -> np.ndarray:
        if split != "val":
            raise ValueError(f"an export carries validation negatives only, not {split!r}")
        return self.val[relation]["negatives"][torch.from_numpy(np.asarray(query, dtype=np.int64))].numpy()


def evaluator_of(data: dict, device: torch.device):
    """The CLI's :class:`~mmsc_dgl.eval.evaluator.Evaluator` over the exported validation queries
    (already the config's seeded subset, so all of them are ranked)."""
    from mmsc_dgl.eval.evaluator import Evaluator
    val = {r: ExportedEdges(data["val"][r]) for r in RELATIONS}
    dataset = SimpleNamespace(splits=SimpleNamespace(val=val))
    config = SimpleNamespace(**{**data["train_config"], "val_queries": None})
    return Evaluator(dataset, config, device=device, sampler=ExportedNegatives(data["val"]))


def build_model(data: dict, impl: str, device: torch.device):
    """The export's MMSC, built as :func:`mmsc_dgl.train.build.build_run` builds it (the seed
    drawn right before, the training edges as its graph)."""
    from mmsc_dgl.features.base import ContentFeatures
    from mmsc_dgl.models.mmsc import MMSC
    from mmsc_dgl.ops import CSR
    n = data["num_items"]
    # The model settings travel as a namespace: this host has no pydantic for a ModelConfig.
    config = SimpleNamespace(**data["model"])
    tables = {name: CSR(t["indptr"], t["indices"], n) for name, t in data["metapaths"].items()}
    features = None
    if data["features"] is not None:
        features = ContentFeatures(data["features"]["tokens"], data["features"]["mask"], source="export")
    graph = {r: SimpleNamespace(src=data["train"][r]["src"].numpy(), dst=data["train"][r]["dst"].numpy())
             for r in RELATIONS}
    torch.manual_seed(data["train_config"]["seed"])
    return MMSC(n, tables, cast(Any, config), features, impl=impl, graph_edges=graph).to(device)


def train_once(data: dict, impl: str, device: torch.device, epochs: int, steps_per_epoch=None,
               warmup_epochs: int = 1) -> dict:
    """Train the export's model with one kernel for ``warmup_epochs`` untimed epochs (Triton
    compiles its kernels in the first) and ``epochs`` timed ones (no early stopping), then
    calibrate it as a run is calibrated."""
    from mmsc_dgl.train.batches import EdgeBatches
    from mmsc_dgl.train.trainer import Trainer
    model = build_model(data, impl, device)
    tc = data["train_config"]
    edges = {r: (data["train"][r]["src"], data["train"][r]["dst"]) for r in RELATIONS}
    steps = steps_per_epoch if steps_per_epoch is not None else tc["steps_per_epoch"]
    batches = EdgeBatches(edges, data["num_items"], tc["batch_size"], data["model"]["negatives"], steps, device)
    total = warmup_epochs + epochs
    settings = SimpleNamespace(**{**tc, "epochs": total, "patience": total})
    evaluator = evaluator_of(data, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fit = Trainer(model, settings, progress=False).fit(batches, evaluator.validate)
    timed = fit.history[warmup_epochs:]
    seconds = sum(h["train_seconds"] for h in timed)
    from mmsc_dgl.runs.finishing import finish
    _, report = finish(model, fit, evaluator, settings, tower=False, test=False)
    last = fit.history[-1]
    row = {"impl": impl, "device": str(device), "epochs": epochs, "steps_per_epoch": len(batches),
           "epoch_seconds": round(seconds / len(timed), 3),
           "edges_per_second": round(sum(h["edges"] for h in timed) / seconds, 1),
           "val_ndcg10_substitute": last["val_substitute_NDCG@10"],
           "val_ndcg10_complement": last["val_complement_NDCG@10"],
           "best_epoch": fit.best_epoch,
           "history": [{k: h[k] for k in h if k.startswith(("epoch", "loss_", "val_"))} for h in fit.history]}
    for r, chosen in report.get("calibration", {}).items():
        row[f"calibrated_val_ndcg10_{r}"] = chosen["val_NDCG@10"]["calibrated"]
    if device.type == "cuda":
        row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="gpu_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--impls", nargs="*", help="default: reference and triton on CUDA, reference and dgl on CPU")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs, after the warm-up")
    parser.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs first (Triton compiles)")
    parser.add_argument("--steps-per-epoch", type=int, help="default: the export's config")
    from mmsc_dgl.bench.machine import add_json_option, check_json_target
    add_json_option(parser)
    args = parser.parse_args(argv)
    check_json_target(args)
    from mmsc_dgl.bench.machine import setup_logging
    setup_logging()
    device = torch.device(args.device)
    impls = args.impls or (["reference", "triton"] if device.type == "cuda" else ["reference", "dgl"])
    data = load_export(args.export)
    rows = []
    for impl in impls:
        row = train_once(data, impl, device, args.epochs, args.steps_per_epoch, args.warmup_epochs)
        logger.info("%s", json.dumps({k: v for k, v in row.items() if k != "history"}))
        rows.append(row)
    base = rows[0]["epoch_seconds"]
    for row in rows:
        row["speedup_vs_first"] = round(base / row["epoch_seconds"], 2)
    from mmsc_dgl.bench.machine import format_table, write_json
    columns = [("impl", "impl", ""), ("device", "device", ""), ("s/epoch", "epoch_seconds", ".3f"),
               ("edges/s", "edges_per_second", ",.0f"), ("speedup", "speedup_vs_first", ".2f"),
               ("val NDCG s", "val_ndcg10_substitute", ".4f"), ("val NDCG c", "val_ndcg10_complement", ".4f"),
               ("calibrated s", "calibrated_val_ndcg10_substitute", ".4f"),
               ("calibrated c", "calibrated_val_ndcg10_complement", ".4f"),
               ("peak GPU MiB", "peak_gpu_mib", ",.0f")]
    sys.stdout.write(format_table(columns, rows) + "\n")
    if args.json:
        write_json(args.json, "gpu_train", rows, device=str(device), export=str(args.export),
                   items=data["num_items"], metapaths=len(data["metapaths"]))


if __name__ == "__main__":
    main()
