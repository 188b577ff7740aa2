"""RoPE forward benchmark (development): pykernels backends vs HF-style eager and torch.compile.

    python scripts/bench_rope_dev.py --out rope.jsonl

For each size (q and k of the same (B, S, H, D), bf16, BSHD), every provider
rotates q and k once per call:

* ``copy``: ``q_out.copy_(q); k_out.copy_(k)``, the device's copy bandwidth,
  measured in the same run as the yardstick;
* ``hf-eager``: transformers' ``apply_rotary_pos_emb`` (``q * cos +
  rotate_half(q) * sin``) on precomputed (B, S, D) bf16 cos/sin, as a
  transformers model runs it;
* ``hf-compile``: the same under ``torch.compile``;
* ``<backend>``: ``pykernels.apply_rotary(q, cos, sin, k=k)`` on one backend,
  reading the float32 cos/sin table;
* ``<backend>-freqs``: cuda and cupy only, cos/sin computed in the kernel from
  inv_freq (sincos per token) instead of read from the table: the measurement
  behind reading the table (pykernels/rope.py);
* ``<backend>-inplace``: the same kernel writing into q and k.

GB/s counts the bytes of q and k read plus the bytes written (4 * numel *
2 bytes); the cos/sin table (S * D/2 * 8 bytes, about 1% at these sizes) is
left out, for every provider alike. "% copy" is that rate over the copy
provider's. Each row reports the median time per call over --reps timed
batches of --inner back-to-back calls, with its 20th/80th percentiles; JSON
lines carry the same rows plus the GPU, versions and commit. Targets for the cuda provider: >= 90% of copy bandwidth and
>= 1.0x hf-compile.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pykernels  # noqa: E402
from pykernels import backends, rope  # noqa: E402
from profiling.common import cover_host_overhead, git_commit  # noqa: E402

SIZES = [(8, 4096, 32, 128), (1, 32768, 32, 128)]
COPY_TARGET = 0.90
COMPILE_TARGET = 1.0


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def formula_apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def hf_apply_rotary_pos_emb():
    """transformers' apply_rotary_pos_emb when installed, else the same formula."""
    try:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    except ImportError:
        return formula_apply_rotary_pos_emb
    return apply_rotary_pos_emb


def time_ms(fn, reps: int, warmup: int, device: torch.device, inner: int):
    """(median, p20, p80) ms per call over ``reps`` batches of ``inner`` back-to-back calls.

    Each batch is queued behind a spin kernel (profiling.common's
    cover_host_overhead), so Python launch overhead is hidden as it is in a
    real model instead of being timed as idle GPU. One call per batch by
    default: the pykernels op path validates its arguments in Python, and
    five back-to-back calls outran the cover (H200, 8d1e408: the table path
    read 12% slower than the same kernel launched bare).
    """
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            cover_host_overhead(device)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / inner)
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times.append((time.perf_counter() - t0) * 1e3 / inner)
    times.sort()
    q = statistics.quantiles(times, n=10) if len(times) > 1 else times * 9
    return statistics.median(times), q[1], q[7]


