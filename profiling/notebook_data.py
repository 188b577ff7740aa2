"""Where the notebooks get their numbers: committed results, or a tiny CPU run.

The notebooks never carry numbers of their own. :func:`latest_results` finds
the newest committed GPU table under ``profiling/results/``; when there is
none, :func:`cpu_memory_profile` and :func:`cpu_bench` run the real commands
at toy sizes on the CPU, so the notebook still executes end to end (in CI)
and says plainly that these are not GPU results.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

from .common import REPO_ROOT, read_table

RESULTS_DIR = REPO_ROOT / "profiling" / "results"

# Toy sizes: a few seconds on a 2-core CI machine. The window variants only
# differ from causal beyond S = 1024 and the forward alone shows the blowup,
# so the stand-in run leaves the rest out.
CPU_MEMORY_ARGS = ["--device", "cpu", "--seqlens", "128", "256", "512", "--heads", "2", "--head-dim", "32",
                   "--variants", "causal", "alibi", "--impls", "naive", "sdpa", "pykernels:torch", "--no-backward"]
CPU_BENCH_ARGS = ["--device", "cpu", "--ops", "attention", "--seqlens", "128", "256", "--variants", "causal",
                  "alibi", "--modes", "fwd", "--providers", "naive", "sdpa:math", "pykernels:torch",
                  "--budget", "0", "--no-charts"]


def latest_results(table: str) -> Optional[Path]:
    """The ``<table>.jsonl`` under profiling/results/ with the newest GPU rows (by their date), or None.

    Rows carry their date, so the choice does not depend on file times (a
    fresh checkout gives every file the same one).
    """
    if not RESULTS_DIR.is_dir():
        return None
    best, best_date = None, ""
    for path in sorted(RESULTS_DIR.rglob(f"{table}.jsonl")):
        dates = [str(r.get("date", "")) for r in read_table(path) if r.get("device") == "cuda"]
        if dates and max(dates) > best_date:
            best, best_date = path, max(dates)
    return best


def load(table: str, cpu_args: List[str]) -> Tuple[List[dict], Path, bool]:
    """``(rows, path, from_gpu)``: committed GPU rows when present, else a fresh toy CPU run."""
    path = latest_results(table)
    if path is not None:
        return read_table(path), path, True
    out = Path(tempfile.mkdtemp(prefix=f"pykernels-{table}-"))
    if table == "memory":
        from . import memory

        memory.main(cpu_args + ["--results", str(out)])
    else:
        from . import bench

        bench.main(cpu_args + ["--results", str(out)])
    path = out / f"{table}.jsonl"
    return read_table(path), path, False


def memory_rows() -> Tuple[List[dict], Path, bool]:
    return load("memory", CPU_MEMORY_ARGS)


def bench_rows() -> Tuple[List[dict], Path, bool]:
    return load("bench", CPU_BENCH_ARGS)
