#!/usr/bin/env bash
# Chained work tiles in the Hopper forward (-DPK_SM90_CHAINED_TILES=1,
# flash_fwd_sm90_kernel.cuh): a work tile's last P V issued with the next
# work tile's first Q K^T, so that this S's softmax overlaps the P V instead
# of running alone at every work tile's start. Written on 2026-12-08 without
# a GPU; this one call (~8.5 minutes on an H100, estimated) is its first run:
# 1. three A/B modules: pick (the tile queue's per-launch pick, what
#    queue_pick_check.sh makes the default), chain (pick + chained tiles),
#    chain_q2 (chain + two Q buffers: with one, the next tile's Q can only
#    load once this tile's last S is done, and the chained tail waits on it);
# 2. a smoke test of chain under 60 s: the tests that give each CTA several
#    work tiles, where a wrong barrier phase would hang; if it fails or
#    hangs, the call stops there;
# 3. the attention GPU tests and memcheck on chain;
# 4. the A/B at d = 128 for 1K, 2K, 4K and 16K, at d = 64 for 1K and 16K.
# If the tests pass and the A/B holds, set PK_SM90_CHAINED_TILES to 1 in
# kernel_traits.cuh (or to the better of chain and chain_q2).
#
#   PYKERNELS_COMMIT=<sha> bash scripts/dev/chain_check.sh OUTDIR
# Tables for the results README: python scripts/dev/ab_table.py OUTDIR/ab_*.jsonl --base pick
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/dev/steps.sh "${1:-}"  # $OUT; step LIMIT NAME CMD...; ab_step LIMIT NAME D S
PICK=-DPK_SM90_DYNAMIC_TILES=-1
CHAIN="$PICK,-DPK_SM90_CHAINED_TILES=1"
V="pick=$PICK chain=$CHAIN chain_q2=$CHAIN,-DPK_SM90_Q_STAGES=2"
TAIL=3 step 150 build_ab python3 scripts/dev/attn_ab.py $V --build-only
# The tests and memcheck below run on chain's A/B module (attn_dev.env_build).
export PK_DEV_NAME=pk_attn_ab_chain PK_DEV_FLAGS="${CHAIN//,/ }"
PK_TEST_K="test_many_query_tiles and not cupy" TAIL=4 step 60 smoke python3 scripts/dev/attn_dev.py --tests
if ! grep -qE "^[0-9]+ passed" "$OUT/smoke.log" || grep -qE "[0-9]+ failed" "$OUT/smoke.log"; then
  echo "=== chain failed or hung in the smoke test: stopping (see smoke.log)"
  exit 1
fi
TAIL=2 step 100 tests python3 scripts/dev/attn_dev.py --tests
memcheck_step 50 sanitize
for s in 1024 2048 4096 16384; do ab_step 45 ab_chain 128 "$s"; done
for s in 1024 16384; do ab_step 45 ab_chain 64 "$s"; done
