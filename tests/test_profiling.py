"""The profiling package on CPU: profiler end to end, OOM rows, the analytic model,
FLOP and byte counting, the benchmark table's schema, charts and the regression check."""
import json
import os
import subprocess
import sys

import pytest
import torch

from profiling import bench, charts, compare, counting, memory, providers
from profiling.common import read_table
from profiling.variants import VARIANTS
from pykernels.masks import MaskSpec
from pykernels.reference import attention_ref

GiB, TiB = 2 ** 30, 2 ** 40
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_COLUMNS = ("gpu", "torch", "cuda", "commit", "date")


# ---------------------------------------------------------------- profiler
def _profile(tmp_path, *extra):
    out = tmp_path / "mem"
    memory.main(["--device", "cpu", "--seqlens", "128", "256", "--heads", "2", "--head-dim", "32",
                 "--variants", "causal", "alibi", "--results", str(out), *extra])
    return out, read_table(out / "memory.jsonl")


_CALIBRATE = """
import torch
from profiling.meters import CpuMeter
m = CpuMeter(torch.device("cpu"))
m.start()
x = torch.ones(4 << 20)  # 16 MiB, touched
print(m.stop()["peak_extra_bytes"] >= x.numel() * 4)
"""


def _cpu_meter_sees_allocations() -> bool:
    # The CPU meter reads the process's resident set; some kernels and allocators
    # (seen on the GPU machine's image) keep freed pages resident, so first check
    # in a fresh process that a known 16 MiB tensor shows up at all.
    proc = subprocess.run([sys.executable, "-c", _CALIBRATE], capture_output=True, text=True, cwd=ROOT, timeout=120)
    return proc.returncode == 0 and proc.stdout.strip().endswith("True")


def test_profiler_cpu_end_to_end(tmp_path):
    # As a user runs it: a fresh interpreter, so the process's resident-set peak
    # reflects this run alone (an in-process run reuses pages earlier tests freed).
    out = tmp_path / "mem"
    cmd = [sys.executable, "-m", "profiling.memory", "--device", "cpu", "--seqlens", "128", "256", "--heads", "2",
           "--head-dim", "32", "--variants", "causal", "alibi", "--results", str(out)]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_table(out / "memory.jsonl")
    first_line = proc.stdout.splitlines()[0]
    assert "CPU mode" in first_line and "torch backend" in first_line and "H=2" in first_line
    for name in ("memory.jsonl", "memory.csv", "summary.md", "memory_fwd.png", "memory_full.png",
                 "time_fwd.png", "time_full.png"):
        assert (out / name).stat().st_size > 0, name
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["impl"] for r in ok} == {"naive", "sdpa", "pykernels:torch"}
    assert {r["mode"] for r in ok} == {"fwd", "full"}
    assert len(ok) == 3 * 2 * 2 * 2  # impls x variants x seqlens x modes
    for r in ok:
        assert all(k in r for k in ENV_COLUMNS)
        assert r["median_ms"] > 0 and r["peak_extra_bytes"] >= 0
    # GPU-only backends are recorded once each, with the reason.
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert {r["impl"] for r in skipped} == {"pykernels:cuda", "pykernels:cupy", "pykernels:numba"}
    assert all(r["reason"] for r in skipped)
    # The CSV copy holds the same rows.
    assert len(read_table(out / "memory.csv")) == len(rows)
    # The meter sees naive's score matrix (page-granular RSS, so only a lower bound is asserted).
    naive = {(r["variant"], r["mode"], r["seqlen"]): r["peak_extra_bytes"] for r in ok if r["impl"] == "naive"}
    # CPU mode is for machines without a GPU; on the GPU machine's image the meter
    # read 0 for naive attention even where a plain 16 MiB tensor registered.
    if _cpu_meter_sees_allocations() and not torch.cuda.is_available():
        assert naive[("causal", "fwd", 256)] >= counting.score_bytes(1, 2, 256, 256, 4)
    summary = (out / "summary.md").read_text()
    assert "12.5 GiB" in summary and "12.5 TiB" in summary and "memory_fwd.png" in summary
    # The report can be redrawn from the table alone (after runs that appended to it).
    (out / "summary.md").unlink()
    memory.main(["--results", str(out), "--report-only"])
    assert (out / "summary.md").read_text() == summary


