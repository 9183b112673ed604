"""MMSC training on a device from an exported tensor file: reference kernel against the fused
Triton kernel (or DGL's on CPU), epoch time and training edges per second.

Torch-only on purpose (the GPU hosts have neither DGL, pyarrow nor pydantic):

    python -m mmsc_dgl.bench.gpu_train --export runs/export/syn10k.pt --device cuda --json out.json

The export comes from ``mmsc-dgl export-tensors`` on a CPU machine.  Both kernels start from
the same weights and see the same batches; the table also gives validation NDCG@10 after the
budget, so a faster kernel never hides a different result.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import torch

from mmsc_dgl.schema import RELATIONS
logger = logging.getLogger("gpu_train")


def load_export(path) -> dict:
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data.get("format") != "mmsc_dgl-tensors/1":
        raise ValueError(f"{path}: not an mmsc-dgl export-tensors file (format {data.get('format')!r}); "
                         "write one with mmsc-dgl export-tensors")
    return data


@torch.no_grad()
def validate(model, data: dict, device: torch.device) -> dict:
    """Validation NDCG@10 per relation against the exported negatives."""
    from mmsc_dgl.eval.ranking import ranking_metrics, ranks
    model.eval()
    emb = model.embed_all()
    out = {}
    for r in RELATIONS:
        v = data["val"][r]
        e = emb[r]
        t = model.targets(r, e)  # e itself, or e times the relation's signature
        src, dst, neg = v["src"].to(device), v["dst"].to(device), v["negatives"].to(device)
        pos = (e[src] * t[dst]).sum(-1)
        negs = torch.einsum("qd,qmd->qm", e[src], t[neg])
        out[r] = {"NDCG@10": ranking_metrics(ranks(pos, negs).cpu(), [10])["NDCG@10"]}
    return out


def train_once(data: dict, impl: str, device: torch.device, epochs: int, steps_per_epoch, seed: int) -> dict:
    """MMSC trained by the project's :class:`~mmsc_dgl.train.trainer.Trainer` on the exported
    tensors: one untimed warm-up epoch (Triton compiles its kernels), then ``epochs`` timed ones."""
    from mmsc_dgl.models.mmsc import MMSC
    from mmsc_dgl.ops import CSR
    from mmsc_dgl.train.batches import EdgeBatches
    from mmsc_dgl.train.trainer import Trainer
    n = data["num_items"]
    config = SimpleNamespace(**data["model"])
    tables = {name: CSR(t["indptr"], t["indices"], n) for name, t in data["metapaths"].items()}
    features = None
    if data["features"] is not None:
        tokens, mask = data["features"]["tokens"], data["features"]["mask"]
        features = SimpleNamespace(tokens=tokens, mask=mask, num_items=tokens.shape[0], dim=tokens.shape[2])
    torch.manual_seed(seed)
    graph = {r: SimpleNamespace(src=data["train"][r]["src"], dst=data["train"][r]["dst"]) for r in RELATIONS}
    # The exported settings and tokens, read by attribute: this host has neither pydantic (for a
    # ModelConfig) nor pyarrow (for ContentFeatures), so they travel as namespaces.
    model = MMSC(n, tables, cast(Any, config), cast(Any, features), impl=impl, graph_edges=graph).to(device)
    tc = data["train_config"]
    edges = {r: (data["train"][r]["src"], data["train"][r]["dst"]) for r in RELATIONS}
    batches = EdgeBatches(edges, n, tc["batch_size"], config.negatives, steps_per_epoch, device)
    settings = SimpleNamespace(lr=tc["lr"], weight_decay=tc["weight_decay"], epochs=epochs + 1, patience=epochs + 1,
                               seed=seed, deterministic=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fit = Trainer(model, settings, progress=False).fit(batches, lambda m: validate(m, data, device))
    timed = fit.history[1:]  # the first epoch warms up, untimed
    seconds = sum(h["train_seconds"] for h in timed)
    last = fit.history[-1]
    row = {"impl": impl, "device": str(device), "epochs": epochs, "steps_per_epoch": len(batches),
           "epoch_seconds": round(seconds / len(timed), 3),
           "edges_per_second": round(sum(h["edges"] for h in timed) / seconds, 1),
           "val_ndcg10_substitute": last["val_substitute_NDCG@10"],
           "val_ndcg10_complement": last["val_complement_NDCG@10"]}
    if device.type == "cuda":
        row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="gpu_train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--impls", nargs="*", help="default: reference and triton on CUDA, reference and dgl on CPU")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--seed", type=int, default=0)
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
        row = train_once(data, impl, device, args.epochs, args.steps_per_epoch, args.seed)
        logger.info("%s", json.dumps(row))
        rows.append(row)
    base = rows[0]["epoch_seconds"]
    for row in rows:
        row["speedup_vs_first"] = round(base / row["epoch_seconds"], 2)
    from mmsc_dgl.bench.machine import format_table, write_json
    columns = [("impl", "impl", ""), ("device", "device", ""), ("s/epoch", "epoch_seconds", ".3f"),
               ("edges/s", "edges_per_second", ",.0f"), ("speedup", "speedup_vs_first", ".2f"),
               ("val NDCG s", "val_ndcg10_substitute", ".4f"), ("val NDCG c", "val_ndcg10_complement", ".4f"),
               ("peak GPU MiB", "peak_gpu_mib", ",.0f")]
    sys.stdout.write(format_table(columns, rows) + "\n")
    if args.json:
        write_json(args.json, "gpu_train", rows, device=str(device), export=str(args.export),
                   items=data["num_items"], metapaths=len(data["metapaths"]))


if __name__ == "__main__":
    main()
