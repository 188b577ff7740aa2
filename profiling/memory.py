"""The memory profiler: how attention's memory grows with S, measured and modelled (issue 7).

    python -m profiling.memory                      # GPU: S = 2K..64K, B=1, H=32, D=128, bf16
    python -m profiling.memory --results profiling/results/h100-memory
    pykernels-profile --seqlens 256 512 --heads 2   # the console script

For every sequence length, mask variant (causal, window, sinks + window,
ALiBi) and implementation (naive materialised attention, torch's SDPA with
its default dispatch, every pykernels backend) it measures the peak memory
beyond the inputs and the median time, for the forward and for forward +
backward. Running out of memory is a data point: the row says ``"oom": true``
and the sweep goes on.

Without a GPU the same command runs on the CPU with the torch backend, two
heads and S up to 2K, so CI draws the same charts in well under a minute.

Outputs (``--results DIR``, default ``profiling/out/<timestamp>``):
``memory.jsonl`` and ``memory.csv`` (one row per point, written as it is
measured), ``memory_fwd.png``, ``memory_full.png``, ``time_fwd.png``,
``time_full.png`` and ``summary.md``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from . import charts, counting, report
from .common import (ResultsWriter, dtype_name, environment, fmt_size, free_memory, is_oom, nvtx_range,
                     parse_dtype, parse_size, pick_device, progress, quantiles, short_error, time_once, timestamp,
                     timing_method)
from .meters import make_meter
from .providers import Provider, expand_providers, get_provider, make_qkv, unsupported
from .variants import VARIANTS, Variant, get_variants

TABLE = "memory"
GPU_DEFAULTS = dict(seqlens="2K 4K 8K 16K 32K 64K", batch=1, heads=32, head_dim=128, dtype="bf16", budget_s=1.0,
                    min_reps=3, max_reps=20)
# Small enough for CI's two cores: the torch backend's tiled loop is slow on a
# CPU, so S stops at 2K and each point gets a single timed call after warm-up.
CPU_DEFAULTS = dict(seqlens="256 512 1K 2K", batch=1, heads=2, head_dim=64, dtype="fp32", budget_s=0.0,
                    min_reps=1, max_reps=3)
DEFAULT_IMPLS = ("naive", "sdpa", "pykernels")
MODES = {"fwd": "forward", "full": "forward + backward"}
# CPU mode refuses a point whose modelled peak exceeds this share of free RAM,
# rather than letting the kernel's OOM killer end the whole run.
CPU_RAM_SHARE = 0.5
SNAPSHOT_ENTRIES = 100_000


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m profiling.memory", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (GPU when present), cuda or cpu")
    p.add_argument("--seqlens", nargs="+", help="sequence lengths, e.g. 2K 4K (GPU default 2K..64K, CPU 256..2K)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"some of {list(VARIANTS)}")
    p.add_argument("--impls", nargs="+", default=list(DEFAULT_IMPLS),
                   help="naive, sdpa, sdpa:<flash|efficient|cudnn|math>, pykernels (= every backend), pykernels:<name>")
    p.add_argument("--batch", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--head-dim", type=int)
    p.add_argument("--dtype", help="bf16, fp16 or fp32 (GPU default bf16, CPU fp32)")
    p.add_argument("--results", help="output directory (default profiling/out/<timestamp>)")
    p.add_argument("--no-backward", action="store_true", help="measure the forward only")
    p.add_argument("--memory-snapshot", metavar="PATH",
                   help="record CUDA allocator history and dump a snapshot (open at pytorch.org/memory_viz)")
    p.add_argument("--budget", type=float, help="seconds of timing reps per point (GPU 1.0; CPU 0: one timed call)")
    p.add_argument("--min-reps", type=int,
                   help="fewest timing samples per point (GPU 3, CPU 1); 1 keeps multi-second points (Numba, "
                        "the torch backend at 64K) to a warm-up and one measured call")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: redraw the charts and summary.md from the table already in --results")
    p.add_argument("--threads", type=int,
                   help="CPU mode's intra-op threads (default 1: on a shared 2-core machine OpenMP's spin-waiting "
                        "makes two threads an order of magnitude slower, and CPU mode measures memory, not speed)")
    p.add_argument("--max-seconds", type=float,
                   help="start no new point after this long; rows so far are kept and charted")
    return p.parse_args(argv)


def resolve_settings(args: argparse.Namespace) -> Dict[str, object]:
    device = pick_device(args.device)
    d = GPU_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    seqlens = args.seqlens or d["seqlens"].split()
    return {
        "device": device,
        "seqlens": sorted(parse_size(s) for s in seqlens),
        "batch": args.batch or d["batch"],
        "heads": args.heads or d["heads"],
        "head_dim": args.head_dim or d["head_dim"],
        "dtype": parse_dtype(args.dtype or d["dtype"]),
        "budget_s": args.budget if args.budget is not None else d["budget_s"],
        "min_reps": max(1, args.min_reps) if args.min_reps is not None else d["min_reps"],
        "max_reps": d["max_reps"],
        "variants": get_variants(args.variants),
        "impls": expand_providers(args.impls),
        "modes": ["fwd"] if args.no_backward else list(MODES),
    }


def mode_line(st: Dict[str, object], explicit_cpu: bool) -> str:
    """The run's first line: which device, backend and sizes it measures."""
    sizes = f"B={st['batch']}, H={st['heads']}, D={st['head_dim']}, {dtype_name(st['dtype'])}, " \
            f"S up to {fmt_size(max(st['seqlens']))}"
    if st["device"].type == "cuda":
        return f"GPU mode on {torch.cuda.get_device_name(st['device'])}: {sizes}"
    why = "--device cpu" if explicit_cpu else "no CUDA GPU"
    return f"{why}: CPU mode, torch backend, {sizes}"


