"""GPU tests of the CUDA C++ and CuPy attention forward (csrc/attention).

Every case compares with ``attention_ref`` in float64 under the 2x rule
(tests/helpers.py): the kernel may be at most about twice as far from the
float64 answer as PyTorch's own low-precision computation of the same thing.
Shapes are awkward on purpose (1, 17, 97, 1025; Sq != Sk; GQA), outputs are
poisoned, and both backends run the very same kernel.
"""
from __future__ import annotations

import itertools

import pytest
import torch

import pykernels
from pykernels.backends import op_module
from pykernels.reference import attention_ref

from helpers import assert_within_2x, attention_inputs, choose_extension_kernel, gpu_backends

pytestmark = pytest.mark.gpu

BACKENDS = [p for p in gpu_backends() if p.id in ("cuda", "cupy")]
DEVICE = "cuda"


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    # Every output starts as NaN: an element the kernel forgets to write fails.
    monkeypatch.setenv("PYKERNELS_POISON_OUTPUTS", "1")


@pytest.fixture(autouse=True, params=["default", "mma_sync"])
def fwd_kernel(request, monkeypatch):
    """Both forward kernels of the extension: on Hopper the default is the wgmma
    kernel for head dims 64 and 128 (flash_fwd_sm90_kernel.cuh); mma_sync forces
    flash_fwd_kernel.cuh through PYKERNELS_FWD_KERNEL=sm80. Elsewhere both run
    the mma.sync kernel."""
    return choose_extension_kernel(request, monkeypatch, "PYKERNELS_FWD_KERNEL")


def _inputs(b, sq, sk, hq, hkv, d, dtype, sink_logits=False, alibi=None):
    return attention_inputs(b, sq, sk, hq, hkv, d, dtype, DEVICE, sink_logits=sink_logits, alibi=alibi)


def _forward(backend, q, k, v, *, causal=False, window=(-1, -1), sink_tokens=0, sink_logits=None,
             alibi_slopes=None, q_offset=None, softmax_scale=None):
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    offset = k.shape[1] - q.shape[1] if q_offset is None else q_offset
    return op_module(backend, "attention").forward(
        q, k, v, softmax_scale=scale, causal=causal, window_left=window[0], window_right=window[1],
        sink_tokens=sink_tokens, sink_logits=sink_logits, alibi_slopes=alibi_slopes, q_offset=offset)


def _check(backend, q, k, v, **kw):
    out, lse = _forward(backend, q, k, v, **kw)
    kw = dict(kw)
    window = kw.pop("window", (-1, -1))
    ref_out, ref_lse = attention_ref(q, k, v, window_size=window, upcast=True, **kw)
    low_out, low_lse = attention_ref(q, k, v, window_size=window, upcast=False, **kw)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert lse.dtype == torch.float32 and lse.shape == (q.shape[0], q.shape[2], q.shape[1])
    assert not torch.isnan(out).any(), "out has NaN (unwritten or poisoned elements)"
    assert not torch.isnan(lse).any(), "lse has NaN (unwritten or poisoned elements)"
    assert_within_2x(out, ref_out, low_out, "out")
    assert_within_2x(lse, ref_lse, low_lse, "lse", floor=1e-4)
    return out, lse


