#!/usr/bin/env bash
# Steps/s of `distill train` (phase 1) and `finetune` for the full-size RepViT-SAM student at a
# global batch of 8 on a GPU, with synthetic data and random weights; prints one JSON line.
#   scripts/gpu_train_bench.sh [--steps 30] [--device cuda] ...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} exec "$PY" -m repvit_sam.train.gpu_bench --device cuda "$@"
