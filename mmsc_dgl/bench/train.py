"""End-to-end training throughput: MMSC against a DGL HAN-style encoder, per catalog size.

Each (size, model) case runs in a fresh process, so its peak RSS is its own.  The models share
the data, dims, heads, meta-paths, batches and epochs; the table reports the time per epoch
(training only, validation excluded), training edges per second, peak RSS, the neighbourhood
preprocessing time, and test NDCG@10 at the end of the same budget, so a speed-up never hides a
quality loss.  ``dgl-han`` refuses sizes whose reachable graphs would not fit the memory budget
(the estimate is reported); that is the point of the comparison.

    python benchmarks/bench_train.py                                 # 10k items, mmsc / han / dgl-han
    python benchmarks/bench_train.py --sizes 10000 100000 --json benchmarks/results/train_cpu.json
    mmsc-dgl bench train --sizes 1000000 --models mmsc --steps-per-epoch 50   # the 1M scale run

A size whose memory floor (:func:`~mmsc_dgl.bench.estimate.training_floor_bytes`: edges,
meta-path tables, item-sized weights with Adam's moments and the best copies) is over the memory
available is refused before its catalog is made, with the estimate in the row's ``reason``.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

logger = logging.getLogger("bench_train")

MODELS = ("mmsc", "han", "dgl-han")


def _dataset_dir(root: Path, items: int, degree: float, seed: int) -> Path:
    from mmsc_dgl.config import PrepareConfig, SplitConfig, SyntheticConfig
    from mmsc_dgl.data.prepare import prepare
    # No cold items: Eq. 12 compares every cold item with every warm one in content space, a
    # quality check that docs/results.md covers and that would dominate the time at 1M items.
    target = root / f"synthetic-{items}-d{degree:g}-s{seed}"
    if not (target / "dataset.json").exists():
        logger.info("preparing %s", target)
        prepare(synthetic=SyntheticConfig(num_items=items, substitute_degree=degree, complement_degree=degree,
                                          noise_rate=0.2, cold_fraction=0.0, seed=seed),
                out=target, config=PrepareConfig(split=SplitConfig(cold_fraction=0.0, seed=seed)),
                overwrite=True, progress=False)
    return target


def _features_mib(features) -> float:
    """Memory of the content features: frozen tokens, or the ids of learnt category tokens."""
    if features is None:
        return 0.0
    from mmsc_dgl.features.base import ContentFeatures
    held = features.tokens if isinstance(features, ContentFeatures) else features.ids
    return _tensor_mib(held, features.mask)


def _tensor_mib(*tensors) -> float:
    return round(sum(t.numel() * t.element_size() for t in tensors if t is not None) / 2**20, 1)


def worker(spec: dict) -> dict:
    """One case, in this process: load, build the neighbourhoods, train, test."""
    import torch

    from mmsc_dgl.bench.machine import peak_rss_mib, status_bytes
    from mmsc_dgl.config import TrainConfig
    from mmsc_dgl.data.dataset import load_dataset
    from mmsc_dgl.eval.evaluator import Evaluator
    from mmsc_dgl.train.build import build_run
    from mmsc_dgl.train.trainer import Trainer
    from mmsc_dgl.runs.finishing import finish

    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    dataset = load_dataset(spec["dataset"])
    base_rss = round(status_bytes("VmRSS") / 2**20, 1)
    model_name = spec["model"]
    config = TrainConfig.model_validate(dict(
        architecture="han" if model_name == "dgl-han" else model_name, epochs=spec["epochs"],
        patience=spec["epochs"], metapaths=spec["metapaths"], max_neighbors=spec["max_neighbors"],
        features=spec["features"], batch_size=spec["batch_size"], lr=spec["lr"],
        steps_per_epoch=spec.get("steps_per_epoch"), val_queries=spec["val_queries"],
        test_queries=spec["test_queries"], seed=spec["seed"], device=spec["device"],
        model={"hidden": spec["hidden"], "heads": spec["heads"],
               **({"graph_branch_cap": spec["graph_branch_cap"]} if model_name == "mmsc" and spec.get("graph_branch_cap")
                  else {})}))
    row = {"model": model_name, "items": dataset.num_items,
           "train_edges": int(sum(len(e) for e in dataset.splits.train.values()))}
    started = time.perf_counter()
    model = None
    if model_name == "dgl-han":
        from mmsc_dgl.bench.han_dgl import DGLHAN, reachable_graphs
        from mmsc_dgl.errors import DataError
        from mmsc_dgl.features.load import load_features
        try:
            graphs, estimate = reachable_graphs(dataset.train_graph(), _metapath_names(spec["metapaths"]),
                                                memory_budget=int(spec["memory_budget_gib"] * 2**30))
        except DataError as err:
            return {**row, "status": "refused", "reason": str(err), "peak_rss_mib": peak_rss_mib()}
        torch.manual_seed(config.seed)
        from mmsc_dgl.config import HANConfig
        assert isinstance(config.model, HANConfig)  # architecture "han" above
        model = DGLHAN(dataset.num_items, graphs, config.model, load_features(config.features, dataset,
                                                                              config.feature_dim))
        row["neighbour_pairs"] = model.num_pairs
    parts = build_run(dataset, config, spec["run_dir"], model=model, progress=False)
    row["preprocess_seconds"] = round(time.perf_counter() - started, 2)
    if parts.tables is not None:
        row["neighbour_pairs"] = int(sum(t.num_pairs for t in parts.tables.values()))
    memory = {"dataset_edges_mib": _tensor_mib(*[torch.from_numpy(a) for es in (dataset.edges, dataset.splits.train)
                                                 for e in es.values() for a in (e.src, e.dst)]),
              "neighbour_tables_mib": round(sum(t.indptr.numel() * 8 + t.indices.numel() * 8
                                                for t in parts.tables.values()) / 2**20, 1)
              if parts.tables is not None else None,
              "features_mib": _features_mib(parts.features),
              "parameters_mib": _tensor_mib(*parts.model.parameters()),
              "after_load_rss_mib": base_rss}
    evaluator = Evaluator(parts.dataset, config, parts.features, parts.device)
    fit = Trainer(parts.model, config, progress=False).fit(parts.batches(), evaluator.validate)
    _, metrics = finish(parts.model, fit, evaluator, config, tower=False)
    history = fit.history
    train_seconds = [h["train_seconds"] for h in history]
    per_epoch = sum(train_seconds) / len(train_seconds)
    row.update({"status": "ok", "epochs": len(history), "steps_per_epoch": len(parts.batches()),
                "epoch_seconds": round(per_epoch, 3),
                "edges_per_second": round(sum(h["edges"] for h in history) / sum(train_seconds), 1),
                "val_seconds": round(sum(h["seconds"] - h["train_seconds"] for h in history) / len(history), 2),
                "ndcg10_substitute": metrics["test"]["substitute"]["NDCG@10"],
                "ndcg10_complement": metrics["test"]["complement"]["NDCG@10"],
                "test_queries": metrics["test"]["substitute"]["queries"],
                "wall_seconds": round(time.perf_counter() - started, 1), "peak_rss_mib": peak_rss_mib(),
                "memory": memory})
    return row


def _refusals(items: int, args) -> Tuple[List[dict], Dict[str, float]]:
    """A ``refused`` row for each model whose memory floor (:mod:`mmsc_dgl.bench.estimate`) is
    over the memory available now, before the catalog is even made; the floor is logged either
    way, so the report can set it beside the measured peak."""
    from mmsc_dgl.bench.estimate import available_bytes, refusal, training_floor_bytes
    rows, floors = [], {}
    available = available_bytes()
    for model in args.models:
        floor = training_floor_bytes(items, args.degree, hidden=args.hidden,
                                     metapaths=len(_metapath_names(args.metapaths)),
                                     max_neighbors=args.max_neighbors, graph_branch=model == "mmsc")
        why = refusal(items, floor, available)
        floors[model] = round(floor["total"] / 2**30, 2)
        logger.info("%s items, %s: memory floor %.1f GiB", f"{items:,}", model, floors[model])
        if why:
            rows.append({"model": model, "items": items, "status": "refused", "reason": why,
                         "floor_gib": floors[model]})
    return rows, floors


def _metapath_names(spec: str):
    from mmsc_dgl.metapath.spec import parse_metapaths
    return [p.name for p in parse_metapaths(spec)]


def run_case(spec: dict, timeout: float) -> dict:
    """``worker(spec)`` in a fresh interpreter; a crash, an OOM kill or a timeout becomes a row."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "row.json"
        spec = {**spec, "run_dir": str(Path(tmp) / "run")}
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "mmsc_dgl.bench.train", "--worker", str(spec_path), "--worker-out", str(out_path)]
        base = {"model": spec["model"], "items": spec["items"]}
        try:
            proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired as err:  # where it was: the worker's last log line
            said = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
            last = said.strip().splitlines()[-1:] or ["no log line"]
            return {**base, "status": "timeout", "reason": f"over {timeout:.0f} s; last: {last[0]}"}
        if proc.returncode != 0 or not out_path.exists():
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            killed = proc.returncode in (-9, 137)
            return {**base, "status": "killed" if killed else "failed",
                    "reason": ("out of memory?" if killed else f"exit code {proc.returncode}: ") + " | ".join(tail)}
        return json.loads(out_path.read_text())


