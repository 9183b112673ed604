"""Forward + backward of one MetaPathAttention layer: reference vs DGL kernels (CPU) and
reference vs the fused Triton kernel (CUDA).

Needs neither DGL nor a dataset: meta-path tables are generated directly as CSR tensors, either
``bounded`` (every item has about k neighbours, as a walk/topk table) or ``powerlaw`` (hubs).
A warm-up, then a device-synchronised timer; one figure per case.  ``--check`` also compares
every implementation's output and gradients with the reference.

    python benchmarks/bench_encoder.py                                # CPU: reference vs dgl
    python benchmarks/bench_encoder.py --device cuda --json out.json  # CUDA: reference vs triton
    mmsc-dgl bench encoder --edges 100000 --json out.json             # the same
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time

import torch

from mmsc_dgl.nn import MetaPathAttention
from mmsc_dgl.ops import CSR, triton_available

logger = logging.getLogger("bench_encoder")


def make_table(num_edges: int, kind: str, k: int = 32, seed: int = 0) -> CSR:
    g = torch.Generator().manual_seed(seed)
    if kind == "bounded":  # every item has k neighbours (the last one fewer), as in a walk table
        rows = -(-num_edges // k)
        degree = torch.full((rows,), k, dtype=torch.int64)
        degree[-1] = num_edges - k * (rows - 1)
    elif kind == "powerlaw":  # mean degree 10, a few hubs with thousands
        rows = max(1, num_edges // 10)
        weight = torch.rand(rows, generator=g, dtype=torch.float64) ** -1.2
        degree = (weight / weight.sum() * num_edges).floor().long()
        short = num_edges - int(degree.sum())
        degree.index_add_(0, torch.randint(0, rows, (short,), generator=g), torch.ones(short, dtype=torch.int64))
    else:
        raise ValueError(kind)
    indptr = torch.zeros(rows + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(degree, 0)
    indices = torch.randint(0, rows, (int(indptr[-1]),), generator=g)
    return CSR(indptr, indices, rows)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_layer(layer: MetaPathAttention, csr: CSR, feat: torch.Tensor, warmup: int, iters: int) -> float:
    device = feat.device
    for _ in range(warmup):
        layer(csr, feat).sum().backward()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        layer.zero_grad(set_to_none=True)
        layer(csr, feat).sum().backward()
    _sync(device)
    return (time.perf_counter() - start) / iters * 1000


def check(layer_ref: MetaPathAttention, layer: MetaPathAttention, csr: CSR, feat: torch.Tensor) -> dict:
    """Max absolute differences of output and gradients against the reference."""
    outs = []
    for lay in (layer_ref, layer):
        lay.zero_grad(set_to_none=True)
        x = feat.detach().clone().requires_grad_()
        out = lay(csr, x)
        (out * torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)).sum().backward()
        outs.append((out.detach(), x.grad, lay.fc.weight.grad, lay.attn_l.grad))
    names = ("out", "grad_feat", "grad_weight", "grad_attn")
    return {n: float((a - b).abs().max()) for n, a, b in zip(names, *outs)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="bench encoder", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--edges", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="*", default=["bounded", "powerlaw"])
    parser.add_argument("--dims", type=int, default=64, help="input size")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dims", type=int, nargs="*", default=[16, 64], help="output size per head")
    parser.add_argument("--impls", nargs="*", default=None)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--check", action="store_true", help="compare outputs and gradients with the reference")
    parser.add_argument("--seed", type=int, default=0)
    from mmsc_dgl.bench.machine import add_json_option, check_json_target
    add_json_option(parser)
    args = parser.parse_args(argv)
    check_json_target(args)
    from mmsc_dgl.bench.machine import setup_logging
    setup_logging()
    device = torch.device(args.device)
    impls = args.impls
    if impls is None:
        impls = ["reference"]
        if device.type == "cpu" and importlib.util.find_spec("dgl") is not None:
            impls.append("dgl")
        if triton_available(device):
            impls.append("triton")
    torch.manual_seed(args.seed)
    info = {"device": str(device), "torch": torch.__version__, "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    logger.info("bench_encoder on %s", json.dumps(info))
    rows, failures = [], []
    for kind in args.kinds:
        for edges in args.edges:
            csr = make_table(edges, kind, seed=args.seed).to(device)
            feat = torch.randn(csr.num_src, args.dims, device=device)
            for head_dim in args.head_dims:
                ref = MetaPathAttention(args.dims, head_dim, num_heads=args.heads, impl="reference").to(device)
                base = None
                for impl in impls:
                    layer = MetaPathAttention(args.dims, head_dim, num_heads=args.heads, impl=impl).to(device)
                    layer.load_state_dict(ref.state_dict())
                    ms = time_layer(layer, csr, feat, args.warmup, args.iters)
                    base = ms if impl == "reference" else base
                    row = {"kind": kind, "edges": csr.num_edges, "rows": csr.num_rows, "heads": args.heads,
                           "head_dim": head_dim, "impl": impl, "ms_fwd_bwd": round(ms, 3),
                           "speedup_vs_reference": round(base / ms, 2) if base else None}
                    if args.check and impl != "reference":
                        diffs = check(ref, layer, csr, feat)
                        row["max_abs_diff"] = diffs
                        if max(diffs.values()) > 1e-3:
                            failures.append(row)
                    rows.append(row)
    header = f"{'kind':<9}{'edges':>11}{'heads':>6}{'dim':>5}{'impl':>11}{'ms fwd+bwd':>12}{'vs ref':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        speed = f"{r['speedup_vs_reference']:.2f}x" if r["speedup_vs_reference"] else "-"
        lines.append(f"{r['kind']:<9}{r['edges']:>11,}{r['heads']:>6}{r['head_dim']:>5}{r['impl']:>11}"
                     f"{r['ms_fwd_bwd']:>12.2f}{speed:>8}")
    logger.info("\n".join(lines))
    if args.json:
        from mmsc_dgl.bench.machine import write_json
        write_json(args.json, "encoder", rows, device=str(device), info=info)
    if failures:
        logger.error("implementations disagree with the reference: %s", failures)
        sys.exit(1)


if __name__ == "__main__":
    main()
