"""One attention call at a million tokens: time and peak memory, forward and forward+backward.

    python -m profiling.long_context --results profiling/results/<run>/long_context

The issues' scale check: B=1, Hq=8, Hkv=1 (GQA 8:1, K/V never repeated in
memory), D=128, bf16, causal, at S = 128K, 256K, 512K and 1M tokens
(``--seqlens``), through ``pykernels.flash_attn_func`` on the CUDA backend.
For each S and mode it records:

* the time of one call (CUDA events; a small warm-up call first loads the
  kernels), and TFLOP/s by the flash-attn count (4 S^2 H D / 2 for causal,
  x2.5 for the backward, so x3.5 for fwd+bwd);
* the peak extra memory over the inputs (allocator peak after a reset, minus
  what was allocated before the call), next to the analytic fused footprint
  (forward: out + lse; fwd+bwd adds dq, dk, dv, the fp32 dq accumulator and
  the lse/delta scratch) and to what the S x S score matrix alone would take.

Linear memory shows as the peak doubling with S while the time quadruples.
``--peer`` adds SDPA's flash backend on the same forward (K/V repeated to 8
heads, since it takes no GQA here), timed in the same run.

Rows go to ``<results>/long_context.jsonl`` (and .csv) with the GPU, versions,
commit and date; a Markdown table is printed at the end. GPU only.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List

import torch

from .common import ResultsWriter, environment, fmt_bytes, free_memory, is_oom, progress, short_error

DEFAULT_SEQLENS = [131072, 262144, 524288, 1048576]
B, HQ, HKV, D = 1, 8, 1, 128


def causal_flops(s: int) -> float:
    return 4.0 * B * HQ * s * s * D / 2


def fused_bytes(s: int, mode: str) -> int:
    """The fused kernels' outputs and scratch (bf16 tensors, fp32 lse and accumulators)."""
    q_like = B * s * HQ * D * 2
    lse = B * HQ * s * 4
    if mode == "fwd":
        return q_like + lse
    kv_like = B * s * HKV * D * 2
    # out + lse, dq, dk, dv, fp32 dq accumulator, lse_log2 + delta scratch (padded to 128 rows).
    pad = -(-s // 128) * 128
    return q_like + lse + q_like + 2 * kv_like + 2 * q_like + 2 * B * HQ * pad * 4


def score_bytes(s: int) -> int:
    """The S x S scores of naive attention in bf16, for comparison (never allocated)."""
    return B * HQ * s * s * 2


def _time(fn) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def measure(s: int, mode: str, provider: str, device: torch.device) -> Dict[str, object]:
    import pykernels
    import torch.nn.functional as F

    gen = torch.Generator(device=device).manual_seed(s)
    q = torch.randn(B, s, HQ, D, device=device, dtype=torch.bfloat16, generator=gen)
    k = torch.randn(B, s, HKV, D, device=device, dtype=torch.bfloat16, generator=gen)
    v = torch.randn(B, s, HKV, D, device=device, dtype=torch.bfloat16, generator=gen)
    dout = torch.randn_like(q) if mode == "fwd+bwd" else None
    if provider == "sdpa-flash":
        # (B, H, S, D) views, K/V repeated to Hq heads (counted as inputs, allocated before the baseline).
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k.repeat_interleave(HQ // HKV, 2),
                                                     v.repeat_interleave(HQ // HKV, 2)))

        def call():
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
    elif mode == "fwd":
        def call():
            with torch.no_grad():
                return pykernels.flash_attn_func(q, k, v, causal=True, backend="cuda")
    else:
        leaves = [t.requires_grad_() for t in (q, k, v)]

        def call():
            out = pykernels.flash_attn_func(*leaves, causal=True, backend="cuda")
            out.backward(dout)
            return out

    torch.cuda.synchronize(device)
    free_memory()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    row = {"op": "attention", "provider": provider, "mode": mode, "batch": B, "seqlen": s, "heads_q": HQ,
           "heads_kv": HKV, "head_dim": D, "causal": True, "dtype": "bf16"}
    try:
        seconds = _time(call)
    except RuntimeError as exc:
        if not is_oom(exc):
            raise
        free_memory(collect=True)
        return {**row, "status": "oom", "error": short_error(exc)}
    peak = torch.cuda.max_memory_allocated(device) - base
    flops = causal_flops(s) * (1.0 if mode == "fwd" else 3.5)
    return {**row, "status": "ok", "seconds": seconds, "tflops": flops / seconds / 1e12,
            "peak_extra_bytes": peak, "fused_model_bytes": fused_bytes(s, mode),
            "naive_scores_bytes": score_bytes(s)}


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seqlens", type=int, nargs="+", default=DEFAULT_SEQLENS)
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    ap.add_argument("--peer", action="store_true", help="also time SDPA's flash backend on the forward")
    ap.add_argument("--results", default="profiling/results/long_context")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("long_context: needs a CUDA GPU (this is the 1M-token scale check); nothing to do on CPU")
        return 0
    import pykernels

    status = pykernels.available_backends().get("cuda")
    if status is None or not status.available:
        print(f"long_context: the cuda backend is unavailable: {getattr(status, 'reason', 'missing')}")
        return 1
    device = torch.device("cuda")
    env = environment(device)
    writer = ResultsWriter(Path(args.results), "long_context")
    progress(f"long_context: {env['gpu']}, torch {env['torch']}, commit {env['commit']}; "
             f"B={B} Hq={HQ} Hkv={HKV} D={D} causal bf16")
    for mode in args.modes:  # load every kernel before timing anything
        measure(4096, mode, "pykernels-cuda", device)
    rows = []
    for s in args.seqlens:
        jobs = [(m, "pykernels-cuda") for m in args.modes]
        if args.peer and "fwd" in args.modes:
            jobs.append(("fwd", "sdpa-flash"))
        for mode, provider in jobs:
            if provider == "sdpa-flash" and s == args.seqlens[0]:
                measure(4096, "fwd", provider, device)
            row = {**measure(s, mode, provider, device), **env}
            writer.write(row)
            rows.append(row)
            if row["status"] == "ok":
                progress(f"  S={s:>8} {mode:<8} {provider:<15} {row['seconds']:8.3f} s "
                         f"{row['tflops']:6.1f} TFLOP/s  peak extra {fmt_bytes(row['peak_extra_bytes'])} "
                         f"(model {fmt_bytes(row['fused_model_bytes'])}; scores alone "
                         f"{fmt_bytes(row['naive_scores_bytes'])})")
            else:
                progress(f"  S={s:>8} {mode:<8} {provider:<15} {row['status']}: {row.get('error', '')}")
            free_memory(collect=True)
    print("\n| S | mode | provider | time (s) | TFLOP/s | peak extra | fused model | S x S scores |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        if r["status"] == "ok":
            print(f"| {r['seqlen']} | {r['mode']} | {r['provider']} | {r['seconds']:.3f} | {r['tflops']:.1f} | "
                  f"{fmt_bytes(r['peak_extra_bytes'])} | {fmt_bytes(r['fused_model_bytes'])} | "
                  f"{fmt_bytes(r['naive_scores_bytes'])} |")
        else:
            print(f"| {r['seqlen']} | {r['mode']} | {r['provider']} | {r['status']} | | | | |")
    by = {(r["seqlen"], r["mode"], r["provider"]): r for r in rows if r["status"] == "ok"}
    if len(args.seqlens) >= 2:
        for mode in args.modes:
            s0, s1 = args.seqlens[0], args.seqlens[-1]
            a, b = by.get((s0, mode, "pykernels-cuda")), by.get((s1, mode, "pykernels-cuda"))
            if a and b:
                print(f"{mode}: S x{s1 / s0:g} -> peak memory x{b['peak_extra_bytes'] / a['peak_extra_bytes']:.2f}, "
                      f"time x{b['seconds'] / a['seconds']:.1f} (quadratic: x{(s1 / s0) ** 2:g})")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
