"""Every RoPE backend against the float64 reference, on the GPU.

The same parametrisation runs the cuda, cupy, numba and torch backends; each
skips with its reason where it cannot run. Out-of-place outputs are poisoned
with NaN before every kernel (PYKERNELS_POISON_OUTPUTS=1), so a feature a
kernel forgets to write (the pass-through tail included) fails. Tolerance: at
most 2x PyTorch's own low-precision error against the float64 reference
(``rotary_ref(..., upcast=False)`` does the math in float32 and rounds once,
as the kernels should).

What a failure means:
* ``test_matches_reference``: wrong rotation for that dtype / layout / flag /
  positions combination (the id names it);
* ``test_vector_and_scalar_paths``: the 16-byte path or the one-element
  fallback (misaligned or odd-sized rows) is wrong;
* ``test_strided_inplace``: strides of packed qkv views, or in place, wrong;
* ``test_current_stream``: the kernel ran on another stream than torch's
  current one (a race with the producer of its input);
* ``test_freqs_in_kernel``: the benchmark's in-kernel-sincos variant drifts
  from the table path.
"""
import itertools

import pytest
import torch

import pykernels
from pykernels import backends, rope
from pykernels.reference import rotary_ref

from helpers import assert_within_2x, gpu_backends

DTYPES = [torch.float16, torch.bfloat16, torch.float32]
SHAPES = [  # (B, S, Hq, Hk, D, rot)
    (1, 1, 1, 1, 64, 64),
    (2, 97, 8, 2, 128, 128),    # GQA
    (1, 1025, 4, 1, 128, 64),   # partial rotary, MQA
    (3, 17, 5, 5, 80, 80),      # head dim off the power-of-two path
    (2, 33, 2, 1, 96, 32),
]
POSITION_KINDS = ["int", "batch-offsets", "position-ids"]
CACHE = 4096


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    monkeypatch.setenv("PYKERNELS_POISON_OUTPUTS", "1")


def _table(rot, n=CACHE, device="cuda"):
    return rope.RotaryEmbedding(rot, 10000.0, {"rope_type": "yarn", "factor": 4.0,
                                               "original_max_position_embeddings": 1024}).cos_sin(n, device=device)


def _positions(kind, b, s, device="cuda"):
    """(the positions argument, the (B, S) position of every token)."""
    if kind == "int":
        return 7, (torch.arange(s, device=device) + 7)[None].expand(b, -1)
    if kind == "batch-offsets":
        off = torch.randint(0, CACHE - s, (b,), device=device)
        return off, off[:, None] + torch.arange(s, device=device)
    ids = torch.randint(0, CACHE, (b, s), device=device)
    return ids, ids


def _check(out, x, cos, sin, ids, interleaved, conjugate, what):
    c, s = cos[ids], sin[ids]
    ref64 = rotary_ref(x, c, s, interleaved=interleaved, conjugate=conjugate, upcast=True)
    ref_lp = rotary_ref(x, c, s, interleaved=interleaved, conjugate=conjugate, upcast=False)
    assert out.dtype == x.dtype
    assert_within_2x(out, ref64, ref_lp, what=what)


