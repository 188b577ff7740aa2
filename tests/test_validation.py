"""Bad input raises a ValueError or TypeError naming the argument, the expectation and what was given."""
import pytest
import torch

import pykernels


def _qkv(b=2, sq=5, sk=7, hq=4, hkv=2, d=16, dtype=torch.float32):
    return (torch.randn(b, sq, hq, d, dtype=dtype), torch.randn(b, sk, hkv, d, dtype=dtype),
            torch.randn(b, sk, hkv, d, dtype=dtype))


def _call(**over):
    q, k, v = _qkv()
    args = dict(q=q, k=k, v=v)
    args.update(over)
    return pykernels.flash_attn_func(**args)


q0, k0, v0 = _qkv()

# (id, kwargs overriding a valid call, exception, words the message must contain)
BAD = [
    ("q-not-tensor", dict(q=[1.0]), TypeError, ["q", "torch.Tensor", "list"]),
    ("q-rank", dict(q=torch.randn(5, 4, 16)), ValueError, ["q", "4-d", "3-d"]),
    ("q-dtype", dict(q=q0.to(torch.int32)), TypeError, ["q", "dtype", "int32"]),
    ("kv-dtype-mismatch", dict(k=k0.double(), v=v0.double()), TypeError, ["k/v", "float32", "float64"]),
    ("device-mismatch", dict(k=k0.to("meta"), v=v0.to("meta")), ValueError, ["k/v", "cpu", "meta"]),
    ("empty-batch", dict(q=q0[:0], k=k0[:0], v=v0[:0]), ValueError, ["q", "non-empty", "(0, 5, 4, 16)"]),
    ("empty-seqlen-q", dict(q=q0[:, :0]), ValueError, ["q", "non-empty", "(2, 0, 4, 16)"]),
    ("empty-seqlen-k", dict(k=k0[:, :0], v=v0[:, :0]), ValueError, ["k", "non-empty", "(2, 0, 2, 16)"]),
    ("kv-shape-mismatch", dict(v=v0[:, :3]), ValueError, ["v", "shape", "(2, 3, 2, 16)"]),
    ("batch-mismatch", dict(k=k0[:1], v=v0[:1]), ValueError, ["k", "batch 2", "batch 1"]),
    ("head-dim-mismatch", dict(k=k0[..., :8], v=v0[..., :8]), ValueError, ["k", "head dim 16", "head dim 8"]),
    ("gqa-divisibility", dict(k=torch.randn(2, 7, 3, 16), v=torch.randn(2, 7, 3, 16)), ValueError, ["heads", "divisible", "Hq=4, Hkv=3"]),
    ("last-dim-stride", dict(q=torch.randn(2, 5, 4, 32)[..., ::2]), ValueError, ["q", "contiguous last", "stride 2"]),
    ("scale-type", dict(softmax_scale="0.1"), TypeError, ["softmax_scale", "float", "str"]),
    ("scale-nan", dict(softmax_scale=float("nan")), ValueError, ["softmax_scale", "finite", "nan"]),
    ("causal-type", dict(causal=1), TypeError, ["causal", "bool", "int"]),
    ("window-type", dict(window_size=128), TypeError, ["window_size", "pair", "128"]),
    ("window-float", dict(window_size=(1.5, 0)), TypeError, ["window_size[left]", "int", "1.5"]),
    ("window-negative", dict(window_size=(-2, 0)), ValueError, ["window_size[left]", "-1 for unbounded", "-2"]),
    ("window-too-large", dict(window_size=(2 ** 63, -1)), ValueError, ["window_size[left]", "2147483647", str(2 ** 63)]),
    ("sink-too-large", dict(sink_tokens=2 ** 40), ValueError, ["sink_tokens", "<= 2147483647", str(2 ** 40)]),
    ("sink-negative", dict(sink_tokens=-1), ValueError, ["sink_tokens", ">= 0", "-1"]),
    ("sink-type", dict(sink_tokens=2.0), TypeError, ["sink_tokens", "int", "float"]),
    ("sink-logits-shape", dict(sink_logits=torch.zeros(3)), ValueError, ["sink_logits", "(4,)", "(3,)"]),
    ("sink-logits-dtype", dict(sink_logits=torch.zeros(4, dtype=torch.float16)), TypeError, ["sink_logits", "float32", "float16"]),
    ("alibi-shape", dict(alibi_slopes=torch.zeros(2, 3)), ValueError, ["alibi_slopes", "(4,) or (2, 4)", "(2, 3)"]),
    ("alibi-device", dict(alibi_slopes=torch.zeros(4, device="meta")), ValueError, ["alibi_slopes", "cpu", "meta"]),
    ("return-lse-type", dict(return_lse="yes"), TypeError, ["return_lse", "bool", "str"]),
    ("backend-name", dict(backend="triton"), ValueError, ["backend", "cuda", "'triton'"]),
    ("backend-type", dict(backend=3), TypeError, ["backend", "None or one of", "int"]),
]


@pytest.mark.parametrize("over,exc,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(over, exc, words):
    with pytest.raises(exc) as info:
        _call(**over)
    msg = str(info.value)
    for w in words:
        assert w in msg, f"{w!r} missing from: {msg}"


def test_at_least_15_classes():
    assert len(BAD) >= 15


def test_unavailable_backend_says_why():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="backend 'cuda'") as info:
        pykernels.flash_attn_func(q, k, v, backend="cuda")
    assert len(str(info.value)) > len("backend 'cuda' is unavailable: ")


def test_env_backend_without_backward_falls_back_with_a_warning(monkeypatch):
    # PYKERNELS_BACKEND names the forward's backend just as backend= does: a
    # backend that cannot run the backward hands it over, visibly, not with an error.
    from pykernels.ops import attention as ops

    monkeypatch.setenv("PYKERNELS_BACKEND", "cupy")
    monkeypatch.setattr(ops, "_warned_fallback", set())
    with pytest.warns(UserWarning, match="backward runs on the 'torch' backend"):
        name, _ = ops._backward_backend("", torch.device("cpu"), torch.float32, 16)
    assert name == "torch"


def test_sdpa_rejects_mask_and_dropout():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="attn_mask"):
        pykernels.scaled_dot_product_attention(q, q, q, attn_mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="dropout_p"):
        pykernels.scaled_dot_product_attention(q, q, q, dropout_p=0.1)
    with pytest.raises(ValueError, match="enable_gqa"):
        pykernels.scaled_dot_product_attention(q, q[:, :1], q[:, :1])
