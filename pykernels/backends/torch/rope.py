"""Rotary embedding in plain PyTorch: the readable baseline and the CPU path.

Every backend's ``rope.py`` exposes the same function, which
``pykernels.ops.rope`` calls with arguments already validated and normalised::

    apply_rotary(q, k, cos, sin, positions, offset, q_out, k_out, *, interleaved, conjugate) -> None

* ``q`` (B, S, Hq, D) and ``k`` (B, S, Hk, D) or None: views whose last dim is
  contiguous (other strides arbitrary); fp16 / bf16 / fp32 (fp64 here only).
* ``cos``, ``sin``: (cache_len, R/2) tables indexed by position, float32
  (float64 when q is float64); R = 2 * cos.shape[1] <= D.
* ``positions``: None, a (B,) int64 tensor of per-batch offsets, or a (B, S)
  int64 tensor of position ids (possibly with stride 0 in B). The position of
  token (b, s) is ``offset + s`` / ``offset + s + positions[b]`` /
  ``offset + positions[b, s]``.
* ``q_out``, ``k_out``: where to write, shaped like q and k, last dim
  contiguous. ``q_out is q`` means in place: only the first R features are
  written. Otherwise features R..D-1 are copied through.
* Pair i is (x[i], x[i + R/2]) (GPT-NeoX) or (x[2i], x[2i+1]) (interleaved)
  and turns by +theta, or by -theta with ``conjugate``; math in float32
  (float64 for float64 inputs).
* A position outside [0, cache_len) reads nothing and yields NaN in the
  rotated features of its row (the public API rejects such positions when it
  can see them without a device sync).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def _token_positions(b: int, s: int, positions: Optional[Tensor], offset: int, device) -> Tensor:
    """(B or 1, S) int64 positions of every token."""
    seq = torch.arange(s, device=device, dtype=torch.int64)[None, :]
    if positions is None:
        return seq + offset
    if positions.dim() == 1:
        return seq + positions[:, None] + offset
    return positions + offset


def _tables(cos: Tensor, sin: Tensor, pos: Tensor, dtype: torch.dtype, conjugate: bool):
    """cos/sin at every token, (B or 1, S, 1, R/2) in the math dtype; NaN where pos is off the table."""
    inside = (pos >= 0) & (pos < cos.shape[0])
    idx = pos.clamp(0, cos.shape[0] - 1)
    nan = torch.tensor(float("nan"), dtype=dtype, device=cos.device)
    # torch.where, not a check: testing `inside` on the host would sync the GPU.
    c = torch.where(inside[..., None], cos[idx].to(dtype), nan)
    s = torch.where(inside[..., None], sin[idx].to(dtype), nan)
    if conjugate:
        s = -s
    return c.unsqueeze(-2), s.unsqueeze(-2)


def _rotate(x: Tensor, c: Tensor, s: Tensor, interleaved: bool) -> Tensor:
    """The first R features of x rotated, in c's dtype."""
    half = c.shape[-1]
    xr = x[..., : 2 * half].to(c.dtype)
    if interleaved:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
        return torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).flatten(-2)
    x1, x2 = xr[..., :half], xr[..., half:]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


def apply_rotary(q, k, cos, sin, positions, offset, q_out, k_out, *, interleaved, conjugate) -> None:
    math_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    b, s = q.shape[:2]
    pos = _token_positions(b, s, positions, offset, q.device)
    c, sn = _tables(cos, sin, pos, math_dtype, conjugate)
    rot = 2 * cos.shape[-1]
    for x, out in ((q, q_out), (k, k_out)):
        if x is None:
            continue
        y = _rotate(x, c, sn, interleaved).to(out.dtype)
        in_place = out.data_ptr() == x.data_ptr() and out.stride() == x.stride()
        if not in_place and rot < x.shape[-1]:
            out[..., rot:] = x[..., rot:]
        out[..., :rot] = y
