#!/usr/bin/env bash
# Issue 4's forward checks in one GPU call, dev build (no setup.py): the
# attention GPU tests, the dev benchmark against SDPA flash / cuDNN / Flex at
# d = 128 (1K to 32K) and d = 64 (16K) with the bf16 matmul rate, the
# 1M-token causal forward, the backward's GPU tests, then compute-sanitizer
# memcheck and racecheck.
# Every step has its own time limit so one hang cannot eat the call; at
# most 8 files, what one device call brings back.
#
#   PYKERNELS_COMMIT=<sha> [SKIP="d128_32k long_1m"] bash scripts/dev/fwd_check.sh OUTDIR
#
# SKIP may also name d64, tests_bwd and racecheck, for a call short of device time.
set -uo pipefail
cd "$(dirname "$0")/../.."
P=cuda,cuda_sm80,sdpa_flash,cudnn,flex
source scripts/dev/steps.sh "${1:-}"  # $OUT; step LIMIT NAME CMD...: a time limit, $OUT/NAME.log, its tail
TAIL=16 step 200 tests_d128 python3 scripts/dev/attn_dev.py --tests --bench --providers $P --head-dim 128 --out "$OUT/fwd_dev.jsonl"
# SKIP="d128_32k long_1m" leaves out those two (e.g. when their kernels' PTX did not change).
skip() { [[ " ${SKIP:-} " == *" $1 "* ]] && echo "=== $1: skipped (SKIP)"; }
skip d128_32k || step 90 bench python3 scripts/dev/attn_dev.py --bench --providers $P --seqlen 32768 --matmul 0 --out "$OUT/fwd_dev.jsonl"
skip d64 || step 80 bench python3 scripts/dev/attn_dev.py --bench --providers $P --head-dim 64 --matmul 0 --out "$OUT/fwd_dev.jsonl"
# The issue's S from 1K to 16K (B * S = 16K): shorter rows, fewer key tiles per query tile.
TAIL=28 step 200 bench python3 scripts/dev/attn_dev.py --bench --providers cuda,sdpa_flash,cudnn,flex \
  --seqlen 1024,2048,4096,8192 --matmul 0 --reps 10 --out "$OUT/fwd_dev.jsonl"
skip long_1m || step 50 long_1m python3 -c "
import runpy, sys
sys.path.insert(0, 'scripts/dev')
from attn_dev import env_build
env_build()
sys.argv = ['long_context', '--seqlens', '1048576', '--modes', 'fwd', '--results', '$OUT']
runpy.run_module('profiling.long_context', run_name='__main__')"
# The backward's GPU tests on the same build (its kernels share the mask and tile ranges).
skip tests_bwd || TAIL=4 step 150 tests_bwd python3 scripts/dev/attn_bwd_dev.py --tests
memcheck_step 90 sanitize
skip racecheck || racecheck_step 180 sanitize
