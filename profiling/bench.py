"""The micro-benchmark sweep: attention and RoPE against their peers (issue 8).

    python -m profiling.bench --results profiling/results/h100-bench          # everything
    python -m profiling.bench --quick --providers pykernels sdpa:cudnn --results DIR
    python -m profiling.bench --ops rope --results DIR

Attention sizes follow flash-attn's benchmark: B·S = 16K tokens, H·D = 2048,
S from 1K to 32K, head dims 64 and 128, over the causal, window, sinks and
ALiBi variants, in modes fwd, bwd (the backward alone, graph kept) and full.
Providers: every pykernels backend, torch SDPA forced to each of its backends
(flash, cuDNN, efficient, math), FlexAttention under torch.compile with the
same mask_mod / score_mod, and naive attention. RoPE rotates q and k of
(8, 4096, 32, 128) and (1, 32768, 32, 128) bf16 with pykernels, HF's eager
rotate_half and that same function under torch.compile.

The run first measures two ceilings on this GPU, a device-to-device copy
(GB/s, read + write) and a bf16 8192³ matmul (TFLOP/s); every row reports
its throughput as a share of the matching one. A provider that cannot run a
configuration is a row with status "skipped" and the reason. Rows go to
``<results>/bench.jsonl`` (and .csv) as they are measured, so a run cut short
keeps what it did; ``--max-seconds`` stops starting new points in time.
Without a GPU the command runs a tiny CPU smoke sweep (for tests only).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

import pykernels
from pykernels import backends as pyk_backends

from . import charts, counting, report
from .common import (ResultsWriter, dtype_name, environment, failure_status, free_memory, parse_dtype, parse_size,
                     pick_device, progress, short_error, time_fn, timestamp)
from .providers import expand_providers, get_provider, make_qkv, raise_recompile_limit, unsupported
from .variants import VARIANTS, Variant, get_variants

TABLE = "bench"
MODES = ("fwd", "bwd", "full")
ROPE_PROVIDERS = ("pykernels", "hf_eager", "compiled")
ROPE_BASE = 10000.0

GPU = dict(tokens="16K", hidden=2048, seqlens="1K 2K 4K 8K 16K 32K", head_dims=(64, 128), dtype="bf16",
           rope_shapes=((8, 4096, 32, 128), (1, 32768, 32, 128)), copy_bytes=1 << 30, matmul_n=8192,
           providers=("pykernels", "sdpa:*", "flex", "naive"), budget_s=0.3)
QUICK = dict(seqlens="2K 8K 32K", head_dims=(128,), modes=("fwd", "bwd"))
# CPU smoke mode: exercises every code path in seconds; its numbers mean nothing.
CPU = dict(tokens="1K", hidden=128, seqlens="256 512", head_dims=(64,), dtype="fp32",
           rope_shapes=((1, 512, 4, 64),), copy_bytes=1 << 24, matmul_n=512,
           providers=("pykernels:torch", "sdpa:math", "naive"), budget_s=0.05)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m profiling.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--ops", nargs="+", default=["attention", "rope"], choices=["attention", "rope"])
    p.add_argument("--providers", nargs="+",
                   help="attention providers: pykernels, pykernels:<b>, sdpa:* , sdpa:<b>, flex, naive")
    p.add_argument("--rope-providers", nargs="+", default=list(ROPE_PROVIDERS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--modes", nargs="+", choices=MODES)
    p.add_argument("--head-dims", nargs="+", type=int)
    p.add_argument("--seqlens", nargs="+")
    p.add_argument("--max-seqlen", help="drop sequence lengths above this")
    p.add_argument("--tokens", help="B·S, kept constant (GPU 16K)")
    p.add_argument("--hidden", type=int, help="H·D, kept constant (GPU 2048)")
    p.add_argument("--dtype")
    p.add_argument("--quick", action="store_true", help=f"S {QUICK['seqlens']}, D=128, modes fwd and bwd")
    p.add_argument("--budget", type=float, help="seconds of timing reps per point")
    p.add_argument("--max-seconds", type=float, help="start no new point after this long")
    p.add_argument("--results", help="output directory (default profiling/out/<timestamp>)")
    p.add_argument("--no-charts", action="store_true")
    return p.parse_args(argv)


class Sweep:
    """Owns the writer, the ceilings and the time budget of one run."""

    def __init__(self, args: argparse.Namespace):
        self.device = pick_device(args.device)
        d = GPU if self.device.type == "cuda" else CPU
        self.defaults = d
        self.dtype = parse_dtype(args.dtype or d["dtype"])
        self.budget = args.budget if args.budget is not None else d["budget_s"]
        self.max_seconds = args.max_seconds
        self.t0 = time.monotonic()
        self.out_dir = Path(args.results or Path("profiling") / "out" / timestamp())
        self.writer = ResultsWriter(self.out_dir, TABLE)
        self.env = environment(self.device)
        self.ceilings: Dict[str, float] = {}
        self.stopped: Optional[str] = None

    def out_of_time(self) -> bool:
        if self.max_seconds and time.monotonic() - self.t0 > self.max_seconds:
            self.stopped = self.stopped or f"stopped after {self.max_seconds:g} s (--max-seconds)"
            return True
        return False

    def write(self, row: dict) -> None:
        row = {"table": TABLE, "dtype": dtype_name(self.dtype), **row, **self.env}
        prov = row.get("provider", "")
        row.setdefault("family", prov.split(":")[0])
        row.setdefault("backend", prov.split(":", 1)[1] if ":" in prov else "default")
        if row.get("status") == "ok":
            metric = "tflops" if row.get("tflops") is not None else "gbps"
            ceiling = self.ceilings.get("tflops" if metric == "tflops" else "gbps")
            row["pct_of_ceiling"] = 100.0 * row[metric] / ceiling if ceiling else None
        self.writer.write(row)
        progress(report.bench_line(row))

    def timed(self, fn) -> Dict[str, object]:
        # Two warm-up calls on a GPU: the first may compile (FlexAttention, NVRTC,
        # Numba), and the second's time sets how many reps fit in the budget.
        return time_fn(fn, self.device, warmup=2 if self.device.type == "cuda" else 1, budget_s=self.budget)

    # ---------------------------------------------------------- ceilings
    def measure_ceilings(self) -> None:
        self._copy_ceiling()
        self._matmul_ceiling()
        free_memory()

    def _copy_ceiling(self) -> None:
        n = self.defaults["copy_bytes"] // torch.empty((), dtype=self.dtype).element_size()
        src = torch.randn(n, dtype=self.dtype, device=self.device)
        dst = torch.empty_like(src)
        t = self.timed(lambda: dst.copy_(src))
        nbytes = src.numel() * src.element_size()
        gbps = counting.copy_bytes(nbytes) / (t["median_ms"] * 1e-3) / 1e9
        self.ceilings["gbps"] = gbps
        self.write({"op": "ceiling_copy", "provider": "torch copy_", "mode": "fwd", "shape": f"{nbytes} bytes",
                    "io_bytes": counting.copy_bytes(nbytes), "gbps": gbps, "tflops": None, "status": "ok", **t})

    def _matmul_ceiling(self) -> None:
        m = self.defaults["matmul_n"]
        mdt = torch.bfloat16 if self.device.type == "cuda" else self.dtype
        a, b = (torch.randn(m, m, dtype=mdt, device=self.device) for _ in range(2))
        t = self.timed(lambda: a @ b)
        tflops = counting.matmul_flops(m, m, m) / (t["median_ms"] * 1e-3) / 1e12
        self.ceilings["tflops"] = tflops
        self.write({"op": "ceiling_matmul", "provider": f"torch matmul {dtype_name(mdt)}", "mode": "fwd",
                    "shape": f"{m}x{m}x{m}", "flops": counting.matmul_flops(m, m, m), "tflops": tflops,
                    "status": "ok", **t})


# ------------------------------------------------------------- attention
def attention_point(sw: Sweep, provider, variant: Variant, batch: int, heads: int, seqlen: int, head_dim: int,
                    mode: str) -> None:
    causal_only = variant.left == -1 and not variant.sink_tokens
    pairs = None if causal_only else variant.visible_pairs(seqlen, seqlen)
    e = torch.empty((), dtype=sw.dtype).element_size()
    row = {"op": "attention", "provider": provider.name, "family": provider.family, "backend": provider.backend,
           "mode": mode, "variant": variant.name, "variant_desc": variant.describe(), "batch": batch,
           "heads": heads, "seqlen": seqlen, "head_dim": head_dim, "causal": variant.causal,
           "window": variant.left, "sinks": variant.sink_tokens, "alibi": variant.alibi,
           "shape": f"{batch}x{seqlen}x{heads}x{head_dim}", "how": provider.how(variant, heads),
           "flops": counting.attention_flops(batch, heads, seqlen, seqlen, head_dim, mode, variant.causal, pairs),
           "io_bytes": counting.attention_io_bytes(batch, heads, seqlen, seqlen, head_dim, e, mode)}
    reason = provider.reason or unsupported(provider, "attention_fwd", sw.device, sw.dtype, head_dim)
    if reason is None and mode != "fwd":
        reason = unsupported(provider, "attention_bwd", sw.device, sw.dtype, head_dim)
    if reason:
        sw.write({**row, "status": "skipped", "reason": reason})
        return
    free_memory()
    try:
        q, k, v = make_qkv(provider.layout, batch, heads, seqlen, head_dim, sw.dtype, sw.device,
                           requires_grad=mode != "fwd")
        state = provider.prepare(variant, heads, seqlen, sw.dtype, sw.device)
        call = functools.partial(provider.call, q, k, v, variant, state)
        if mode == "fwd":
            with torch.no_grad():
                t = sw.timed(call)
        else:
            dout = torch.randn_like(q)
            if mode == "bwd":
                out = call()
                # torch.autograd.grad returns the gradients without accumulating into .grad.
                fn = lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)  # noqa: E731
            else:
                fn = lambda: torch.autograd.grad(call(), (q, k, v), dout)  # noqa: E731
            t = sw.timed(fn)
        secs = t["median_ms"] * 1e-3
        row.update(t, status="ok", tflops=row["flops"] / secs / 1e12, gbps=row["io_bytes"] / secs / 1e9)
    except Exception as exc:  # noqa: BLE001  (an unsupported config is a row, not a crash)
        row.update(status=failure_status(exc), reason=short_error(exc))
    free_memory(collect=row["status"] != "ok")  # after the except block, whose traceback pins tensors
    sw.write(row)


def attention_sweep(sw: Sweep, args) -> None:
    d = sw.defaults
    names = expand_providers(args.providers or list(d["providers"]))
    providers = [get_provider(n, sw.device) for n in names]
    seqlens = sorted(parse_size(s) for s in (args.seqlens or (QUICK if args.quick else d)["seqlens"].split()))
    if args.max_seqlen:
        seqlens = [s for s in seqlens if s <= parse_size(args.max_seqlen)]
    head_dims = args.head_dims or (QUICK["head_dims"] if args.quick else d["head_dims"])
    modes = args.modes or (QUICK["modes"] if args.quick else MODES)
    tokens, hidden = parse_size(args.tokens or d["tokens"]), args.hidden or d["hidden"]
    for head_dim in head_dims:
        heads = max(1, hidden // head_dim)
        for seqlen in seqlens:
            batch = max(1, tokens // seqlen)
            for variant in get_variants(args.variants).values():
                for mode in modes:
                    for p in providers:
                        if sw.out_of_time():
                            return
                        attention_point(sw, p, variant, batch, heads, seqlen, head_dim, mode)


# ------------------------------------------------------------------ RoPE
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Hugging Face's rotate_half: the (x1, x2) -> (-x2, x1) of the non-interleaved layout."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def hf_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """HF's apply_rotary_pos_emb for (B, S, H, D): cos/sin (S, D) broadcast over batch and heads."""
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


