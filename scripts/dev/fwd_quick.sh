#!/usr/bin/env bash
# The short form of fwd_check.sh, for a call with under 5 minutes of device
# time: the attention GPU tests and memcheck on the default dev build, then the
# same-run benchmark against SDPA flash, cuDNN and Flex at d = 128 for
# S = 1K, 2K, 4K and 16K (B * S = 16K). Each step under its own time limit.
#
#   PYKERNELS_COMMIT=<sha> bash scripts/dev/fwd_quick.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/dev/steps.sh "${1:-}"  # $OUT; step LIMIT NAME CMD...
nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv,noheader
TAIL=2 step 100 tests python3 scripts/dev/attn_dev.py --tests
memcheck_step 50 sanitize
TAIL=30 step 130 bench python3 scripts/dev/attn_dev.py --bench --providers cuda,sdpa_flash,cudnn,flex \
  --seqlen 1024,2048,4096,16384 --matmul 0 --reps 10 --out "$OUT/fwd_dev.jsonl"
