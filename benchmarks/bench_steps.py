"""Seconds per MMSC training step on a prepared dataset: the run built as ``mmsc-dgl train``
builds it, then a few steps (``loss``, ``backward``, Adam), each timed apart.  No validation and
no test: the figure behind docs/benchmarks.md ("The graph branch from a capped table, at 1M"),
where a whole ``bench train`` run spends most of its hour outside the steps.

    python benchmarks/bench_steps.py runs/bench/data/synthetic-1000000-d10-s0 --graph-branch-cap 32 \\
        --steps 5 --json benchmarks/results/steps_1m_cap32_cpu.json

(``mmsc-dgl bench train --sizes 1000000`` makes that dataset.)
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="a prepared dataset directory")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--graph-branch-cap", type=int, default=0, help="0: the exact whole-graph propagation")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=0.01, help="as bench train")
    parser.add_argument("--features", default="hashed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    import torch

    from mmsc_dgl.bench.machine import machine_info, peak_rss_mib, setup_logging
    from mmsc_dgl.config import TrainConfig
    from mmsc_dgl.data.dataset import load_dataset
    from mmsc_dgl.train.build import build_run
    setup_logging()
    started = time.perf_counter()
    dataset = load_dataset(args.dataset)
    config = TrainConfig.model_validate(dict(
        architecture="mmsc", epochs=1, features=args.features, batch_size=args.batch_size, lr=args.lr, steps_per_epoch=args.steps,
        seed=args.seed, model={"graph_branch_cap": args.graph_branch_cap}))
    with tempfile.TemporaryDirectory() as run_dir:
        parts = build_run(dataset, config, run_dir, progress=False)
    build_seconds = time.perf_counter() - started
    print(f"build {build_seconds:.0f} s, peak RSS {peak_rss_mib() / 1024:.1f} GiB", flush=True)
    model = parts.model
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps = []
    for i, batch in enumerate(parts.batches()(torch.Generator().manual_seed(args.seed))):
        t0 = time.perf_counter()
        loss = model.loss(batch)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss["total"].backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        steps.append({"loss": round(float(loss["total"]), 4), "forward": round(t1 - t0, 2),
                      "backward": round(t2 - t1, 2), "adam": round(t3 - t2, 2), "total": round(t3 - t0, 2),
                      "peak_rss_gib": round(peak_rss_mib() / 1024, 1)})
        print(f"step {i + 1}: " + ", ".join(f"{k} {v}" for k, v in steps[-1].items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_info("cpu"), "settings": {k: str(v) for k, v in vars(args).items()},
                                         "items": dataset.num_items, "build_seconds": round(build_seconds, 1),
                                         "steps": steps}, indent=2) + "\n")


if __name__ == "__main__":
    main()
