"""Look-alikes among the picks: for every item of a trained run, the share of its top-k picks per
relation that share its value of an item column (``product_type`` on the synthetic catalog, whose
items of one type are each other's planted substitutes; the leaf of ``category`` on Amazon data).

A good model puts look-alikes among an item's substitutes and keeps them out of its complements
(a chef's knife's complements are a board and a sharpener, not other chef's knives).  Items
without a value are neither queries nor matches.

    mmsc-dgl bench lookalikes runs/quickstart                          # product_type, top 10
    mmsc-dgl bench lookalikes runs/mag --column category --k 10 --json lookalikes.json
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from mmsc_dgl.errors import DataError
from mmsc_dgl.schema import RELATIONS

logger = logging.getLogger("bench_lookalikes")


def same_group_share(picks: torch.Tensor, groups: torch.Tensor) -> float:
    """Share of ``picks`` [Q, k] (item indices, row q the picks of query item q) whose group
    equals their query's; ``groups`` [N] holds each item's group code, ``-1`` for none (such
    queries are left out and such picks never match).  NaN when no query has a group.

    Example:
        >>> round(same_group_share(torch.tensor([[1, 2], [0, 2], [0, 1]]), torch.tensor([0, 0, 1])), 3)
        0.333
    """
    if picks.shape[0] != groups.shape[0]:
        raise ValueError(f"{picks.shape[0]} rows of picks for {groups.shape[0]} items")
    known = groups >= 0
    same = (groups[picks] == groups.unsqueeze(1)) & known[picks]
    return float(same[known].float().mean()) if bool(known.any()) else float("nan")


def group_codes(values: Sequence) -> torch.Tensor:
    """One integer per distinct value (a list: its last element, e.g. a category's leaf), ``-1``
    for a missing one."""
    codes: Dict[object, int] = {}
    out: List[int] = []
    for value in values:
        if isinstance(value, (list, tuple)):
            value = value[-1] if value else None
        out.append(-1 if value is None or value == "" else codes.setdefault(value, len(codes)))
    return torch.tensor(out, dtype=torch.long)


def measure(run_dir: Path, column: str, k: int, device: Optional[str] = None) -> List[dict]:
    """One row per relation: the share of each item's top-``k`` picks sharing its ``column``."""
    from mmsc_dgl.runs.load import load_run
    run = load_run(run_dir, device=device)
    table = run.dataset.catalog.table
    if column not in table.column_names:
        raise DataError(f"the run's items have no column {column!r} (they have: {', '.join(table.column_names)}).",
                        path=run_dir, fix="pass --column with one of those.")
    groups = group_codes(table.column(column).to_pylist())
    model = run.item_model()
    rows = []
    for relation in RELATIONS:
        top = model.topk(model.item_ids, relation, k=k)
        share = same_group_share(top.nodes.cpu(), groups)
        rows.append({"run": str(run_dir), "column": column, "relation": relation, "k": k,
                     "items": int((groups >= 0).sum()), "share": share})
        logger.info("%s: %.1f%% of the top-%d %s picks share the item's %s", run_dir, 100 * share, k, relation, column)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="bench lookalikes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="finished run directories (mmsc-dgl train --out)")
    parser.add_argument("--column", default="product_type", help="the item column that names a look-alike group")
    parser.add_argument("--k", type=int, default=10, help="picks per item")
    parser.add_argument("--device", help="where to load the runs (default: each run's own)")
    from mmsc_dgl.bench.machine import add_json_option, check_json_target
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be at least 1")
    check_json_target(args)
    from mmsc_dgl.bench.machine import format_table, setup_logging, write_json
    setup_logging()
    rows = [row for run in args.runs for row in measure(run, args.column, args.k, args.device)]
    print(format_table([("run", "run", ""), ("relation", "relation", ""), ("items", "items", ","),
                        (f"same {args.column} in top {args.k}", "share", ".2%")], rows))
    if args.json:
        write_json(args.json, "lookalikes", rows, device=args.device)
