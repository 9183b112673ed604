"""Where the time and the bytes of a distributed step go: 1 partition against 2 and 4 (DistDGL on
loopback: servers, trainers, meta-path sampling and feature reads across partitions).

The implementation is :mod:`mmsc_dgl.bench.dist`; ``mmsc-dgl bench dist`` runs the same code.
Run ``python benchmarks/bench_dist.py --help`` for the options.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mmsc_dgl.bench.dist import main  # noqa: E402
from mmsc_dgl.bench.machine import run_script  # noqa: E402

if __name__ == "__main__":
    run_script(main)
