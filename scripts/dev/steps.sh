# Shared by the one-call GPU scripts (fwd_check.sh, queue_pick_check.sh,
# chain_check.sh, short_seq_ab.sh, ...); source it from the repository root
# with the output folder as $1. It makes that folder $OUT, sets the build's
# environment and prints the GPU.
# A step runs under its own time limit, so one hang cannot eat the device
# call, and appends to $OUT/<name>.log; what comes back in the call's output
# is the log's tail without the build's noise.
OUT=${1:?usage: $0 OUTDIR}
mkdir -p "$OUT"
# Seconds left of the device call's limit (CALL_LIMIT, 590 by default),
# counted from here: for steps that run only if time remains.
STEPS_T0=$(date +%s)
seconds_left() { echo $(( ${CALL_LIMIT:-590} - ($(date +%s) - STEPS_T0) )); }
# Which GPU, at what clock, under which driver: the first line of every call's output.
nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv,noheader
export PK_DEV_BUILD=${PK_DEV_BUILD:-/tmp/pkb} MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
quiet() { grep -v '^\[\|ptxas\|^nvcc\|Function prop\|bytes stack\|Used \|Compiling entry\|c++ -MMD'; }
step() {  # limit, log name, command...
  local limit=$1 name=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" >> "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $(( $(date +%s) - t0 ))s"
  quiet < "$OUT/$name.log" | tail -n "${TAIL:-12}"
}
# compute-sanitizer on scripts/dev/attn_sanitize_dev.py (PK_DEV_FLAGS picks a
# knob build). memcheck: both GPU backends, every case (~20 s). racecheck, far
# slower: the extension and the 1100-token cases only (once under 180 s; on
# 2026-12-07 it ran past 150 s). Shared-memory hazards come from the
# load/consume pipeline, which those cases walk through several work tiles per
# CTA with both row counts; the small cases' mask flags change only register math.
memcheck_step() {  # limit, log name
  TAIL=4 step "$1" "$2" compute-sanitizer --tool memcheck --error-exitcode 9 --report-api-errors no \
    python3 scripts/dev/attn_sanitize_dev.py
}
racecheck_step() {  # limit, log name
  SANITIZE_LONG_ONLY=1 SANITIZE_BACKENDS=cuda TAIL=4 step "$1" "$2" compute-sanitizer --tool racecheck \
    --error-exitcode 9 --report-api-errors no python3 scripts/dev/attn_sanitize_dev.py
}
# One A/B shape (scripts/dev/attn_ab.py, the builds named in $V, each
# name=flag,flag), into $OUT/NAME.log and NAME.jsonl; the tail is its table
# (title, header, 4 variants).
ab_step() {  # limit, log name, head dim, seqlen
  TAIL=6 step "$1" "$2" python3 scripts/dev/attn_ab.py $V --head-dim "$3" --seqlen "$4" --rounds 5 --reps 10 \
    --out "$OUT/$2.jsonl"
}
