#!/usr/bin/env bash
# One command on a GPU machine: build the extension, run the whole test suite
# (GPU-only tests included), sanitize, benchmark, and record what ran.
#
#   bash scripts/gpu_check.sh [OUTDIR]                 # every stage
#   STAGES="build test" bash scripts/gpu_check.sh OUT  # a subset
#   BENCH_GROUPS="rope attention flex pytest"           # bench groups (pytest = benchmarks/)
#   ATTN_SWEEPS="--quick; --variants causal --head-dims 64"  # attention sweeps, ';'-separated
#   SANITIZE_TOOLS="racecheck" SANITIZE_BACKENDS="cuda"  # a subset of the sanitizer runs
#   PROFILE_GROUPS="compiled slow numba" PROFILE_SECONDS=220 PROFILE_ARGS="--seqlens 32K 64K"  # the main job
#
# Stages: build native test sanitize long ropedev ropevariants bench profile ncu notebooks (long:
# the 1M-token scale run; ropedev: scripts/bench_rope_dev.py; ncu: Nsight Compute reports, not
# in the default set). Each stage logs to
# OUTDIR/<stage>.log and a failed stage does not stop the next one; the exit
# code is non-zero if any stage failed. OUTDIR/gpu_check.json records the GPU,
# torch/CUDA versions, commit, date, per-stage status and times, and the test
# counts. Set PYKERNELS_COMMIT when the tree has no .git (e.g. a copied tree).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-profiling/out/gpu_check}
STAGES=${STAGES:-"build native test sanitize long ropedev bench profile notebooks"}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

