"""Markdown tables of scripts/dev/attn_ab.py's JSON lines, for a results README.

One table per head dim: a row per sequence length, a column per build, each
cell the four variants' useful TFLOP/s (causal / window 1024 / 4 sinks +
window 1024 / causal + ALiBi). With --base, one more column per other build:
its change against the base build, variant by variant. The numbers come from
the file, so a README never carries typed ones.

    python scripts/dev/ab_table.py OUT/ab_pick.jsonl [--base auto]
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from profiling.common import fmt_size, read_table  # noqa: E402
from profiling.report import markdown_table  # noqa: E402

# attn_ab.py's variants (bench_attention_dev.VARIANTS), in the order of a cell.
VARIANT_ORDER = ("causal", "window1024", "sink4_window1024", "causal_alibi")


def _grid(records: List[dict]) -> "OrderedDict[int, OrderedDict[Tuple[int, str], Dict[str, float]]]":
    """head_dim -> (seqlen, build) -> variant -> TFLOP/s; builds in first-seen order.
    A shape timed twice (a rerun appended to the same file) keeps its last figures."""
    grid: "OrderedDict[int, OrderedDict[Tuple[int, str], Dict[str, float]]]" = OrderedDict()
    for r in records:
        cell = grid.setdefault(r["head_dim"], OrderedDict()).setdefault((r["seqlen"], r["knobs"]), {})
        cell[r["variant"]] = r["tflops"]
    return grid


def _cell(values: Dict[str, float]) -> str:
    return " / ".join(f"{values[v]:.0f}" if v in values else "—" for v in VARIANT_ORDER)


def _change(values: Dict[str, float], base: Dict[str, float]) -> str:
    out = []
    for v in VARIANT_ORDER:
        if v in values and v in base and base[v] > 0:
            pct = round(100 * (values[v] / base[v] - 1))
            out.append(f"{pct:+d}%" if pct else "0%")
        else:
            out.append("—")
    return " / ".join(out)


def tables(records: List[dict], base: Optional[str] = None) -> str:
    """The Markdown of every head dim's table (see the module's docstring)."""
    parts = []
    for d, cells in _grid(records).items():
        builds = list(OrderedDict.fromkeys(b for _, b in cells))
        seqlens = sorted({s for s, _ in cells})
        if base is not None and base not in builds:
            raise SystemExit(f"--base {base}: no such build at d = {d} (builds: {', '.join(builds)})")
        others = [b for b in builds if b != base] if base is not None else []
        header = ["S"] + builds + [f"{b} vs {base}" for b in others]
        rows = []
        for s in seqlens:
            row = [fmt_size(s)] + [_cell(cells.get((s, b), {})) for b in builds]
            row += [_change(cells.get((s, b), {}), cells.get((s, base), {})) for b in others]
            rows.append(row)
        title = f"d = {d} (causal / window 1024 / 4 sinks + window 1024 / causal + ALiBi, useful TFLOP/s):"
        parts.append(title + "\n\n" + markdown_table(header, rows))
    return "\n\n".join(parts) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="attn_ab.py --out files (JSON lines)")
    ap.add_argument("--base", default=None, help="a build to state the others' change against")
    args = ap.parse_args(argv)
    records = [r for path in args.files for r in read_table(path)]
    if not records:
        raise SystemExit("no records in " + ", ".join(args.files))
    gpus = sorted({r.get("gpu", "?") for r in records})
    commits = sorted({r.get("commit", "?") for r in records})
    print(f"{', '.join(gpus)}; commit {', '.join(commits)}; {len(records)} records\n")
    print(tables(records, args.base), end="")


if __name__ == "__main__":
    main()
