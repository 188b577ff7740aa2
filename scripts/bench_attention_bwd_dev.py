"""Dev benchmark of the attention backward against PyTorch's kernels (issue 5).

    python scripts/bench_attention_bwd_dev.py --out results.jsonl \
        [--head-dims 64,128] [--providers cuda,cuda_det,sdpa_flash,cudnn,flex]

Shapes as the forward's (scripts/bench_attention_dev.py): B * S = 16K tokens,
H * D = 2048, bf16. Only the backward is timed: every provider runs its
forward once, then each timed call is the gradient of (q, k, v) alone
(``cuda``: the atomic-dQ path; ``cuda_det``: ``deterministic=True``;
``cuda_sm80``: the mma.sync dK/dV kernel where ``cuda`` runs the Hopper one; the
peers: ``torch.autograd.grad`` over a retained graph). TFLOP/s use 2.5x the
forward's useful FLOPs (flash-attn's convention). One JSON line per
measurement goes to --out, in the forward benchmark's format with mode "bwd".
"""
from __future__ import annotations

import argparse
import functools
import json

import torch

import pykernels
from profiling.common import git_commit
from pykernels.backends import op_module

from bench_attention_dev import VARIANTS, flex_mods, try_time, useful_flops, with_env

BWD_FLOP_FACTOR = 2.5  # dQ, dK, dV, dP and the recomputed S: 5 matmuls against the forward's 2


def make_provider(name, q, k, v, dout, causal, window, sinks, slopes):
    """A zero-argument callable running one backward, or None when the provider cannot express the variant."""
    b, s, h, d = q.shape
    plain_causal = causal and window == (-1, -1) and sinks == 0 and slopes is None
    if name in ("cuda", "cuda_det", "cuda_sm80"):
        if not pykernels.available_backends()["cuda"]:
            return None
        mod = op_module("cuda", "attention")
        kw = dict(softmax_scale=d ** -0.5, causal=causal, window_left=window[0], window_right=window[1],
                  sink_tokens=sinks, sink_logits=None, alibi_slopes=slopes, q_offset=0)
        out, lse = mod.forward(q, k, v, **kw)
        det = name == "cuda_det"

        def run():
            return mod.backward(dout, None, q, k, v, out, lse, deterministic=det, **kw)

        # cuda_sm80: the mma.sync dK/dV kernel where ``cuda`` takes the wgmma one.
        return with_env(run, "PYKERNELS_BWD_KERNEL", "sm80") if name == "cuda_sm80" else run
    leaves = [t.detach().transpose(1, 2).requires_grad_() for t in (q, k, v)]  # (B, H, S, D) views
    dout_t = dout.transpose(1, 2)
    if name in ("sdpa_flash", "cudnn"):
        if not plain_causal:
            return None
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = SDPBackend.FLASH_ATTENTION if name == "sdpa_flash" else SDPBackend.CUDNN_ATTENTION
        with sdpa_kernel(backend):
            out = torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=True)
    elif name == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        mask_mod, score_mod = flex_mods(causal, window, sinks, slopes is not None, h, q.device)
        block_mask = create_block_mask(mask_mod, None, None, s, s, device=q.device)
        out = torch.compile(flex_attention, dynamic=False)(*leaves, score_mod=score_mod, block_mask=block_mask)
    else:
        raise ValueError(f"unknown provider {name}")
    return lambda: torch.autograd.grad(out, leaves, dout_t, retain_graph=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="append JSON lines here")
    ap.add_argument("--seqlen", type=int, default=16384)
    ap.add_argument("--head-dims", default="64,128")
    ap.add_argument("--variants", default="causal,window1024")
    ap.add_argument("--providers", default="cuda,cuda_sm80,cuda_det,sdpa_flash,cudnn,flex")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()

    s = args.seqlen
    dev = torch.device("cuda")
    gpu = torch.cuda.get_device_name()
    commit = git_commit()  # honours PYKERNELS_COMMIT on a copied tree without .git
    rows = []
    keys = []
    for d in (int(x) for x in args.head_dims.split(",")):
        b, h = max(1, 16384 // s), 2048 // d
        for variant in args.variants.split(","):
            causal, window, sinks, alibi = VARIANTS[variant]
            keys.append((d, variant))
            torch.manual_seed(0)
            q, k, v, dout = (torch.randn(b, s, h, d, device=dev, dtype=torch.bfloat16) for _ in range(4))
            slopes = pykernels.alibi_slopes(h).to(dev) if alibi else None
            flops = BWD_FLOP_FACTOR * useful_flops(b, h, s, d, causal, window, sinks)
            for prov in args.providers.split(","):
                t = try_time(f"d={d} {variant:18s} {prov:11s}",
                             functools.partial(make_provider, prov, q, k, v, dout, causal, window, sinks, slopes),
                             args.warmup, args.reps)
                if t is None:
                    continue
                med, p20, p80 = t
                row = dict(kernel="attention", mode="bwd", variant=variant, provider=prov, batch=b, seqlen=s,
                           heads=h, head_dim=d, dtype="bf16", median_ms=med, p20_ms=p20, p80_ms=p80,
                           tflops=flops / (med * 1e-3) / 1e12, gpu=gpu, torch=torch.__version__, commit=commit)
                rows.append(row)
                print(f"d={d} {variant:18s} {prov:11s} {row['tflops']:7.1f} TFLOP/s  {med:7.3f} ms", flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
            del q, k, v, dout
            torch.cuda.empty_cache()

    print(f"\n{gpu}, B*S=16K, H*D=2048, bf16, backward; TFLOP/s (median ms)")
    provs = [p for p in args.providers.split(",") if any(r["provider"] == p for r in rows)]
    print(f"{'d variant':22s}" + "".join(f"{p:>17s}" for p in provs))
    for d, variant in keys:
        cells = []
        for p in provs:
            r = next((r for r in rows if (r["head_dim"], r["variant"], r["provider"]) == (d, variant, p)), None)
            cells.append(f"{r['tflops']:7.1f} ({r['median_ms']:6.2f})" if r else f"{'-':>16s}")
        print(f"{f'{d} {variant}':22s}" + "".join(f"{c:>17s}" for c in cells))


if __name__ == "__main__":
    main()