def test_profiler_records_oom_and_goes_on(tmp_path, monkeypatch):
    real = providers.naive_attention

    def oom_from_512(q, k, v, variant, state):
        if q.shape[-2] >= 256:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB (simulated)")
        return real(q, k, v, variant, state)

    monkeypatch.setattr(providers, "naive_attention", oom_from_512)
    out, rows = _profile(tmp_path, "--impls", "naive", "sdpa")
    naive = {(r["variant"], r["mode"], r["seqlen"]): r for r in rows if r.get("impl") == "naive"}
    for variant in ("causal", "alibi"):
        assert naive[(variant, "fwd", 128)]["status"] == "ok"
        fwd, full = naive[(variant, "fwd", 256)], naive[(variant, "full", 256)]
        assert fwd["oom"] is True and fwd["status"] == "oom" and "out of memory" in fwd["reason"]
        assert full["oom"] is True and "forward ran out of memory" in full["reason"]
    # The sweep went on past the OOM and still drew its charts and summary.
    assert all(r["status"] == "ok" for r in rows if r.get("impl") == "sdpa" and r.get("seqlen"))
    assert (out / "memory_fwd.png").exists()
    assert "**OOM**" in (out / "summary.md").read_text()


# ----------------------------------------------------------------- analytic
def test_thirteen_b_table():
    rows = {r["seqlen"]: r for r in counting.llama13b_table([2048, 65536])}
    # 40 layers x 40 heads x 2048^2 x 2 bytes = 12.5 GiB; 32x the length is 1024x the bytes.
    assert rows[2048]["scores_all_layers_bytes"] == 12.5 * GiB
    assert rows[65536]["scores_all_layers_bytes"] == 12.5 * TiB
    assert rows[2048]["scores_one_layer_bytes"] == 12.5 * GiB / 40
    # A fused kernel's tensors grow linearly: 32x the length, 32x the bytes.
    assert rows[65536]["fused_one_layer_bytes"] == 32 * rows[2048]["fused_one_layer_bytes"]


def test_memory_model():
    b, h, s, d = 1, 32, 4096, 128
    scores = counting.score_bytes(b, h, s, s, 2)
    assert scores == 32 * 4096 ** 2 * 2
    assert counting.naive_extra_bytes(b, h, s, d, 2, "fwd") == 2 * scores + b * s * h * d * 2
    assert counting.fused_extra_bytes(b, h, 2 * s, d, 2) == 2 * counting.fused_extra_bytes(b, h, s, d, 2)
    assert counting.fused_total_bytes(b, h, s, d, 2) == 4 * b * s * h * d * 2 + b * h * s * 4


# ----------------------------------------------------------------- counting
def test_attention_flops():
    b, h, s, d = 2, 16, 1024, 128
    dense = 4 * b * h * s * s * d
    assert counting.attention_flops(b, h, s, s, d, "fwd") == dense
    assert counting.attention_flops(b, h, s, s, d, "fwd", causal=True) == dense / 2
    assert counting.attention_flops(b, h, s, s, d, "bwd", causal=True) == 2.5 * dense / 2
    assert counting.attention_flops(b, h, s, s, d, "full") == 3.5 * dense
    with pytest.raises(ValueError, match="mode"):
        counting.attention_flops(b, h, s, s, d, "sideways")


@pytest.mark.parametrize("variant", ["window", "sinks", "causal"])
def test_visible_pairs_match_the_dense_mask(variant):
    var = VARIANTS[variant]
    for s in (97, 1025, 2048):
        assert var.visible_pairs(s, s) == int(var.spec(s, s).dense().sum())
    # Window pairs grow linearly: each of S rows sees at most WINDOW + 1 keys (+ sinks).
    s = 8192
    pairs = var.visible_pairs(s, s)
    flops = counting.attention_flops(1, 1, s, s, 64, "fwd", pairs=pairs)
    assert flops == 4 * pairs * 64
    if variant != "causal":
        assert pairs <= s * (var.left + 1 + var.sink_tokens)


