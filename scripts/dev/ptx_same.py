"""Which kernels of a new PTX file have a body identical to some kernel of
older PTX files (ones whose build ran on the GPU)?

A refactor that adds a template argument renames every kernel and renumbers
its labels; this compares bodies with the mangled names, the branch labels
($L__BB<n>_) and the inline-asm labels (WAIT_<n> and the like) blanked, so
that "this kernel is the one the GPU tests passed on" can be checked on a
machine without a GPU. Build the files with nvcc -ptx
(-gencode=arch=compute_90a,code=compute_90a), the old ones in a git worktree.

    python scripts/dev/ptx_same.py NEW.ptx OLD.ptx [OLD2.ptx ...]
"""
from __future__ import annotations

import hashlib
import re
import sys


def kernel_bodies(path: str) -> dict[str, str]:
    """Entry name -> digest of its normalised body."""
    text = open(path).read()
    out = {}
    for part in re.split(r"\n(?=\.(?:visible|weak)[^\n]*\.entry )", text)[1:]:
        name = re.search(r"\.entry\s+(\S+?)\(", part).group(1)
        body = re.sub(r"_Z[A-Za-z0-9_]+", "SYM", part)
        body = re.sub(r"\$L__BB[0-9]+_", "L_", body)
        body = re.sub(r"\b([A-Z]+)_[0-9]+\b", r"\1_N", body)
        out[name] = hashlib.sha256(body.encode()).hexdigest()
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    new = kernel_bodies(argv[0])
    old = {h for path in argv[1:] for h in kernel_bodies(path).values()}
    unmatched = 0
    for name, digest in new.items():
        same = digest in old
        unmatched += not same
        print(f"{'same' if same else 'NEW '}  {name}")
    print(f"{len(new) - unmatched} of {len(new)} kernels match a kernel of the old files")
    return 1 if unmatched else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
