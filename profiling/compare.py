"""Regression check between two benchmark tables.

    python -m profiling.compare NEW OLD [--threshold 0.05] [--peer sdpa:cudnn]

Raw times are not compared across runs: clocks, drivers and neighbours on
the machine move them. Instead each pykernels row is divided by a peer
measured in the same run on the same configuration (``pykernels / cuDNN``,
say), and that ratio is compared between NEW and OLD. A ratio that grew by
more than the threshold (5%) is a regression; the command prints every
comparison and exits 1 when any regressed, 0 otherwise.

The peer is the first of ``--peer`` (default: cuDNN, flash, FlexAttention,
efficient, math, default SDPA, naive for attention; compiled then eager for
RoPE) that both tables measured on that configuration.
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from .common import read_table

THRESHOLD = 0.05
PEERS = {
    "attention": ("sdpa:cudnn", "sdpa:flash", "flex", "sdpa:efficient", "sdpa:math", "sdpa", "naive"),
    "rope": ("compiled", "hf_eager"),
}
CONFIG_KEYS = ("op", "mode", "variant", "shape", "dtype", "head_dim")

Key = Tuple[object, ...]


def index(rows: Sequence[dict]) -> Dict[Key, Dict[str, float]]:
    """{configuration: {provider: median_ms}} over rows that ran; a later row wins."""
    out: Dict[Key, Dict[str, float]] = {}
    for r in rows:
        if r.get("table") != "bench" or r.get("status") != "ok" or str(r.get("op", "")).startswith("ceiling"):
            continue
        out.setdefault(tuple(r.get(k) for k in CONFIG_KEYS), {})[r["provider"]] = float(r["median_ms"])
    return out


def _peer(op: str, new: Dict[str, float], old: Dict[str, float], peers: Optional[Sequence[str]]) -> Optional[str]:
    for p in peers or PEERS.get(op, ()):
        if p in new and p in old:
            return p
    return None


def compare(new_rows: Sequence[dict], old_rows: Sequence[dict], threshold: float = THRESHOLD,
            peers: Optional[Sequence[str]] = None) -> List[dict]:
    """One entry per (configuration, pykernels provider) measured in both, with ``regressed``."""
    new, old = index(new_rows), index(old_rows)
    results = []
    for key in sorted(set(new) & set(old), key=str):
        op = key[0]
        peer = _peer(op, new[key], old[key], peers)
        if peer is None:
            continue
        for prov in sorted(p for p in new[key] if p.startswith("pykernels") and p in old[key]):
            r_new = new[key][prov] / new[key][peer]
            r_old = old[key][prov] / old[key][peer]
            change = r_new / r_old - 1.0
            results.append({"config": dict(zip(CONFIG_KEYS, key)), "provider": prov, "peer": peer,
                            "ratio_new": r_new, "ratio_old": r_old, "change": change,
                            "regressed": change > threshold})
    return results


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m profiling.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("new", help="the new table (.jsonl/.csv or a directory)")
    p.add_argument("old", help="the baseline table")
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="allowed growth of a ratio (0.05 = 5%%)")
    p.add_argument("--peer", nargs="+", help="peer providers to divide by, first found wins")
    args = p.parse_args(argv)
    results = compare(read_table(args.new), read_table(args.old), args.threshold, args.peer)
    if not results:
        print("nothing to compare: no pykernels row has a peer measured in both tables")
        return 0
    bad = [r for r in results if r["regressed"]]
    for r in results:
        c = r["config"]
        flag = "REGRESSED" if r["regressed"] else "ok"
        print(f"{flag:<9} {c['op']} {c['mode']} {c.get('variant') or ''} {c['shape']} D={c.get('head_dim')}: "
              f"{r['provider']}/{r['peer']} {r['ratio_old']:.3f} -> {r['ratio_new']:.3f} ({r['change']:+.1%})")
    print(f"{len(bad)} of {len(results)} ratios got worse by more than {args.threshold:.0%}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
