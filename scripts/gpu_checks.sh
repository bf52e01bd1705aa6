#!/usr/bin/env bash
# The checks that need a CUDA GPU (and the vllm extra: pip install -e '.[vllm]'), in one run:
#   1. the `gpu` tests: bf16 HF training, LoRA export served by vLLM, the colocated vLLM backend;
#   2. engine throughput with both rollout backends on this GPU, written to docs/benchmarks.md.
# Usage: bash scripts/gpu_checks.sh [extra engine_throughput options]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"

"$PYTHON" - <<'PY'
import sys
import torch

if not torch.cuda.is_available():
    sys.exit("gpu_checks: no CUDA device visible")
try:
    import vllm
except ImportError:
    sys.exit("gpu_checks: the vllm package is not installed (pip install -e '.[vllm]')")
print(f"gpu_checks: {torch.cuda.get_device_name()}, torch {torch.__version__}, vllm {vllm.__version__}")
PY

"$PYTHON" -m pytest -m gpu -q -rs tests/remix_engine/test_gpu.py
# The tiny model holds 64 positions: 48 new tokens fit after its prompts.
"$PYTHON" -m benchmarks.engine_throughput --device cuda --backends hf vllm --prompts 64 --max-new-tokens 48 \
  --threads 4 "$@"
