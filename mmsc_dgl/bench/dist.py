"""Where the time and the bytes of a distributed step go: one partition against 2 and 4, on this
machine (``mmsc-dgl bench dist``).

For each partition count ``P``: the synthetic catalog is partitioned (METIS), ``P`` graph
servers and ``P`` trainers are launched (:mod:`mmsc_dgl.distributed.launch`), and every trainer
times ``--steps`` mini-batches of the data access an MMSC step needs
(:mod:`mmsc_dgl.distributed.worker`): meta-path neighbourhoods of ``--batch`` items by chained
sampling, then the content features of the batch and of every neighbour drawn.  Reported per
step (mean over trainers and steps): wall time of each part, bytes and messages that cross
partitions, and the peak memory of each server and trainer.

On 2 cores the P processes of each kind share two CPUs, so the times cannot show a speedup;
the bytes, messages and memory are what the estimate in docs/distributed.md scales.

    python benchmarks/bench_dist.py --items 100000 --parts 1 2 4 --json benchmarks/results/dist_cpu.json
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

import torch

logger = logging.getLogger("bench_dist")


def _dataset(work: Path, items: int, seed: int) -> Path:
    from mmsc_dgl.config import SyntheticConfig
    from mmsc_dgl.data.dataset import load_dataset
    from mmsc_dgl.data.prepare import prepare
    out = work / f"synthetic-{items}-s{seed}"
    if (out / "dataset.json").exists() and load_dataset(out).num_items == items:
        return out
    prepare(synthetic=SyntheticConfig(num_items=items, seed=seed), out=out, progress=False, overwrite=True)
    return out


def _partitions(dataset: Path, parts: int, work: Path, feature_dim: int) -> Path:
    from mmsc_dgl.data.dataset import dataset_fingerprint
    from mmsc_dgl.distributed.partition import load_partition_record, partition_dataset
    from mmsc_dgl.errors import DataError
    out = work / f"{dataset.name}-{parts}parts"
    if (out / "partition.json").exists():
        try:
            record = load_partition_record(out)
        except DataError:  # another format: partitioned again below
            record = {}
        if record.get("dataset_fingerprint") == dataset_fingerprint(dataset) and record.get("num_parts") == parts:
            return out
    partition_dataset(dataset, parts, out, features="hashed", feature_dim=feature_dim, overwrite=out.exists())
    return out


def run_case(part_dir: Path, parts: int, args) -> dict:
    from mmsc_dgl.distributed.launch import launch
    from mmsc_dgl.distributed.partition import load_partition_record
    from mmsc_dgl.errors import DataError
    out = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    command = [sys.executable, "-m", "mmsc_dgl.distributed.worker", str(part_dir), "--out", str(out),
               "--metapaths", args.metapaths, "--walks", str(args.walks), "--items", "8",
               "--steps", str(args.steps), "--batch", str(args.batch)]
    result = launch(part_dir, parts, command, servers=1, timeout=args.timeout, log_dir=out / "logs")
    if result.returncode:
        raise DataError(f"the {parts}-partition job failed: {result.message}",
                        fix="read the trainer's log named there.")
    steps, trainers = [], []
    for rank in range(parts):
        got = torch.load(out / f"rank-{rank}.pt", weights_only=True)["bench"]
        steps.extend(got["steps"][args.warmup:])
        trainers.append(got)
    record = load_partition_record(part_dir)
    mean = lambda key: statistics.fmean(s[key] for s in steps)  # noqa: E731
    servers = [v for k, v in result.peak_rss_mib.items() if k.startswith("server")]
    trainer_mem = [v for k, v in result.peak_rss_mib.items() if k.startswith("trainer")]
    return {"parts": parts, "items": record["num_nodes"], "edges": record["num_edges"],
            "edge_cut": record["edge_cut"], "cut_share": record["edge_cut"] / max(record["num_edges"], 1),
            "batch": args.batch, "walks": args.walks, "metapaths": args.metapaths,
            "step_ms": mean("sample_ms") + mean("features_ms"), "sample_ms": mean("sample_ms"),
            "features_ms": mean("features_ms"), "sample_mib": mean("sample_bytes") / 2**20,
            "feature_mib": mean("feature_bytes") / 2**20,
            "bytes_per_step_mib": (mean("sample_bytes") + mean("feature_bytes")) / 2**20,
            "messages_per_step": mean("sample_messages") + mean("feature_messages"),
            "feature_rows": mean("feature_rows"), "remote_rows": mean("remote_rows"),
            "row_bytes": trainers[0]["row_bytes"],
            "server_peak_mib": max(servers) if servers else None,
            "trainer_peak_mib": max(trainer_mem) if trainer_mem else None,
            "job_seconds": result.seconds, "steps_timed": len(steps), "trainer_threads": result.threads}


TRAIN_CONFIG = ("cold_start: eq12\nepochs: 1\nsteps_per_epoch: {steps}\nbatch_size: {batch}\nval_queries: 200\n"
                "test_queries: 200\nmetapaths: s,c,s-c\nfeatures: hashed\nfeature_dim: {dim}\n"
                "model:\n  graph_branch_cap: 16\n")
"""``--train``: MMSC's own trainer for one short epoch (the graph branch capped, so that
``--shard-embeddings`` may run it)."""
STATE_LINE = re.compile(r"training done, peak resident memory (\d+) MiB; model state here ([\d.]+) MiB.*"
                        r"buffers ([\d.]+) MiB")


EVIDENCE_LINE = re.compile(r"path evidence here ([\d.]+) MiB")
PHASE_LINE = re.compile(r"resident memory after each phase, now/peak/shared MiB: (.*)")
PHASE = re.compile(r"(\w+) (\d+)/(\d+)/(\d+)")


def phases_of(log: str) -> dict:
    """``{phase: [now, peak, shared]}`` MiB from a trainer's last phase line (empty without
    one): the trainer writes it after training, and again after the final evaluation."""
    found = PHASE_LINE.findall(log)
    if not found:
        return {}
    return {name: [float(v) for v in values] for name, *values in PHASE.findall(found[-1])}


def run_train_case(part_dir: Path, parts: int, shard: bool, args) -> dict:
    """``mmsc-dgl train --distributed`` on ``parts`` partitions, with the id tables sharded or
    not: each trainer's model state (its own count of the tensors it holds) and peak memory
    through training, and each server's peak memory over the whole job."""
    from mmsc_dgl.distributed.launch import launch
    from mmsc_dgl.errors import DataError
    out = Path(tempfile.mkdtemp(prefix="bench-dist-train-"))
    config = out / "config.yaml"
    config.write_text(TRAIN_CONFIG.format(steps=args.steps, batch=args.batch, dim=args.feature_dim))
    command = [sys.executable, "-m", "mmsc_dgl", "train", str(part_dir), "--distributed", "--out", str(out / "run"),
               "--config", str(config), "--seed", str(args.seed)] + (["--shard-embeddings"] if shard else [])
    result = launch(part_dir, parts, command, servers=1, timeout=args.timeout, log_dir=out / "logs")
    if result.returncode:
        raise DataError(f"the {parts}-partition training job failed: {result.message}",
                        fix="read the trainer's log named there.")
    trainers: List[List[float]] = []
    phases: Dict[str, List[float]] = {}
    for rank in range(parts):
        log = (out / "logs" / f"trainer-{rank}.log").read_text()
        found = STATE_LINE.search(log)
        if found is None:
            raise DataError(f"trainer {rank} did not report its memory.", path=out / "logs" / f"trainer-{rank}.log",
                            fix="read the log: the job ended before training did.")
        trainers.append([float(v) for v in found.groups()])
        evidence = EVIDENCE_LINE.search(log)
        trainers[-1].append(float(evidence.group(1)) if evidence else 0.0)
        for name, values in phases_of(log).items():  # the largest trainer's figure per phase
            phases[name] = [max(a, b) for a, b in zip(phases.get(name, [0.0] * len(values)), values)]
    servers = [v for k, v in result.peak_rss_mib.items() if k.startswith("server")]
    epoch = json.loads((out / "run" / "history.json").read_text())[-1]  # process 0's one epoch
    return {"parts": parts, "sharded": shard, "items": args.items,
            "step_seconds": round(epoch["train_seconds"] / max(epoch["steps"], 1), 3),
            "validation_seconds": round(epoch["seconds"] - epoch["train_seconds"], 2),
            "trainer_state_mib": max(t[1] for t in trainers), "trainer_buffers_mib": max(t[2] for t in trainers),
            "trainer_peak_training_mib": max(t[0] for t in trainers),
            "trainer_peak_job_mib": max(v for k, v in result.peak_rss_mib.items() if k.startswith("trainer")),
            "server_peak_mib": max(servers), "job_seconds": result.seconds,
            "trainer_evidence_mib": max(t[3] for t in trainers), "trainer_phases_mib": phases,
            "trainer_threads": result.threads}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="bench dist", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--parts", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--walks", type=int, default=16)
    parser.add_argument("--metapaths", default="s,c,s-c,c-s,c-s-c")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="first steps per trainer left out of the means")
    parser.add_argument("--feature-dim", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path("runs/bench/dist"),
                        help="where the catalog and its partitions are kept (reused when they match)")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", action="store_true",
                        help="instead of the data access: MMSC's trainer for --steps steps, with its id tables "
                             "whole on every trainer and sharded (--shard-embeddings), and the memory of each")
    from mmsc_dgl.bench.machine import add_json_option, check_json_target, format_table, setup_logging, write_json
    add_json_option(parser)
    args = parser.parse_args(argv)
    check_json_target(args)
    setup_logging()
    args.work.mkdir(parents=True, exist_ok=True)
    dataset = _dataset(args.work, args.items, args.seed)
    rows = []
    if args.train:
        for parts in args.parts:
            part_dir = _partitions(dataset, parts, args.work, args.feature_dim)
            for shard in (False, True):
                row = run_train_case(part_dir, parts, shard, args)
                logger.info("%d partition(s), %s: trainer model state %.1f MiB, peak %.0f MiB; server peak %.0f MiB",
                            parts, "sharded" if shard else "whole tables", row["trainer_state_mib"],
                            row["trainer_peak_training_mib"], row["server_peak_mib"])
                rows.append(row)
        columns = [("parts", "parts", "d"), ("sharded", "sharded", ""), ("state MiB", "trainer_state_mib", ",.1f"),
                   ("buffers MiB", "trainer_buffers_mib", ",.1f"), ("evidence MiB", "trainer_evidence_mib", ",.1f"),
                   ("trainer peak (training)", "trainer_peak_training_mib", ",.0f"),
                   ("trainer peak (job)", "trainer_peak_job_mib", ",.0f"), ("server peak", "server_peak_mib", ",.0f"),
                   ("s/step", "step_seconds", ",.2f"), ("validation s", "validation_seconds", ",.1f"),
                   ("job s", "job_seconds", ",.0f")]
        print(format_table(columns, rows))
        if args.json:
            write_json(args.json, "dist_train", rows)
        return
    for parts in args.parts:
        part_dir = _partitions(dataset, parts, args.work, args.feature_dim)
        row = run_case(part_dir, parts, args)
        logger.info("%d partition(s): %.0f ms per step, %.2f MiB and %.0f messages across partitions", parts,
                    row["step_ms"], row["bytes_per_step_mib"], row["messages_per_step"])
        rows.append(row)
    columns = [("parts", "parts", "d"), ("edge cut", "cut_share", ".1%"), ("step ms", "step_ms", ".0f"),
               ("sample ms", "sample_ms", ".0f"), ("features ms", "features_ms", ".0f"),
               ("MiB/step", "bytes_per_step_mib", ".2f"), ("msgs/step", "messages_per_step", ".0f"),
               ("rows fetched", "feature_rows", ",.0f"), ("remote rows", "remote_rows", ",.0f"),
               ("server MiB", "server_peak_mib", ",.0f"), ("trainer MiB", "trainer_peak_mib", ",.0f")]
    print(format_table(columns, rows))
    if args.json:
        write_json(args.json, "dist", rows)


if __name__ == "__main__":
    from mmsc_dgl.bench.machine import run_script
    run_script(main)
