#!/usr/bin/env bash
# Every GPU check of one session in one command (device time is scarce), each step bounded by a
# timeout so that the whole fits BUDGET seconds:
#   1. the CUDA backends' tests (tests/test_backends.py -k cuda);
#   2. issue 15's GPU rows: scripts/gpu_video_bench.sh (video tracking speed, cuda-bf16);
#   3. the trained teacher fixture, trained one more stage on the GPU from INIT: a 40-step probe
#      measures steps/s, then `python -m repvit_sam.train.fixtures --teacher-only --device cuda
#      --teacher-init INIT` runs as many steps as the time left allows (the count is printed and
#      recorded in the run's run.json, so the run can be repeated exactly);
#   4. if time is left, the encoder's GPU throughput table (docs/performance.md).
# Results go to OUT as teacher_model.pt and results.tgz (logs and JSON; the device tool brings
# back at most 8 files).   scripts/gpu_session.sh OUT INIT [BUDGET_S=560] [BATCH=32] [LR=1e-3]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?OUT folder}; INIT=${2:?teacher weights to start from}; BUDGET=${3:-560}; BATCH=${4:-32}; LR=${5:-1e-3}
DEVICE=${DEVICE:-cuda}; TRAIN_COUNT=${TRAIN_COUNT:-2000}; WORK=${WORK:-/tmp/gpu_session}
PY=${PYTHON:-python3}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
T0=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
FINAL=$OUT; OUT=$WORK/results
mkdir -p "$FINAL" "$OUT" "$WORK"
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1; "$PY" -c "import torch; print('torch', torch.__version__)"; } > "$OUT/machine.txt"

# training and held-out images (CPU, in the background; the same files as on any machine)
"$PY" -c "
from pathlib import Path
from repvit_sam.train import fixtures
fixtures._synth(Path('$WORK/train'), $TRAIN_COUNT, 0); fixtures._synth(Path('$WORK/val'), fixtures.VAL_COUNT, 1)
" > "$OUT/synth.log" 2>&1 &
SYNTH=$!

echo "== 1. CUDA tests ($(left) s left)"
timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/test_backends.py -k cuda > "$OUT/cuda_tests.log" 2>&1
tail -3 "$OUT/cuda_tests.log"
wait $SYNTH || { echo "synthetic data failed"; cat "$OUT/synth.log"; }

echo "== 2. video bench ($(left) s left)"
timeout 150 scripts/gpu_video_bench.sh "$OUT/video_gpu.json" > "$OUT/video_gpu.log" 2>&1
tail -14 "$OUT/video_gpu.log"

echo "== 3. teacher ($(left) s left)"
FX=("$PY" -m repvit_sam.train.fixtures --teacher-only --teacher-stages 1 --device "$DEVICE" --teacher-init "$INIT" --train-count "$TRAIN_COUNT"
    --teacher-batch-size "$BATCH" --teacher-lr "$LR")
mkdir -p "$WORK/probe"; ln -sfn "$WORK/train" "$WORK/probe/train"; ln -sfn "$WORK/val" "$WORK/probe/val"
timeout 120 "${FX[@]}" --work "$WORK/probe" --teacher-steps 40 > "$OUT/probe.log" 2>&1
STEPS=$("$PY" - "$WORK/probe/teacher/metrics.jsonl" "$(left)" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
a, b = rows[0], rows[-1]
rate = (b["step"] - a["step"]) / max(b["time_s"] - a["time_s"], 1e-9)
budget = int(sys.argv[2]) - 150      # start-up, final validation, save; 4. if it fits
print(max(100, int(rate * budget) // 100 * 100))
print(f"probe: {rate:.2f} steps/s at this batch", file=sys.stderr)
PYEOF
)
echo "teacher steps: $STEPS"
mkdir -p "$WORK/teacher" && cp -al "$WORK/probe/teacher/prepared" "$WORK/teacher/prepared"
timeout $(( $(left) - 15 )) "${FX[@]}" --work "$WORK" --teacher-steps "$STEPS" > "$OUT/teacher.log" 2>&1
for f in model.pt metrics.jsonl validation.json run.json; do cp "$WORK/teacher/$f" "$OUT/teacher_$f" 2>/dev/null; done
grep -o '"miou_box": [0-9.]*\|"miou_point": [0-9.]*' "$OUT/teacher_validation.json" 2>/dev/null | head -2

if [ "$(left)" -gt 70 ] && [ "$DEVICE" = cuda ]; then
  echo "== 4. encoder GPU throughput ($(left) s left)"
  timeout $(( $(left) - 5 )) "$PY" -m repvit_sam bench --models repvit vit_t vit_b --task encoder \
      --backends cuda cuda-fp16 cuda-bf16 cuda-graphs --gpu-batches 1 16 --runs 10 --warmup 2 --json "$OUT/gpu_encoder.json" \
      > "$OUT/gpu_encoder.log" 2>&1
  tail -30 "$OUT/gpu_encoder.log"
fi
mv "$OUT/teacher_model.pt" "$FINAL/" 2>/dev/null
tar czf "$FINAL/results.tgz" -C "$OUT" .
echo "== done ($(left) s left)"
