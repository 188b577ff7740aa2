"""Attention forward and backward on the CUDA C++ extension (csrc/attention, FlashAttention-2 style).

``forward`` prepares the inputs that the kernel assumes (16-byte aligned rows,
strides in multiples of 8 elements, float32 sink logits and ALiBi slopes),
normalises the mask numbers, allocates the outputs through
``pykernels._debug.new_output`` and calls ``pykernels._C.attention_fwd``.
The CuPy backend shares :func:`prepare` and launches the same kernel.
``backward`` calls ``pykernels._C.attention_bwd`` (csrc/attention/flash_bwd*).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from ..._debug import new_output
from ..sink_grad import sink_logit_grad

# Head dims with a tile shape in csrc/attention/kernel_traits.cuh.
SUPPORTED_HEAD_DIMS = (32, 64, 96, 128, 256)
# The backward keeps dK and dV for 16 whole key rows per warp in registers:
# at d = 256 that alone is 256 fp32 registers per thread (flash_bwd_kernel.cuh).
SUPPORTED_BWD_HEAD_DIMS = (32, 64, 96, 128)
# Query rows of the backward's lse/delta scratch are padded to this
# (kBwdRowPad in csrc/attention/flash_bwd.h).
BWD_ROW_PAD = 128
_HALF = (torch.float16, torch.bfloat16)
UNBOUNDED = -1


def supports(dtype: torch.dtype, head_dim: int) -> Optional[str]:
    """None when the forward kernel can run these inputs, else why not."""
    if dtype not in _HALF:
        return f"it takes float16 or bfloat16, got {dtype}"
    if head_dim not in SUPPORTED_HEAD_DIMS:
        return f"head_dim must be one of {SUPPORTED_HEAD_DIMS}, got {head_dim}"
    return None


def supports_backward(dtype: torch.dtype, head_dim: int) -> Optional[str]:
    """None when the backward kernels can run these inputs, else why not."""
    if dtype not in _HALF:
        return f"it takes float16 or bfloat16, got {dtype}"
    if head_dim not in SUPPORTED_BWD_HEAD_DIMS:
        return (f"the backward kernel supports head_dim {SUPPORTED_BWD_HEAD_DIMS}, got {head_dim} "
                "(d = 256 would need dK/dV split across warps)")
    return None


def _kernel_ready(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when the kernel can read it in place, else a contiguous copy.

    cp.async moves 16-byte chunks and a TMA tensor map takes strides in
    multiples of 16 bytes, so rows must start 16-byte aligned: a contiguous
    last dimension, a data pointer on 16 bytes and every other stride a
    nonzero multiple of 8 elements (a broadcast dimension, stride 0, has no
    tensor map). Any other view is copied once.
    """
    ok = t.stride(-1) == 1 and t.data_ptr() % 16 == 0
    ok = ok and all(t.size(d) == 1 or (t.stride(d) % 8 == 0 and t.stride(d) > 0) for d in range(t.dim() - 1))
    return t if ok else t.contiguous()


def _float_param(t: Optional[torch.Tensor], device) -> Optional[torch.Tensor]:
    if t is None:
        return None
    return t.to(device=device, dtype=torch.float32).contiguous()


