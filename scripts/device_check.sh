#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md, in one short run on a CUDA machine:
#   paper-preset training images/s (scripts/gpu_check.py), end-to-end inference latency and
#   throughput (abdus benchmark paper), and the paper preset's training images/s per stage on the
#   CPU loader and on the device-resident data path, eager then torch.compile'd
#   (scripts/bench_training.py --pipeline, on a generated 10-patient cohort; last, with short
#   time limits, so that a slow compile cannot cost the figures before it; each row is a JSON
#   line written as soon as it is measured). Needs PyTorch with CUDA; abdus's pure-Python extras
#   (MONAI, pydicom) may come as wheels in .whl/. Writes JSON into ${OUT:-gpu_results}.
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
source "$(dirname "$0")/device_env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)" | tee -a "$OUT/gpu.txt"
timeout 300 python3 scripts/gpu_check.py > "$OUT/gpu_check.json"; echo "gpu_check exit $?"
timeout 200 python3 -m abdus.cli benchmark paper --json --repeats 10 --backends torch-fp32 torch-bf16 \
  > "$OUT/benchmark_gpu.json"; echo "benchmark exit $?"
timeout 150 python3 scripts/bench_training.py --pipeline --presets paper --amp bf16 --steps 20 \
  --warmup 5 > "$OUT/bench_pipeline_gpu.json"; echo "bench_training --pipeline exit $?"
timeout 120 python3 scripts/bench_training.py --pipeline --presets paper --amp bf16 --steps 20 \
  --warmup 5 --stages landmarks --compile > "$OUT/bench_pipeline_compile_gpu.json"
echo "bench_training --pipeline --compile exit $?"
tail -c 3000 "$OUT/gpu_check.json"; tail -c 2000 "$OUT/benchmark_gpu.json"
tail -c 3000 "$OUT/bench_pipeline_gpu.json"; tail -c 3000 "$OUT/bench_pipeline_compile_gpu.json"
