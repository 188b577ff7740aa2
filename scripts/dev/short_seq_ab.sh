#!/usr/bin/env bash
# One GPU call: four experiments of the Hopper forward aimed at short
# sequences (1K-4K), against the default build (auto). First run on
# 2026-12-08 (profiling/results/h100-2026-12-08/). auto is still the static
# snake; -DPK_SM90_DYNAMIC_TILES=-1 takes the queue where that run found it
# faster (tile_queue_pays), to be timed against these builds next:
# * dyn, dyn16: the tile queue (-DPK_SM90_DYNAMIC_TILES=1,
#   hopper/tile_queue.cuh), CTAs drawing work tiles from a counter as they
#   free up, so that L2 sections need not break the static snake's causal
#   balance; with the sections as auto picks them (up to 2K keys), and with
#   16 MB sections at every length;
# * pair: the paired static order (-DPK_SM90_PAIRED_TILES=1,
#   hopper/work_order.cuh), query tiles m and Mq-1-m of one head on one CTA,
#   equal causal cost per pair and about 17 MB of K and V in flight at d = 128;
# * q2: two Q buffers (-DPK_SM90_Q_STAGES=2), the next work tile's Q loading
#   while this one's first key tiles still run;
# * the TMA store (-DPK_SM90_TMA_STORE=1), timed so far at 16K only.
# The steps, most telling first, each under its own time limit (about 9.5
# minutes in all on an H100, estimated; it took 6.6 minutes on 2026-12-08):
# 1. the five A/B modules built (scripts/dev/attn_ab.py --build-only);
# 2. the A/B at d = 128 for S = 1K, 2K, 4K and 16K, then d = 64 at 16K and 1K;
# 3. the attention GPU tests on the pair build (its A/B module, PK_DEV_NAME)
#    and on one build with the queue, two Q buffers and 1 MB sections (a hang
#    in a handshake shows here under the limit; if they fail, test the knobs
#    one at a time), then memcheck on both;
# 4. the A/B at d = 128, 8K; the TMA store at 1K and 2K.
# racecheck is left to a later call (150 s or more).
#
#   PYKERNELS_COMMIT=<sha> bash scripts/dev/short_seq_ab.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/dev/steps.sh "${1:-}"  # $OUT; step LIMIT NAME CMD...; ab_step LIMIT NAME D S
# attn_ab.py variants: name=flag,flag (comma-separated nvcc options).
PAIR=-DPK_SM90_PAIRED_TILES=1
V=${V:-"auto= dyn=-DPK_SM90_DYNAMIC_TILES=1 dyn16=-DPK_SM90_DYNAMIC_TILES=1,-DPK_SM90_L2_SECTION_MB=16 pair=$PAIR q2=-DPK_SM90_Q_STAGES=2"}
TAIL=3 step 240 build_ab python3 scripts/dev/attn_ab.py $V --build-only
ab() { ab_step 60 ab_knobs "$@"; }  # head dim, seqlen
for s in 1024 2048 4096 16384; do ab 128 "$s"; done
for s in 16384 1024; do ab 64 "$s"; done
PK_DEV_NAME=pk_attn_ab_pair PK_DEV_FLAGS=$PAIR TAIL=2 step 90 tests_knobs python3 scripts/dev/attn_dev.py --tests
KNOBS="-DPK_SM90_DYNAMIC_TILES=1 -DPK_SM90_Q_STAGES=2 -DPK_SM90_L2_SECTION_MB=1"
PK_DEV_FLAGS="$KNOBS" TAIL=2 step 120 tests_knobs python3 scripts/dev/attn_dev.py --tests
PK_DEV_NAME=pk_attn_ab_pair PK_DEV_FLAGS=$PAIR memcheck_step 60 sanitize_knobs
PK_DEV_FLAGS="$KNOBS" memcheck_step 60 sanitize_knobs
ab 128 8192
V="auto= tma_st=-DPK_SM90_TMA_STORE=1"
for s in 1024 2048; do ab_step 60 ab_tma_store 128 "$s"; done
