#!/usr/bin/env bash
# The check that makes the tile queue's per-launch pick the default
# (-DPK_SM90_DYNAMIC_TILES=-1, tile_queue_pays in hopper/work_order.cuh),
# in one GPU call (~6 minutes on an H100, estimated): the attention GPU tests
# and memcheck on the pick's build; the A/B of the default build (static snake)
# against the pick, and the pick with the TMA store, at d = 128 for 1K, 2K,
# 4K and 16K and at d = 64 for 1K and 16K (where the pick keeps the snake, the
# queue's code is still compiled in: this shows what that costs); then the
# same-run benchmark of the pick against SDPA flash, cuDNN and Flex; last,
# racecheck on the pick, if 130 seconds or more of the call remain.
# If the tests pass and the A/B holds, set PK_SM90_DYNAMIC_TILES to -1 in
# kernel_traits.cuh.
#
#   PYKERNELS_COMMIT=<sha> bash scripts/dev/queue_pick_check.sh OUTDIR
# Tables for the results README: python scripts/dev/ab_table.py OUTDIR/ab_*.jsonl --base auto
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/dev/steps.sh "${1:-}"  # $OUT; step LIMIT NAME CMD...; ab_step LIMIT NAME D S
PICK=-DPK_SM90_DYNAMIC_TILES=-1
V="auto= pick=$PICK pick_tma=$PICK,-DPK_SM90_TMA_STORE=1"
TAIL=3 step 150 build_ab python3 scripts/dev/attn_ab.py $V --build-only
PK_DEV_NAME=pk_attn_ab_pick PK_DEV_FLAGS=$PICK TAIL=2 step 90 tests python3 scripts/dev/attn_dev.py --tests
PK_DEV_NAME=pk_attn_ab_pick PK_DEV_FLAGS=$PICK memcheck_step 50 sanitize
for s in 1024 2048 4096 16384; do ab_step 45 ab_pick 128 "$s"; done
for s in 1024 16384; do ab_step 45 ab_pick 64 "$s"; done
PK_DEV_NAME=pk_attn_ab_pick PK_DEV_FLAGS=$PICK TAIL=36 step 150 bench python3 scripts/dev/attn_dev.py --bench \
  --providers cuda,sdpa_flash,cudnn,flex --seqlen 1024,2048,4096,8192,16384 --matmul 0 --reps 10 --out "$OUT/fwd_dev.jsonl"
left=$(seconds_left)
if [ "$left" -ge 130 ]; then
  PK_DEV_NAME=pk_attn_ab_pick PK_DEV_FLAGS=$PICK racecheck_step $(( left < 200 ? left - 10 : 190 )) racecheck
else
  echo "=== racecheck: not run, ${left}s left"
fi
