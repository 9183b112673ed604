"""End-to-end training throughput: MMSC against a DGL HAN-style encoder, per catalog size.

The implementation is :mod:`mmsc_dgl.bench.train`; ``mmsc-dgl bench train`` runs the same code.
Run ``python benchmarks/bench_train.py --help`` for the options.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mmsc_dgl.bench.train import main  # noqa: E402
from mmsc_dgl.bench.machine import run_script  # noqa: E402

if __name__ == "__main__":
    run_script(main)