@dataclass(frozen=True)
class Prepared:
    """Inputs in the form the kernel reads them, and the normalised mask."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    sink_logits: Optional[torch.Tensor]
    alibi_slopes: Optional[torch.Tensor]  # (Hq,) or (B, Hq) float32
    softmax_scale: float
    causal: bool
    window_left: int
    window_right: int
    sink_tokens: int
    q_offset: int


def normalise_mask(seqlen_q: int, seqlen_k: int, causal: bool, left: int, right: int, sink_tokens: int,
                   q_offset: int) -> Tuple[int, int, int]:
    """Replace window sides and sink counts that cannot bind by their unbounded equivalents.

    The kernel does its mask arithmetic in 32 bits; a window wider than the
    sequence (say 2**40) means the same as -1 and must not overflow there.
    """
    p_first, p_last = q_offset, seqlen_q - 1 + q_offset
    if left != UNBOUNDED and left >= max(0, p_last):
        left = UNBOUNDED  # p - left <= 0 for every row: no lower bound
    if right != UNBOUNDED and right >= 0 and p_first + right >= seqlen_k - 1:
        right = UNBOUNDED  # p + right >= Sk - 1 for every row: no upper bound
    sink_tokens = min(max(sink_tokens, 0), seqlen_k)
    return left, right, sink_tokens


def prepare(q, k, v, *, softmax_scale, causal, window_left, window_right, sink_tokens, sink_logits,
            alibi_slopes, q_offset) -> Prepared:
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    why = supports(q.dtype, d)
    if why is not None:
        raise ValueError(f"q: {why}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"k, v: expected dtype {q.dtype}, got {k.dtype} and {v.dtype}")
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"k: expected a head count dividing Hq={hq}, got Hkv={hkv}")
    if alibi_slopes is not None and alibi_slopes.numel() not in (hq, b * hq):
        raise ValueError(f"alibi_slopes: expected shape ({hq},) or ({b}, {hq}), got {tuple(alibi_slopes.shape)}")
    if sink_logits is not None and sink_logits.numel() != hq:
        raise ValueError(f"sink_logits: expected shape ({hq},), got {tuple(sink_logits.shape)}")
    left, right, sinks = normalise_mask(sq, sk, bool(causal), int(window_left), int(window_right),
                                        int(sink_tokens), int(q_offset))
    return Prepared(
        q=_kernel_ready(q), k=_kernel_ready(k), v=_kernel_ready(v),
        sink_logits=_float_param(sink_logits, q.device),
        alibi_slopes=_float_param(alibi_slopes, q.device),
        softmax_scale=float(softmax_scale), causal=bool(causal),
        window_left=left, window_right=right, sink_tokens=sinks, q_offset=int(q_offset),
    )


def new_outputs(q: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``out`` (B, Sq, Hq, D) in q's dtype and ``lse`` (B, Hq, Sq) float32, poisoned when asked."""
    b, sq, hq, d = q.shape
    return new_output((b, sq, hq, d), q.dtype, q.device), new_output((b, hq, sq), torch.float32, q.device)


def forward(q, k, v, *, softmax_scale, causal, window_left, window_right, sink_tokens, sink_logits,
            alibi_slopes, q_offset):
    """``(out, lse)`` of flash attention; see ``pykernels.ops.attention``."""
    from . import load_extension

    _C = load_extension()
    p = prepare(q, k, v, softmax_scale=softmax_scale, causal=causal, window_left=window_left,
                window_right=window_right, sink_tokens=sink_tokens, sink_logits=sink_logits,
                alibi_slopes=alibi_slopes, q_offset=q_offset)
    out, lse = new_outputs(q)
    return _C.attention_fwd(p.q, p.k, p.v, out, lse, p.sink_logits, p.alibi_slopes, p.softmax_scale, p.causal,
                            p.window_left, p.window_right, p.sink_tokens, p.q_offset)


@dataclass(frozen=True)
class BackwardBuffers:
    """What the backward kernels read and write besides the prepared inputs (FlashBwdParams)."""

    dout: torch.Tensor
    out: torch.Tensor
    lse: torch.Tensor
    dlse: Optional[torch.Tensor]
    dq: torch.Tensor
    dk: torch.Tensor
    dv: torch.Tensor
    lse_log2: torch.Tensor  # scratch (B, Hq, Sq padded to BWD_ROW_PAD)
    delta: torch.Tensor  # scratch, same shape
    dq_accum: Optional[torch.Tensor]  # zeroed fp32 (B, Sq, Hq, D), or None for the deterministic dQ kernel
    dsink_partial: Optional[torch.Tensor]  # zeroed fp32 (B, Hq, slots) with sink logits, else None