@functools.lru_cache(maxsize=None)
def _compiled_rope():
    raise_recompile_limit()
    return torch.compile(hf_rope, dynamic=False)


def hf_cos_sin(seqlen: int, dim: int, device, dtype):
    inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))
    freqs = torch.outer(torch.arange(seqlen, dtype=torch.float32, device=device), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


@contextlib.contextmanager
def _pykernels_backend(name: str):
    """apply_rotary takes no backend argument, so pick one through the registry's override variable."""
    old = os.environ.get(pyk_backends.ENV_VAR)
    os.environ[pyk_backends.ENV_VAR] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(pyk_backends.ENV_VAR, None)
        else:
            os.environ[pyk_backends.ENV_VAR] = old


def rope_point(sw: Sweep, provider: str, shape) -> None:
    b, s, h, d = shape
    e = torch.empty((), dtype=sw.dtype).element_size()
    row = {"op": "rope", "provider": provider, "family": provider.split(":")[0],
           "backend": provider.split(":", 1)[1] if ":" in provider else "default", "mode": "fwd",
           "batch": b, "seqlen": s, "heads": h, "head_dim": d, "shape": "x".join(map(str, shape)),
           "io_bytes": counting.rope_bytes(b, s, h, d, e, table_elem_bytes=4 if provider.startswith("pykernels") else e)}
    free_memory()
    try:
        q, k = (torch.randn(shape, dtype=sw.dtype, device=sw.device) for _ in range(2))
        if provider.startswith("pykernels:"):
            backend = provider.split(":", 1)[1]
            pyk_backends.resolve("rope", backend, sw.device, sw.dtype, d)  # raises ValueError with the reason
            cos, sin = pykernels.RotaryEmbedding(d, base=ROPE_BASE).cos_sin(torch.arange(s, device=sw.device))
            with _pykernels_backend(backend):
                # q and k in one launch, as a model calls it (and as the compiled HF function fuses them).
                t = sw.timed(lambda: pykernels.apply_rotary(q, cos, sin, k=k))
        else:
            cos, sin = hf_cos_sin(s, d, sw.device, sw.dtype)
            fn = hf_rope if provider == "hf_eager" else _compiled_rope()
            t = sw.timed(lambda: fn(q, k, cos, sin))
        row.update(t, status="ok", gbps=row["io_bytes"] / (t["median_ms"] * 1e-3) / 1e9, tflops=None)
    except NotImplementedError as exc:
        row.update(status="skipped", reason=f"not implemented yet: {exc}")
    except Exception as exc:  # noqa: BLE001
        row.update(status=failure_status(exc), reason=short_error(exc))
    free_memory(collect=row["status"] != "ok")
    sw.write(row)


def rope_sweep(sw: Sweep, args) -> None:
    names: List[str] = []
    for n in args.rope_providers:
        names += [f"pykernels:{b}" for b in pykernels.available_backends()] if n == "pykernels" else [n]
    for shape in sw.defaults["rope_shapes"]:
        for name in names:
            if sw.out_of_time():
                return
            if name.startswith("pykernels:"):
                st = pykernels.available_backends()[name.split(":", 1)[1]]
                if not st.available:
                    sw.write({"op": "rope", "provider": name, "family": "pykernels", "mode": "fwd",
                              "shape": "x".join(map(str, shape)), "status": "skipped", "reason": st.reason})
                    continue
            if name == "compiled" and sw.device.type != "cuda":
                sw.write({"op": "rope", "provider": name, "family": name, "mode": "fwd",
                          "shape": "x".join(map(str, shape)), "status": "skipped",
                          "reason": "torch.compile is measured on GPU only (CPU smoke mode)"})
                continue
            rope_point(sw, name, shape)


def run(argv: Optional[List[str]] = None) -> Path:
    args = parse_args(argv)
    sw = Sweep(args)
    threads = torch.get_num_threads()
    if sw.device.type == "cpu":
        torch.set_num_threads(1)  # smoke mode on a shared CPU: see profiling.memory --threads
    try:
        return _sweep(sw, args)
    finally:
        torch.set_num_threads(threads)


def _sweep(sw: Sweep, args: argparse.Namespace) -> Path:
    if sw.device.type == "cuda":
        progress(f"GPU mode on {torch.cuda.get_device_name(sw.device)}, {dtype_name(sw.dtype)}")
    else:
        progress("no CUDA GPU: CPU smoke mode (tiny sizes; the numbers only test the plumbing)")
    progress(f"results: {sw.out_dir}")
    sw.measure_ceilings()
    if "rope" in args.ops:
        rope_sweep(sw, args)
    if "attention" in args.ops:
        attention_sweep(sw, args)
    if sw.stopped:
        progress(sw.stopped)
    if not args.no_charts:
        for path in charts.bench_charts(sw.writer.rows, sw.out_dir):
            progress(f"chart: {path}")
    progress(f"wrote {sw.writer.jsonl} and {sw.writer.csv}")
    return sw.out_dir


def main(argv: Optional[List[str]] = None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
