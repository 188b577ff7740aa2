# Shared by the one-call GPU scripts (fwd_check.sh, l2_order_ab.sh); source it
# after setting OUT. A step runs under its own time limit, so one hang cannot
# eat the device call, and appends to $OUT/<name>.log; what comes back in the
# call's output is the log's tail without the build's noise.
quiet() { grep -v '^\[\|ptxas\|^nvcc\|Function prop\|bytes stack\|Used \|Compiling entry\|c++ -MMD'; }
step() {  # limit, log name, command...
  local limit=$1 name=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" >> "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $(( $(date +%s) - t0 ))s"
  quiet < "$OUT/$name.log" | tail -n "${TAIL:-12}"
}