def prepare_backward(dout, dlse, q, k, v, out, lse, *, deterministic, dsink_slots, **mask):
    """``(Prepared, BackwardBuffers)`` of one backward call; shared with the CuPy backend.

    ``dsink_slots(head_dim, seqlen_k)`` is the number of per-warp slots of the
    sink-logit gradient (the extension's or the NVRTC module's geometry).
    """
    b, sq, hq, d = q.shape
    why = supports_backward(q.dtype, d)
    if why is not None:
        raise ValueError(f"q: {why}")
    p = prepare(q, k, v, **mask)
    if dout.dtype != q.dtype:
        dout = dout.to(q.dtype)
    sq_pad = -(-sq // BWD_ROW_PAD) * BWD_ROW_PAD
    stats = dict(dtype=torch.float32, device=q.device)
    dsink_partial = None
    if p.sink_logits is not None:
        dsink_partial = torch.zeros(b, hq, dsink_slots(d, k.shape[1]), **stats)
    bufs = BackwardBuffers(
        dout=_kernel_ready(dout), out=_kernel_ready(out), lse=lse.to(torch.float32).contiguous(),
        dlse=None if dlse is None else dlse.to(device=q.device, dtype=torch.float32).contiguous(),
        dq=new_output(q.shape, q.dtype, q.device), dk=new_output(k.shape, k.dtype, k.device),
        dv=new_output(v.shape, v.dtype, v.device),
        lse_log2=torch.empty(b, hq, sq_pad, **stats), delta=torch.empty(b, hq, sq_pad, **stats),
        dq_accum=None if deterministic else torch.zeros(b, sq, hq, d, **stats),
        dsink_partial=dsink_partial,
    )
    return p, bufs


def sink_gradient(p: Prepared, bufs: BackwardBuffers, sink_logits, heads_q: int) -> torch.Tensor:
    """dsink from the kernel's per-warp slots (zeros without sink logits), in sink_logits' dtype.

    dsink_h = -sum_{b,i} exp(sink_h - lse_i) (sum_j P_ij dP_ij - dlse_i). The
    kernel leaves the first part in per-warp slots (fp32, never rounding O);
    torch sums them in a fixed order, so dsink is reproducible in both modes.
    """
    if p.sink_logits is None:
        return torch.zeros(heads_q, dtype=torch.float32, device=bufs.dq.device)
    dsink = -bufs.dsink_partial.sum(dim=(0, 2))
    if bufs.dlse is not None:  # the -dlse_i part of delta_i
        dsink = dsink + sink_logit_grad(p.sink_logits, bufs.lse, -bufs.dlse)
    return dsink.to(sink_logits.dtype)


def backward(dout, dlse, q, k, v, out, lse, *, softmax_scale, causal, window_left, window_right, sink_tokens,
             sink_logits, alibi_slopes, q_offset, deterministic=False):
    """``(dq, dk, dv, dsink)`` of flash attention; see ``pykernels.ops.attention``.

    ``deterministic=False`` accumulates dQ with fp32 atomics from the dK/dV
    kernel; ``True`` runs a separate dQ kernel instead, so that every gradient
    is bitwise reproducible. dK and dV are reduced over a GQA group inside one
    CTA in a fixed order either way, and dsink is a torch reduction of per-warp slots.
    """
    from . import load_extension

    _C = load_extension()
    p, f = prepare_backward(dout, dlse, q, k, v, out, lse, deterministic=deterministic,
                            dsink_slots=_C.attention_bwd_dsink_slots, softmax_scale=softmax_scale, causal=causal,
                            window_left=window_left, window_right=window_right, sink_tokens=sink_tokens,
                            sink_logits=sink_logits, alibi_slopes=alibi_slopes, q_offset=q_offset)
    _C.attention_bwd(f.dout, p.q, p.k, p.v, f.out, f.lse, f.dlse, f.dq, f.dk, f.dv, f.dq_accum, f.lse_log2, f.delta,
                     p.sink_logits, f.dsink_partial, p.alibi_slopes, p.softmax_scale, p.causal, p.window_left,
                     p.window_right, p.sink_tokens, p.q_offset)
    return f.dq, f.dk, f.dv, sink_gradient(p, f, sink_logits, q.shape[2])
