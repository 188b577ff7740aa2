"""One attention call to put under Nsight Compute (or nsys): the workload, nothing else.

    ncu --set full --kernel-name regex:flash_bwd_dkdv --launch-skip 1 --launch-count 1 \\
        python scripts/ncu_target.py --mode bwd --seqlen 16K

The call runs twice (a warm-up, then the profiled one: hence --launch-skip 1),
on random bf16 inputs, B·S = 16K tokens and H·D = 2048 as in the benchmark
table. ``scripts/gpu_check.sh``'s ncu stage runs it for the forward and the
dK/dV kernel and keeps ncu's text report.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

import pykernels  # noqa: E402
from profiling.common import parse_size  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("fwd", "bwd"), default="bwd")
    p.add_argument("--seqlen", default="16K")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--window", type=int, default=-1, help="left window (-1: plain causal)")
    p.add_argument("--backend", default="cuda")
    args = p.parse_args()
    s = parse_size(args.seqlen)
    b, h = max(1, 16384 // s), 2048 // args.head_dim
    q, k, v = (torch.randn(b, s, h, args.head_dim, device="cuda", dtype=torch.bfloat16,
                           requires_grad=args.mode == "bwd") for _ in range(3))
    dout = torch.randn_like(q)
    for _ in range(2):
        out = pykernels.flash_attn_func(q, k, v, causal=True, window_size=(args.window, 0), backend=args.backend)
        if args.mode == "bwd":
            torch.autograd.grad(out, (q, k, v), dout)
    torch.cuda.synchronize()
    print(f"ran {args.mode} twice: B={b} S={s} H={h} D={args.head_dim} window={args.window} ({args.backend})")


if __name__ == "__main__":
    main()
