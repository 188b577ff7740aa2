"""What only the Numba backend needs checking on a real GPU.

The shared tests (test_attention.py, test_rope_gpu.py) already run the numba
backend through every flag, shape, head dim and dtype. Here:

* ``test_current_stream``: the kernels launch on torch's current stream, so
  inputs produced on a side stream are read only once they are written;
* ``test_small_tiles``: the small tile shapes the simulator tests use in CI,
  now on the GPU, so simulator and hardware run the same tile walk;
* ``test_backward_small_tiles``: the same for the two backward kernels.
"""
import pytest
import torch

from pykernels.reference import attention_ref

from helpers import assert_within_2x

numba_attention = pytest.importorskip("pykernels.backends.numba.attention")


def _available():
    import pykernels

    st = pykernels.available_backends()["numba"]
    if not st.available:
        pytest.skip(f"numba: {st.reason}")


def _kwargs(q, k, causal=True, window=(5, -1), sink=3, sink_logits=True, alibi=True):
    hq = q.shape[2]
    return dict(softmax_scale=q.shape[-1] ** -0.5, causal=causal, window_left=window[0], window_right=window[1],
                sink_tokens=sink, sink_logits=torch.randn(hq, device=q.device) if sink_logits else None,
                alibi_slopes=torch.rand(hq, device=q.device) * 0.2 if alibi else None,
                q_offset=k.shape[1] - q.shape[1])


def _ref(q, k, v, kw, upcast=True):
    return attention_ref(q, k, v, kw["softmax_scale"], kw["causal"], (kw["window_left"], kw["window_right"]),
                         kw["sink_tokens"], kw["sink_logits"], kw["alibi_slopes"], q_offset=kw["q_offset"],
                         upcast=upcast)


@pytest.mark.gpu
def test_current_stream():
    _available()
    side = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        # Big enough that the producer is still running when the kernel is queued.
        base = torch.randn(4, 2048, 8, 64, device="cuda", dtype=torch.bfloat16)
        q = (base * 1.5).contiguous()
        k = (base[:, :, :2] - 0.25).contiguous()
        v = base[:, :, 2:4].contiguous()
        kw = _kwargs(q, k)
        out, lse = numba_attention.forward(q, k, v, **kw)
        dq, dk, dv, _ = numba_attention.backward(torch.ones_like(out), None, q, k, v, out, lse, **kw)
    side.synchronize()
    ref, _ = _ref(q, k, v, kw)
    low, _ = _ref(q, k, v, kw, upcast=False)
    assert_within_2x(out, ref, low)
    assert torch.isfinite(dq).all() and torch.isfinite(dk).all() and torch.isfinite(dv).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("tiles", [(8, 8), (4, 8), (16, 16)], ids=lambda t: f"{t[0]}x{t[1]}")
def test_small_tiles(dtype, tiles):
    _available()
    q = torch.randn(2, 33, 4, 16, device="cuda", dtype=dtype)
    k = torch.randn(2, 57, 2, 16, device="cuda", dtype=dtype)
    v = torch.randn(2, 57, 2, 16, device="cuda", dtype=dtype)
    kw = _kwargs(q, k, window=(6, 2))
    out, lse = numba_attention.forward(q, k, v, block_q=tiles[0], block_k=tiles[1], **kw)
    ref, ref_lse = _ref(q, k, v, kw)
    if dtype == torch.float32:
        torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=0)
    else:
        low, _ = _ref(q, k, v, kw, upcast=False)
        assert_within_2x(out, ref, low)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-4, rtol=0)


@pytest.mark.gpu
def test_backward_small_tiles():
    _available()
    q, k, v = (torch.randn(1, s, h, 16, device="cuda", dtype=torch.float32, requires_grad=True)
               for s, h in ((33, 4), (57, 2), (57, 2)))
    kw = _kwargs(q, k, window=(6, 2))
    kw["sink_logits"].requires_grad_()
    out, lse = numba_attention.forward(q.detach(), k.detach(), v.detach(), block_q=8, block_k=8, **kw)
    dout, dlse = torch.randn_like(out), torch.randn_like(lse)
    got = numba_attention.backward(dout, dlse, q.detach(), k.detach(), v.detach(), out, lse, block_q=8, block_k=8,
                                   **kw)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v, kw["sink_logits"])]
    ref_kw = dict(kw, sink_logits=leaves[3])
    ref_out, ref_lse = _ref(*leaves[:3], ref_kw, upcast=False)
    ref = torch.autograd.grad((ref_out * dout.double()).sum() + (ref_lse * dlse.double()).sum(), leaves)
    for name, g, r in zip(("dq", "dk", "dv", "dsink"), got, ref):
        torch.testing.assert_close(g.double(), r, atol=1e-4, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
