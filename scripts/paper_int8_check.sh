#!/usr/bin/env bash
# INT8 / bf16 / ONNX accuracy cost on a network trained at the paper's scale (a GPU is best):
#   1. generate a synthetic PNG cohort (PATIENTS patients, 13 screens each);
#   2. train at the paper's input scale (--preset paper: 0.5 mm, 512 x 512, full-resolution
#      decoder) with CONFIG's overrides (default scripts/paper_narrow.yaml: a narrow ResNet-18
#      encoder, a few GPU minutes; an empty CONFIG trains the paper's ResNet-50 recipe as is);
#   3. abdus export --int8 --calibration (train split), then abdus benchmark RUN --data: view
#      accuracy and caliper change (mm) of ONNX fp32 and INT8 against PyTorch fp32 on the test
#      split, with latency on this machine's CPU (and GPU figures when CUDA is there);
#   4. abdus evaluate: the fp32 model against the truth, for scale.
# Needs PyTorch (CUDA for the default DEVICE) and ONNX Runtime; MONAI / pydicom may come as wheels
# in .whl/ (see scripts/device_check.sh). Writes JSON and logs into ${OUT:-int8_results}.
#   PATIENTS=4 DEVICE=cpu CONFIG=my_small.yaml bash scripts/paper_int8_check.sh   # smoke run
set -uo pipefail
OUT=${OUT:-int8_results}
PATIENTS=${PATIENTS:-80}
DEVICE=${DEVICE:-cuda}
CONFIG=${CONFIG-scripts/paper_narrow.yaml}
CALIB_IMAGES=${CALIB_IMAGES:-32}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$OUT"
source "$(dirname "$0")/device_env.sh"
abdus() { python3 -m abdus.cli "$@"; }
stamp() { echo "[$(date +%T)] $*"; }
{ nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null; lscpu | grep -E 'Model name|^CPU\(s\)';
  grep -o -w -E 'avx512_vnni|avx512_bf16|amx_int8|avx_vnni' /proc/cpuinfo | sort -u | tr '\n' ' '; echo; } > "$OUT/machine.txt"
stamp "generate"; abdus generate "$WORK/data" --patients "$PATIENTS" --format png --jobs "$(nproc)" > "$OUT/generate.log" 2>&1
stamp "train"; abdus train "$WORK/data" --out "$WORK/run" --preset paper ${CONFIG:+--config "$CONFIG"} \
  --device "$DEVICE" > "$OUT/train.log" 2>&1; echo "train exit $?"
cp "$WORK/run/config.yaml" "$OUT/" 2>/dev/null
stamp "export"; abdus export "$WORK/run" --out "$WORK/run/model.int8.onnx" --int8 --calibration "$WORK/data" \
  --calibration-images "$CALIB_IMAGES"   > "$OUT/export.log" 2>&1; echo "export exit $?"
stamp "benchmark"; abdus benchmark "$WORK/run" --data "$WORK/data" --json --repeats 5 --warmup 2 \
  --backends torch-fp32 torch-bf16 onnx-fp32 onnx-int8 > "$OUT/benchmark_int8.json" 2> "$OUT/benchmark.err"; echo "benchmark exit $?"
stamp "evaluate"; abdus evaluate "$WORK/run" --data "$WORK/data" --out "$WORK/eval" --device "$DEVICE" \
  > "$OUT/evaluate.log" 2>&1; echo "evaluate exit $?"
cp "$WORK/eval/metrics.json" "$OUT/" 2>/dev/null
stamp "done"
tail -n 5 "$OUT/train.log"; cat "$OUT/export.log"; tail -c 1500 "$OUT/benchmark.err"
python3 - "$OUT/benchmark_int8.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for name, row in r["backends"].items():
    print(name, round(row["median_ms"], 1), "ms")
for name, acc in (r.get("accuracy") or {}).items():
    print(name, {k: acc.get(k) for k in ("n_images", "view_accuracy_reference", "accuracy_change_points",
          "mean_measurement_change_mm", "median_measurement_change_mm", "share_over_2mm", "max_measurement_change_mm")})
PY
