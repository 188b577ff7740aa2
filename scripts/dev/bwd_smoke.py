"""Quick gate for a new backward kernel on a GPU machine: a few shapes, in a
subprocess-friendly time (a hung kernel is caught by the caller's timeout).

    PK_DEV_BUILD=/tmp/pkbuild timeout 90 python scripts/dev/bwd_smoke.py
"""
from __future__ import annotations

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from attn_dev import build  # noqa: E402

build()
from pykernels.backends import op_module  # noqa: E402
from pykernels.reference import attention_ref  # noqa: E402

mod = op_module("cuda", "attention")
bad = 0
for (b, sq, sk, hq, hkv, d), causal, window, det in [
    ((1, 128, 128, 2, 2, 128), False, (-1, -1), False),
    ((1, 97, 300, 4, 1, 64), True, (-1, -1), False),
    ((2, 1025, 1025, 4, 2, 128), True, (100, 0), False),
    ((1, 200, 200, 2, 1, 64), False, (-1, -1), True),
]:
    torch.manual_seed(0)
    q, k, v, = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for s, h in ((sq, hq), (sk, hkv), (sk, hkv)))
    dout = torch.randn(b, sq, hq, d, device="cuda", dtype=torch.bfloat16)
    kw = dict(softmax_scale=d ** -0.5, causal=causal, window_left=window[0], window_right=window[1],
              sink_tokens=0, sink_logits=None, alibi_slopes=None, q_offset=sk - sq)
    out, lse = mod.forward(q, k, v, **kw)
    grads = mod.backward(dout, None, q, k, v, out, lse, deterministic=det, **kw)
    torch.cuda.synchronize()
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref, _ = attention_ref(*leaves, causal=causal, window_size=window)
    ref_g = torch.autograd.grad(ref, leaves, dout.double())
    errs = [float((g.double() - r).abs().max()) for g, r in zip(grads[:3], ref_g)]
    ok = all(e < 0.1 for e in errs)
    bad += not ok
    print(f"{'ok ' if ok else 'BAD'} {(b, sq, sk, hq, hkv, d)} causal={causal} window={window} det={det}: "
          f"max err dq {errs[0]:.3e} dk {errs[1]:.3e} dv {errs[2]:.3e}", flush=True)
sys.exit(1 if bad else 0)
