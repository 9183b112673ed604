#!/usr/bin/env bash
# One script for a GPU host (torch + Triton, no DGL needed): the kernel and layer tests on CUDA,
# then the encoder benchmark with a correctness check.  Results go to $OUT (or runs/).
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-runs}"
mkdir -p "$out"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))"
if python -c "import pytest" 2>/dev/null; then
  # MMSC_NO_TRITON_INTERPRET keeps the compiled CUDA kernels even if a CPU fallback is set elsewhere.
  MMSC_NO_TRITON_INTERPRET=1 python -m pytest -q -p no:cacheprovider tests/test_ops.py tests/test_nn.py 2>&1 | tee "$out/gpu_tests.log"
else
  echo "pytest is not installed here: relying on bench_encoder.py --check for correctness"
fi
python benchmarks/bench_encoder.py --device cuda --check --json "$out/bench_encoder_cuda.json" 2>&1 | tee "$out/bench_encoder_cuda.log"
