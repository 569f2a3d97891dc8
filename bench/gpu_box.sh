#!/usr/bin/env bash
# Every GPU figure of docs/BENCHMARKS.md (the fused-training figures of issue 15 and the trainer
# throughput) in one command, meant for the next time a GPU box is lent: under 10 minutes on one
# GPU. Run from anywhere; prints markdown tables and also writes them to
# ${OUT:-bench/results}/gpu_box-<time>.md. Without CUDA it says so and exits 0 having run nothing.
#
#     bash bench/gpu_box.sh            # uses .venv/bin/python, else python3
#     PYTHON=python OUT=/tmp bash bench/gpu_box.sh
#     bash bench/gpu_box.sh --dry-run  # the commands and their time limits, nothing run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
BUDGET=570  # seconds for all figures together: under 10 minutes with PyTorch's start-up
TOTAL=0
if [ "$DRY" = 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_box: no CUDA device visible to PyTorch here; nothing measured (these are the GPU figures only)"
  exit 0
fi
OUT_DIR=${OUT:-bench/results}
REPORT=/dev/null
if [ "$DRY" = 0 ]; then
  mkdir -p "$OUT_DIR"
  REPORT="$OUT_DIR/gpu_box-$(date -u +%Y%m%d-%H%M%S).md"
fi
run() {  # run <seconds> <title> <command...>: one figure, bounded so the whole stays under 10 min
  local limit=$1 title=$2
  shift 2
  TOTAL=$((TOTAL + limit))
  if [ "$TOTAL" -gt "$BUDGET" ]; then
    echo "gpu_box: the figures' limits add up to ${TOTAL} s, over the ${BUDGET} s budget" >&2
    exit 1
  fi
  if [ "$DRY" = 1 ]; then
    echo "[${limit} s] $title: $*"
    return
  fi
  echo -e "\n## $title\n\n\`$*\`\n" | tee -a "$REPORT"
  if ! timeout "$limit" "$@" 2>&1 | grep -v '^USDT' | tee -a "$REPORT"; then
    echo "(did not finish within ${limit} s or failed)" | tee -a "$REPORT"
  fi
}
[ "$DRY" = 1 ] || {
  echo "# GPU figures, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
} | tee "$REPORT"
# Issue 15: fused groups of K = 1..32 against K separate trainings (samples/s, GPU busy fraction).
run 240 "Fused training throughput, CUDA" \
  "$PY" bench/fused_throughput.py --device cuda --epochs 3
# Issue 15: configurations per hour, one worker on the GPU, --fuse auto against --fuse 1.
run 200 "Fused training, configurations per hour on CUDA" \
  "$PY" bench/fused_throughput.py --service --device 0 --workers 1 --configs 64 --epochs 10 --fuse auto,1
# docs/BENCHMARKS.md, Trainer throughput: the built-in loop against a hand-written one, on CUDA.
run 120 "Trainer throughput, CUDA" \
  "$PY" bench/trainer_throughput.py --device cuda --epochs 6 --rounds 2
if [ "$DRY" = 1 ]; then
  echo "dry run: ${TOTAL} s of ${BUDGET} s at most; nothing measured"
else
  echo -e "\nwritten to $REPORT"
fi
