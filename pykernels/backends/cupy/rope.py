"""Rotary embedding through CuPy: csrc/rope/rotary.cuh compiled by NVRTC at first use.

Same interface as ``pykernels/backends/torch/rope.py`` (see its docstring),
and the very kernel the C++ extension runs. This file makes the launcher's
choices in Python, following ``csrc/rope/rotary_launch.cu``: the 16-byte
vector width when pointers, strides and sizes allow it (else one element),
and rotary.cuh's ``rotary_grid`` (:func:`grid`), whose constants
(``kThreads``, ``kTargetBlocks``, ``kMinRowsPerChunk``) are read back from the
compiled module rather than written down twice.

The kernel takes flat arguments; each is wrapped in the NumPy scalar type of
its C parameter (pointers as uint64, ``index_t`` as int64, ``int`` as int32,
``float`` as float32), since CuPy passes an argument by its own type.
Launches go on ``torch.cuda.current_stream()``.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch

from ._compile import LaunchScope, cached, compile_module, read_ints

VECTOR_BYTES = 16
_CTYPES = {torch.float16: "__half", torch.bfloat16: "__nv_bfloat16", torch.float32: "float"}



def _name(ctype: str, vec: int, interleaved: bool, freqs_in_kernel: bool) -> str:
    flags = ", ".join("true" if f else "false" for f in (interleaved, freqs_in_kernel))
    return f"pykernels::rope::rotary_kernel<{ctype}, {vec}, {flags}>"


def kernel_names(dtype: torch.dtype) -> List[str]:
    """Every instantiation one dtype's module holds: vector width, layout, table or in-kernel angles."""
    ctype = _CTYPES[dtype]
    wide = VECTOR_BYTES // torch.empty((), dtype=dtype).element_size()
    return [_name(ctype, vec, inter, freqs) for vec in (wide, 1) for inter in (False, True) for freqs in (False, True)]


def source() -> str:
    return (
        '#include "rope/rotary.cuh"\n'
        'extern "C" __device__ int pk_rope_geometry[3] = '
        "{pykernels::rope::kThreads, pykernels::rope::kTargetBlocks, pykernels::rope::kMinRowsPerChunk};\n"
    )


def _module(device: int, dtype: torch.dtype):
    """(module, geometry) with every instantiation for dtype, compiled once per device.

    geometry is (kThreads, kTargetBlocks, kMinRowsPerChunk) of rotary.cuh.
    """

    def build():
        import cupy as cp

        mod = compile_module(source(), kernel_names(dtype), device=device)
        with cp.cuda.Device(device):
            return mod, read_ints(mod, "pk_rope_geometry", 3)

    return cached(("rope", device, dtype), build)


def _aligned(t: torch.Tensor) -> bool:
    return t.data_ptr() % VECTOR_BYTES == 0


def _rows_ok(x: torch.Tensor, out: torch.Tensor, vec: int) -> bool:
    # A stride matters only when its dim has more than one index.
    for t in (x, out):
        if not _aligned(t) or any(n > 1 and st % vec for n, st in zip(t.shape[:3], t.stride()[:3])):
            return False
    return True


def _vector_width(q, k, q_out, k_out, table, sin, rot_half: int) -> int:
    """rotary_launch.cu's rotary_vector_width, for the same arguments."""
    vec = VECTOR_BYTES // q.element_size()
    ok = rot_half % vec == 0 and q.shape[-1] % vec == 0 and _rows_ok(q, q_out, vec)
    ok = ok and (k is None or _rows_ok(k, k_out, vec)) and _aligned(table)
    if sin is not None:  # the cos/sin table is read as float4
        ok = ok and _aligned(sin) and table.stride(0) % 4 == 0
    return vec if ok else 1


