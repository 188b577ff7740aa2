#!/usr/bin/env bash
# One GPU call: three untimed experiments of the Hopper forward aimed at short
# sequences (1K-4K, where the variants are 1.1-1.45x Flex), against the
# default build:
# * the tile queue (-DPK_SM90_DYNAMIC_TILES=1, hopper/tile_queue.cuh): CTAs
#   draw work tiles from a counter as they free up, so that L2 sections need
#   not break the static snake's causal balance;
# * two Q buffers (-DPK_SM90_Q_STAGES=2): the next work tile's Q loads while
#   this one's first key tiles still run;
# * the TMA store (-DPK_SM90_TMA_STORE=1), timed so far at 16K only.
# The steps, most telling first, each with its own time limit:
# 1. the attention GPU tests on one build with the queue, two Q buffers and
#    1 MB sections (a hang in a handshake shows here first, under the limit;
#    if they fail, test the knobs one at a time);
# 2. the A/B (attn_ab.py) at d = 128 for S = 1K, 4K and 16K: auto (the
#    default build), dyn (the queue, sections as auto picks them), dyn16 (the
#    queue, 16 MB sections at every length), q2 (two Q buffers);
# 3. memcheck, then racecheck on the 1100-token cases, on the step-1 build;
# 4. the rest of the A/B: d = 128 at 2K and 8K, d = 64 at 16K and 1K;
# 5. the TMA store at 1K and 2K.
# Not yet run; estimated at about 9 minutes on an H100 (6 builds of ~30 s):
# near the 10-minute call limit, so a short call may drop step 4 or 5.
#
#   PYKERNELS_COMMIT=<sha> bash scripts/dev/short_seq_ab.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/dev/steps.sh "${1:-}"  # $OUT; step LIMIT NAME CMD...; ab_step LIMIT NAME D S
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
# attn_ab.py variants: name=flag,flag (comma-separated nvcc options).
V=${V:-"auto= dyn=-DPK_SM90_DYNAMIC_TILES=1 dyn16=-DPK_SM90_DYNAMIC_TILES=1,-DPK_SM90_L2_SECTION_MB=16 q2=-DPK_SM90_Q_STAGES=2"}
ab() { ab_step 150 ab_knobs "$@"; }  # head dim, seqlen
KNOBS="-DPK_SM90_DYNAMIC_TILES=1 -DPK_SM90_Q_STAGES=2 -DPK_SM90_L2_SECTION_MB=1"
PK_DEV_FLAGS="$KNOBS" TAIL=2 step 150 tests_knobs python3 scripts/dev/attn_dev.py --tests
for s in 1024 4096 16384; do ab 128 "$s"; done
PK_DEV_FLAGS="$KNOBS" memcheck_step 60 sanitize_knobs
PK_DEV_FLAGS="$KNOBS" racecheck_step 150 sanitize_knobs
for s in 2048 8192; do ab 128 "$s"; done
for s in 16384 1024; do ab 64 "$s"; done
V="auto= tma_st=-DPK_SM90_TMA_STORE=1"
for s in 1024 2048; do ab_step 120 ab_tma_store 128 "$s"; done
