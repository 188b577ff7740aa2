"""Charts drawn from results tables, never from numbers typed in.

    python -m profiling.charts TABLE [TABLE ...] --out DIR

A table is a ``.jsonl`` / ``.csv`` file or a directory holding one. Memory
rows (``table == "memory"``) give log-log memory and time against S with
OOM markers and the analytic model drawn through and beyond the measured
points; benchmark rows (``table == "bench"``) give TFLOP/s or GB/s per
provider with the ceiling measured in the same run.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: CI and the GPU machine have no display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.transforms as mtransforms  # noqa: E402

from . import counting  # noqa: E402
from .common import fmt_size, read_table  # noqa: E402

# How far past the largest measured S the analytic model is drawn.
MODEL_EXTEND = 4
OOM_Y = 0.96  # OOM markers sit near the top of the axes, at their S
DPI = 110


def _seq_axis(ax, seqlens: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(seqlens))
    ax.set_xticklabels([fmt_size(s) for s in seqlens])
    ax.minorticks_off()


def _grid(n: int, width: float = 5.5, height: float = 4.0):
    cols = min(2, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _model_seqlens(measured: Sequence[int]) -> List[int]:
    lo, hi = min(measured), max(measured) * MODEL_EXTEND
    out, s = [], lo
    while s <= hi:
        out.append(s)
        s *= 2
    return out


def _elem_bytes(dtype: str) -> int:
    return {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}.get(dtype, 2)


def _oom_marks(ax, xs: Sequence[int], color) -> None:
    if xs:
        trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
        ax.scatter(xs, [OOM_Y] * len(xs), marker="x", s=70, color=color, transform=trans, zorder=5,
                   clip_on=False)


def memory_charts(rows: List[dict], out_dir: Path) -> List[Path]:
    """memory_<mode>.png and time_<mode>.png, one panel per variant."""
    rows = [r for r in rows if r.get("table", "memory") == "memory" and r.get("seqlen")]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    if not rows:
        return written
    first = rows[0]
    b, h, d, e = first["batch"], first["heads"], first["head_dim"], _elem_bytes(first["dtype"])
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    colors = {i: f"C{n}" for n, i in enumerate(impls)}
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    seqlens = sorted({r["seqlen"] for r in rows})
    where = f"{first.get('gpu')}, B={b} H={h} D={d} {first['dtype']}"
    for mode in dict.fromkeys(r["mode"] for r in rows):
        title = "forward" if mode == "fwd" else "forward + backward"
        for what in ("memory", "time"):
            fig, axes = _grid(len(variants))
            for ax, variant in zip(axes, variants):
                sel = [r for r in rows if r["mode"] == mode and r["variant"] == variant]
                for impl in impls:
                    pts = sorted((r["seqlen"], r) for r in sel if r["impl"] == impl)
                    ok = [(s, r) for s, r in pts if r.get("status") == "ok"]
                    key = "peak_extra_bytes" if what == "memory" else "median_ms"
                    if ok:
                        ax.plot([s for s, _ in ok], [max(r[key], 1) if what == "memory" else r[key] for _, r in ok],
                                "o-", color=colors[impl], label=impl)
                    _oom_marks(ax, [s for s, r in pts if r.get("oom")], colors[impl])
                if what == "memory":
                    ms = _model_seqlens(seqlens)
                    ax.plot(ms, [counting.naive_extra_bytes(b, h, s, d, e, mode) for s in ms], "k--", lw=1,
                            label="model: naive (scores + softmax)" if mode == "fwd" else "model: naive (3 score-sized)")
                    ax.plot(ms, [counting.fused_extra_bytes(b, h, s, d, e, mode) for s in ms], "k:", lw=1.2,
                            label="model: fused (out + lse)" if mode == "fwd" else "model: fused (out, lse, dq, dk, dv)")
                    if first.get("gpu_memory_bytes"):
                        ax.axhline(first["gpu_memory_bytes"], color="red", lw=0.8, alpha=0.6, label="GPU memory")
                    ax.set_ylabel("peak memory beyond inputs (bytes)")
                    _seq_axis(ax, ms)
                else:
                    ax.set_ylabel("median time (ms)")
                    _seq_axis(ax, seqlens)
                ax.set_yscale("log")
                ax.set_xlabel("sequence length S")
                desc = sel[0].get("variant_desc", variant) if sel else variant
                ax.set_title(desc, fontsize=10)
                ax.grid(True, which="major", alpha=0.3)
            axes[0].legend(fontsize=7, loc="lower right")
            written.append(_save(fig, f"attention {what}, {title} ({where}); x = out of memory",
                                 out_dir / f"{what}_{mode}.png"))
    return written


def _save(fig, title: str, path: Path) -> Path:
    """Title, lay out, write and close one figure; returns its path."""
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def bench_charts(rows: List[dict], out_dir: Path) -> List[Path]:
    """One PNG per (op, mode): throughput against S per provider, the run's ceiling as a line."""
    rows = [r for r in rows if r.get("table") == "bench"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ceilings = {r["op"]: r for r in rows if r.get("op", "").startswith("ceiling") and r.get("status") == "ok"}
    written: List[Path] = []
    ops = [o for o in dict.fromkeys(r["op"] for r in rows) if not o.startswith("ceiling")]
    for op in ops:
        sel_op = [r for r in rows if r["op"] == op and r.get("status") == "ok"]
        is_attn = op == "attention"
        metric, ceiling = ("tflops", ceilings.get("ceiling_matmul")) if is_attn else ("gbps", ceilings.get("ceiling_copy"))
        for mode in dict.fromkeys(r["mode"] for r in sel_op):
            sel = [r for r in sel_op if r["mode"] == mode]
            panels = list(dict.fromkeys((r.get("variant") or "-", r.get("head_dim")) for r in sel))
            fig, axes = _grid(len(panels))
            providers = list(dict.fromkeys(r["provider"] for r in sel))
            for ax, (variant, hd) in zip(axes, panels):
                pr = [r for r in sel if (r.get("variant") or "-") == variant and r.get("head_dim") == hd]
                xs = sorted({r["seqlen"] for r in pr})
                for n, prov in enumerate(providers):
                    pts = sorted((r["seqlen"], r[metric]) for r in pr if r["provider"] == prov)
                    if pts:
                        ax.plot([s for s, _ in pts], [y for _, y in pts], "o-", color=f"C{n}", label=prov)
                if ceiling:
                    ax.axhline(ceiling[metric], color="k", ls="--", lw=1, label=f"ceiling: {ceiling['provider']}")
                if xs:
                    _seq_axis(ax, xs)
                ax.set_xlabel("sequence length S")
                ax.set_ylabel("TFLOP/s" if is_attn else "GB/s (read + write)")
                ax.set_title(f"{op} {variant} D={hd}", fontsize=10)
                ax.grid(True, alpha=0.3)
                ax.legend(fontsize=7)
            written.append(_save(fig, f"{op}, {mode} ({sel[0].get('gpu', '')})", out_dir / f"bench_{op}_{mode}.png"))
    return written


def charts_for(rows: List[dict], out_dir: Path) -> List[Path]:
    return memory_charts(rows, out_dir) + bench_charts(rows, out_dir)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m profiling.charts", description="Charts from results tables.")
    p.add_argument("tables", nargs="+", help=".jsonl/.csv tables or directories holding them")
    p.add_argument("--out", required=True, help="directory for the PNGs")
    args = p.parse_args(argv)
    rows: List[dict] = []
    for t in args.tables:
        rows += read_table(t)
    written = charts_for(rows, Path(args.out))
    for path in written:
        print(path, flush=True)
    if not written:
        print("no chartable rows (expected table 'memory' or 'bench' rows)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
