"""``pykernels::rotary`` (out of place, differentiable) and ``pykernels::rotary_`` (in place).

Both rotate q and, when given, k in one call, with the arguments already
normalised by ``pykernels.rope`` (the public functions validate):

* q, k: (B, S, H, D) views with a contiguous last dimension; k may have its
  own head count, and is optional (``None``);
* cos, sin: (cache_len, R/2) tables, float32 (float64 when q is float64),
  indexed by position; R <= D is the rotary dim;
* positions: ``None``, (B,) int64 per-batch offsets or (B, S) int64
  position ids; ``offset`` is added to every position (see
  ``pykernels.rope.apply_rotary``);
* backend: a backend name, or "" for the fastest that can run the call.

The out-of-place op returns ``(q_out, k_out)`` laid out like ``torch.empty_like``
of the inputs; ``k_out`` is an empty tensor when k is None. Its backward is
the conjugate rotation of the incoming gradients, itself this op.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import backends
from .._debug import poisoning


def _new_like(x: Tensor) -> Tensor:
    out = torch.empty_like(x)
    if poisoning():
        out.fill_(float("nan"))
    return out


def _run(q, k, cos, sin, positions, offset, q_out, k_out, interleaved, conjugate, backend):
    name, _ = backends.resolve("rope", backend or None, q.device, q.dtype, q.shape[-1])
    backends.op_module(name, "rope").apply_rotary(
        q, k, cos, sin, positions, offset, q_out, k_out, interleaved=interleaved, conjugate=conjugate,
    )


@torch.library.custom_op("pykernels::rotary", mutates_args=(), device_types=("cpu", "cuda"))
def rotary(
    q: Tensor, k: Optional[Tensor], cos: Tensor, sin: Tensor, positions: Optional[Tensor], offset: int,
    interleaved: bool, conjugate: bool, backend: str,
) -> Tuple[Tensor, Tensor]:
    q_out = _new_like(q)
    k_out = _new_like(k) if k is not None else q.new_empty(0)
    _run(q, k, cos, sin, positions, offset, q_out, k_out if k is not None else None, interleaved, conjugate, backend)
    return q_out, k_out


@rotary.register_fake
def _rotary_fake(q, k, cos, sin, positions, offset, interleaved, conjugate, backend):
    return torch.empty_like(q), (torch.empty_like(k) if k is not None else q.new_empty(0))


def _setup_context(ctx, inputs, output):
    q, k, cos, sin, positions, offset, interleaved, conjugate, backend = inputs
    ctx.save_for_backward(cos, sin, positions)
    ctx.q_meta = (q.shape, q.dtype, q.device)
    ctx.k_meta = (k.shape, k.dtype, k.device) if k is not None else None
    ctx.args = (offset, interleaved, conjugate, backend)


def _readable(g: Optional[Tensor], meta) -> Tensor:
    """A gradient the kernels can read: materialised, with a contiguous last dim."""
    shape, dtype, device = meta
    if g is None:
        return torch.zeros(shape, dtype=dtype, device=device)
    return g if g.stride(-1) == 1 or g.shape[-1] == 1 else g.contiguous()


def _backward(ctx, dq_out, dk_out):
    # The rotation R(theta) is orthogonal, so the gradient of R(theta) x is R(-theta) dy.
    cos, sin, positions = ctx.saved_tensors
    offset, interleaved, conjugate, backend = ctx.args
    dq = _readable(dq_out, ctx.q_meta)
    dk = _readable(dk_out, ctx.k_meta) if ctx.k_meta is not None else None
    gq, gk = torch.ops.pykernels.rotary(dq, dk, cos, sin, positions, offset, interleaved, not conjugate, backend)
    return gq, (gk if dk is not None else None), None, None, None, None, None, None, None


rotary.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("pykernels::rotary_", mutates_args=("q", "k"), device_types=("cpu", "cuda"))
def rotary_(
    q: Tensor, k: Optional[Tensor], cos: Tensor, sin: Tensor, positions: Optional[Tensor], offset: int,
    interleaved: bool, conjugate: bool, backend: str,
) -> None:
    _run(q, k, cos, sin, positions, offset, q, k, interleaved, conjugate, backend)


@rotary_.register_fake
def _rotary_inplace_fake(q, k, cos, sin, positions, offset, interleaved, conjugate, backend):
    return None
