"""Forward + backward of one MetaPathAttention layer: reference vs DGL (CPU) and Triton (CUDA).

The implementation is :mod:`mmsc_dgl.bench.encoder`; ``mmsc-dgl bench encoder`` runs the same code.
Run ``python benchmarks/bench_encoder.py --help`` for the options.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mmsc_dgl.bench.encoder import main  # noqa: E402
from mmsc_dgl.bench.machine import run_script  # noqa: E402

if __name__ == "__main__":
    run_script(main)