def grid(items_per_row: int, rows: int, n_tokens: int, geometry: Tuple[int, int, int]) -> Tuple[int, int, int, int]:
    """rotary.cuh's ``rotary_grid``: ``(tokens_per_block, rows_per_chunk, blocks_x, blocks_y)``."""
    threads, target_blocks, min_rows = geometry
    head_lanes = 1 if items_per_row >= 32 else 32 // items_per_row  # rotary_head_lanes
    token_lanes = min(items_per_row * head_lanes, threads)  # rotary_token_lanes
    tokens_per_block = threads // token_lanes
    blocks_x = -(-n_tokens // tokens_per_block)
    chunks = min(-(-target_blocks // blocks_x), max(1, rows // min_rows))
    rows_per_chunk = -(-rows // chunks)
    return tokens_per_block, rows_per_chunk, blocks_x, -(-rows // rows_per_chunk)


def _plan(q, k, table, sin, scale, positions, offset, q_out, k_out, conjugate,
          geometry: Tuple[int, int, int]) -> Tuple[int, Tuple[int, int], tuple]:
    """``(vector width, (blocks_x, blocks_y), kernel arguments)``: what rotary_launch.cu decides, for CuPy."""
    b, s, hq, d = q.shape
    n_tokens = b * s
    rot_half = table.shape[-1]
    vec = _vector_width(q, k, q_out, k_out, table, sin, rot_half)
    in_place = q_out.data_ptr() == q.data_ptr()
    tail_vecs = 0 if in_place else (d - 2 * rot_half) // vec
    hk = k.shape[2] if k is not None else 0
    tokens_per_block, rows_per_chunk, blocks_x, blocks_y = grid(rot_half // vec + tail_vecs, hq + hk, n_tokens,
                                                                geometry)

    i64, i32, ptr = np.int64, np.int32, np.uint64

    def rows(x, out, heads):
        return (ptr(x.data_ptr()), ptr(out.data_ptr()), *(i64(v) for v in x.stride()[:3]),
                *(i64(v) for v in out.stride()[:3]), i32(heads))

    # An absent k gets q's pointers and no heads: nothing reads them.
    k_rows = rows(k, k_out, hk) if k is not None else rows(q, q_out, 0)
    if positions is None:
        ids = (ptr(0), i64(0), i64(0), i32(1))
    elif positions.dim() == 1:  # per-batch offsets: p = offset + s + ids[b]
        ids = (ptr(positions.data_ptr()), i64(positions.stride(0)), i64(0), i32(1))
    else:  # position ids: p = offset + ids[b, s]
        ids = (ptr(positions.data_ptr()), i64(positions.stride(0)), i64(positions.stride(1)), i32(0))
    if sin is None:  # cos/sin computed in the kernel from inv_freq
        table_args = (ptr(table.data_ptr()), ptr(0), i64(0), i64(0), np.float32(scale))
    else:
        table_args = (ptr(table.data_ptr()), ptr(sin.data_ptr()), i64(table.stride(0)), i64(table.shape[0]),
                      np.float32(1.0))
    args = (*rows(q, q_out, hq), *k_rows, *table_args, *ids, i64(offset), i64(n_tokens), i32(s), i32(rot_half),
            i32(tail_vecs), i32(1 if conjugate else 0), i32(tokens_per_block), i32(rows_per_chunk))
    return vec, (blocks_x, blocks_y), args


def _launch(q, k, table, sin, scale, positions, offset, q_out, k_out, interleaved, conjugate) -> None:
    heads = q.shape[2] + (k.shape[2] if k is not None else 0)
    if q.shape[0] * q.shape[1] * heads == 0:
        return
    device = q.device.index if q.device.index is not None else torch.cuda.current_device()
    mod, geometry = _module(device, q.dtype)
    vec, blocks, args = _plan(q, k, table, sin, scale, positions, offset, q_out, k_out, conjugate, geometry)
    kern = mod.get_function(_name(_CTYPES[q.dtype], vec, interleaved, sin is None))
    with LaunchScope(device):
        kern((*blocks, 1), (geometry[0], 1, 1), args)


def apply_rotary(q, k, cos, sin, positions, offset, q_out, k_out, *, interleaved, conjugate) -> None:
    _launch(q, k, cos, sin, 1.0, positions, offset, q_out, k_out, interleaved, conjugate)


def apply_rotary_freqs(q, k, inv_freq, scale, positions, offset, q_out, k_out, *, interleaved, conjugate) -> None:
    """As ``apply_rotary``, with cos/sin = (cos, sin)(position * inv_freq) * scale computed in the kernel."""
    _launch(q, k, inv_freq, None, scale, positions, offset, q_out, k_out, interleaved, conjugate)
