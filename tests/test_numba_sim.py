"""The Numba backend on CPU, under Numba's CUDA simulator, against the float64 reference.

``NUMBA_ENABLE_CUDASIM=1`` must be set before ``numba.cuda`` is first
imported, so the rest of the suite cannot share a process with it: each test
below runs one group of cases in a fresh interpreter,
``NUMBA_ENABLE_CUDASIM=1 python tests/test_numba_sim.py GROUP``.

The simulator runs every GPU thread as a Python thread, so the sizes are tiny
(S in {1, 17, 33}, D = 16) and the tiles smaller still (8 x 8 and 4 x 8): a
few rows and keys already cross full, boundary and partial tiles, the gap
between sink tiles and the window band, and rows that see no key at all.
float32 inputs are compared to float64 within 1e-4; fp16/bf16 by the 2x rule.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import pytest

SIM_TIMEOUT_S = 600

# Each case: keyword arguments of _attention_case. Sizes are (Sq, Sk).
FORWARD_MASKS = [
    dict(sq=17, sk=33),
    dict(sq=33, sk=17, causal=True),
    dict(sq=17, sk=33, causal=True, tiles=(4, 8)),
    dict(sq=33, sk=33, window=(3, 2), tiles=(16, 8)),
    dict(sq=33, sk=33, window=(4, -1), sink=3),  # sink tiles, a gap, then the band
    dict(sq=17, sk=33, window=(-1, 0), sink=9, tiles=(4, 8)),  # sinks reach past the band
    dict(sq=33, sk=17, causal=True, window=(2, -1), sink=2),  # rows that see nothing
    dict(sq=1, sk=33, causal=True, window=(5, -1)),
    dict(sq=33, sk=1),
    dict(sq=17, sk=17, causal=True, q_offset=0),  # top-left rows, as the SDPA drop-in
]
FORWARD_FEATURES = [
    dict(sq=17, sk=33, hq=4, hkv=1),  # MQA
    dict(sq=17, sk=17, hq=4, hkv=2, causal=True, alibi="heads"),
    dict(sq=33, sk=17, alibi="batch_heads", b=2, window=(3, 3)),
    dict(sq=33, sk=17, causal=True, sink_logits=True),  # fully masked rows keep lse = sink
    dict(sq=17, sk=33, window=(2, 2), sink=2, sink_logits=True, alibi="heads", hq=4, hkv=2),
    dict(sq=17, sk=33, d=12, causal=True),  # head dim not a multiple of the team
    dict(sq=17, sk=17, strided=True, window=(3, -1)),
    dict(sq=17, sk=33, tiles=None, d=8),  # the default tile shape
    dict(sq=17, sk=33, dtype="float16", causal=True),
    dict(sq=17, sk=33, dtype="bfloat16", sink_logits=True, window=(4, 0)),
]
BACKWARD = [
    dict(sq=17, sk=33, hq=2, hkv=1),
    dict(sq=33, sk=17, causal=True, sink_logits=True),
    dict(sq=17, sk=33, window=(2, 1), sink=3, alibi="heads", tiles=(4, 8)),
    dict(sq=33, sk=17, causal=True, window=(3, -1), sink=2, sink_logits=True, hq=4, hkv=1, no_dlse=True,
         tiles=(16, 8)),
    dict(sq=17, sk=17, d=12, alibi="batch_heads", b=2, strided=True),
    dict(sq=17, sk=17, dtype="bfloat16", causal=True, tiles=(16, 8)),
]
ROPE = [
    dict(),
    dict(interleaved=True, conjugate=True),
    dict(positions="offsets", inplace=True),
    dict(positions="ids", dtype="float16", rot=16),
    dict(positions="ids", dtype="bfloat16", interleaved=True, layout="BHSD"),
    dict(positions="off_table"),
]
# One interpreter per group (each pays ~5 s of imports); groups of similar
# length so that ``pytest -n 2`` keeps both workers busy.
GROUPS = {
    "forward_masks": [("forward", c) for c in FORWARD_MASKS],
    "forward_features_rope": [("forward", c) for c in FORWARD_FEATURES] + [("rope", c) for c in ROPE],
    "backward_a": [("backward", c) for c in BACKWARD[:3]],
    "backward_b_dispatch": [("backward", c) for c in BACKWARD[3:]] + [("dispatch", {})],
}


# --------------------------------------------------------- the outer tests
def _numba_cuda_missing() -> bool:
    return importlib.util.find_spec("numba") is None or importlib.util.find_spec("numba_cuda") is None


@pytest.mark.skipif(_numba_cuda_missing(), reason="numba-cuda is not installed")
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_numba_simulator(group):
    # One torch thread: the simulated kernels are single-threaded Python
    # anyway, and the other pytest worker needs the second core.
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", OMP_NUM_THREADS="1")
    env.pop("PYKERNELS_BACKEND", None)
    proc = subprocess.run([sys.executable, __file__, group], env=env, capture_output=True, text=True,
                          timeout=SIM_TIMEOUT_S)
    assert proc.returncode == 0, f"simulator group {group!r} failed:\n{proc.stdout}\n{proc.stderr}"


# ------------------------------------------------ the cases, run inside the simulator
def _inputs(b=1, sq=17, sk=33, hq=2, hkv=1, d=16, dtype="float32", strided=False, **_):
    import torch

    dt = getattr(torch, dtype)
    if strided:
        # q, k, v as slices of one packed tensor: every stride but the last is unusual.
        packed = torch.randn(b, max(sq, sk), hq + 2 * hkv, d + 3, dtype=dt)
        return (packed[:, :sq, :hq, :d], packed[:, :sk, hq:hq + hkv, 1:d + 1],
                packed[:, :sk, hq + hkv:, 2:d + 2])
    return (torch.randn(b, sq, hq, d, dtype=dt), torch.randn(b, sk, hkv, d, dtype=dt),
            torch.randn(b, sk, hkv, d, dtype=dt))


def _mask_kwargs(q, k, causal=False, window=(-1, -1), sink=0, sink_logits=False, alibi=None, q_offset=None,
                 tiles=(8, 8), **_):
    import torch

    b, sq, hq, d = q.shape
    slopes = None
    if alibi == "heads":
        slopes = torch.rand(hq) * 0.5
    elif alibi == "batch_heads":
        slopes = torch.rand(b, hq) * 0.5
    kw = dict(softmax_scale=d ** -0.5, causal=causal, window_left=window[0], window_right=window[1],
              sink_tokens=sink, sink_logits=torch.randn(hq) if sink_logits else None, alibi_slopes=slopes,
              q_offset=k.shape[1] - sq if q_offset is None else q_offset)
    if tiles is not None:
        kw.update(block_q=tiles[0], block_k=tiles[1])
    return kw


def _reference(q, k, v, kw, upcast=True):
    from pykernels.reference import attention_ref

    def up(t):
        return t.double() if (upcast and t is not None) else t

    return attention_ref(up(q), up(k), up(v), kw["softmax_scale"], kw["causal"],
                         (kw["window_left"], kw["window_right"]), kw["sink_tokens"], up(kw["sink_logits"]),
                         up(kw["alibi_slopes"]), q_offset=kw["q_offset"], upcast=upcast)


def _close(x, ref, what, atol=1e-4):
    from helpers import max_err

    err = max_err(x, ref)
    scale = max(1.0, float(ref[ref.isfinite()].abs().max()) if ref.isfinite().any() else 1.0)
    assert err <= atol * scale, f"{what}: max error {err:.3e} vs float64 (tolerance {atol * scale:.1e})"


def _forward_case(case):
    import torch
    from helpers import assert_within_2x

    from pykernels.backends.numba import attention

    q, k, v = _inputs(**case)
    kw = _mask_kwargs(q, k, **case)
    out, lse = attention.forward(q, k, v, **kw)
    ref_out, ref_lse = _reference(q, k, v, kw)
    assert out.dtype == q.dtype and lse.dtype == torch.float32 and lse.shape == ref_lse.shape
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse)), "lse: -inf rows differ"
    _close(lse, ref_lse, "lse")
    if q.dtype == torch.float32:
        _close(out, ref_out, "out")
    else:
        lowp_out, _ = _reference(q, k, v, kw, upcast=False)
        assert_within_2x(out, ref_out, lowp_out)


def _autograd_ref(q, k, v, kw, dout, dlse, dtype):
    """Gradients of sum(out * dout) + sum(lse * dlse) through the reference, computed in ``dtype``."""
    import torch

    leaves = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    ref_kw = dict(kw)
    if kw["sink_logits"] is not None:
        ref_kw["sink_logits"] = kw["sink_logits"].detach().to(torch.float64).requires_grad_()
        leaves.append(ref_kw["sink_logits"])
    out, lse = _reference(*leaves[:3], ref_kw, upcast=False)
    loss = (out.double() * dout.double()).sum()
    if dlse is not None:
        # Rows with lse = -inf have no gradient through lse; leave them out.
        lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        loss = loss + (lse.double() * dlse.double()).sum()
    return torch.autograd.grad(loss, leaves)


def _backward_case(case):
    import torch
    from helpers import assert_within_2x

    from pykernels.backends.numba import attention

    q, k, v = _inputs(**case)
    kw = _mask_kwargs(q, k, **case)
    out, lse = attention.forward(q, k, v, **kw)
    dout = torch.randn_like(out)
    dlse = None if case.get("no_dlse") else torch.randn_like(lse)
    grads = attention.backward(dout, dlse, q, k, v, out, lse, **kw)
    ref = _autograd_ref(q, k, v, kw, dout, dlse, torch.float64)
    lowp = _autograd_ref(q, k, v, kw, dout, dlse, q.dtype) if q.dtype != torch.float32 else None
    for i, (name, g, r) in enumerate(zip(("dq", "dk", "dv", "dsink"), grads, ref)):
        assert g.shape == r.shape, f"{name}: shape {tuple(g.shape)} vs {tuple(r.shape)}"
        assert g.dtype == (q.dtype if i < 3 else torch.float32), f"{name}: dtype {g.dtype}"
        if lowp is None:
            _close(g, r, name)
        else:
            assert_within_2x(g, r, lowp[i], what=name)


def _rope_case(case):
    import torch

    import pykernels
    from pykernels.reference import rotary_ref

    dt = getattr(torch, case.get("dtype", "float32"))
    b, s, h, d, rot, cache = 2, 5, 3, 16, case.get("rot", 12), 16
    x = torch.randn(b, s, h, d, dtype=dt)
    ang = torch.rand(cache, rot // 2, dtype=torch.float64) * 6
    cos, sin = ang.cos().float(), ang.sin().float()
    mode = case.get("positions", "int")
    if mode == "offsets":
        positions, pos = torch.tensor([0, 7]), torch.arange(s)[None, :] + torch.tensor([0, 7])[:, None]
    elif mode == "ids":
        positions = torch.randint(0, cache, (b, s))
        pos = positions
    else:
        positions, pos = 2, torch.arange(s)[None, :].expand(b, s) + 2
    if mode == "off_table":
        # Called on the backend directly: the public API rejects such positions up front.
        from pykernels.backends.numba import rope

        ids = torch.tensor([[0, 1, cache, -1, 2]]).expand(b, s)
        out = torch.empty_like(x)
        rope.apply_rotary(x, None, cos, sin, ids, 0, out, None, interleaved=False, conjugate=False)
        bad = (ids >= cache) | (ids < 0)
        assert out[..., :rot][bad].isnan().all() and not out[..., :rot][~bad].isnan().any()
        assert torch.equal(out[..., rot:], x[..., rot:])
        return
    layout = case.get("layout", "BSHD")
    xin = x.transpose(1, 2).contiguous() if layout == "BHSD" else x.clone()
    got = pykernels.apply_rotary(xin, cos, sin, interleaved=case.get("interleaved", False),
                                 inplace=case.get("inplace", False), conjugate=case.get("conjugate", False),
                                 positions=positions, layout=layout, backend="numba")
    if layout == "BHSD":
        got = got.transpose(1, 2)
    # The reference takes a (B, S, R/2) table per token.
    ref = rotary_ref(x, cos[pos], sin[pos], interleaved=case.get("interleaved", False),
                     conjugate=case.get("conjugate", False))
    if case.get("inplace"):
        assert got.data_ptr() == xin.data_ptr()
    tol = 1e-5 if dt == torch.float32 else (1e-2 if dt == torch.float16 else 8e-2)
    _close(got, ref, "rope", atol=tol)


def _dispatch_case(_):
    """flash_attn_func(backend="numba") end to end: registry, custom op and autograd."""
    import torch

    import pykernels

    q, k, v = (torch.randn(1, 9, 2, 16, requires_grad=True) for _ in range(3))
    out, lse = pykernels.flash_attn_func(q, k, v, causal=True, return_lse=True, backend="numba")
    ref_out, ref_lse = pykernels.flash_attn_func(q, k, v, causal=True, return_lse=True, backend="torch")
    _close(out.detach(), ref_out.detach(), "out")
    _close(lse.detach(), ref_lse.detach(), "lse")
    (g,) = torch.autograd.grad(out.sum(), q)
    (ref_g,) = torch.autograd.grad(ref_out.sum(), q)
    _close(g, ref_g, "dq via autograd")


CASES = {"forward": _forward_case, "backward": _backward_case, "rope": _rope_case, "dispatch": _dispatch_case}


def _run_group(group: str) -> int:
    assert os.environ.get("NUMBA_ENABLE_CUDASIM") == "1", "run with NUMBA_ENABLE_CUDASIM=1"
    # The simulator's block manager polls its threads; a short switch interval
    # hands the GIL to the working threads sooner (about 2x faster here).
    sys.setswitchinterval(5e-4)
    import torch

    from pykernels.backends.numba import attention

    # Fewer Python threads per simulated block (teams of 2 lanes on 8 x 8
    # tiles, 4 on 4 x 8): about 40% faster, and teams still need reducing.
    attention.THREADS = 16

    failures = 0
    for i, (kind, case) in enumerate(GROUPS[group]):
        torch.manual_seed(i)
        start = time.time()
        try:
            CASES[kind](case)
            status = "ok"
        except AssertionError as exc:
            failures += 1
            status = f"FAILED: {exc}"
        print(f"{kind} {case}: {status} ({time.time() - start:.1f}s)", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(_run_group(sys.argv[1]))