# Every mask flag combination on awkward lengths: causal x window x sink
# tokens x sink logits x ALiBi.
WINDOWS = [(-1, -1), (16, -1), (40, 7), (0, 0)]
FLAGS = list(itertools.product([False, True], WINDOWS, [0, 5], [False, True], [None, "heads"]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal,window,sink_tokens,sink_logits,alibi", FLAGS)
@pytest.mark.parametrize("sq,sk", [(97, 97), (17, 1025), (1025, 97)])
def test_flag_matrix(backend, causal, window, sink_tokens, sink_logits, alibi, sq, sk):
    q, k, v, sinks, slopes = _inputs(1, sq, sk, 4, 2, 64, torch.bfloat16, sink_logits, alibi)
    _check(backend, q, k, v, causal=causal, window=window, sink_tokens=sink_tokens, sink_logits=sinks,
           alibi_slopes=slopes)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [32, 64, 96, 128, 256])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sq,sk", [(1, 1), (1, 97), (97, 1), (128, 1025), (1025, 1025)])
def test_head_dims(backend, d, dtype, sq, sk):
    q, k, v, _, _ = _inputs(2, sq, sk, 2, 1, d, dtype)
    _check(backend, q, k, v, causal=True)
    _check(backend, q, k, v, causal=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hq,hkv", [(8, 1), (8, 2), (4, 4)])
@pytest.mark.parametrize("d", [64, 128])
def test_gqa_every_feature(backend, hq, hkv, d):
    q, k, v, sinks, slopes = _inputs(2, 200, 333, hq, hkv, d, torch.float16, True, "batch")
    _check(backend, q, k, v, causal=True, window=(64, -1), sink_tokens=3, sink_logits=sinks, alibi_slopes=slopes)
    _check(backend, q, k, v, causal=False, window=(50, 20), alibi_slopes=slopes)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("variant", ["causal", "window_sinks", "alibi_gqa", "full", "masked_tiles"])
def test_many_query_tiles(backend, d, variant):
    # 4 x 16 heads x 17 query tiles = 1088 work tiles, several per SM: the
    # persistent wgmma forward carries its barrier phases and softmax state
    # from one work tile to the next (and tile sizes differ under causal).
    # masked_tiles: Sk = 700 < Sq, causal bottom-right, so the first 1400 rows
    # see no key and most work tiles have no key tile at all, between tiles
    # that do (the loads skip them; the outputs are zeros and the sink logit).
    hkv = 2 if variant == "alibi_gqa" else 16
    sk = 700 if variant == "masked_tiles" else 2100
    q, k, v, sinks, slopes = _inputs(4, 2100, sk, 16, hkv, d, torch.bfloat16,
                                     variant in ("window_sinks", "masked_tiles"),
                                     "heads" if variant == "alibi_gqa" else None)
    kw = dict(causal=variant != "full")
    if variant == "window_sinks":
        kw.update(window=(1000, 0), sink_tokens=4, sink_logits=sinks)
    if variant == "masked_tiles":
        kw.update(sink_logits=sinks)
    out, _ = _check(backend, q, k, v, alibi_slopes=slopes, **kw)
    if variant == "masked_tiles":
        assert (out[:, :1400] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("q_offset", [0, 500, -30])
def test_q_offset(backend, q_offset):
    # The SDPA drop-in aligns rows top-left (q_offset = 0); any offset must work.
    q, k, v, sinks, _ = _inputs(1, 300, 400, 2, 1, 128, torch.bfloat16, True)
    _check(backend, q, k, v, causal=True, q_offset=q_offset, sink_logits=sinks)
    _check(backend, q, k, v, causal=False, window=(100, 3), sink_tokens=2, q_offset=q_offset)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fully_masked_rows(backend):
    # Sq > Sk with causal bottom-right: the first rows see nothing -> 0 and -inf (or the sink logit).
    q, k, v, sinks, _ = _inputs(1, 200, 50, 2, 2, 64, torch.bfloat16, True)
    out, lse = _check(backend, q, k, v, causal=True)
    assert (out[:, :150] == 0).all() and torch.isneginf(lse[..., :150]).all()
    out, lse = _check(backend, q, k, v, causal=True, sink_logits=sinks)
    assert (out[:, :150] == 0).all()
    torch.testing.assert_close(lse[0, :, :150], sinks[:, None].expand(2, 150))


@pytest.mark.parametrize("backend", BACKENDS)
def test_softmax_scale(backend):
    q, k, v, _, _ = _inputs(1, 97, 130, 2, 1, 64, torch.float16)
    for scale in (0.5, 1e-3, -0.2):  # a negative scale takes the scale-first path
        _check(backend, q, k, v, causal=True, softmax_scale=scale)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_inputs(backend):
    b, s, h, d = 2, 129, 4, 64
    qkv = torch.randn(b, s, 3, h, d, device=DEVICE, dtype=torch.bfloat16)  # packed projections
    q, k, v = qkv.unbind(2)
    _check(backend, q, k, v, causal=True)
    # (B, H, S, D) storage viewed as (B, S, H, D), and a K that is a slice of a longer cache.
    qt = torch.randn(b, h, s, d, device=DEVICE, dtype=torch.float16).transpose(1, 2)
    cache = torch.randn(b, 2 * s, 1, d, device=DEVICE, dtype=torch.float16)
    _check(backend, qt, cache[:, 3:s + 3], cache[:, s:], window=(32, 32))
    # Rows that are not 16-byte aligned are copied once, not misread.
    wide = torch.randn(b, s, h, d + 8, device=DEVICE, dtype=torch.bfloat16)
    _check(backend, wide[..., 1:d + 1], k, v, causal=True)
    # K and V broadcast over the batch and the heads (stride 0): copied too.
    kb, vb = (torch.randn(1, s, 1, d, device=DEVICE, dtype=torch.bfloat16).expand(b, s, 2, d) for _ in range(2))
    _check(backend, q, kb, vb, causal=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_64bit_offsets(backend):
    # MQA with a key cache of more than 2**31 elements: the band at its end and
    # the sink tokens at its start, so offsets past 2**31 are read, cheaply.
    d, sq, left, sinks = 128, 200, 300, 4
    sk = (1 << 31) // d + 4096
    k = torch.empty(1, sk, 1, d, device=DEVICE, dtype=torch.bfloat16)
    v = torch.empty_like(k)
    lo = sk - sq - left
    for t in (k, v):
        t[:, :sinks].normal_()
        t[:, lo:].normal_()
    q = torch.randn(1, sq, 2, d, device=DEVICE, dtype=torch.bfloat16)
    out, lse = _forward(backend, q, k, v, causal=True, window=(left, 0), sink_tokens=sinks)
    # The same attention over just the visible keys, with positions shifted.
    k2, v2 = (torch.cat([t[:, :sinks], t[:, lo:]], dim=1) for t in (k, v))
    kw = dict(causal=True, window_size=(left, 0), sink_tokens=sinks, q_offset=k2.shape[1] - sq)
    ref_out, ref_lse = attention_ref(q, k2, v2, upcast=True, **kw)
    low_out, _ = attention_ref(q, k2, v2, upcast=False, **kw)
    assert_within_2x(out, ref_out, low_out, "out")
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-3, rtol=0)
    del k, v


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cupy_on_side_stream(dtype):
    if not pykernels.available_backends()["cupy"]:
        pytest.skip(pykernels.available_backends()["cupy"].reason)
    q, k, v, _, _ = _inputs(2, 1025, 1025, 4, 2, 128, dtype)
    src = q.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        # Keep the side stream busy, then write q on it: a kernel launched on
        # any other stream would read q before the copy lands.
        q.zero_()
        torch.cuda._sleep(20_000_000)
        q.copy_(src)
        out, lse = _forward("cupy", q, k, v, causal=True)
    stream.synchronize()
    ref_out, _ = attention_ref(src, k, v, causal=True, upcast=True)
    low_out, _ = attention_ref(src, k, v, causal=True, upcast=False)
    assert_within_2x(out, ref_out, low_out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_agree_with_public_api(backend):
    q, k, v, sinks, slopes = _inputs(2, 300, 300, 4, 2, 128, torch.bfloat16, True, "heads")
    out = pykernels.flash_attn_func(q, k, v, causal=True, window_size=(128, 0), sink_tokens=4, sink_logits=sinks,
                                    alibi_slopes=slopes, backend=backend)
    ref, _ = attention_ref(q, k, v, causal=True, window_size=(128, 0), sink_tokens=4, sink_logits=sinks,
                           alibi_slopes=slopes)
    low, _ = attention_ref(q, k, v, causal=True, window_size=(128, 0), sink_tokens=4, sink_logits=sinks,
                           alibi_slopes=slopes, upcast=False)
    assert_within_2x(out, ref, low)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unsupported_head_dim(backend):
    q, k, v, _, _ = _inputs(1, 16, 16, 2, 2, 48, torch.float16)
    with pytest.raises(ValueError, match="head_dim"):
        pykernels.flash_attn_func(q, k, v, backend=backend)
    with pytest.raises(ValueError, match="head_dim"):
        _forward(backend, q, k, v)


def test_opcheck_forward():
    if not pykernels.available_backends()["cuda"]:
        pytest.skip(pykernels.available_backends()["cuda"].reason)
    q, k, v, sinks, slopes = _inputs(1, 65, 80, 4, 2, 64, torch.bfloat16, True, "heads")
    args = (q, k, v, sinks, slopes, 0.125, True, 32, 0, 2, 15, False, "cuda")
    torch.library.opcheck(torch.ops.pykernels.attention_fwd.default, args)
