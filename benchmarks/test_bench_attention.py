"""pytest-benchmark: attention, every provider x variant x mode at two sizes (GPU only).

The same providers and variants as ``python -m profiling.bench``, which is
the sweep that writes the long results table; this file is the quick,
pytest-native view (``--benchmark-compare`` works across runs).
"""
import pytest
import torch

from bench_helpers import run_benchmark
from profiling import counting
from profiling.providers import SDPA_BACKENDS, get_provider, make_qkv, pykernels_backends, unsupported
from profiling.variants import VARIANTS

# B·S = 16K tokens and H·D = 2048, flash-attn's benchmark sizes.
TOKENS, HIDDEN, HEAD_DIM = 16 * 1024, 2048, 128
SEQLENS = (4096, 16384)
PROVIDERS = [f"pykernels:{b}" for b in pykernels_backends()] + [f"sdpa:{b}" for b in SDPA_BACKENDS] + ["flex", "naive"]


@pytest.mark.parametrize("mode", ["fwd", "full"])
@pytest.mark.parametrize("seqlen", SEQLENS, ids=lambda s: f"S{s // 1024}K")
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_attention(benchmark, provider, variant, seqlen, mode):
    device = torch.device("cuda")
    p = get_provider(provider, device)
    reason = p.reason or unsupported(p, "attention_fwd", device, torch.bfloat16, HEAD_DIM)
    if reason is None and mode == "full":
        # Without this a backend lacking a backward would borrow another's, timed under its name.
        reason = unsupported(p, "attention_bwd", device, torch.bfloat16, HEAD_DIM)
    if reason:
        pytest.skip(f"{provider}: {reason}")
    var = VARIANTS[variant]
    batch, heads = max(1, TOKENS // seqlen), HIDDEN // HEAD_DIM
    q, k, v = make_qkv(p.layout, batch, heads, seqlen, HEAD_DIM, torch.bfloat16, device, requires_grad=mode == "full")
    state = p.prepare(var, heads, seqlen, torch.bfloat16, device)
    if mode == "fwd":
        fn = lambda: p.call(q, k, v, var, state)  # noqa: E731
    else:
        dout = torch.randn_like(q)
        fn = lambda: torch.autograd.grad(p.call(q, k, v, var, state), (q, k, v), dout)  # noqa: E731
    run_benchmark(benchmark, fn)
    causal_only = var.left == -1 and not var.sink_tokens
    pairs = None if causal_only else var.visible_pairs(seqlen, seqlen)
    flops = counting.attention_flops(batch, heads, seqlen, seqlen, HEAD_DIM, mode, var.causal, pairs)
    benchmark.extra_info.update(flops=flops, tflops=flops / benchmark.stats.stats.median / 1e12)
