"""Time ``prepare`` on the synthetic catalog at several sizes (and on a real file, if given).

Each case runs in a fresh process so its peak RSS is its own.  Prints a table and writes JSON.

    python benchmarks/bench_prepare.py --sizes 10000 100000 --json runs/bench_prepare.json
    python benchmarks/bench_prepare.py --sizes 1000000 --amazon ../shared/data/amazon-2018-magazine/meta_Magazine_Subscriptions.json.gz
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("bench_prepare")


def _case(kind: str, arg: str, seed: int, queue) -> None:
    from mmsc_dgl.config import SyntheticConfig
    from mmsc_dgl.data.prepare import prepare
    import dgl  # noqa: F401  (import cost is not part of the measurement)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if kind == "synthetic":
            ds = prepare(synthetic=SyntheticConfig(num_items=int(arg), seed=seed), out=Path(tmp) / "ds",
                         progress=False)
        else:
            ds = prepare([arg], out=Path(tmp) / "ds", progress=False)
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in (Path(tmp) / "ds").rglob("*") if f.is_file())
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({
        "case": f"{kind}:{Path(arg).name if kind != 'synthetic' else arg}",
        "items": ds.num_items,
        "substitute_edges": len(ds.edges["substitute"]),
        "complement_edges": len(ds.edges["complement"]),
        "seconds": round(seconds, 3),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "dataset_mib": round(size / 2**20, 1),
    })


def run_case(kind: str, arg: str, seed: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_case, args=(kind, arg, seed, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--amazon", nargs="*", default=[], help="Amazon metadata files to time too.")
    parser.add_argument("--seed", type=int, default=0)
    from mmsc_dgl.bench.machine import add_json_option, check_json_target
    add_json_option(parser)
    args = parser.parse_args()
    check_json_target(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = [run_case("synthetic", str(n), args.seed) for n in args.sizes]
    rows += [run_case("amazon", path, args.seed) for path in args.amazon]
    header = f"{'case':<40}{'items':>10}{'subst.':>12}{'compl.':>12}{'seconds':>9}{'peak MiB':>10}{'disk MiB':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['case']:<40}{r['items']:>10,}{r['substitute_edges']:>12,}{r['complement_edges']:>12,}"
                     f"{r['seconds']:>9.2f}{r['peak_rss_mib']:>10.0f}{r['dataset_mib']:>10.1f}")
    logger.info("\n".join(lines))
    result = {"benchmark": "prepare", "cpu_count": os.cpu_count(), "results": rows}
    if args.json:
        from mmsc_dgl.io import atomic_write_json
        atomic_write_json(args.json, result)
        logger.info("wrote %s", args.json)


if __name__ == "__main__":
    from mmsc_dgl.bench.machine import run_script
    run_script(main)