# Wheels the GPU image lacks (nvtx, nbclient, ...) travel in .whl/ (see README).
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/pk_site .whl/*.whl \
    && export PYTHONPATH=/tmp/pk_site${PYTHONPATH:+:$PYTHONPATH}
fi

declare -A STATUS SECONDS_TAKEN
run_stage() {  # name, command...
  local name=$1; shift
  [[ " $STAGES " == *" $name "* ]] || return 0
  echo "=== [$name] $(date -u +%H:%M:%S) $*"
  local t0=$(date +%s)
  "$@" 2>&1 | tee "$OUTDIR/$name.log" >/dev/null
  local rc=${PIPESTATUS[0]}
  SECONDS_TAKEN[$name]=$(( $(date +%s) - t0 ))
  STATUS[$name]=$rc
  echo "=== [$name] exit $rc after ${SECONDS_TAKEN[$name]}s"
  tail -n "${TAIL_LINES:-15}" "$OUTDIR/$name.log"
}

stage_build() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  export MAX_JOBS=${MAX_JOBS:-16}
  $PY -m pip install --no-build-isolation --no-deps -e . || return 1
  $PY -c "import pykernels; print(pykernels.build_info()); [print(' ', n, s.available, s.reason) for n, s in pykernels.available_backends().items()]"
}

stage_native() {
  # The standalone CMake build of csrc/ (no torch) and its native test program.
  cmake -S . -B build/cmake -DPYKERNELS_CUDA_ARCHS="${NATIVE_ARCHS:-90a}" >/dev/null || return 1
  cmake --build build/cmake -j "${MAX_JOBS:-16}" || return 1
  ./build/cmake/tile_range_test && ./build/cmake/native_test
}

stage_test() {
  $PY -m pytest -n "${TEST_WORKERS:-8}" -q -p no:cacheprovider --junitxml="$OUTDIR/junit.xml" ${TEST_ARGS:-tests}
}

stage_sanitize() {
  # memcheck and racecheck over a small matrix of configurations of every GPU kernel.
  local rc=0
  for tool in ${SANITIZE_TOOLS:-memcheck racecheck}; do
    # Host API errors are CuPy/cuda-python probing optional driver symbols
    # (cuGetProcAddress); only kernel errors count here.
    compute-sanitizer --tool "$tool" --error-exitcode 9 --target-processes all --report-api-errors no \
      $PY scripts/sanitize_cases.py || rc=1
  done
  return $rc
}

stage_long() {
  # One causal call at 128K..1M tokens (B=1, Hq=8, Hkv=1, D=128): time and peak memory, fwd and fwd+bwd.
  $PY -m profiling.long_context --peer --results "$OUTDIR/long_context" ${LONG_ARGS:-}
}

stage_ropedev() {
  # RoPE providers against the copy ceiling, table vs in-kernel sincos (scripts/bench_rope_dev.py).
  $PY scripts/bench_rope_dev.py --out "$OUTDIR/rope_dev.jsonl"
}

stage_ropevariants() {
  # The rotary kernel's launch constants, compiled as variants through NVRTC (scripts/bench_rope_variants.py).
  $PY scripts/bench_rope_variants.py --out "$OUTDIR/rope_variants.jsonl"
}

stage_bench() {
  # One long results table (OUTDIR/bench/bench.jsonl); providers split so that a
  # slow compile (FlexAttention) cannot starve the others of the time limit.
  # ATTN_SWEEPS: ';'-separated attention sweeps (profiling.bench arguments),
  # each run once for pykernels/SDPA/naive and once for FlexAttention.
  local rc=0
  local cap=${BENCH_SECONDS:-300}  # per group and sweep: rope, attention, FlexAttention
  local groups=" ${BENCH_GROUPS:-rope attention flex} "
  local sweeps=${ATTN_SWEEPS:-"--quick"}
  local providers=${ATTN_PROVIDERS:-"pykernels sdpa:* naive"}
  mkdir -p "$OUTDIR/bench"
  if [[ $groups == *" rope "* ]]; then
    timeout $((cap + 60)) $PY -m profiling.bench --ops rope --results "$OUTDIR/bench" --max-seconds "$cap" || rc=1
  fi
  local -a provider_list sweep_list sweep_args extra_args
  read -ra provider_list <<< "$providers"  # read splits on spaces and never globs (sdpa:*)
  read -ra extra_args <<< "${BENCH_ARGS:-}"
  IFS=';' read -ra sweep_list <<< "$sweeps"
  for sweep in "${sweep_list[@]}"; do
    read -ra sweep_args <<< "$sweep"
    [ ${#sweep_args[@]} -gt 0 ] || continue  # an empty sweep between ';' is a typo, not "everything"
    if [[ $groups == *" attention "* ]]; then
      timeout $((cap + 60)) $PY -m profiling.bench --ops attention "${sweep_args[@]}" "${extra_args[@]}" \
        --providers "${provider_list[@]}" --results "$OUTDIR/bench" --max-seconds "$cap" --no-charts || rc=1
    fi
    if [[ $groups == *" flex "* ]]; then
      timeout $((cap + 60)) $PY -m profiling.bench --ops attention "${sweep_args[@]}" "${extra_args[@]}" \
        --providers flex --results "$OUTDIR/bench" --max-seconds "$cap" --no-charts || rc=1
    fi
  done
  if [[ $groups == *" pytest "* ]]; then
    # The pytest-benchmark suite (benchmarks/): every op and backend, synchronised inside the timed call.
    # PYTEST_BENCH_K: a -k expression selecting a subset (e.g. "rope or (causal and S4K)").
    timeout $((cap + 60)) $PY -m pytest -q -p no:cacheprovider benchmarks ${PYTEST_BENCH_K:+-k "$PYTEST_BENCH_K"} \
      --benchmark-json "$OUTDIR/bench/pytest_benchmark.json" || rc=1
  fi
  if [ -f "$OUTDIR/bench/bench.jsonl" ]; then
    $PY -m profiling.charts "$OUTDIR/bench/bench.jsonl" --out "$OUTDIR/bench" || rc=1
  fi
  return $rc
}

stage_profile() {
  # The main job, 2K..64K; split by implementation so a sticky CUDA error in
  # one backend cannot spoil the rest, then one report over all rows.
  # PROFILE_GROUPS picks groups: compiled (naive, SDPA, cuda), slow (cupy, torch),
  # numba. The slow groups time multi-second points once (--min-reps 1).
  local rc=0
  local cap=${PROFILE_SECONDS:-220}  # per group
  local -a extra impls
  read -ra extra <<< "${PROFILE_ARGS:-}"
  local -A group_impls=([compiled]="naive sdpa pykernels:cuda" [slow]="pykernels:cupy pykernels:torch"
                        [numba]="pykernels:numba")
  local -A group_args=([compiled]="" [slow]="--min-reps 1" [numba]="--min-reps 1")
  local -A group_cap=([compiled]=$cap [slow]=$cap [numba]=${PROFILE_NUMBA_SECONDS:-$((cap / 2))})
  local group
  for group in ${PROFILE_GROUPS:-compiled slow numba}; do
    if [[ -z ${group_impls[$group]+set} ]]; then
      echo "PROFILE_GROUPS: unknown group '$group' (compiled, slow, numba)" >&2
      rc=1
      continue
    fi
    read -ra impls <<< "${group_impls[$group]}"
    local -a args=()
    read -ra args <<< "${group_args[$group]}"
    timeout $((group_cap[$group] + 60)) $PY -m profiling.memory --impls "${impls[@]}" --results "$OUTDIR/memory" \
      --max-seconds "${group_cap[$group]}" "${args[@]}" "${extra[@]}" || rc=1
  done
  $PY -m profiling.memory --results "$OUTDIR/memory" --report-only || rc=1
  return $rc
}

stage_ncu() {
  # Nsight Compute's full report of the causal forward and of the dK/dV backward
  # kernel (d=128, 16K), as text in ncu.log: occupancy, stalls, memory, registers.
  local rc=0
  ncu --set full --kernel-name regex:flash_fwd_kernel --launch-skip 1 --launch-count 1 \
    $PY scripts/ncu_target.py --mode fwd ${NCU_ARGS:-} || rc=1
  ncu --set full --kernel-name regex:flash_bwd_dkdv --launch-skip 1 --launch-count 1 \
    $PY scripts/ncu_target.py --mode bwd ${NCU_ARGS:-} || rc=1
  return $rc
}

stage_notebooks() {
  $PY scripts/run_notebooks.py
}

run_stage build stage_build
run_stage native stage_native
run_stage test stage_test
run_stage sanitize stage_sanitize
run_stage long stage_long
run_stage ropedev stage_ropedev
run_stage ropevariants stage_ropevariants
run_stage bench stage_bench
run_stage profile stage_profile
run_stage ncu stage_ncu
run_stage notebooks stage_notebooks

# Record the run: GPU, versions, commit, date, stage results, test counts.
stage_json="{"
for s in "${!STATUS[@]}"; do stage_json+="\"$s\": {\"exit\": ${STATUS[$s]}, \"seconds\": ${SECONDS_TAKEN[$s]}},"; done
stage_json="${stage_json%,}}"
$PY scripts/record_gpu_run.py --out "$OUTDIR/gpu_check.json" --stages "$stage_json" --junit "$OUTDIR/junit.xml"

failed=0
for s in "${!STATUS[@]}"; do [ "${STATUS[$s]}" -eq 0 ] || failed=1; done
echo "=== gpu_check done: $( [ $failed -eq 0 ] && echo all stages passed || echo some stages FAILED )"
exit $failed
