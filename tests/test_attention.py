"""Every attention backend against the one float64 reference, on the GPU.

The same parametrisation runs the cuda, cupy, numba and torch backends; each
skips with its reason where it cannot run. Outputs are poisoned with NaN before
every kernel (PYKERNELS_POISON_OUTPUTS=1), so an element a kernel forgets to
write fails. Tolerance: at most 2x PyTorch's own low-precision error against
the float64 reference.
"""
import itertools

import pytest
import torch

import pykernels
from pykernels.reference import attention_ref

from helpers import assert_within_2x, gpu_backends

FLAGS = list(itertools.product([False, True], repeat=5))  # causal, window, sink tokens, sink logits, alibi
SHAPES = [  # (B, Sq, Sk, Hq, Hkv, D)
    (1, 1, 1, 2, 1, 64),
    (2, 17, 97, 8, 1, 64),      # Sq != Sk, MQA 8:1
    (1, 97, 17, 8, 2, 128),     # Sq > Sk: fully-masked rows under causal, GQA 4:1
    (1, 1025, 1025, 4, 1, 128),
]
HEAD_DIMS = [32, 64, 96, 128, 256]


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setenv("PYKERNELS_POISON_OUTPUTS", "1")


def _flag_kwargs(flags, hq, b, device):
    causal, window, sinks, sink_logits, alibi = flags
    return dict(
        causal=causal,
        window_size=(48, 16) if window else (-1, -1),
        sink_tokens=4 if sinks else 0,
        sink_logits=torch.randn(hq, device=device) if sink_logits else None,
        alibi_slopes=pykernels.alibi_slopes(hq).to(device) if alibi else None,
    )


def _check(backend, b, sq, sk, hq, hkv, d, dtype, opt):
    dev = "cuda"
    q = torch.randn(b, sq, hq, d, device=dev, dtype=dtype)
    k = torch.randn(b, sk, hkv, d, device=dev, dtype=dtype)
    v = torch.randn(b, sk, hkv, d, device=dev, dtype=dtype)
    out, lse = pykernels.flash_attn_func(q, k, v, return_lse=True, backend=backend, **opt)
    ref, ref_lse = attention_ref(q, k, v, **opt)
    low, low_lse = attention_ref(q, k, v, upcast=False, **opt)
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert out.shape == q.shape and lse.shape == (b, hq, sq)
    assert_within_2x(out, ref, low)
    assert_within_2x(lse, ref_lse, low_lse, what="lse")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", gpu_backends())
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "".join("CWSLA"[i] if x else "-" for i, x in enumerate(f)))
def test_flag_matrix(backend, shape, flags):
    b, sq, sk, hq, hkv, d = shape
    _check(backend, b, sq, sk, hq, hkv, d, torch.bfloat16, _flag_kwargs(flags, hq, b, "cuda"))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", gpu_backends())
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_head_dims_and_dtypes(backend, d, dtype):
    _check(backend, 2, 97, 130, 4, 2, d, dtype, dict(causal=True, window_size=(64, -1), sink_tokens=3))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", gpu_backends())
@pytest.mark.parametrize("d", [64, 128])
def test_sinks_reaching_past_the_window(backend, d):
    # Without causal and with a bounded right edge, sink keys can lie to the
    # right of a query tile's band: those tiles must still be visited.
    _check(backend, 1, 512, 512, 4, 2, d, torch.bfloat16, dict(window_size=(32, 32), sink_tokens=256))
    _check(backend, 1, 5, 300, 2, 1, d, torch.bfloat16, dict(window_size=(0, 0), sink_tokens=200))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", gpu_backends())
def test_strided_inputs(backend):
    # (B, H, S, D) tensors viewed as (B, S, H, D): the SDPA layout.
    q = torch.randn(2, 4, 97, 64, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
    kv = torch.randn(2, 2, 2, 130, 64, device="cuda", dtype=torch.bfloat16)
    k, v = kv[0].transpose(1, 2), kv[1].transpose(1, 2)
    out = pykernels.flash_attn_func(q, k, v, causal=True, backend=backend)
    ref, _ = attention_ref(q, k, v, causal=True)
    low, _ = attention_ref(q, k, v, causal=True, upcast=False)
    assert_within_2x(out, ref, low)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", gpu_backends())
def test_sdpa_dropin_matches_torch_on_gpu(backend):
    q = torch.randn(2, 8, 300, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 2, 400, 128, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(2, 2, 400, 128, device="cuda", dtype=torch.bfloat16)
    got = pykernels.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, backend=backend)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    ref = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True,
                                                           enable_gqa=True)
    assert_within_2x(got, ref, want)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", gpu_backends())
@pytest.mark.parametrize("flags", [(True, False, False, False, False), (False, True, True, True, True)],
                         ids=["causal", "window+sinks+logits+alibi"])
def test_gradients_against_reference(backend, flags):
    # Whatever runs the backward (the backend's own, or the fallback), gradients follow the reference.
    b, sq, sk, hq, hkv, d = 1, 97, 130, 4, 2, 64
    opt = _flag_kwargs(flags, hq, b, "cuda")
    if opt["sink_logits"] is not None:
        opt["sink_logits"].requires_grad_()
    q = torch.randn(b, sq, hq, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(b, sk, hkv, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(b, sk, hkv, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dout = torch.randn(b, sq, hq, d, device="cuda", dtype=torch.bfloat16)
    leaves = [q, k, v] + ([opt["sink_logits"]] if opt["sink_logits"] is not None else [])

    def grads(fn):
        out = fn()
        return torch.autograd.grad(out, leaves, dout)

    got = grads(lambda: pykernels.flash_attn_func(q, k, v, backend=backend, **opt))
    ref = grads(lambda: attention_ref(q, k, v, **opt)[0])
    low = grads(lambda: attention_ref(q, k, v, upcast=False, **opt)[0])
    for name, g, r, lo in zip(["dq", "dk", "dv", "dsink"], got, ref, low):
        assert_within_2x(g, r, lo, what=name)
