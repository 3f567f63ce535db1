#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md, in one short run on a CUDA machine:
#   paper-preset training images/s (scripts/gpu_check.py) and end-to-end inference latency and
#   throughput (abdus benchmark paper). Needs PyTorch with CUDA; abdus's pure-Python extras (MONAI,
#   pydicom) may come as wheels in .whl/. Writes JSON into ${OUT:-gpu_results}.
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)" | tee -a "$OUT/gpu.txt"
timeout 300 python3 scripts/gpu_check.py > "$OUT/gpu_check.json"; echo "gpu_check exit $?"
timeout 200 python3 -m abdus.cli benchmark paper --json --repeats 10 --backends torch-fp32 torch-bf16 \
  > "$OUT/benchmark_gpu.json"; echo "benchmark exit $?"
tail -c 3000 "$OUT/gpu_check.json"; tail -c 2000 "$OUT/benchmark_gpu.json"
