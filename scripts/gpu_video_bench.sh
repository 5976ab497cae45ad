#!/usr/bin/env bash
# Issue 15's GPU rows: video tracking speed (1 and 5 objects, both strategies, 12 and 0
# refinement passes) on the synthetic 854x480 clip, RepViT-SAM at 1024, CUDA bf16 encoder;
# the report carries the date and the GPU's name. Writes OUT (default video_gpu.json).
#   scripts/gpu_video_bench.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${1:-video_gpu.json}
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} exec "$PY" -m repvit_sam bench --task video --backends cuda-bf16 \
  --video-frames 24 --json "$OUT"
