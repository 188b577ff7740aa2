"""``pykernels::attention_fwd`` and ``pykernels::attention_bwd``.

Inputs are (B, S, H, D) with a contiguous last dimension; masks are given as
(causal, window_left, window_right, sink_tokens, q_offset) exactly as
``pykernels.masks.MaskSpec`` reads them. ``backend`` is a backend name or ""
for the fastest one that can run the call (``pykernels.backends.resolve``).

``lse`` is float32 (float64 when the inputs are float64, which only the torch
backend accepts: it lets tests check the backward in float64).
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import backends


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _mask_kwargs(softmax_scale, causal, window_left, window_right, sink_tokens, sink_logits, alibi_slopes, q_offset):
    return dict(
        softmax_scale=softmax_scale, causal=causal, window_left=window_left, window_right=window_right,
        sink_tokens=sink_tokens, sink_logits=sink_logits, alibi_slopes=alibi_slopes, q_offset=q_offset,
    )


@torch.library.custom_op("pykernels::attention_fwd", mutates_args=(), device_types=("cpu", "cuda"))
def attention_fwd(
    q: Tensor, k: Tensor, v: Tensor, sink_logits: Optional[Tensor], alibi_slopes: Optional[Tensor],
    softmax_scale: float, causal: bool, window_left: int, window_right: int, sink_tokens: int,
    q_offset: int, deterministic: bool, backend: str,
) -> Tuple[Tensor, Tensor]:
    name, _ = backends.resolve("attention_fwd", backend or None, q.device, q.dtype, q.shape[-1])
    return backends.op_module(name, "attention").forward(
        q, k, v, **_mask_kwargs(softmax_scale, causal, window_left, window_right, sink_tokens, sink_logits, alibi_slopes, q_offset)
    )


@attention_fwd.register_fake
def _attention_fwd_fake(q, k, v, sink_logits, alibi_slopes, softmax_scale, causal, window_left, window_right,
                        sink_tokens, q_offset, deterministic, backend):
    b, sq, hq, _ = q.shape
    return q.new_empty(q.shape), q.new_empty((b, hq, sq), dtype=_lse_dtype(q.dtype))


_warned_fallback = set()


def _backward_backend(backend: str, device, dtype, head_dim):
    """The forward's backend if it has a backward, else the fastest one that does (with a warning).

    The forward's backend is the one asked for by name or by PYKERNELS_BACKEND;
    only the automatic choice has nothing to fall back from.
    """
    requested = backends.requested(backend or None)
    try:
        return backends.resolve("attention_bwd", requested, device, dtype, head_dim)
    except ValueError as exc:
        if requested is None:
            raise
        name, mod = backends.resolve("attention_bwd", None, device, dtype, head_dim, use_env=False)
        if requested not in _warned_fallback:
            _warned_fallback.add(requested)
            warnings.warn(f"pykernels: {exc}; the backward runs on the {name!r} backend instead", stacklevel=3)
        return name, mod


@torch.library.custom_op("pykernels::attention_bwd", mutates_args=(), device_types=("cpu", "cuda"))
def attention_bwd(
    dout: Tensor, dlse: Optional[Tensor], q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
    sink_logits: Optional[Tensor], alibi_slopes: Optional[Tensor], softmax_scale: float, causal: bool,
    window_left: int, window_right: int, sink_tokens: int, q_offset: int, deterministic: bool, backend: str,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    name, _ = _backward_backend(backend, q.device, q.dtype, q.shape[-1])
    return backends.op_module(name, "attention").backward(
        dout, dlse, q, k, v, out, lse, deterministic=deterministic,
        **_mask_kwargs(softmax_scale, causal, window_left, window_right, sink_tokens, sink_logits, alibi_slopes, q_offset),
    )


@attention_bwd.register_fake
def _attention_bwd_fake(dout, dlse, q, k, v, out, lse, sink_logits, alibi_slopes, softmax_scale, causal,
                        window_left, window_right, sink_tokens, q_offset, deterministic, backend):
    hq = q.shape[2]
    sink_dtype = sink_logits.dtype if sink_logits is not None else torch.float32
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), q.new_empty((hq,), dtype=sink_dtype)


def _setup_context(ctx, inputs, output):
    (q, k, v, sink_logits, alibi_slopes, softmax_scale, causal, window_left, window_right,
     sink_tokens, q_offset, deterministic, backend) = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, sink_logits, alibi_slopes)
    ctx.args = (softmax_scale, causal, window_left, window_right, sink_tokens, q_offset, deterministic, backend)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, sink_logits, alibi_slopes = ctx.saved_tensors
    softmax_scale, causal, window_left, window_right, sink_tokens, q_offset, deterministic, backend = ctx.args
    if dout is None:
        dout = torch.zeros_like(out)
    dq, dk, dv, dsink = torch.ops.pykernels.attention_bwd(
        dout, dlse, q, k, v, out, lse, sink_logits, alibi_slopes, softmax_scale, causal,
        window_left, window_right, sink_tokens, q_offset, deterministic, backend,
    )
    dsink = dsink if (sink_logits is not None and ctx.needs_input_grad[3]) else None
    return dq, dk, dv, dsink, None, None, None, None, None, None, None, None, None


attention_fwd.register_autograd(_backward, setup_context=_setup_context)
