"""Plumbing shared by the profiler and the benchmarks.

* :func:`environment`: what every results row records (GPU, versions, commit, date);
* :func:`time_fn`: median / p20 / p80 of a callable, with CUDA events on a GPU
  (each call queued behind a spin kernel so that host overhead is not counted;
  CUDA-graph replay for kernels too short for events) and ``perf_counter`` on CPU;
* :class:`ResultsWriter` / :func:`read_table`: the one long table, JSON lines
  first (appended and flushed row by row, so a killed run keeps its rows) and a
  CSV copy rewritten after every row;
* :func:`nvtx_range`, :func:`free_memory`, :func:`is_oom`, :func:`progress`.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import functools
import gc
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMIT_ENV = "PYKERNELS_COMMIT"

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
          "fp32": torch.float32, "float32": torch.float32}

# Percentiles reported beside the median: the 20th and 80th, as Liger and
# Triton's do_bench report them (robust to a few slow outliers).
LOW_Q, HIGH_Q = 0.2, 0.8

# Below this a single launch is dominated by launch overhead and event
# resolution, so the timing replays a CUDA graph of many calls instead.
GRAPH_REPLAY_BELOW_S = 10e-6
GRAPH_CALLS = 100
# A warm-up call this fast may be a short kernel slowed by first-call costs: probe again before deciding.
GRAPH_PROBE_BELOW_S = 10 * GRAPH_REPLAY_BELOW_S


# ----------------------------------------------------------------- parsing
def parse_size(text: str) -> int:
    """``"4096"``, ``"4K"``, ``"4k"`` -> 4096 (K = 1024, M = 1024**2)."""
    t = str(text).strip().upper()
    mult = 1
    if t.endswith("K"):
        mult, t = 1024, t[:-1]
    elif t.endswith("M"):
        mult, t = 1024 ** 2, t[:-1]
    return int(float(t) * mult)


def fmt_size(n: int) -> str:
    """4096 -> "4K": the sequence-length labels of tables and charts."""
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}K"
    return str(n)


def fmt_bytes(n: Optional[float]) -> str:
    """Bytes in binary units (GiB = 2**30), the units the 13B example uses."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    x, i = float(n), 0
    while abs(x) >= 1024 and i < len(units) - 1:
        x, i = x / 1024, i + 1
    return f"{x:.1f} {units[i]}" if i else f"{int(x)} B"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def parse_dtype(text: str) -> torch.dtype:
    try:
        return DTYPES[text.lower()]
    except KeyError:
        raise SystemExit(f"--dtype: expected one of {sorted(DTYPES)}, got {text!r}") from None


def pick_device(requested: str) -> torch.device:
    """``auto`` is the GPU when torch sees one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA GPU (use --device cpu or auto)")
    return dev


# ------------------------------------------------------------- environment
@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    """HEAD of the repository, with "+dirty" when the work tree has changes.

    ``PYKERNELS_COMMIT`` overrides it, for a copy of the tree without .git
    (a GPU machine that receives the working tree, not the repository).
    """
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def timestamp() -> str:
    """A results-directory name: 20261122T0215Z."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def environment(device: torch.device) -> Dict[str, object]:
    """The columns every results row carries."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu, mem = props.name, props.total_memory
    else:
        gpu, mem = "none (CPU: " + (platform.processor() or platform.machine()) + ")", None
    return {
        "gpu": gpu,
        "gpu_memory_bytes": mem,
        "device": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "python": platform.python_version(),
        "commit": git_commit(),
        "date": now_utc(),
    }


# ------------------------------------------------------------------ output
def progress(msg: str) -> None:
    """One line per measured point, flushed so a log shows where a long run is."""
    print(msg, flush=True)


class ResultsWriter:
    """Append rows to ``<dir>/<name>.jsonl`` and keep ``<name>.csv`` in step.

    Rows may differ in keys (an OOM row has no time); the CSV's columns are the
    union, in first-seen order. Appending to an existing table lets several
    commands (one per provider group, say) fill one table.
    """

    def __init__(self, directory: os.PathLike, name: str):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = self.dir / f"{name}.jsonl"
        self.csv = self.dir / f"{name}.csv"
        self.rows: List[dict] = read_table(self.jsonl) if self.jsonl.exists() else []

    def write(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")
            f.flush()
        write_csv(self.csv, self.rows)


def _json_default(x):
    if isinstance(x, (torch.dtype, torch.device)):
        return str(x).replace("torch.", "")
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_csv(path: os.PathLike, rows: Sequence[dict]) -> None:
    cols: Dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(cols))
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    os.replace(tmp, path)


def _csv_value(text: str):
    if text == "":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    return text


def read_table(path: os.PathLike) -> List[dict]:
    """Rows of a results table: a .jsonl or .csv file, or a directory holding one."""
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.jsonl")) or sorted(p.glob("*.csv"))
        if not found:
            raise FileNotFoundError(f"{p}: no .jsonl or .csv results table in it")
        return [r for f in found for r in read_table(f)]
    if p.suffix == ".csv":
        with open(p, newline="") as f:
            return [{k: _csv_value(v) for k, v in r.items()} for r in csv.DictReader(f)]
    with open(p) as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------ memory
def free_memory(collect: bool = False) -> None:
    """Return cached blocks to the device so each point starts from the same place.

    ``collect=True`` also runs the garbage collector, needed after an exception
    (its traceback's frames hold the failed call's tensors) but costly (a
    fraction of a second with torch loaded) for every point.
    """
    if collect:
        gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def is_oom(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, or the CPU allocator's failure, which is a plain RuntimeError."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or "out of memory" in str(exc).lower())


# Messages with which torch says "this configuration has no kernel" rather than "something broke".
UNSUPPORTED_HINTS = ("no available kernel", "not supported", "unsupported", "not implemented")


def failure_status(exc: BaseException) -> str:
    """"oom", "skipped" (this provider cannot run this configuration) or "error" (it tried and failed)."""
    if is_oom(exc):
        return "oom"
    if isinstance(exc, (NotImplementedError, ValueError, TypeError)):
        return "skipped"  # pykernels' validation names the unsupported argument with these
    text = str(exc).lower()
    return "skipped" if any(h in text for h in UNSUPPORTED_HINTS) else "error"


def short_error(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception, short enough for a table cell."""
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------- NVTX
@functools.lru_cache(maxsize=None)
def _nvtx_kind():
    """The ``nvtx`` package when installed (named domain, colours), else torch.cuda.nvtx."""
    if importlib.util.find_spec("nvtx") is not None:  # not on every GPU machine: imported lazily
        return "nvtx"
    return "torch" if torch.cuda.is_available() else None