def analytic(st, seqlen: int, mode: str) -> Dict[str, float]:
    e = torch.empty((), dtype=st["dtype"]).element_size()
    args = (st["batch"], st["heads"], seqlen, st["head_dim"], e, mode)
    return {"analytic_naive_bytes": counting.naive_extra_bytes(*args),
            "analytic_fused_bytes": counting.fused_extra_bytes(*args)}


def measure(provider: Provider, variant: Variant, st, seqlen: int, mode: str, meter) -> Dict[str, object]:
    """Time, then peak memory of one warm call (prepare + call [+ backward])."""
    device, dtype = st["device"], st["dtype"]
    full = mode == "full"
    free_memory()
    q, k, v = make_qkv(provider.layout, st["batch"], st["heads"], seqlen, st["head_dim"], dtype, device,
                       requires_grad=full)
    dout = torch.randn_like(q) if full else None

    def step():
        for t in (q, k, v):
            t.grad = None
        with torch.set_grad_enabled(full):
            state = provider.prepare(variant, st["heads"], seqlen, dtype, device)
            out = provider.call(q, k, v, variant, state)
            if full:
                out.backward(dout)

    # The first call is a warm-up (one-time allocations, compilation); the
    # second is measured for memory. On CPU it is also the first timing sample,
    # so a slow point costs two calls, not three; on a GPU the NVML sampling
    # thread competes for the GIL during that call, so only a call slower than
    # the whole timing budget is timed there (below).
    time_once(step, device)
    # The warm-up left q/k/v gradients behind; drop them before the baseline,
    # or the measured call (which frees and remakes them) would not count them.
    for t in (q, k, v):
        t.grad = None
    free_memory()
    meter.start()
    try:
        with nvtx_range(f"{provider.name} {variant.name} S={seqlen} {mode}"):
            first = time_once(step, device)
    except BaseException:
        meter.abort()
        raise
    mem = meter.stop()
    reps = int(min(st["max_reps"], max(st["min_reps"], st["budget_s"] / max(first, 1e-9))))
    # The measured call is a timing sample on CPU, and on a GPU once it alone
    # outlasts the timing budget: against seconds of kernel time the NVML
    # thread's share of the GIL is noise, and a 64K Numba point then costs two
    # calls instead of three or more.
    samples = [first] if device.type == "cpu" or first > st["budget_s"] else []
    samples += [time_once(step, device) for _ in range(reps - len(samples))]
    return {**mem, **quantiles(samples), "reps": len(samples), "timing": timing_method(device)}


def cpu_ram_guard(st, seqlen: int, mode: str) -> Optional[str]:
    """On CPU, why a point would exhaust RAM (by the model), or None."""
    if st["device"].type != "cpu":
        return None
    try:
        import psutil
    except ImportError:  # an optional dependency: without it every point is attempted
        return None

    need = analytic(st, seqlen, mode)["analytic_naive_bytes"]
    avail = psutil.virtual_memory().available
    if need > CPU_RAM_SHARE * avail:
        return f"not attempted: modelled peak {need / 2**30:.1f} GiB exceeds half the free RAM"
    return None


