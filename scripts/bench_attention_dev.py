"""Dev benchmark of the attention forward against PyTorch's kernels (issue 4).

    python scripts/bench_attention_dev.py --out results.jsonl [--providers cuda,cuda_sm80,cupy,sdpa_flash,cudnn,flex]

cuda_sm80 is the extension's mma.sync kernel, forced on a Hopper GPU where
``cuda`` takes the wgmma kernel (head dims 64 and 128).

Shapes: B * S = 16K tokens, H * D = 2048, bf16 (default S = 16384, D = 128).
Variants: causal; causal sliding window 1024; 4 sink tokens + window 1024;
causal + ALiBi. Peers run only where they express the variant natively:
SDPA's flash and cuDNN backends take plain causal, FlexAttention (compiled)
takes all four through block masks and score_mod.

TFLOP/s follow flash-attn: 4 * B * H * Sq * Sk * D, halved for causal; for a
window or sinks only the visible (row, key) pairs count
(``MaskSpec.visible_pairs``), so the numbers are useful work per second.
Timing: CUDA events around each call, warm-up first, median of --reps, fresh
random inputs (not zeros). One JSON line per measurement goes to --out.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics

import torch

import pykernels
from profiling.common import cover_host_overhead, git_commit, now_utc
from profiling.counting import matmul_flops
from profiling.providers import compiled_flex
from profiling.variants import Variant
from pykernels.masks import MaskSpec

VARIANTS = {
    # name: (causal, window, sink_tokens, alibi)
    "causal": (True, (-1, -1), 0, False),
    "window1024": (True, (1024, 0), 0, False),
    "sink4_window1024": (True, (1024, 0), 4, False),
    "causal_alibi": (True, (-1, -1), 0, True),
}


def useful_flops(b, h, s, d, causal, window, sinks):
    if window == (-1, -1) and sinks == 0:
        pairs = s * s / (2 if causal else 1)  # flash-attn's convention
    else:
        pairs = MaskSpec(s, s, causal, window[0], window[1], sinks).visible_pairs()
    return 4.0 * b * h * pairs * d


def time_fn(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        cover_host_overhead(torch.device("cuda"))  # host dispatch overlaps GPU work (profiling/common.py)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    return statistics.median(times), q(0.2), q(0.8)


def try_time(label, make, warmup, reps):
    """(median, p20, p80) ms of the callable ``make()`` returns; None when it returns None (provider absent)
    or when building or timing it fails, which is printed: a peer that fails must not hide the others."""
    try:
        fn = make()
        return None if fn is None else time_fn(fn, warmup, reps)
    except Exception as exc:  # noqa: BLE001
        print(f"{label} failed: {type(exc).__name__}: {str(exc)[:200]}")
        return None


def flex_mods(causal, window, sinks, alibi, heads, device):
    """FlexAttention's (mask_mod, score_mod) for a variant: the profiling suite's, not a second copy."""
    variant = Variant("dev", causal=causal, left=window[0], sink_tokens=sinks, alibi=alibi)
    return variant.flex_mods(heads, device)


# The extension's other kernel on a Hopper GPU, as a provider: the mma.sync
# kernel where ``cuda`` takes the wgmma one.
ENV_PROVIDERS = {"cuda_sm80": ("PYKERNELS_FWD_KERNEL", "sm80")}


def with_env(run, var, value):
    """``run`` with an environment variable set around each call (a kernel choice, flash_*_launch.cuh)."""

    def run_with_env():
        os.environ[var] = value
        try:
            return run()
        finally:
            del os.environ[var]

    return run_with_env


def make_provider(name, q, k, v, causal, window, sinks, slopes):
    """A zero-argument callable running the variant, or None when the provider cannot express it."""
    b, s, h, d = q.shape
    plain_causal = causal and window == (-1, -1) and sinks == 0 and slopes is None
    if name in ("cuda", "cupy") or name in ENV_PROVIDERS:
        backend = "cuda" if name in ENV_PROVIDERS else name
        if not pykernels.available_backends()[backend]:
            return None

        def run():
            return pykernels.flash_attn_func(q, k, v, causal=causal, window_size=window, sink_tokens=sinks,
                                             alibi_slopes=slopes, backend=backend)

        return with_env(run, *ENV_PROVIDERS[name]) if name in ENV_PROVIDERS else run
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # SDPA / Flex layout (B, H, S, D), same storage
    if name in ("sdpa_flash", "cudnn"):
        if not plain_causal:
            return None
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = SDPBackend.FLASH_ATTENTION if name == "sdpa_flash" else SDPBackend.CUDNN_ATTENTION

        def run():
            with sdpa_kernel(backend):
                return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True)

        return run
    if name == "flex":
        from torch.nn.attention.flex_attention import create_block_mask

        mask_mod, score_mod = flex_mods(causal, window, sinks, slopes is not None, h, q.device)
        block_mask = create_block_mask(mask_mod, None, None, s, s, device=q.device)
        # The profiler's compiled Flex: a --seqlen list compiles once per (shape,
        # mask), past Dynamo's default limit, which compiled_flex raises.
        compiled = compiled_flex()
        return lambda: compiled(qt, kt, vt, score_mod=score_mod, block_mask=block_mask)
    raise ValueError(f"unknown provider {name}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="append JSON lines here")
    ap.add_argument("--seqlen", default="16384",
                    help="sequence length, or several comma-separated (one process: one matmul, one start-up)")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--providers", default="cuda,cupy,sdpa_flash,cudnn,flex")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--matmul", type=int, default=8192,
                    help="also time a bf16 N^3 matmul, the GPU's tensor-core rate in this run (0: skip)")
    args = ap.parse_args()

    d = args.head_dim
    dev = torch.device("cuda")
    gpu = torch.cuda.get_device_name()
    commit = git_commit()  # honours PYKERNELS_COMMIT on a copied tree without .git
    date = now_utc()
    mm_tflops = None
    if args.matmul:
        n = args.matmul
        torch.manual_seed(0)
        a, bm = (torch.randn(n, n, device=dev, dtype=torch.bfloat16) for _ in range(2))
        t = try_time("matmul", lambda: (lambda: torch.matmul(a, bm)), args.warmup, args.reps)
        if t is not None:
            mm_tflops = matmul_flops(n, n, n) / (t[0] * 1e-3) / 1e12
            row = dict(kernel="matmul", mode="fwd", variant=f"bf16_{n}^3", provider="torch_matmul", shape=[n, n, n],
                       dtype="bf16", median_ms=t[0], p20_ms=t[1], p80_ms=t[2], tflops=mm_tflops, gpu=gpu,
                       torch=torch.__version__, cuda=torch.version.cuda, commit=commit, date=date)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
        del a, bm
    for s in (int(x) for x in args.seqlen.split(",")):
        b, h = max(1, 16384 // s), 2048 // d  # the setup: B * S = 16K, H * D = 2048
        rows = []
        for variant in args.variants.split(","):
            causal, window, sinks, alibi = VARIANTS[variant]
            torch.manual_seed(0)
            q, k, v = (torch.randn(b, s, h, d, device=dev, dtype=torch.bfloat16) for _ in range(3))
            slopes = pykernels.alibi_slopes(h).to(dev) if alibi else None
            flops = useful_flops(b, h, s, d, causal, window, sinks)
            for prov in args.providers.split(","):
                make = functools.partial(make_provider, prov, q, k, v, causal, window, sinks, slopes)
                t = try_time(f"{variant:18s} {prov:11s}", make, args.warmup, args.reps)
                if t is None:
                    continue
                med, p20, p80 = t
                row = dict(kernel="attention", mode="fwd", variant=variant, provider=prov, batch=b, seqlen=s, heads=h,
                           head_dim=d, dtype="bf16", median_ms=med, p20_ms=p20, p80_ms=p80,
                           tflops=flops / (med * 1e-3) / 1e12, gpu=gpu, torch=torch.__version__, cuda=torch.version.cuda,
                           commit=commit, date=date)
                if os.environ.get("PK_DEV_FLAGS"):  # a knob build (scripts/dev/attn_dev.py): say which
                    row["build_flags"] = os.environ["PK_DEV_FLAGS"]
                rows.append(row)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
            del q, k, v
            torch.cuda.empty_cache()

        print(f"\n{gpu}, B={b} S={s} H={h} D={d} bf16; useful TFLOP/s (median ms)")
        if mm_tflops:
            print(f"bf16 {args.matmul}^3 matmul in this run: {mm_tflops:.1f} TFLOP/s")
        provs = [p for p in args.providers.split(",") if any(r["provider"] == p for r in rows)]
        print(f"{'variant':18s}" + "".join(f"{p:>17s}" for p in provs))
        for variant in args.variants.split(","):
            cells = []
            for p in provs:
                r = next((r for r in rows if r["variant"] == variant and r["provider"] == p), None)
                cells.append(f"{r['tflops']:7.1f} ({r['median_ms']:6.2f})" if r else f"{'-':>16s}")
            ours = next((r for r in rows if r["variant"] == variant and r["provider"] == "cuda"), None)
            share = f"   cuda = {100 * ours['tflops'] / mm_tflops:.0f}% of matmul" if ours and mm_tflops else ""
            print(f"{variant:18s}" + "".join(f"{c:>17s}" for c in cells) + share)


if __name__ == "__main__":
    main()
