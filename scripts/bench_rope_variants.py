"""Tune the rotary kernel's launch constants: compile variants through NVRTC and time them.

    python scripts/bench_rope_variants.py [--out variants.jsonl]

csrc/rope/rotary.cuh reads its threads per block, rows per step, minimum
blocks per SM (``__launch_bounds__``) and a streaming-cache switch from
``PK_ROPE_*`` macros. This script compiles each variant below with the CuPy
backend's loader (the very source the extension builds), launches it with
the backend's own launch plan, and times it against a device copy of the same
bytes in the same run: q and k of (8, 4096, 32, 128) bf16, out of place, with
the cos/sin table and with in-kernel sincos. The defaults in rotary.cuh are
the winner of this table; rerun it when the kernel changes. (In
profiling/results/h200-2026-11-22b/checks/rope_variants_0a79399.jsonl, run
when the default was 4 rows, "default" and "minblocks2" are today's "rows4"
and "rows4-minblocks2", and the threads/stream variants used 4 rows.)
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

sys.path.insert(0, os.path.join(ROOT, "scripts"))
from bench_rope_dev import time_ms as _time_ms  # noqa: E402
from profiling.common import environment  # noqa: E402


def time_ms(fn) -> float:
    """Median ms per call (bench_rope_dev's timing: warm-up, host overhead covered)."""
    return _time_ms(fn, reps=30, warmup=3, device=torch.device("cuda"), inner=1)[0]

VARIANTS = {  # name -> macros; "default" is whatever rotary.cuh says (2 rows, 256 threads since 8d1e408)
    "default": {},
    "rows4": {"PK_ROPE_ROWS_PER_STEP": 4},
    "rows4-minblocks2": {"PK_ROPE_ROWS_PER_STEP": 4, "PK_ROPE_MIN_BLOCKS": 2},
    "rows2": {"PK_ROPE_ROWS_PER_STEP": 2},
    "rows2-minblocks4": {"PK_ROPE_ROWS_PER_STEP": 2, "PK_ROPE_MIN_BLOCKS": 4},
    "rows2-minblocks3": {"PK_ROPE_ROWS_PER_STEP": 2, "PK_ROPE_MIN_BLOCKS": 3},
    "rows8-minblocks2": {"PK_ROPE_ROWS_PER_STEP": 8, "PK_ROPE_MIN_BLOCKS": 2},
    "stream-rows4-minblocks2": {"PK_ROPE_ROWS_PER_STEP": 4, "PK_ROPE_STREAM": 1, "PK_ROPE_MIN_BLOCKS": 2},
    "stream": {"PK_ROPE_STREAM": 1},
    "threads128-minblocks4": {"PK_ROPE_THREADS": 128, "PK_ROPE_ROWS_PER_STEP": 4, "PK_ROPE_MIN_BLOCKS": 4},
    "threads512": {"PK_ROPE_THREADS": 512, "PK_ROPE_ROWS_PER_STEP": 4},
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--shape", default="8,4096,32,128")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_rope_variants: needs a CUDA GPU")
        return 0
    from pykernels import rope
    from pykernels.backends.cupy import rope as cupy_rope
    from pykernels.backends.cupy._compile import compile_module, current_stream, read_ints

    b, s, h, d = (int(x) for x in args.shape.split(","))
    dev = torch.device("cuda")
    q = torch.randn(b, s, h, d, device=dev, dtype=torch.bfloat16)
    k = torch.randn(b, s, h, d, device=dev, dtype=torch.bfloat16)
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    emb = rope.RotaryEmbedding(d)
    cos, sin = (t.to(dev) for t in emb.cos_sin(s))
    inv_freq = emb.inv_freq.to(dev, torch.float32)
    nbytes = 4 * q.numel() * q.element_size()
    copy_ms = time_ms(lambda: (q_out.copy_(q), k_out.copy_(k)))
    env = environment(dev)
    rows = []
    print(f"q, k = {tuple(q.shape)} bf16, {nbytes / 1e9:.2f} GB per call; copy {nbytes / copy_ms / 1e6:.0f} GB/s")
    print(f"{'variant':<24} {'table ms':>9} {'% copy':>7} {'freqs ms':>9} {'% copy':>7}")
    ref_q = torch.empty_like(q)
    for name, macros in VARIANTS.items():
        opts = tuple(f"-D{k_}={v}" for k_, v in macros.items())
        wide = 8
        names = [cupy_rope._name("__nv_bfloat16", wide, False, f) for f in (False, True)]
        mod = compile_module(cupy_rope.source(), names, options=opts, device=dev.index or 0)
        geometry = read_ints(mod, "pk_rope_geometry", 3)
        result = {}
        for freqs, (table, sin_t, scale) in ((False, (cos, sin, 1.0)), (True, (inv_freq, None, 1.0))):
            vec, blocks, kargs = cupy_rope._plan(q, k, table, sin_t, scale, None, 0, q_out, k_out, False, geometry)
            assert vec == wide, vec
            kern = mod.get_function(cupy_rope._name("__nv_bfloat16", vec, False, freqs))

            def call():
                with current_stream(dev):
                    kern((*blocks, 1), (geometry[0], 1, 1), kargs)

            q_out.fill_(float("nan"))
            call()
            torch.cuda.synchronize()
            if not freqs:  # every variant must write what the default writes
                if name == "default":
                    ref_q.copy_(q_out)
                else:
                    torch.testing.assert_close(q_out, ref_q, rtol=0, atol=0, msg=f"{name} differs from default")
            result["freqs" if freqs else "table"] = time_ms(call)
        row = {"variant": name, "macros": macros, "shape": [b, s, h, d], "table_ms": result["table"],
               "freqs_ms": result["freqs"], "copy_ms": copy_ms, "table_pct_copy": copy_ms / result["table"],
               "freqs_pct_copy": copy_ms / result["freqs"], **env}
        rows.append(row)
        print(f"{name:<24} {result['table']:9.3f} {100 * copy_ms / result['table']:6.1f}% "
              f"{result['freqs']:9.3f} {100 * copy_ms / result['freqs']:6.1f}%", flush=True)
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r, default=str) + "\n")
    best = max(rows, key=lambda r: r["table_pct_copy"])
    print(f"best (table): {best['variant']} {100 * best['table_pct_copy']:.1f}% of copy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
