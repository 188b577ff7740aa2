"""torch.library registration: opcheck and torch.compile(fullgraph=True) on CPU."""
import pytest
import torch

import pykernels


def _args(sink=True, alibi=True, requires_grad=True, dtype=torch.float32):
    q = torch.randn(2, 9, 4, 16, dtype=dtype, requires_grad=requires_grad)
    k = torch.randn(2, 13, 2, 16, dtype=dtype, requires_grad=requires_grad)
    v = torch.randn(2, 13, 2, 16, dtype=dtype, requires_grad=requires_grad)
    sl = torch.randn(4, dtype=torch.float32, requires_grad=requires_grad) if sink else None
    al = pykernels.alibi_slopes(4) if alibi else None
    # (q, k, v, sink_logits, alibi, scale, causal, left, right, sink_tokens, q_offset, deterministic, backend)
    return (q, k, v, sl, al, 0.25, True, 5, -1, 2, 4, False, "")


@pytest.mark.parametrize("sink,alibi", [(False, False), (True, True)])
def test_opcheck_forward(sink, alibi):
    torch.library.opcheck(torch.ops.pykernels.attention_fwd.default, _args(sink, alibi))


def test_opcheck_backward():
    q, k, v, sl, al, *rest = _args(requires_grad=False)
    out, lse = torch.ops.pykernels.attention_fwd(q, k, v, sl, al, *rest)
    dout, dlse = torch.randn_like(out), torch.randn_like(lse)
    torch.library.opcheck(torch.ops.pykernels.attention_bwd.default, (dout, dlse, q, k, v, out, lse, sl, al, *rest))


def test_compile_fullgraph_forward_and_backward():
    q, k, v, sl, *_ = _args()

    def f(q, k, v, sl):
        out = pykernels.flash_attn_func(q, k, v, causal=True, window_size=(4, -1), sink_tokens=1, sink_logits=sl)
        return out.square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    loss = compiled(q, k, v, sl)
    loss.backward()
    grads = [t.grad.clone() for t in (q, k, v, sl)]
    for t in (q, k, v, sl):
        t.grad = None
    f(q, k, v, sl).backward()
    torch.testing.assert_close(loss, f(q, k, v, sl))
    for got, t in zip(grads, (q, k, v, sl)):
        torch.testing.assert_close(got, t.grad)


def test_compile_inductor_sdpa_dropin():
    q = torch.randn(1, 4, 33, 16)
    f = torch.compile(lambda q: pykernels.scaled_dot_product_attention(q, q, q, is_causal=True), fullgraph=True)
    torch.testing.assert_close(f(q), torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True),
                               atol=2e-6, rtol=2e-5)


def test_lse_gradient_flows():
    q, k, v, sl, *_ = _args(dtype=torch.float64)
    sl = sl.detach().double().requires_grad_()

    def f(q, k, v, sl):
        return pykernels.flash_attn_func(q, k, v, sink_logits=sl, return_lse=True)[1]

    assert torch.autograd.gradcheck(f, (q.detach().requires_grad_(), k.detach().requires_grad_(),
                                        v.detach().requires_grad_(), sl))
