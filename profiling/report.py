"""Text from results rows: progress lines, the profiler's Markdown summary, the 13B table."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from . import counting
from .common import fmt_bytes, fmt_size

THIRTEEN_B_SEQLENS = (2048, 4096, 8192, 16384, 32768, 65536)


def progress_line(row: dict) -> str:
    """One line per measured point."""
    head = f"[{row.get('table', '')}] {row.get('impl', row.get('provider', '?')):<18} {row.get('variant', ''):<7} " \
           f"{row.get('mode', ''):<4} S={fmt_size(row['seqlen']) if row.get('seqlen') else '-':>5}"
    if row.get("status") == "ok":
        mem = row.get("peak_extra_bytes")
        mem_s = f" peak +{fmt_bytes(mem)}" if mem is not None else ""
        return f"{head}{mem_s}  {row['median_ms']:.3f} ms"
    return f"{head}  {row.get('status', '?').upper()}: {row.get('reason', '')}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def thirteen_b_markdown(seqlens: Sequence[int] = THIRTEEN_B_SEQLENS) -> str:
    """The seed's 13B example: 40 layers x 40 heads x S^2 x 2 bytes of scores, against a fused kernel."""
    m = counting.LLAMA_13B
    rows = [(fmt_size(r["seqlen"]), fmt_bytes(r["scores_one_layer_bytes"]), fmt_bytes(r["scores_all_layers_bytes"]),
             fmt_bytes(r["fused_one_layer_bytes"])) for r in counting.llama13b_table(seqlens)]
    return (f"Scores of a 13B model ({m['layers']} layers x {m['heads']} heads, fp16, batch 1) if every layer kept "
            f"its S x S matrix, against a fused kernel's q, k, v, out and lse of one layer (head dim {m['head_dim']}):\n\n"
            + markdown_table(["S", "scores, one layer", f"scores, {m['layers']} layers", "fused, one layer"], rows))


def _cell(row: Optional[dict]) -> str:
    if row is None:
        return "-"
    if row.get("oom"):
        return "**OOM**"
    if row.get("status") == "skipped":
        return "n/a"
    if row.get("status") != "ok":
        return f"error: {row.get('reason', '')[:60]}"
    return f"{fmt_bytes(row['peak_extra_bytes'])} / {row['median_ms']:.2f} ms"


def write_memory_summary(rows: List[dict], out_dir: Path, pngs: Sequence[Path], notes: Sequence[str] = ()) -> Path:
    """summary.md: settings, method, one table per (mode, variant), skipped providers, the 13B table."""
    measured = [r for r in rows if r.get("seqlen")]
    first = measured[0] if measured else (rows[0] if rows else {})
    lines = ["# Attention memory profile", ""]
    if first:
        lines += [f"- device: {first.get('gpu')} ({first.get('device')}); torch {first.get('torch')}, "
                  f"CUDA {first.get('cuda')}; commit {first.get('commit')}; {first.get('date')}",
                  f"- shapes: B={first.get('batch')}, H={first.get('heads')}, D={first.get('head_dim')}, "
                  f"{first.get('dtype')}",
                  f"- memory: {first.get('memory_method')}",
                  "- peak = the most memory held beyond the inputs (q, k, v and, for fwd+bwd, dout) during one "
                  "warm call, including any dense mask or bias the implementation needs; time = median of warm "
                  "calls, mask building included"]
    lines += [f"- note: {n}" for n in notes]
    # One line per (implementation, reason): a backend that cannot run a mode is
    # skipped at every point of the sweep for the same reason.
    skipped = dict.fromkeys((r["impl"], r.get("reason")) for r in rows if r.get("status") == "skipped")
    lines += [f"- skipped {impl}: {reason}" for impl, reason in skipped]
    impls = list(dict.fromkeys(r["impl"] for r in measured))
    seqlens = sorted({r["seqlen"] for r in measured})
    for mode in dict.fromkeys(r["mode"] for r in measured):
        for variant in dict.fromkeys(r["variant"] for r in measured):
            sel = {(r["impl"], r["seqlen"]): r for r in measured if r["mode"] == mode and r["variant"] == variant}
            if not sel:
                continue
            desc = next(iter(sel.values())).get("variant_desc", variant)
            lines += ["", f"## {'forward' if mode == 'fwd' else 'forward + backward'}, {desc}", "",
                      "Peak extra memory / median time; the model columns are the analytic peaks.", ""]
            table = []
            for s in seqlens:
                any_row = next((r for (i, ss), r in sel.items() if ss == s), None)
                model = [fmt_bytes(any_row["analytic_naive_bytes"]), fmt_bytes(any_row["analytic_fused_bytes"])] \
                    if any_row else ["-", "-"]
                table.append([fmt_size(s)] + [_cell(sel.get((i, s))) for i in impls] + model)
            lines.append(markdown_table(["S"] + impls + ["model: naive", "model: fused"], table))
            hows = {r["impl"]: r.get("how", "") for r in sel.values()}
            lines += ["", "How each expressed the mask: " + "; ".join(f"{i}: {h}" for i, h in hows.items())]
    lines += ["", "## The 13B example", "", thirteen_b_markdown(), "", "## Charts", ""]
    lines += [f"![{p.stem}]({p.name})" for p in pngs]
    path = Path(out_dir) / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def bench_line(row: dict) -> str:
    """One line per benchmark point."""
    head = f"[bench] {row.get('op', ''):<14} {row.get('provider', ''):<18} {row.get('mode', ''):<4} " \
           f"{row.get('variant') or '':<7} {row.get('shape', '')}"
    if row.get("status") != "ok":
        return f"{head}  {row.get('status', '?').upper()}: {row.get('reason', '')}"
    rate = f"{row['tflops']:.2f} TFLOP/s" if row.get("tflops") is not None else f"{row['gbps']:.1f} GB/s"
    pct = f" ({row['pct_of_ceiling']:.0f}% of ceiling)" if row.get("pct_of_ceiling") is not None else ""
    return f"{head}  {row['median_ms']:.3f} ms [{row['p20_ms']:.3f}, {row['p80_ms']:.3f}]  {rate}{pct}"