def point(p: Provider, variant: Variant, st, seqlen: int, mode: str, meter, base: dict, fwd_oom: bool) -> dict:
    """The row of one (implementation, variant, S, mode): measured, or why not."""
    device, dtype, head_dim = st["device"], st["dtype"], st["head_dim"]
    row = {**base, "impl": p.name, "family": p.family, "backend": p.backend, "variant": variant.name,
           "variant_desc": variant.describe(), "how": p.how(variant, st["heads"]), "mode": mode, "seqlen": seqlen,
           **analytic(st, seqlen, mode)}
    why_not = unsupported(p, "attention_fwd", device, dtype, head_dim)
    if why_not is None and mode != "fwd":
        why_not = unsupported(p, "attention_bwd", device, dtype, head_dim)
    guard = cpu_ram_guard(st, seqlen, mode) if p.family in ("naive", "sdpa") else None
    if why_not:
        return {**row, "status": "skipped", "oom": False, "reason": why_not}
    if fwd_oom or guard:
        return {**row, "status": "oom", "oom": True, "reason": "forward ran out of memory" if fwd_oom else guard}
    try:
        return {**row, **measure(p, variant, st, seqlen, mode, meter), "status": "ok", "oom": False}
    except Exception as exc:  # noqa: BLE001  (every failure is a recorded row, an OOM above all)
        oom, reason = is_oom(exc), short_error(exc)
    # Outside the except block: the exception's traceback no longer pins the failed call's tensors.
    free_memory(collect=True)
    return {**row, "status": "oom" if oom else "error", "oom": oom, "reason": reason}


def write_report(rows: List[dict], out_dir: Path, notes: List[str]) -> None:
    pngs = charts.memory_charts(rows, out_dir)
    summary = report.write_memory_summary(rows, out_dir, pngs, notes=notes)
    progress(f"wrote {len(pngs)} charts and {summary}")


def run(argv: Optional[List[str]] = None) -> Path:
    args = parse_args(argv)
    if args.report_only:
        if not args.results:
            raise SystemExit("--report-only needs --results DIR (the directory holding memory.jsonl)")
        out_dir = Path(args.results)
        write_report(ResultsWriter(out_dir, TABLE).rows, out_dir, [])
        return out_dir
    st = resolve_settings(args)
    device = st["device"]
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    try:
        return _sweep(args, st)
    finally:
        torch.set_num_threads(threads)


def _sweep(args: argparse.Namespace, st: Dict[str, object]) -> Path:
    device = st["device"]
    progress(mode_line(st, explicit_cpu=args.device == "cpu"))
    out_dir = Path(args.results or Path("profiling") / "out" / timestamp())
    writer = ResultsWriter(out_dir, TABLE)
    env = environment(device)
    meter = make_meter(device)
    progress(f"memory: {meter.method}")
    progress(f"results: {out_dir}")
    snapshot = args.memory_snapshot if device.type == "cuda" else None
    if args.memory_snapshot and not snapshot:
        progress("--memory-snapshot: the CUDA allocator history needs a GPU; skipped on CPU")
    if snapshot:
        torch.cuda.memory._record_memory_history(max_entries=SNAPSHOT_ENTRIES)

    base = {"table": TABLE, "batch": st["batch"], "heads": st["heads"], "head_dim": st["head_dim"],
            "dtype": dtype_name(st["dtype"]), "memory_method": meter.method, **env}
    providers = [get_provider(n, device) for n in st["impls"]]
    for p in providers:
        if p.reason:
            writer.write({**base, "impl": p.name, "family": p.family, "backend": p.backend, "status": "skipped",
                          "oom": False, "reason": p.reason})
            progress(f"skip {p.name}: {p.reason}")
    runnable = [p for p in providers if not p.reason]

    # S outermost: a run cut short by --max-seconds still covers every implementation at the smaller S.
    points = [(s, v, p, m) for s in st["seqlens"] for v in st["variants"].values() for p in runnable
              for m in st["modes"]]
    t_start, stopped_early, forward_oom = time.monotonic(), None, set()
    try:
        for seqlen, variant, p, mode in points:
            if args.max_seconds and time.monotonic() - t_start > args.max_seconds:
                stopped_early = f"stopped after {args.max_seconds:g} s at S={fmt_size(seqlen)} (--max-seconds)"
                progress(stopped_early)
                break
            key = (seqlen, variant.name, p.name)
            row = point(p, variant, st, seqlen, mode, meter, base, key in forward_oom)
            if row["oom"] and mode == "fwd":
                forward_oom.add(key)
            writer.write(row)
            progress(report.progress_line(row))
    finally:
        if snapshot:
            torch.cuda.memory._dump_snapshot(snapshot)
            torch.cuda.memory._record_memory_history(enabled=None)
            progress(f"memory snapshot: {snapshot}")

    progress(f"wrote {writer.jsonl} and {writer.csv}")
    write_report(writer.rows, out_dir, [n for n in [stopped_early] if n])
    return out_dir


def main(argv: Optional[List[str]] = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
