"""The torch backend against the float64 reference, and the SDPA drop-in against PyTorch.

The randomized test draws 200+ shapes and flag combinations (cycling through
all 32 combinations of causal / window / sink tokens / sink logits / ALiBi)
and asks float64 agreement to 1e-10. It runs on CPU in CI and on the GPU via
scripts/gpu_check.sh.
"""
import itertools
import random

import pytest
import torch
import torch.nn.functional as F

import pykernels
from pykernels.reference import attention_ref, sdpa_ref

from helpers import assert_within_2x, max_err

FLAGS = list(itertools.product([False, True], repeat=5))  # causal, window, sinks, sink_logits, alibi
N_RANDOM = 224  # 7 passes over the 32 flag combinations
AWKWARD = [1, 17, 97, 1025]


def _random_case(rng: random.Random, i: int, device):
    causal, window, sinks, sink_logits, alibi = FLAGS[i % len(FLAGS)]
    lengths = AWKWARD + [rng.randint(2, 300) for _ in range(4)]
    sq, sk = rng.choice(lengths), rng.choice(lengths)
    if sq == 1025 and sk == 1025:  # keep the float64 reference cheap
        sk = rng.choice([17, 97])
    b = rng.choice([1, 2])
    hkv = rng.choice([1, 2])
    g = rng.choice([1, 2, 4])
    d = rng.choice([8, 16, 32])
    hq = hkv * g
    opt = dict(
        causal=causal,
        window_size=(rng.choice([-1, 0, 3, 64]), rng.choice([-1, 0, 5, 64])) if window else (-1, -1),
        sink_tokens=rng.choice([1, 4, 20]) if sinks else 0,
        sink_logits=torch.randn(hq, dtype=torch.float64, device=device) if sink_logits else None,
        alibi_slopes=(pykernels.alibi_slopes(hq).double().to(device) if rng.random() < 0.5
                      else torch.rand(b, hq, dtype=torch.float64, device=device)) if alibi else None,
        softmax_scale=rng.choice([None, 0.3]),
    )
    q = torch.randn(b, sq, hq, d, dtype=torch.float64, device=device)
    k = torch.randn(b, sk, hkv, d, dtype=torch.float64, device=device)
    v = torch.randn(b, sk, hkv, d, dtype=torch.float64, device=device)
    return q, k, v, opt


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_randomized_against_reference(device):
    rng = random.Random(1234)
    for i in range(N_RANDOM):
        q, k, v, opt = _random_case(rng, i, device)
        out, lse = pykernels.flash_attn_func(q, k, v, return_lse=True, backend="torch", **opt)
        ref_out, ref_lse = attention_ref(q, k, v, **opt)
        ctx = f"case {i}: q{tuple(q.shape)} k{tuple(k.shape)} {opt}"
        assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse)), ctx
        assert max_err(out, ref_out) < 1e-10, ctx
        assert max_err(lse, ref_lse) < 1e-10, ctx


def test_fully_masked_rows_return_zero():
    # Sq > Sk with causal: the first Sq - Sk rows sit before every key.
    q = torch.randn(1, 9, 2, 8, dtype=torch.float64)
    k = torch.randn(1, 4, 2, 8, dtype=torch.float64)
    out, lse = pykernels.flash_attn_func(q, k, k, causal=True, return_lse=True)
    assert torch.all(out[:, :5] == 0) and torch.all(torch.isneginf(lse[..., :5]))
    sinks = torch.tensor([0.5, -1.0], dtype=torch.float64)
    out, lse = pykernels.flash_attn_func(q, k, k, causal=True, sink_logits=sinks, return_lse=True)
    assert torch.all(out[:, :5] == 0)
    torch.testing.assert_close(lse[0, :, :5], sinks[:, None].expand(2, 5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal,window,sinks,alibi", [(True, (-1, -1), 0, False), (False, (32, 8), 4, True), (True, (64, -1), 4, False)])
def test_low_precision_within_2x_of_pytorch(dtype, causal, window, sinks, alibi):
    q = torch.randn(2, 97, 4, 64, dtype=dtype)
    k = torch.randn(2, 130, 2, 64, dtype=dtype)
    v = torch.randn(2, 130, 2, 64, dtype=dtype)
    opt = dict(causal=causal, window_size=window, sink_tokens=sinks,
               alibi_slopes=pykernels.alibi_slopes(4) if alibi else None)
    out, lse = pykernels.flash_attn_func(q, k, v, return_lse=True, **opt)
    assert out.dtype == dtype and lse.dtype == torch.float32
    ref, ref_lse = attention_ref(q, k, v, **opt)
    low, low_lse = attention_ref(q, k, v, upcast=False, **opt)
    assert_within_2x(out, ref, low)
    assert_within_2x(lse, ref_lse, low_lse, what="lse")


def test_gradcheck_float64():
    q = torch.randn(1, 9, 4, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 13, 2, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 13, 2, 8, dtype=torch.float64, requires_grad=True)
    sl = torch.randn(4, dtype=torch.float64, requires_grad=True)
    slopes = pykernels.alibi_slopes(4).double()

    def f(q, k, v, sl):
        return pykernels.flash_attn_func(q, k, v, causal=True, window_size=(4, -1), sink_tokens=2,
                                         sink_logits=sl, alibi_slopes=slopes, return_lse=True)

    assert torch.autograd.gradcheck(f, (q, k, v, sl))


@pytest.mark.parametrize("sq,sk", [(1, 1), (17, 17), (17, 97), (97, 17), (33, 1)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("gqa", [False, True])
def test_sdpa_dropin_matches_torch(sq, sk, causal, gqa):
    hq, hkv = (4, 2) if gqa else (4, 4)
    q = torch.randn(2, hq, sq, 32)
    k = torch.randn(2, hkv, sk, 32)
    v = torch.randn(2, hkv, sk, 32)
    got = pykernels.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa, scale=0.2)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa, scale=0.2)
    torch.testing.assert_close(got, want, atol=2e-6, rtol=2e-5)


def test_sdpa_dropin_window_uses_top_left_positions():
    q = torch.randn(1, 2, 10, 16, dtype=torch.float64)
    k = torch.randn(1, 2, 30, 16, dtype=torch.float64)
    got = pykernels.scaled_dot_product_attention(q, k, k, is_causal=True, window_size=(3, -1), sink_tokens=1)
    want = sdpa_ref(q, k, k, is_causal=True, window_size=(3, -1), sink_tokens=1)
    assert max_err(got, want) < 1e-12


@pytest.mark.gpu
def test_memory_is_linear_in_seqlen():
    # The tiled backend never builds an Sq x Sk matrix: doubling S must about
    # double the peak extra memory, where materialised scores would quadruple it.
    peaks = []
    for s in (4096, 8192):
        q = torch.randn(1, s, 4, 64, device="cuda", dtype=torch.bfloat16)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        pykernels.flash_attn_func(q, q, q, causal=True, backend="torch")
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
    assert peaks[1] < 3.0 * peaks[0], peaks
