"""Rotary position embedding written with numba-cuda.

Same contract as ``pykernels/backends/torch/rope.py``::

    apply_rotary(q, k, cos, sin, positions, offset, q_out, k_out, *, interleaved, conjugate) -> None

Token (b, s) at position ``pos`` turns each feature pair (x1, x2) by the
angle theta whose cosine and sine are ``cos[pos, i]``, ``sin[pos, i]``::

    y1 = x1 cos - x2 sin
    y2 = x2 cos + x1 sin         (sin -> -sin for the conjugate, i.e. -theta)

Pair i is (x[i], x[i + R/2]) for GPT-NeoX and (x[2i], x[2i + 1]) when
interleaved. Rotation is elementwise and memory bound, so the kernel is one
thread per pair, with no shared memory: consecutive threads take consecutive
pairs of a row, which keeps the loads coalesced.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from numba import cuda, types

from ._interop import array_type, converters, kernel_array, launch_stream, storage

THREADS = 256
NAN = np.float32(np.nan)


@functools.lru_cache(maxsize=None)
def _rope_kernel(in_storage: str, out_storage: str):
    to_f32, _ = converters(in_storage)
    _, from_f32 = converters(out_storage)
    table = array_type("float32", 2)
    # One compilation per dtype, whatever the strides (see _interop.array_type).
    signature = types.void(array_type(in_storage, 4), array_type(out_storage, 4), table, table,
                           array_type("int64", 2), types.int64, types.int64, types.boolean, types.boolean,
                           types.int64, types.int64)

    @cuda.jit(signature)
    def rotary(x, out, cos, sin, pos_table, pos_step, offset, interleaved, conjugate, n_pairs, n_copy):
        # Thread idx serves feature slot f of row (b, s, h): slots [0, n_pairs)
        # rotate a pair, slots [n_pairs, n_pairs + n_copy) copy a feature past
        # the rotary dim (only when writing out of place).
        slots = n_pairs + n_copy
        idx = cuda.grid(1)
        n_b, n_s, n_h = x.shape[0], x.shape[1], x.shape[2]
        if idx >= n_b * n_s * n_h * slots:
            return
        f = idx % slots
        row = idx // slots
        h = row % n_h
        s = (row // n_h) % n_s
        b = row // (n_h * n_s)

        if f >= n_pairs:
            d = 2 * n_pairs + (f - n_pairs)
            out[b, s, h, d] = from_f32(to_f32(x[b, s, h, d]))
            return

        # The position of token (b, s): offset + s + per-batch offset, or
        # offset + a position id; the host folds both into pos_table and pos_step.
        pos = offset + pos_step * s + pos_table[b, s]
        c = NAN
        sn = NAN
        if pos >= 0 and pos < cos.shape[0]:  # off the table: NaN, never a stray read
            c = cos[pos, f]
            sn = sin[pos, f]
        if conjugate:
            sn = -sn

        i1 = 2 * f if interleaved else f
        i2 = 2 * f + 1 if interleaved else f + n_pairs
        x1 = to_f32(x[b, s, h, i1])
        x2 = to_f32(x[b, s, h, i2])
        out[b, s, h, i1] = from_f32(x1 * c - x2 * sn)
        out[b, s, h, i2] = from_f32(x2 * c + x1 * sn)

    return rotary


def _position_table(positions, b: int, s: int, device):
    """(pos_table, pos_step) with position(b, s) = offset + pos_step * s + pos_table[b, s].

    Broadcast views (stride 0), so nothing the size of (B, S) is allocated.
    """
    if positions is None:
        return torch.zeros(1, 1, dtype=torch.int64, device=device).expand(b, s), 1
    if positions.dim() == 1:
        return positions.to(torch.int64)[:, None].expand(b, s), 1
    return positions.to(torch.int64).expand(b, s), 0


def apply_rotary(q, k, cos, sin, positions, offset, q_out, k_out, *, interleaved, conjugate) -> None:
    b, s = q.shape[:2]
    n_pairs = cos.shape[-1]
    table, step = _position_table(positions, b, s, q.device)
    cos32 = cos.to(torch.float32)
    sin32 = sin.to(torch.float32)
    with launch_stream(q.device) as stream:
        tables = (kernel_array(cos32), kernel_array(sin32), kernel_array(table))
        for x, out in ((q, q_out), (k, k_out)):
            if x is None:
                continue
            in_place = out.data_ptr() == x.data_ptr() and out.stride() == x.stride()
            n_copy = 0 if in_place else x.shape[-1] - 2 * n_pairs
            n = x.shape[0] * x.shape[1] * x.shape[2] * (n_pairs + n_copy)
            if n == 0:
                continue
            kernel = _rope_kernel(storage(x.dtype), storage(out.dtype))
            kernel[-(-n // THREADS), THREADS, stream](
                kernel_array(x), kernel_array(out), *tables, step, int(offset),
                bool(interleaved), bool(conjugate), n_pairs, n_copy,
            )

