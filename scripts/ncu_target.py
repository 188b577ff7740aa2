"""One attention call to put under Nsight Compute (or nsys): the workload, nothing else.

    ncu --set full --kernel-name regex:flash_bwd_dkdv --launch-skip 1 --launch-count 1 \\
        python scripts/ncu_target.py --mode bwd --seqlen 16K

The call runs twice (a warm-up, then the profiled one: hence --launch-skip 1),
on random bf16 inputs, B·S = 16K tokens and H·D = 2048 as in the benchmark
table. ``scripts/gpu_check.sh``'s ncu stage runs it for the forward and the
dK/dV kernel and keeps ncu's text report. ``--dev-build`` takes the
extension from ``scripts/dev/attn_dev.py``'s build (PK_DEV_FLAGS picks a knob
build) instead of the installed one; ``--peer cudnn`` (or another SDPA backend) runs
SDPA's causal forward with that backend instead, to read its launch shape and
memory traffic beside ours (``scripts/dev/ncu_short.sh``).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root

import pykernels  # noqa: E402
from profiling.common import parse_size  # noqa: E402
from profiling.providers import SDPA_BACKENDS, sdpa_backend  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("fwd", "bwd"), default="bwd")
    p.add_argument("--seqlen", default="16K")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--window", type=int, default=-1, help="left window (-1: plain causal)")
    p.add_argument("--backend", default="cuda")
    p.add_argument("--dev-build", action="store_true", help="build and use scripts/dev/attn_dev.py's module")
    p.add_argument("--peer", choices=SDPA_BACKENDS, help="SDPA with this backend instead (forward only)")
    args = p.parse_args()
    if args.dev_build:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "dev"))
        from attn_dev import env_build

        env_build()
    s = parse_size(args.seqlen)
    b, h = max(1, 16384 // s), 2048 // args.head_dim
    q, k, v = (torch.randn(b, s, h, args.head_dim, device="cuda", dtype=torch.bfloat16,
                           requires_grad=args.mode == "bwd") for _ in range(3))
    dout = torch.randn_like(q)
    if args.peer:
        if args.mode != "fwd" or args.window >= 0:
            p.error("--peer runs the plain causal forward only")
        from torch.nn.attention import sdpa_kernel

        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # SDPA's (B, H, S, D) view of the same memory
        with sdpa_kernel(sdpa_backend(args.peer)):
            for _ in range(2):
                torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
        torch.cuda.synchronize()
        print(f"ran SDPA {args.peer} fwd twice: B={b} S={s} H={h} D={args.head_dim}")
        return
    for _ in range(2):
        out = pykernels.flash_attn_func(q, k, v, causal=True, window_size=(args.window, 0), backend=args.backend)
        if args.mode == "bwd":
            torch.autograd.grad(out, (q, k, v), dout)
    torch.cuda.synchronize()
    print(f"ran {args.mode} twice: B={b} S={s} H={h} D={args.head_dim} window={args.window} ({args.backend})")


if __name__ == "__main__":
    main()
