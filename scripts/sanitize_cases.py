"""A small matrix of every GPU kernel, for compute-sanitizer (memcheck, racecheck).

Odd lengths, GQA, every mask flag and both dtypes, at sizes that keep the
sanitizer's slowdown to seconds. Exits non-zero if a result is wrong, so a
kernel that fails silently under the sanitizer is still caught.
"""
from __future__ import annotations

import itertools
import os
import sys

import torch

import pykernels
from pykernels.reference import attention_ref, rotary_ref

# The compiled kernels by default; SANITIZE_BACKENDS="cuda cupy numba" adds Numba's (slow under the sanitizer).
WANTED = os.environ.get("SANITIZE_BACKENDS", "cuda cupy").split()
GPU_BACKENDS = [n for n in WANTED if pykernels.available_backends()[n].available]


def attention_cases():
    # SANITIZE_LONG_ONLY=1: only the multi-work-tile cases below (a quicker racecheck).
    long_only = os.environ.get("SANITIZE_LONG_ONLY") == "1"
    for (sq, sk, hq, hkv, d), causal, window, sinks, alibi in itertools.product(
        [(17, 97, 4, 1, 64), (97, 33, 4, 2, 128), (65, 65, 2, 2, 32)],
        [False, True], [(-1, -1), (16, 8)], [0, 3], [False, True],
    ):
        if long_only:
            break
        yield dict(shape=(1, sq, sk, hq, hkv, d), causal=causal, window_size=window, sink_tokens=sinks,
                   alibi=alibi, sink_logits=sinks > 0)
    # More query tiles (16 heads x 9) than a Hopper GPU has SMs: the persistent
    # wgmma forward walks two work tiles in some CTAs, through its barrier phases.
    for d, causal in itertools.product([64, 128], [False, True]):
        yield dict(shape=(1, 1100, 1100, 16, 2, d), causal=causal, window_size=(300, 0) if causal else (-1, -1),
                   sink_tokens=2 if causal else 0, alibi=not causal, sink_logits=causal)


def main() -> int:
    bad = 0
    print("backends:", GPU_BACKENDS or "none available")
    for backend in GPU_BACKENDS:
        n = 0
        for case in attention_cases():
            b, sq, sk, hq, hkv, d = case["shape"]
            q = torch.randn(b, sq, hq, d, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(b, sk, hkv, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn(b, sk, hkv, d, device="cuda", dtype=torch.bfloat16)
            opt = dict(causal=case["causal"], window_size=case["window_size"], sink_tokens=case["sink_tokens"],
                       alibi_slopes=pykernels.alibi_slopes(hq).cuda() if case["alibi"] else None,
                       sink_logits=torch.randn(hq, device="cuda") if case["sink_logits"] else None)
            q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
            try:
                out = pykernels.flash_attn_func(q, k, v, backend=backend, **opt)
            except ValueError as exc:  # a head dim the backend does not take
                print(f"{backend}: skipped {case['shape']}: {exc}")
                continue
            # The backward runs this backend's kernel where it has one (else the fallback).
            out.backward(torch.randn_like(out))
            ref, _ = attention_ref(q.detach(), k.detach(), v.detach(), **opt)
            err = (out.detach().double() - ref).abs().max().item()
            if not err < 5e-2:
                print(f"{backend}: WRONG attention {case}: max error {err:.3e}")
                bad += 1
            n += 1
        x = torch.randn(2, 33, 4, 64, device="cuda", dtype=torch.bfloat16)
        ang = torch.randn(33, 16, device="cuda")
        try:
            y = pykernels.apply_rotary(x, ang.cos(), ang.sin(), backend=backend)
            err = (y.double() - rotary_ref(x, ang.cos(), ang.sin())).abs().max().item()
            if not err < 5e-2:
                print(f"{backend}: WRONG rope: max error {err:.3e}")
                bad += 1
        except (TypeError, NotImplementedError, ValueError) as exc:
            print(f"{backend}: rope not run: {exc}")
        torch.cuda.synchronize()
        print(f"{backend}: {n} attention cases ran")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