def providers(q, k, emb, cos, sin, device):
    """name -> (callable, callable returning (q_out, k_out) for the agreement check)."""
    b, s, _, d = q.shape
    half = d // 2
    # transformers' cos/sin: (B, S, D) in the input dtype, second half repeating the first.
    hf_cos = torch.cat((cos[:s], cos[:s]), -1)[None].expand(b, -1, -1).to(q.dtype)
    hf_sin = torch.cat((sin[:s], sin[:s]), -1)[None].expand(b, -1, -1).to(q.dtype)
    out = {}
    q_dst, k_dst = torch.empty_like(q), torch.empty_like(k)

    def copy():
        q_dst.copy_(q)
        k_dst.copy_(k)
        return q_dst, k_dst

    out["copy"] = copy
    hf_apply = hf_apply_rotary_pos_emb()
    out["hf-eager"] = lambda: hf_apply(q, k, hf_cos, hf_sin, unsqueeze_dim=2)
    compiled = torch.compile(hf_apply, dynamic=False)
    out["hf-compile"] = lambda: compiled(q, k, hf_cos, hf_sin, unsqueeze_dim=2)
    for name in backends.PREFERENCE:
        st = backends.status(name)
        if not st.available or backends._module(name).supports("rope", device, q.dtype, d) is not None:
            print(f"# {name}: skipped ({st.reason if not st.available else 'unsupported here'})")
            continue
        out[name] = (lambda n: lambda: pykernels.apply_rotary(q, cos, sin, k=k, backend=n))(name)
        mod = backends.op_module(name, "rope")
        if hasattr(mod, "apply_rotary_freqs"):
            inv = emb.inv_freq.to(device)
            qf, kf = torch.empty_like(q), torch.empty_like(k)

            def freqs(mod=mod, qf=qf, kf=kf, inv=inv):
                mod.apply_rotary_freqs(q, k, inv, emb.attention_factor, None, 0, qf, kf, interleaved=False,
                                       conjugate=False)
                return qf, kf

            out[f"{name}-freqs"] = freqs
        if name in ("cuda", "cupy"):
            qi, ki = q.clone(), k.clone()
            # Rotating the same buffers again and again is fine for timing;
            # the agreement check below uses a fresh copy.
            out[f"{name}-inplace"] = (lambda n, qi=qi, ki=ki: lambda: pykernels.apply_rotary(
                qi, cos, sin, inplace=True, k=ki, backend=n))(name)
    assert half == cos.shape[1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="append JSON lines here")
    ap.add_argument("--reps", type=int, default=30, help="timed batches")
    ap.add_argument("--inner", type=int, default=1, help="back-to-back calls per timed batch")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default=None, help="override, e.g. '2,128,4,64;1,256,2,128' (B,S,H,D)")
    args = ap.parse_args()
    device = torch.device(args.device)
    sizes = SIZES if not args.sizes else [tuple(int(v) for v in t.split(",")) for t in args.sizes.split(";")]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    meta = {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "pykernels": pykernels.__version__,
            "commit": git_commit()}
    print(f"# RoPE forward, bf16, BSHD, q and k rotated per call; {gpu}; torch {torch.__version__}; "
          f"commit {meta['commit']}")
    rows = []
    for b, s, h, d in sizes:
        torch.manual_seed(0)
        q = torch.randn(b, s, h, d, device=device, dtype=torch.bfloat16)
        k = torch.randn(b, s, h, d, device=device, dtype=torch.bfloat16)
        emb = rope.RotaryEmbedding(d, 500000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
        cos, sin = emb.cos_sin(s, device=device)
        nbytes = 4 * q.numel() * q.element_size()
        fns = providers(q, k, emb, cos, sin, device)
        expect = pykernels.apply_rotary(q, cos, sin, k=k, backend="torch")
        results = {}
        for name, fn in fns.items():
            if name.endswith("-inplace"):
                agree = "(in place)"
            else:
                got = fn()
                if name == "copy":
                    agree = "-"
                else:
                    err = max(float((g.float() - e.float()).abs().max()) for g, e in zip(got, expect))
                    agree = f"{err:.1e}"
            med, p20, p80 = time_ms(fn, args.reps, args.warmup, device, args.inner)
            results[name] = (med, p20, p80, agree)
        copy_gbps = nbytes / results["copy"][0] / 1e6
        compile_ms = results["hf-compile"][0]
        size = f"{b}x{s}x{h}x{d}"
        print(f"\n## q, k = ({b}, {s}, {h}, {d}) bf16: {nbytes / 1e9:.2f} GB moved per call")
        print(f"{'provider':<16}{'median ms':>10}{'p20':>9}{'p80':>9}{'GB/s':>9}{'% copy':>8}"
              f"{'vs compile':>11}  max|diff| vs torch")
        for name, (med, p20, p80, agree) in results.items():
            gbps = nbytes / med / 1e6
            row = {"kernel": "rope", "provider": name, "mode": "fwd", "size": size, "dtype": "bf16",
                   "median_ms": med, "p20_ms": p20, "p80_ms": p80, "gbps": gbps,
                   "pct_copy": 100 * gbps / copy_gbps, "speedup_vs_compile": compile_ms / med, **meta}
            rows.append(row)
            print(f"{name:<16}{med:>10.3f}{p20:>9.3f}{p80:>9.3f}{gbps:>9.0f}{row['pct_copy']:>7.0f}%"
                  f"{row['speedup_vs_compile']:>10.2f}x  {agree}")
        if "cuda" in results:
            med = results["cuda"][0]
            pct, speed = (nbytes / med / 1e6) / copy_gbps, compile_ms / med
            verdict = "MET" if pct >= COPY_TARGET and speed >= COMPILE_TARGET else "NOT MET"
            print(f"target (cuda >= {COPY_TARGET:.0%} of copy and >= {COMPILE_TARGET:.1f}x hf-compile): {verdict} "
                  f"({pct:.0%}, {speed:.2f}x)")
        for name in ("cuda", "cupy"):
            if name in results and f"{name}-freqs" in results:
                ratio = results[f"{name}-freqs"][0] / results[name][0]
                print(f"{name}: in-kernel sincos takes {ratio:.2f}x the time of the cos/sin table")
    if args.out:
        with open(args.out, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(f"\n# {len(rows)} rows appended to {args.out}")


if __name__ == "__main__":
    main()
