"""Top-10 substitutes and complements for every item: exact blocked matmul + topk on CPU, and an
optional FAISS index (``pip install mmsc_dgl[faiss]``) with its recall@10 against the exact result.

Embeddings are clustered unit vectors ([N, 64] per relation, as MMSC's heads output): speed does
not depend on their values, but an approximate index's recall does, and uniform random vectors
would understate it.  At sizes where the exact pass takes long, ``--exact-sample`` times the
exact search on a sample of queries and extrapolates (reported as such).

    python benchmarks/bench_recommend.py                               # 100k items
    python benchmarks/bench_recommend.py --sizes 100000 1000000 --json benchmarks/results/recommend_cpu.json
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import time
from typing import Any, Dict

import torch
from torch.nn import functional as F

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.eval.retrieval import faiss_search, recall_at_k, topk_all

logger = logging.getLogger("bench_recommend")


def clustered_embeddings(n: int, dim: int = 64, clusters: int = 1000, spread: float = 0.35, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(clusters, dim, generator=g), dim=1)
    assign = torch.randint(0, clusters, (n,), generator=g)
    return F.normalize(centres[assign] + spread * torch.randn(n, dim, generator=g) / dim ** 0.5, dim=1)


def exact_case(emb: torch.Tensor, k: int, block: int, sample: int, seed: int, dtype=None) -> dict:
    n = emb.shape[0]
    queries = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:sample] \
        if sample and sample < n else None
    start = time.perf_counter()
    _, index = topk_all(emb, k, block_size=block, queries=queries, dtype=dtype)
    seconds = time.perf_counter() - start
    if queries is None:
        return {"seconds": seconds, "extrapolated_from": None, "queries": torch.arange(n), "index": index}
    return {"seconds": seconds * n / sample, "extrapolated_from": sample, "queries": queries, "index": index}


def faiss_case(emb: torch.Tensor, k: int, queries: torch.Tensor, exact: torch.Tensor, nlist: int, nprobe: int) -> dict:
    start = time.perf_counter()
    index = faiss_search(emb, nlist=nlist, nprobe=nprobe, flat_below=0)  # always IVF: that is what is timed
    build = time.perf_counter() - start
    start = time.perf_counter()
    found = index(emb, k + 1)
    search = time.perf_counter() - start
    found = found[queries]
    # Drop each item from its own results (it is its nearest neighbour): a stable sort moves
    # the self match (at most one per row) behind the others, then the first k are kept.
    is_self = (found == queries.unsqueeze(1)).to(torch.int8)
    cleaned = found.gather(1, torch.argsort(is_self, dim=1, stable=True))[:, :k]
    return {"build_seconds": build, "search_seconds": search, "recall": recall_at_k(cleaned, exact)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="bench recommend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--block-size", type=int, default=2048)
    parser.add_argument("--exact-sample", type=int, default=200_000,
                        help="above this many items, time exact search on this many queries and extrapolate")
    parser.add_argument("--faiss", choices=["auto", "yes", "no"], default="auto")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="also time bfloat16 products (recall against float32 reported)")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seed", type=int, default=0)
    from mmsc_dgl.bench.machine import add_json_option, check_json_target
    add_json_option(parser)
    args = parser.parse_args(argv)
    check_json_target(args)
    from mmsc_dgl.bench.machine import setup_logging
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    use_faiss = args.faiss == "yes" or (args.faiss == "auto" and importlib.util.find_spec("faiss") is not None)
    from mmsc_dgl.bench.machine import format_table, write_json
    rows = []
    for n in args.sizes:
        total, extrapolated = 0.0, None
        faiss_rows: list = []
        bf16: Dict[str, Any] = {"seconds": 0.0, "recall": []}
        sample = args.exact_sample if n > args.exact_sample else 0
        for i, relation in enumerate(RELATIONS):
            emb = clustered_embeddings(n, args.dim, seed=args.seed + i)
            exact = exact_case(emb, args.k, args.block_size, sample, args.seed)
            total += exact["seconds"]
            extrapolated = exact["extrapolated_from"]
            if args.bf16:
                half = exact_case(emb, args.k, args.block_size, sample, args.seed, dtype=torch.bfloat16)
                bf16["seconds"] += half["seconds"]
                bf16["recall"].append(recall_at_k(half["index"], exact["index"]))
            if use_faiss:
                faiss_rows.append(faiss_case(emb, args.k, exact["queries"], exact["index"], args.nlist, args.nprobe))
        note = f"timed on {extrapolated:,} queries per relation, extrapolated" if extrapolated else None
        rows.append({"items": n, "method": "exact float32 (blocked matmul + grouped top-k)", "seconds": round(total, 4),
                     "items_per_second": round(n / total, 1), "recall@10": 1.0, "note": note})
        if args.bf16:
            rows.append({"items": n, "method": "bfloat16 products, same selection", "seconds": round(bf16["seconds"], 4),
                         "items_per_second": round(n / bf16["seconds"], 1),
                         "recall@10": round(sum(bf16["recall"]) / len(bf16["recall"]), 4), "note": note})
        if faiss_rows:
            seconds = sum(f["build_seconds"] + f["search_seconds"] for f in faiss_rows)
            rows.append({"items": n, "method": f"faiss IVFFlat nlist={args.nlist} nprobe={args.nprobe}",
                         "seconds": round(seconds, 4), "items_per_second": round(n / seconds, 1),
                         "recall@10": round(sum(f["recall"] for f in faiss_rows) / len(faiss_rows), 4),
                         "note": "build {:.1f} s + search {:.1f} s".format(
                             sum(f["build_seconds"] for f in faiss_rows), sum(f["search_seconds"] for f in faiss_rows))})
        logger.info("%s", rows[-1])
    columns = [("items", "items", ","), ("method", "method", ""), ("seconds (s+c)", "seconds", ".2f"),
               ("items/s", "items_per_second", ",.0f"), ("recall@10", "recall@10", ".4f"), ("note", "note", "")]
    sys.stdout.write(format_table(columns, rows) + "\n")
    if args.json:
        write_json(args.json, "recommend", rows, settings={k: str(v) for k, v in vars(args).items()})


if __name__ == "__main__":
    main()