def test_byte_counts():
    assert counting.copy_bytes(1000) == 2000
    # RoPE on q and k: read and write both, read the cos and sin tables once.
    b, s, h, d = 1, 8, 2, 4
    assert counting.rope_bytes(b, s, h, d, 2) == 2 * 2 * (b * s * h * d * 2) + 2 * s * (d // 2) * 4
    fwd = counting.attention_io_bytes(1, 2, 8, 8, 4, 2, "fwd")
    assert fwd == 4 * (8 * 2 * 4 * 2) + 2 * 8 * 4
    assert counting.attention_io_bytes(1, 2, 8, 8, 4, 2, "full") == fwd + counting.attention_io_bytes(1, 2, 8, 8, 4, 2, "bwd")


# -------------------------------------------------------- variants' meaning
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", ["naive", "sdpa"])
def test_dense_providers_compute_the_variant(name, variant):
    """Naive and SDPA with the dense mask/bias compute what pykernels' reference does."""
    var = VARIANTS[variant]
    small = {"window": 5, "sinks": 5}  # a window shorter than S, so the mask bites
    if variant in small:
        var = type(var)(var.name, var.causal, small[variant], var.sink_tokens, var.alibi)
    b, h, s, d = 1, 3, 33, 16
    p = providers.get_provider(name, torch.device("cpu"))
    q, k, v = providers.make_qkv("bhsd", b, h, s, d, torch.float64, "cpu")
    out = p.call(q, k, v, var, p.prepare(var, h, s, torch.float64, "cpu"))
    kw = var.pykernels_kwargs(h, "cpu")
    ref, _ = attention_ref(*(t.transpose(1, 2) for t in (q, k, v)), **kw)
    torch.testing.assert_close(out.transpose(1, 2), ref, rtol=1e-9, atol=1e-9)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_flex_mods_compute_the_variant(variant):
    """FlexAttention's mask_mod / score_mod (run eagerly here) give the reference's answer."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    var = VARIANTS[variant]
    if var.left != -1:
        var = type(var)(var.name, var.causal, 5, var.sink_tokens, var.alibi)
    b, h, s, d = 1, 4, 64, 16
    q, k, v = providers.make_qkv("bhsd", b, h, s, d, torch.float32, "cpu")
    mask_mod, score_mod = var.flex_mods(h, "cpu")
    block_mask = create_block_mask(mask_mod, None, None, s, s, device="cpu", BLOCK_SIZE=16)
    out = flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)
    ref, _ = attention_ref(*(t.transpose(1, 2) for t in (q, k, v)), **var.pykernels_kwargs(h, "cpu"))
    torch.testing.assert_close(out.transpose(1, 2).double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["causal", "window", "sinks"])
def test_flex_mask_mod_matches_maskspec(variant):
    var = VARIANTS[variant]
    s = 2100
    mask_mod, _ = var.flex_mods(2, "cpu")
    rows, cols = torch.arange(s)[:, None], torch.arange(s)[None, :]
    assert torch.equal(mask_mod(0, 0, rows, cols), MaskSpec(s, s, True, var.left, -1, var.sink_tokens).dense())


# --------------------------------------------------------------- benchmarks
BENCH_COLUMNS = ("table", "op", "provider", "backend", "mode", "shape", "dtype", "median_ms", "p20_ms", "p80_ms",
                 "pct_of_ceiling", "status") + ENV_COLUMNS


def test_bench_table_schema(tmp_path):
    out = tmp_path / "bench"
    bench.main(["--device", "cpu", "--seqlens", "256", "--variants", "causal", "window", "--modes", "fwd", "bwd",
                "--providers", "pykernels:torch", "naive", "sdpa:flash", "--results", str(out), "--budget", "0",
                "--no-charts"])
    rows = read_table(out / "bench.jsonl")
    ops = {r["op"] for r in rows}
    assert {"ceiling_copy", "ceiling_matmul", "attention", "rope"} <= ops
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok:
        missing = [c for c in BENCH_COLUMNS if c not in r]
        assert not missing, (r["op"], r["provider"], missing)
        assert r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
        assert (r.get("tflops") or r.get("gbps")) > 0
    attn = [r for r in ok if r["op"] == "attention"]
    assert {r["provider"] for r in attn} == {"pykernels:torch", "naive"}
    assert {(r["variant"], r["mode"]) for r in attn} == {(v, m) for v in ("causal", "window") for m in ("fwd", "bwd")}
    # Window FLOPs count only visible pairs; causal is the halved dense count.
    by = {(r["variant"], r["mode"], r["provider"]): r for r in attn}
    b, h, s, d = by[("causal", "fwd", "naive")]["batch"], by[("causal", "fwd", "naive")]["heads"], 256, 64
    assert by[("causal", "fwd", "naive")]["flops"] == 4 * b * h * s * s * d / 2
    pairs = VARIANTS["window"].visible_pairs(s, s)
    assert by[("window", "bwd", "naive")]["flops"] == 2.5 * 4 * b * h * pairs * d
    # An unusable provider is a row with its reason, not a crash.
    flash = [r for r in rows if r["provider"] == "sdpa:flash"]
    assert flash and all(r["status"] == "skipped" and r["reason"] for r in flash)
    assert len(read_table(out / "bench.csv")) == len(rows)


# ------------------------------------------------------------------- charts
def _bench_row(provider, seqlen, median_ms, op="attention", mode="fwd", **kw):
    row = {"table": "bench", "op": op, "provider": provider, "mode": mode, "variant": "causal", "seqlen": seqlen,
           "head_dim": 128, "shape": f"1x{seqlen}x16x128", "dtype": "bfloat16", "status": "ok",
           "median_ms": median_ms, "tflops": 1.0 / median_ms, "gbps": None, "gpu": "synthetic"}
    row.update(kw)
    return row


def test_charts_from_a_synthetic_table(tmp_path):
    rows = [_bench_row(p, s, t * s / 1024) for p, t in (("pykernels:cuda", 1.0), ("sdpa:cudnn", 0.9))
            for s in (1024, 2048, 4096)]
    rows.append({"table": "bench", "op": "ceiling_matmul", "provider": "torch matmul", "mode": "fwd",
                 "status": "ok", "tflops": 5.0, "median_ms": 1.0})
    rows += [{"table": "memory", "impl": impl, "variant": "causal", "variant_desc": "causal", "mode": "fwd",
              "seqlen": s, "batch": 1, "heads": 2, "head_dim": 64, "dtype": "float32", "gpu": "synthetic",
              "status": "oom" if impl == "naive" and s == 4096 else "ok", "oom": impl == "naive" and s == 4096,
              "peak_extra_bytes": (s * s if impl == "naive" else s) * 8, "median_ms": s / 1000}
             for impl in ("naive", "pykernels:torch") for s in (1024, 2048, 4096)]
    table = tmp_path / "table.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert charts.main([str(table), "--out", str(tmp_path / "png")]) == 0
    names = {p.name for p in (tmp_path / "png").iterdir()}
    assert {"bench_attention_fwd.png", "memory_fwd.png", "time_fwd.png"} <= names


# --------------------------------------------------------- regression check
def _pair(tmp_path, name, pyk_ms, peer_ms):
    rows = [_bench_row("pykernels:cuda", 4096, pyk_ms), _bench_row("sdpa:cudnn", 4096, peer_ms)]
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_compare_flags_a_worse_ratio(tmp_path, capsys):
    old = _pair(tmp_path, "old", 1.00, 1.00)
    assert compare.main([_pair(tmp_path, "worse", 1.10, 1.00), old]) == 1
    assert "REGRESSED" in capsys.readouterr().out


def test_compare_passes_otherwise(tmp_path):
    old = _pair(tmp_path, "old", 1.00, 1.00)
    assert compare.main([_pair(tmp_path, "same", 1.03, 1.00), old]) == 0
    # A slower machine slows the peer too: the ratio, not the time, is what counts.
    assert compare.main([_pair(tmp_path, "slow_gpu", 1.30, 1.30), old]) == 0
    assert compare.main([_pair(tmp_path, "faster", 0.80, 1.00), old]) == 0
