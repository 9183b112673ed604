"""Exact vs bounded meta-path tables: wall time, peak memory and pairs kept.

Each case runs in a fresh process on a random heterograph (uniform random edges, so a 3-hop
path gives about items x degree^3 pairs).  Peak memory is the process's resident high-water
mark during the build, measured from the moment the graph is ready (Linux ``clear_refs``), and
also reported as the whole-process peak.

    python benchmarks/bench_metapath.py                                   # 100k items, 1M edges/type
    python benchmarks/bench_metapath.py --items 1000000 --edges 10000000 --strategies walk --paths s-c-s
    mmsc-dgl bench metapath --items 100000 --json out.json                # the same
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import time

logger = logging.getLogger("bench_metapath")


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _case(items: int, edges: int, path: str, strategy: str, k: int, seed: int, queue) -> None:
    import dgl
    import numpy as np
    import torch

    from mmsc_dgl.metapath import build_metapath_tables, estimate_pairs

    rng = np.random.default_rng(seed)
    data = {("item", rel, "item"): (torch.from_numpy(rng.integers(0, items, edges)),
                                    torch.from_numpy(rng.integers(0, items, edges)))
            for rel in ("substitute", "complement")}
    graph = dgl.heterograph(data, num_nodes_dict={"item": items})
    estimate = estimate_pairs(graph, path)
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the high-water mark: measure the build alone
    except OSError:
        pass
    before = _status("VmRSS")
    start = time.perf_counter()
    if strategy == "dgl":  # DGL's own binarised product, for reference
        from mmsc_dgl.metapath import MetaPath
        reach = dgl.metapath_reachable_graph(graph, list(MetaPath.parse(path).relations))
        seconds = time.perf_counter() - start
        pairs, empty = reach.num_edges(), int((reach.out_degrees() == 0).sum())
    else:
        tables = build_metapath_tables(graph, path, strategy=strategy, max_neighbors=k,
                                       memory_budget=1 << 40, seed=seed, progress=False)
        seconds = time.perf_counter() - start
        pairs, empty = tables[path].num_pairs, int((~tables[path].nonempty).sum())
    peak = _status("VmHWM")
    import resource
    queue.put({"items": items, "edges_per_type": edges, "metapath": path, "strategy": strategy,
               "k": None if strategy in ("exact", "dgl") else k, "seconds": round(seconds, 3),
               "build_peak_mib": round((peak - before) / 2**20, 1),
               "process_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "pairs_kept": pairs, "paths_estimate": estimate, "empty_items": empty})


def run_case(*args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_case, args=(*args, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return {"failed": f"exit code {proc.exitcode}", "args": list(args)}
    return queue.get()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="bench metapath", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--edges", type=int, default=1_000_000, help="edges per relation")
    parser.add_argument("--paths", nargs="*", default=["s-c", "s-c-s"])
    parser.add_argument("--strategies", nargs="*", default=["dgl", "exact", "walk", "topk"],
                        help="dgl = dgl.metapath_reachable_graph (binarised), for reference")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    from mmsc_dgl.bench.machine import add_json_option, check_json_target
    add_json_option(parser)
    args = parser.parse_args(argv)
    check_json_target(args)
    from mmsc_dgl.bench.machine import setup_logging
    setup_logging()
    rows = []
    for path in args.paths:
        for strategy in args.strategies:
            row = run_case(args.items, args.edges, path, strategy, args.k, args.seed)
            logger.info("%s", row)
            rows.append(row)
    ok = [r for r in rows if "failed" not in r]
    header = (f"{'items':>10}{'edges/type':>12}{'path':>7}{'strategy':>9}{'k':>4}{'seconds':>9}"
              f"{'build MiB':>11}{'proc MiB':>10}{'pairs kept':>13}  vs exact")
    lines = [header, "-" * len(header)]
    for r in ok:
        exact = next((e for e in ok if e["metapath"] == r["metapath"] and e["strategy"] == "exact"), None)
        versus = ""
        if exact and r["strategy"] not in ("exact", "dgl"):
            versus = (f"{exact['seconds'] / max(r['seconds'], 1e-9):.1f}x faster, "
                      f"{exact['build_peak_mib'] / max(r['build_peak_mib'], 1e-9):.1f}x less")
        lines.append(f"{r['items']:>10,}{r['edges_per_type']:>12,}{r['metapath']:>7}{r['strategy']:>9}"
                     f"{r['k'] or '-':>4}{r['seconds']:>9.2f}{r['build_peak_mib']:>11.0f}{r['process_peak_mib']:>10.0f}"
                     f"{r['pairs_kept']:>13,}  {versus}")
    logger.info("\n".join(lines))
    if args.json:
        from mmsc_dgl.bench.machine import write_json
        write_json(args.json, "metapath", rows)


if __name__ == "__main__":
    main()