COLUMNS = [("items", "items", ","), ("model", "model", ""), ("status", "status", ""),
           ("pairs", "neighbour_pairs", ","), ("prep s", "preprocess_seconds", ".1f"),
           ("s/epoch", "epoch_seconds", ".2f"), ("edges/s", "edges_per_second", ",.0f"),
           ("peak MiB", "peak_rss_mib", ",.0f"),
           ("floor GiB", "floor_gib", ".1f"), ("NDCG s", "ndcg10_substitute", ".4f"),
           ("NDCG c", "ndcg10_complement", ".4f"), ("vs dgl-han", "speedup_vs_dgl_han", ".1f")]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="bench train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--degree", type=float, default=10.0, help="mean degree per relation (10: ~10M edges "
                                                                    "per relation at 1M items)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, help="cap an epoch at N batches (large catalogs)")
    parser.add_argument("--metapaths", default="all")
    parser.add_argument("--max-neighbors", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--features", default="hashed")
    parser.add_argument("--graph-branch-cap", type=int, default=0,
                        help="mmsc: the graph branch reads a precomputed table of each item's CAP largest "
                             "propagation weights instead of propagating over the whole graph every step (0: exact)")
    parser.add_argument("--val-queries", type=int, default=1000)
    parser.add_argument("--test-queries", type=int, default=5000)
    parser.add_argument("--memory-budget-gib", type=float, default=12.0,
                        help="dgl-han: refuse reachable graphs estimated above this")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per case")
    parser.add_argument("--data-dir", type=Path, default=Path("runs/bench/data"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    from mmsc_dgl.bench.machine import add_json_option, check_json_target
    add_json_option(parser)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_json_target(args)
    from mmsc_dgl.bench.machine import setup_logging
    setup_logging()
    if args.worker:
        row = worker(json.loads(args.worker.read_text()))
        args.worker_out.write_text(json.dumps(row))
        return
    from mmsc_dgl.bench.machine import format_table, write_json
    rows = []
    for items in args.sizes:
        refused, floors = _refusals(items, args)
        rows.extend(refused)
        models = [m for m in args.models if m not in {r["model"] for r in refused}]
        if not models:
            continue
        data = _dataset_dir(args.data_dir, items, args.degree, args.seed)
        for model in models:
            spec = {"model": model, "items": items, "dataset": str(data), "epochs": args.epochs,
                    "steps_per_epoch": args.steps_per_epoch, "metapaths": args.metapaths,
                    "max_neighbors": args.max_neighbors, "batch_size": args.batch_size, "lr": args.lr,
                    "hidden": args.hidden, "heads": args.heads, "features": args.features,
                    "graph_branch_cap": args.graph_branch_cap,
                    "val_queries": args.val_queries, "test_queries": args.test_queries,
                    "memory_budget_gib": args.memory_budget_gib, "device": args.device, "seed": args.seed}
            row = {**run_case(spec, args.timeout), "floor_gib": floors[model]}
            logger.info("%s", json.dumps(row))
            rows.append(row)
        dgl_row = next((r for r in rows if r["items"] == items and r["model"] == "dgl-han"
                        and r.get("status") == "ok"), None)
        for r in rows:
            if r["items"] == items and dgl_row and r.get("status") == "ok":
                r["speedup_vs_dgl_han"] = round(dgl_row["epoch_seconds"] / r["epoch_seconds"], 2)
    sys.stdout.write(format_table(COLUMNS, rows) + "\n")
    for r in rows:
        if r.get("reason"):
            sys.stdout.write(f"{r['items']:,} {r['model']} {r['status']}: {r['reason']}\n")
    if args.json:
        write_json(args.json, "train", rows, device=args.device, settings={k: str(v) for k, v in vars(args).items()
                                                                          if k not in ("worker", "worker_out")})


if __name__ == "__main__":
    main()
