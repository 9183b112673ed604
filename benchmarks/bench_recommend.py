"""Top-10 substitutes and complements for every item: exact blocked matmul + topk on CPU, and an

The implementation is :mod:`mmsc_dgl.bench.recommend`; ``mmsc-dgl bench recommend`` runs the same code.
Run ``python benchmarks/bench_recommend.py --help`` for the options.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mmsc_dgl.bench.recommend import main  # noqa: E402
from mmsc_dgl.bench.machine import run_script  # noqa: E402

if __name__ == "__main__":
    run_script(main)
