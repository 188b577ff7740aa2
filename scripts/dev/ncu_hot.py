"""The hottest SASS lines of one Nsight Compute report, by warp-stall samples.

    ncu --import REP --page source --csv --print-source sass | python scripts/dev/ncu_hot.py [--top 40]

Reads the source page's CSV on stdin and prints the total samples, then the
``--top`` instructions with their share: where the warps wait, which the
details page's stall totals do not place. The column names differ between
ncu versions, so they are matched by substring.
"""
from __future__ import annotations

import argparse
import csv
import sys


def _column(header: list[str], *needles: str) -> int:
    for needle in needles:
        for i, name in enumerate(header):
            if needle.lower() in name.lower():
                return i
    raise SystemExit(f"no column like {needles} in {header}")


def _number(text: str) -> float:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args()
    rows = [r for r in csv.reader(sys.stdin) if r]
    start = next(i for i, r in enumerate(rows) if any("Source" in c for c in r))  # skip ncu's preamble
    header, body = rows[start], rows[start + 1:]
    src = _column(header, "Source")
    addr = _column(header, "Address", "#")
    samples = _column(header, "Warp Stall Sampling (All", "Stall Sampling")
    not_issued = next((i for i, n in enumerate(header) if "Not-issued" in n or "Not Issued" in n), None)
    total = sum(_number(r[samples]) for r in body if len(r) > samples)
    print(f"{len(body)} instructions, {total:.0f} warp-stall samples; columns: {header[samples]!r}")
    body.sort(key=lambda r: -_number(r[samples]) if len(r) > samples else 0)
    for r in body[: args.top]:
        share = 100 * _number(r[samples]) / max(total, 1)
        extra = f" (not issued {_number(r[not_issued]):.0f})" if not_issued is not None else ""
        print(f"{share:5.1f}%  {r[addr]:>8}  {r[src].strip()}{extra}")


if __name__ == "__main__":
    main()
