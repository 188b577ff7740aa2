"""A/B timing of compile-time variants of the CUDA forward (the extension's
kernels, sm_90a included, which the NVRTC route of attn_variants.py cannot
reach), in one GPU call.

Each variant is the attention-only dev module (attn_dev.build) compiled with
its own nvcc flags, typically -D knobs an experiment adds under #ifndef; the
modules live side by side and are timed in turns (variant order rotated on
every round) on the dev benchmark's shapes, so clock and thermal drift fall
on all of them alike.

    python scripts/dev/attn_ab.py base= off=-DPK_SOME_KNOB=0 [--head-dim 64] [--seqlen 16384] [--out ab.jsonl]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

from attn_dev import build  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("variants", nargs="+", help="name=flag1,flag2 (an empty list: the code as it is)")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=16384)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=None, help="append JSON lines here")
    ap.add_argument("--build-only", action="store_true", help="build the variants' modules, time nothing")
    args = ap.parse_args()
    flags = {}
    for arg in args.variants:
        name, _, opts = arg.partition("=")
        flags[name] = tuple(o for o in opts.split(",") if o)
    mods = {n: build(name=f"pk_attn_ab_{n}", flags=f, install=False) for n, f in flags.items()}
    if args.build_only:
        return

    import pykernels
    from bench_attention_dev import VARIANTS, time_fn, useful_flops
    from pykernels.backends.cuda.attention import prepare
    from profiling.common import environment

    s, d = args.seqlen, args.head_dim
    b, h = max(1, 16384 // s), 2048 // d
    dev = torch.device("cuda")
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, s, h, d, device=dev, dtype=torch.bfloat16) for _ in range(3))
    slopes = pykernels.alibi_slopes(h).to(dev).float()
    out = torch.empty_like(q)
    lse = torch.empty(b, h, s, device=dev, dtype=torch.float32)
    env = environment(dev)
    names = list(mods)
    print(f"\nA/B, D={d}, S={s}, B={b}, H={h}, median useful TFLOP/s over {args.rounds} rounds ({env['gpu']})")
    print(f"{'variant':20s}" + "".join(f"{n:>14s}" for n in names))
    for variant, (causal, window, sinks, alibi) in VARIANTS.items():
        p = prepare(q, k, v, softmax_scale=d ** -0.5, causal=causal, window_left=window[0],
                    window_right=window[1], sink_tokens=sinks, sink_logits=None,
                    alibi_slopes=slopes if alibi else None, q_offset=0)
        times = {n: [] for n in names}
        for r in range(args.rounds):
            for n in names[r % len(names):] + names[:r % len(names)]:
                fn = lambda m=mods[n]: m.attention_fwd(  # noqa: E731
                    p.q, p.k, p.v, out, lse, p.sink_logits, p.alibi_slopes, p.softmax_scale, p.causal,
                    p.window_left, p.window_right, p.sink_tokens, p.q_offset)
                times[n].append(time_fn(fn, 2, args.reps)[0])
        flops = useful_flops(b, h, s, d, causal, window, sinks)
        tf = {n: flops / (statistics.median(times[n]) * 1e-3) / 1e12 for n in names}
        print(f"{variant:20s}" + "".join(f"{tf[n]:14.1f}" for n in names), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                for n in names:
                    f.write(json.dumps({**env, "bench": "attn_ab", "variant": variant, "knobs": n,
                                        "flags": ",".join(flags[n]), "seqlen": s, "head_dim": d, "batch": b,
                                        "heads": h,
                                        "median_ms": statistics.median(times[n]), "tflops": tf[n]}) + "\n")


if __name__ == "__main__":
    main()