@pytest.mark.parametrize("backend", gpu_backends("rope"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("interleaved, conjugate", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("kind", POSITION_KINDS)
@pytest.mark.parametrize("layout", ["BSHD", "BHSD"])
def test_matches_reference(backend, dtype, shape, interleaved, conjugate, kind, layout):
    b, s, hq, hk, d, rot = shape
    cos, sin = _table(rot)
    positions, ids = _positions(kind, b, s)
    q = torch.randn(b, s, hq, d, device="cuda", dtype=dtype)
    k = torch.randn(b, s, hk, d, device="cuda", dtype=dtype)
    to = (lambda t: t) if layout == "BSHD" else (lambda t: t.transpose(1, 2).contiguous())
    back = (lambda t: t) if layout == "BSHD" else (lambda t: t.transpose(1, 2))
    q_out, k_out = pykernels.apply_rotary(to(q), cos, sin, interleaved, False, conjugate, k=to(k),
                                          positions=positions, layout=layout, backend=backend)
    _check(back(q_out), q, cos, sin, ids, interleaved, conjugate, f"{backend} q")
    _check(back(k_out), k, cos, sin, ids, interleaved, conjugate, f"{backend} k")
    if rot < d:
        assert torch.equal(back(q_out)[..., rot:], q[..., rot:]), "the pass-through tail changed"


@pytest.mark.parametrize("backend", gpu_backends("rope"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_vector_and_scalar_paths(backend, dtype):
    """A row start off 16 bytes, and a rotary half that is not a multiple of
    the vector width, both take the one-element path; the rest the 16-byte one."""
    cos, sin = _table(64)
    for d, rot, shift in ((64, 64, 0), (64, 64, 1), (20, 12, 0), (6, 2, 0)):
        buf = torch.randn(2 * 9 * 3 * d + shift, device="cuda", dtype=dtype)
        q = buf[shift:].view(2, 9, 3, d)
        c, s = cos[:, : rot // 2].contiguous(), sin[:, : rot // 2].contiguous()
        out = pykernels.apply_rotary(q, c, s, positions=11, backend=backend)
        ids = (torch.arange(9, device="cuda") + 11)[None].expand(2, -1)
        _check(out, q, c, s, ids, False, False, f"{backend} d={d} rot={rot} shift={shift}")


@pytest.mark.parametrize("backend", gpu_backends("rope"))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_strided_inplace(backend, dtype):
    """q and k as views of a packed (B, S, 3, H, D) qkv buffer, rotated in place through the views."""
    b, s, h, d = 2, 300, 4, 128
    cos, sin = _table(128)
    qkv = torch.randn(b, s, 3, h, d, device="cuda", dtype=dtype)
    q, k = qkv[:, :, 0], qkv[:, :, 1]
    positions, ids = _positions("batch-offsets", b, s)
    expect_q, expect_k = pykernels.apply_rotary(q.contiguous(), cos, sin, k=k.contiguous(), positions=positions,
                                                backend="torch")
    v_before = qkv[:, :, 2].clone()
    got_q, got_k = pykernels.apply_rotary(q, cos, sin, inplace=True, k=k, positions=positions, backend=backend)
    assert got_q is q and got_k is k
    torch.testing.assert_close(qkv[:, :, 0], expect_q, rtol=0, atol=2e-2 if dtype != torch.float32 else 1e-5)
    torch.testing.assert_close(qkv[:, :, 1], expect_k, rtol=0, atol=2e-2 if dtype != torch.float32 else 1e-5)
    assert torch.equal(qkv[:, :, 2], v_before), "v changed"
    # Out of place from the same strided views.
    qkv2 = torch.randn_like(qkv)
    q2, k2 = qkv2[:, :, 0], qkv2[:, :, 1]
    out_q, out_k = pykernels.apply_rotary(q2, cos, sin, k=k2, positions=positions, backend=backend)
    _check(out_q, q2, cos, sin, ids, False, False, f"{backend} strided q")
    _check(out_k, k2, cos, sin, ids, False, False, f"{backend} strided k")


@pytest.mark.parametrize("backend", gpu_backends("rope"))
def test_current_stream(backend):
    """The input is produced on a side stream after a long sleep; a kernel that
    ignored torch's current stream would read it before it is written."""
    cos, sin = _table(128)
    src = torch.randn(4, 512, 8, 128, device="cuda", dtype=torch.bfloat16)
    expect = pykernels.apply_rotary(src, cos, sin, positions=3, backend="torch")
    side = torch.cuda.Stream()
    x = torch.zeros_like(src)
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time on the side stream
        x.copy_(src)
        out = pykernels.apply_rotary(x, cos, sin, positions=3, backend=backend)
    side.synchronize()
    torch.testing.assert_close(out, expect, rtol=0, atol=2e-2)


@pytest.mark.parametrize("backend", gpu_backends("rope"))
def test_positions_off_the_table_give_nan_rows(backend):
    """On the GPU positions are not checked on the host (no sync): such rows come out NaN, never garbage."""
    cos, sin = _table(32, n=16)
    x = torch.randn(1, 4, 2, 32, device="cuda")
    out = pykernels.apply_rotary(x, cos, sin, positions=torch.tensor([[0, 15, 16, -1]], device="cuda"),
                                 backend=backend)
    bad = torch.isnan(out).any(-1).any(-1)[0].tolist()
    assert bad == [False, False, True, True]


@pytest.mark.parametrize("backend", gpu_backends("rope"))
def test_backward_is_conjugate(backend):
    cos, sin = _table(64)
    q = torch.randn(2, 65, 4, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(2, 65, 2, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    out_q, out_k = pykernels.apply_rotary(q, cos, sin, k=k, positions=5, backend=backend)
    gq, gk = torch.randn_like(out_q), torch.randn_like(out_k)
    dq, dk = torch.autograd.grad((out_q, out_k), (q, k), (gq, gk))
    eq, ek = pykernels.apply_rotary(gq, cos, sin, conjugate=True, k=gk, positions=5, backend="torch")
    torch.testing.assert_close(dq, eq, rtol=0, atol=2e-2)
    torch.testing.assert_close(dk, ek, rtol=0, atol=2e-2)


@pytest.mark.parametrize("backend", gpu_backends("rope"))
def test_module_on_gpu_matches_cpu(backend):
    """RotaryEmbedding with dynamic NTK across calls that grow past the trained length, GPU vs CPU."""
    scaling = {"rope_type": "dynamic", "factor": 4.0, "max_position_embeddings": 256}
    gpu = rope.RotaryEmbedding(64, 10000.0, scaling, backend=backend)
    cpu = rope.RotaryEmbedding(64, 10000.0, scaling)
    for offset in (0, 500, 100):
        q = torch.randn(2, 64, 4, 64)
        k = torch.randn(2, 64, 2, 64)
        a = gpu(q.cuda(), k.cuda(), seqlen_offset=offset)
        b = cpu(q, k, seqlen_offset=offset)
        torch.testing.assert_close(a[0].cpu(), b[0], rtol=0, atol=1e-4)
        torch.testing.assert_close(a[1].cpu(), b[1], rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", ["cuda", "cupy"])
def test_freqs_in_kernel(backend):
    """The benchmark's variant: cos/sin from inv_freq in the kernel, up to position 32767."""
    st = backends.status(backend)
    if not st.available:
        pytest.skip(f"{backend}: {st.reason}")
    mod = backends.op_module(backend, "rope")
    emb = rope.RotaryEmbedding(128, 500000.0, {"rope_type": "yarn", "factor": 8.0,
                                               "original_max_position_embeddings": 4096})
    cos, sin = emb.cos_sin(32768, device="cuda")
    q = torch.randn(1, 32768, 2, 128, device="cuda", dtype=torch.float32)
    k = torch.randn(1, 32768, 1, 128, device="cuda", dtype=torch.float32)
    table_q, table_k = torch.empty_like(q), torch.empty_like(k)
    freq_q, freq_k = torch.empty_like(q), torch.empty_like(k)
    mod.apply_rotary(q, k, cos, sin, None, 0, table_q, table_k, interleaved=False, conjugate=False)
    mod.apply_rotary_freqs(q, k, emb.inv_freq.cuda(), emb.attention_factor, None, 0, freq_q, freq_k,
                           interleaved=False, conjugate=False)
    torch.testing.assert_close(freq_q, table_q, rtol=0, atol=1e-4)
    torch.testing.assert_close(freq_k, table_k, rtol=0, atol=1e-4)


@pytest.mark.parametrize("backend", gpu_backends("rope"))
def test_torch_compile_inductor(backend):
    torch._dynamo.reset()
    cos, sin = _table(128)
    q = torch.randn(2, 128, 8, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, 128, 2, 128, device="cuda", dtype=torch.bfloat16)

    @torch.compile(fullgraph=True)
    def f(q, k):
        qr, kr = pykernels.apply_rotary(q, cos, sin, k=k, positions=9, backend=backend)
        return qr * 2, kr + 1

    qr, kr = f(q, k)
    eq, ek = pykernels.apply_rotary(q, cos, sin, k=k, positions=9, backend=backend)
    torch.testing.assert_close(qr, eq * 2)
    torch.testing.assert_close(kr, ek + 1)


@pytest.mark.parametrize("backend", gpu_backends("rope"))
def test_opcheck(backend):
    """Schema, fake tensor, autograd registration and AOT dispatch of both ops on this backend."""
    cos, sin = _table(64, n=64)
    q = torch.randn(2, 5, 4, 96, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(2, 5, 2, 96, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    ids = torch.randint(0, 60, (2, 5), device="cuda")
    torch.library.opcheck(torch.ops.pykernels.rotary.default, (q, k, cos, sin, ids, 0, False, False, backend))
    torch.library.opcheck(torch.ops.pykernels.rotary_.default,
                          (q.detach().clone(), k.detach().clone(), cos, sin, None, 3, True, True, backend))
