"""Look-alikes among every item's top-k picks per relation, from trained runs.

The implementation is :mod:`mmsc_dgl.bench.lookalikes`; ``mmsc-dgl bench lookalikes`` runs the same code.
Run ``python benchmarks/bench_lookalikes.py --help`` for the options.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mmsc_dgl.bench.lookalikes import main  # noqa: E402
from mmsc_dgl.bench.machine import run_script  # noqa: E402

if __name__ == "__main__":
    run_script(main)
