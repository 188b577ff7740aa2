#!/usr/bin/env bash
# One GPU call: the Hopper forward's L2-sectioned work order
# (-DPK_SM90_L2_SECTION_MB, hopper/work_order.cuh) against the plain order.
# The steps, most telling first, so that a call cut short by the device's
# time limit still brings back what matters (each step has its own limit):
# 1. the A/B (attn_ab.py: builds side by side, timed in rotating turns) at
#    d = 128 for S = 1K, 16K and 4K, the plain order against 16 MB sections
#    (V= names other builds, e.g. V="plain=-D...=0 auto= l2_32=-D...=32";
#    auto= is the default build's per-launch pick, section_mb_for);
# 2. the attention GPU tests on a 1 MB build: sections that small cut even
#    the tests' shapes into several sections;
# 3. the peers (SDPA flash, cuDNN, Flex) at d = 128, S = 1K to 8K, on a
#    PEERS_MB-section build (default 16; 0 leaves it out), so that the order,
#    if it wins, has same-run ratios;
# 4. the rest of the A/B: d = 128 at 2K, d = 64 at 16K and 1K.
# First run 2026-12-07 on an H100: 222 s (profiling/results/h100-2026-12-07e/,
# when the plain order was the default build).
#
#   PYKERNELS_COMMIT=<sha> bash scripts/dev/l2_order_ab.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/dev/steps.sh "${1:-}"  # $OUT; step LIMIT NAME CMD...; ab_step LIMIT NAME D S
V=${V:-"plain=-DPK_SM90_L2_SECTION_MB=0 l2_16=-DPK_SM90_L2_SECTION_MB=16"}  # add l2_32=-DPK_SM90_L2_SECTION_MB=32 etc. to compare sizes
ab() { ab_step 120 ab_l2 "$@"; }  # head dim, seqlen
# Most telling first, in case the call runs short: the A/B where the gap is
# (1K, 4K) and where the kernel is already fast (16K), the tests, the peers,
# then the remaining A/B shapes.
for s in 1024 16384 4096; do ab 128 "$s"; done
PK_DEV_FLAGS="-DPK_SM90_L2_SECTION_MB=1" TAIL=2 step 150 tests_l2 python3 scripts/dev/attn_dev.py --tests
PEERS_MB=${PEERS_MB:-16}
[ "$PEERS_MB" != 0 ] && PK_DEV_FLAGS="-DPK_SM90_L2_SECTION_MB=$PEERS_MB" TAIL=28 step 200 peers_l2 \
  python3 scripts/dev/attn_dev.py --bench --providers cuda,sdpa_flash,cudnn,flex --seqlen 1024,2048,4096,8192 \
  --matmul 0 --reps 10 --out "$OUT/peers_l2.jsonl"
ab 128 2048
for s in 16384 1024; do ab 64 "$s"; done