@contextlib.contextmanager
def nvtx_range(name: str):
    """An NVTX range around one measured op, visible in Nsight Systems."""
    kind = _nvtx_kind()
    if kind == "nvtx":
        import nvtx

        with nvtx.annotate(name, domain="pykernels.profiling"):
            yield
    elif kind == "torch":
        torch.cuda.nvtx.range_push(name)
        try:
            yield
        finally:
            torch.cuda.nvtx.range_pop()
    else:
        yield


# ------------------------------------------------------------------ timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quantiles(samples_s: Sequence[float]) -> Dict[str, float]:
    """Median, p20 and p80 in milliseconds."""
    xs = sorted(samples_s)
    if len(xs) == 1:
        m = xs[0] * 1e3
        return {"median_ms": m, "p20_ms": m, "p80_ms": m}

    def q(p):
        pos = p * (len(xs) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return (xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)) * 1e3

    return {"median_ms": statistics.median(xs) * 1e3, "p20_ms": q(LOW_Q), "p80_ms": q(HIGH_Q)}


# Each timed GPU call is queued behind a short spin kernel (torch.cuda._sleep,
# about a millisecond), so the host's cost of issuing the call (Python
# dispatch, argument checks, CuPy's launch path) overlaps GPU work instead of
# sitting between the start event and the first kernel as idle time. The
# numbers are device time, measured the same way for every provider. Without
# it, a 0.35 ms RoPE call read 23-26% slower through CuPy than through the
# extension (H200, 2026-11-22), host overhead included.
HOST_COVER_CYCLES = 2_000_000


def cover_host_overhead(device: torch.device) -> None:
    sleep = getattr(torch.cuda, "_sleep", None)
    if device.type == "cuda" and sleep is not None:
        sleep(HOST_COVER_CYCLES)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        cover_host_overhead(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timing_method(device: torch.device) -> str:
    return "events" if device.type == "cuda" else "perf_counter"


def _graph_replay(fn: Callable[[], object], device: torch.device, reps: int) -> Optional[List[float]]:
    """Per-call seconds from replaying a CUDA graph of GRAPH_CALLS calls; None if fn cannot be captured."""
    try:
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):  # warm-up on a side stream, as capture requires
            fn()
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(GRAPH_CALLS):
                fn()
        graph.replay()
        sync(device)
    except Exception:  # any op that syncs or allocates host memory cannot be captured
        sync(device)
        return None
    return [time_once(graph.replay, device) / GRAPH_CALLS for _ in range(reps)]


def time_fn(fn: Callable[[], object], device: torch.device, *, warmup: int = 1, min_reps: int = 3,
            max_reps: int = 50, budget_s: float = 0.5, allow_graph: bool = True) -> Dict[str, object]:
    """Time ``fn``: warm-up, then as many reps as fit in ``budget_s`` (within [min_reps, max_reps]).

    Returns median/p20/p80 in ms, the rep count and the method ("events",
    "cuda_graph" or "perf_counter").
    """
    first = None
    for _ in range(max(1, warmup)):
        first = time_once(fn, device)
    reps = int(min(max_reps, max(min_reps, budget_s / max(first, 1e-9))))
    method = timing_method(device)
    samples = None
    if device.type == "cuda" and allow_graph and first < GRAPH_PROBE_BELOW_S:
        probe = min(time_once(fn, device) for _ in range(3))
        if probe < GRAPH_REPLAY_BELOW_S:
            samples = _graph_replay(fn, device, reps)
            method = "cuda_graph" if samples is not None else method
    if samples is None:
        samples = [time_once(fn, device) for _ in range(reps)]
    return {**quantiles(samples), "reps": len(samples), "timing": method}
