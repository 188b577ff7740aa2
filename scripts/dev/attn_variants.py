"""Time compile-time variants of the forward kernel in one GPU call, via NVRTC.

Each variant is the same kernel source compiled with different NVRTC options
(typically -D knobs that an experiment adds to csrc/attention under #ifndef),
launched through the CuPy backend on the dev benchmark's shapes
(B * S = 16K, H * D = 2048, bf16). The extension need not be rebuilt, so one
device call can compare several ideas; docs/attention_kernel.md records the
outcomes, and the knobs leave the headers once a choice is made.

    python scripts/dev/attn_variants.py base= two_stage=-DPK_FWD_KV_STAGES=2 lazy=-DPK_A=1,-DPK_B=0
    PK_HEAD_DIM=64 python scripts/dev/attn_variants.py ...
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import torch  # noqa: E402

import pykernels  # noqa: E402
from bench_attention_dev import VARIANTS, time_fn, useful_flops  # noqa: E402
from pykernels.backends.cupy import attention as cupy_attn  # noqa: E402


def parse_variants(argv):
    """``name=opt1,opt2`` arguments -> {name: (opt1, opt2)}; none given: the code as it is."""
    knobs = {}
    for arg in argv or ["base="]:
        name, _, opts = arg.partition("=")
        knobs[name] = tuple(o for o in opts.split(",") if o)
    return knobs


def main():
    variants = parse_variants(sys.argv[1:])
    s, d = 16384, int(os.environ.get("PK_HEAD_DIM", "128"))
    b, h = 1, 2048 // d
    dev = torch.device("cuda")
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, s, h, d, device=dev, dtype=torch.bfloat16) for _ in range(3))
    slopes = pykernels.alibi_slopes(h).to(dev)
    results = {}
    for name, opts in variants.items():
        cupy_attn.EXTRA_OPTIONS = opts
        for variant, (causal, window, sinks, alibi) in VARIANTS.items():
            def run():
                return cupy_attn.forward(q, k, v, softmax_scale=d ** -0.5, causal=causal, window_left=window[0],
                                         window_right=window[1], sink_tokens=sinks, sink_logits=None,
                                         alibi_slopes=slopes if alibi else None, q_offset=0)
            med, _, _ = time_fn(run, 3, 15)
            results[(name, variant)] = useful_flops(b, h, s, d, causal, window, sinks) / (med * 1e-3) / 1e12
    cupy_attn.EXTRA_OPTIONS = ()
    print(f"\nvariants, D={d}, useful TFLOP/s ({torch.cuda.get_device_name()})")
    print(f"{'knobs':14s}" + "".join(f"{v:>18s}" for v in VARIANTS))
    for name in variants:
        print(f"{name:14s}" + "".join(f"{results[(name, v)]:18.1f}" for v in VARIANTS))


if __name__ == "__main__":
    main()
