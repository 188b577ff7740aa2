#!/usr/bin/env bash
# Where the Hopper forward's time goes at short sequences: Nsight Compute's
# full report of the causal forward (d = 128, B * S = 16K) at 1K and at 16K,
# where it reaches 82% of the matmul rate, and of cuDNN's causal forward at
# 1K (its launch shape and memory traffic: 1.5x our rate there). Keeps the
# three reports, their details pages, and the hottest SASS lines by stall
# samples (scripts/dev/ncu_hot.py). About 3 minutes.
#
#   PYKERNELS_COMMIT=<sha> bash scripts/dev/ncu_short.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/dev/steps.sh "${1:-}"  # $OUT; step LIMIT NAME CMD...
# PK_DEV_FLAGS (and PK_DEV_NAME) pick a knob build, as in attn_dev.py, e.g. the tile queue's pick.
step 150 build python3 -c "import sys; sys.path.insert(0, 'scripts/dev'); from attn_dev import env_build; env_build()"
NCU=(ncu --set full --import-source no --launch-skip 1 --launch-count 1 -f)
prof() {  # name, kernel regex, ncu_target args...
  local name=$1 kernel=$2; shift 2
  TAIL=3 step 120 ncu "${NCU[@]}" --kernel-name "regex:$kernel" -o "$OUT/$name" python3 scripts/ncu_target.py --mode fwd "$@"
  { echo "##### $name"; ncu --import "$OUT/$name.ncu-rep" --page details; } >> "$OUT/ncu_details.txt" 2>&1
  { echo "##### $name"; ncu --import "$OUT/$name.ncu-rep" --page source --csv --print-source sass |
      python3 scripts/dev/ncu_hot.py --top 45; } >> "$OUT/ncu_hot.txt" 2>&1
}
prof fwd_1k flash_fwd_sm90 --seqlen 1K --dev-build
prof fwd_16k flash_fwd_sm90 --seqlen 16K --dev-build
prof cudnn_1k 'fprop|fmha|sdpa|flash|attn' --seqlen 1K --peer cudnn
grep -E "^#####|Duration|DRAM Throughput|Memory Throughput|L2 Hit Rate|Compute \(SM\) Throughput|Registers Per|Grid Size|Block Size|Dynamic Shared|Achieved Occupancy|Issue Slots Busy|No Eligible|Warp Cycles Per Issued" "$OUT/ncu_details.txt"
head -n 25 "$OUT/ncu_hot.txt"
