#!/usr/bin/env bash
# The README's set-up command: install pykernels into the current Python.
# Builds the CUDA extension when torch has CUDA and nvcc exists (minutes; MAX_JOBS
# and PYKERNELS_CUDA_ARCHS are honoured); otherwise installs the pure-Python
# package and says in one line why the extension was skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || { echo "install torch first (e.g. pip install torch==2.13.0)" >&2; exit 1; }
log=$(mktemp -t pykernels-install.XXXXXX)
echo "pykernels: installing (pip install --no-build-isolation -e .; log in $log)"
if ! python -m pip install --no-build-isolation -e . >"$log" 2>&1; then
  tail -n 60 "$log" >&2
  echo "pykernels: install failed; full log in $log" >&2
  exit 1
fi
python -c "import pykernels; print(pykernels.build_info())"
