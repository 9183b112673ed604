"""What the command line prints after training and evaluation: the metrics as a table and
the next commands to try.  Terminal text only; the runs themselves are :mod:`mmsc_dgl.runs`."""

import logging
import os
from typing import List

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.train.trainer import TrainResult

logger = logging.getLogger(__name__)


def next_steps(result: TrainResult) -> List[str]:
    """What ``mmsc-dgl train`` prints at the end: where the run is, what the numbers mean, and
    the next commands to try, with a real item of the dataset."""
    lines = [f"run written to {result.run_dir}"]
    dataset = result.dataset
    negatives = dataset.splits.num_negatives if dataset is not None else 1000
    lines.append(f"HR@10 = share of held-out edges ranked in the top 10 of {negatives + 1:,} candidates (the true "
                 f"item and {negatives:,} sampled non-neighbours); MRR and NDCG@10 also reward a higher rank.")
    if dataset is None or not result.metrics:
        return lines
    ids = dataset.catalog.ids.to_pylist()
    titles = dataset.catalog.titles() if "title" in dataset.catalog.table.column_names else [None] * len(ids)
    test = dataset.splits.test["complement"].src
    pick = next((int(i) for i in test if titles[int(i)]), int(test[0]) if len(test) else 0)
    title = f"   # {' '.join(str(titles[pick]).split())}" if titles[pick] else ""  # one line, whatever the title holds
    run = _quote(result.run_dir)
    lines.append("next:")
    lines.append(f"  mmsc-dgl recommend {run} --item {_quote(ids[pick])} --relation complement -k 10{title}")
    lines.append(f"  mmsc-dgl evaluate {run}          # the same metrics again, written to evaluation.json")
    return lines


def _quote(value) -> str:
    import shlex
    return shlex.quote(os.fspath(value))


def _cell(value) -> str:
    return f"{'-':>10}" if value is None or value != value else f"{value:>10.4f}"


def format_metrics(metrics: dict) -> List[str]:
    lines = []
    for split in ("test", "test_full_catalog", "cold"):
        if split not in metrics:
            continue
        block = metrics[split]
        names = [m for m, v in next(iter(block.values())).items()
                 if m not in ("queries", "reason") and not isinstance(v, dict)]
        if split == "test_full_catalog":
            lines.append("test, each target ranked against every item of the catalog (not sampled negatives):")
            split = ""
        lines.append(f"{split:<6}{'relation':<12}" + "".join(f"{m:>10}" for m in names) + f"{'queries':>9}")
        for r in RELATIONS:
            lines.append(f"{'':<6}{r:<12}" + "".join(_cell(block[r][m]) for m in names) + f"{block[r]['queries']:>9,}"
                         + (f"  ({block[r]['reason']})" if block[r].get("reason") else ""))
    if "pairs" in metrics:
        lines.append(f"pairs {'relation':<12}{'ROC-AUC':>10}{'PR-AUC':>10}{'F1':>10}{'pairs':>9}")
        for r, m in metrics["pairs"].items():
            lines.append(f"{'':<6}{r:<12}{_cell(m['ROC-AUC'])}{_cell(m['PR-AUC'])}{_cell(m['F1'])}{m['pairs']:>9,}")
    return lines
