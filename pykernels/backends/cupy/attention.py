"""Attention forward through CuPy: the csrc/attention kernel compiled by NVRTC.

The very kernel the C++ extension runs (``csrc/attention/flash_fwd_kernel.cuh``),
compiled at first use for each (head dim, dtype, ALiBi) and launched on
``torch.cuda.current_stream()``. Input preparation, mask normalisation and
output allocation are shared with the CUDA backend
(``pykernels.backends.cuda.attention.prepare``), so both backends compute the
same function from the same numbers.

The kernel takes its ``FlashFwdParams`` by value. CuPy passes a NumPy
structured scalar as a by-value struct argument; ``_PARAMS_DTYPE`` mirrors
``csrc/attention/params.h`` field for field, the compiled source
``static_assert``s the size, and ``pk_params_layout`` reports every field offset
once per module, so a drift between the two fails loudly instead of
misreading the struct.
"""
from __future__ import annotations

import threading
from typing import Dict, Tuple

import numpy as np
import torch

from ..cuda.attention import SUPPORTED_HEAD_DIMS, new_outputs, prepare, supports  # noqa: F401
from ._compile import compile_module, current_stream

_PTRS = ("q", "k", "v", "out", "lse", "sink_logits", "alibi_slopes")
_STRIDES = ("q_batch_stride", "q_row_stride", "q_head_stride", "k_batch_stride", "k_row_stride", "k_head_stride",
            "v_batch_stride", "v_row_stride", "v_head_stride", "o_batch_stride", "o_row_stride", "o_head_stride",
            "alibi_batch_stride")
_INTS = ("batch", "seqlen_q", "seqlen_k", "heads_q", "heads_kv", "head_dim", "q_offset", "window_left",
         "window_right", "sink_tokens", "causal")
_FLOATS = ("softmax_scale", "softmax_scale_log2")
# FlashFwdParams (csrc/attention/params.h), with C alignment rules.
_PARAMS_DTYPE = np.dtype(
    [(n, np.uint64) for n in _PTRS] + [(n, np.int64) for n in _STRIDES]
    + [(n, np.int32) for n in _INTS] + [(n, np.float32) for n in _FLOATS],
    align=True,
)
LOG2E = 1.4426950408889634

# Extra NVRTC options for every module, e.g. ("-DPK_FWD_KV_STAGES=1",): a dev
# knob for kernel experiments (scripts/dev/attn_variants.py); leave empty.
EXTRA_OPTIONS: Tuple[str, ...] = ()

_lock = threading.Lock()
_kernels: Dict[tuple, tuple] = {}


def _source() -> str:
    # NVRTC has no offsetof, so the field offsets are checked at run time:
    # pk_params_layout writes them out once, and _kernel compares them with
    # _PARAMS_DTYPE before the first launch.
    offsets = " ".join(f"out[{i}] = (const char*)&p.{n} - (const char*)&p;"
                       for i, n in enumerate(_PARAMS_DTYPE.names))
    return (
        '#include "attention/flash_fwd_kernel.cuh"\n'
        "using P = pykernels::attention::FlashFwdParams;\n"
        f"static_assert(sizeof(P) == {_PARAMS_DTYPE.itemsize}, \"FlashFwdParams changed size: update _PARAMS_DTYPE\");\n"
        f'extern "C" __global__ void pk_params_layout(long long* out) {{ P p; {offsets} }}\n'
        "template <int D> struct Shape { using Tr = typename pykernels::attention::FwdTileShape<D>::type; };\n"
        # The launch geometry, read back by the host, so that no tile size is
        # written down twice.
        'extern "C" __device__ int pk_fwd_geometry[3] = {Shape<PK_HEAD_DIM>::Tr::kBlockM, '
        "Shape<PK_HEAD_DIM>::Tr::kNThreads, Shape<PK_HEAD_DIM>::Tr::kSmemBytes};\n"
    )


def _check_layout(mod) -> None:
    import cupy as cp

    names = _PARAMS_DTYPE.names
    got = cp.zeros(len(names), dtype=cp.int64)
    mod.get_function("pk_params_layout")((1,), (1,), (got,))
    got = got.get().tolist()
    want = [_PARAMS_DTYPE.fields[n][1] for n in names]
    if got != want:
        bad = [n for n, g, w in zip(names, got, want) if g != w]
        raise RuntimeError(f"FlashFwdParams (csrc/attention/params.h) and _PARAMS_DTYPE disagree on {bad}")


def _kernel(head_dim: int, is_bf16: bool, has_alibi: bool, device: int):
    """(kernel, block_m, threads, smem_bytes) for one instantiation, compiled once per device."""
    key = (device, head_dim, is_bf16, has_alibi, EXTRA_OPTIONS)
    with _lock:
        hit = _kernels.get(key)
    if hit is not None:
        return hit
    import cupy as cp

    name = (f"pykernels::attention::flash_fwd_kernel<{head_dim}, {'true' if is_bf16 else 'false'}, "
            f"{'true' if has_alibi else 'false'}>")
    mod = compile_module(_source(), [name], options=(f"-DPK_HEAD_DIM={head_dim}", *EXTRA_OPTIONS), device=device)
    with cp.cuda.Device(device):
        _check_layout(mod)
        geom = cp.ndarray((3,), cp.int32, mod.get_global("pk_fwd_geometry")).get()
        kern = mod.get_function(name)
        block_m, threads, smem = (int(x) for x in geom)
        if smem > 48 * 1024:
            kern.max_dynamic_shared_size_bytes = smem
    hit = (kern, block_m, threads, smem)
    with _lock:
        _kernels[key] = hit
    return hit


def _ptr(t) -> int:
    return 0 if t is None else t.data_ptr()


def _params(p, out: torch.Tensor, lse: torch.Tensor) -> np.void:
    """The FlashFwdParams of one call, built in one go (this runs on every launch)."""
    q, k, v = p.q, p.k, p.v
    b, sq, hq, d = q.shape
    slopes = p.alibi_slopes
    values = (
        q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr(), _ptr(p.sink_logits), _ptr(slopes),
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        hq if (slopes is not None and slopes.numel() == b * hq) else 0,
        b, sq, k.shape[1], hq, k.shape[2], d, p.q_offset, p.window_left, p.window_right, p.sink_tokens, int(p.causal),
        p.softmax_scale, p.softmax_scale * LOG2E,
    )
    return np.array([values], dtype=_PARAMS_DTYPE)[0]


def cp_current_device() -> int:
    import cupy as cp

    return cp.cuda.runtime.getDevice()


def forward(q, k, v, *, softmax_scale, causal, window_left, window_right, sink_tokens, sink_logits,
            alibi_slopes, q_offset):
    """``(out, lse)`` of flash attention; see ``pykernels.ops.attention``."""
    p = prepare(q, k, v, softmax_scale=softmax_scale, causal=causal, window_left=window_left,
                window_right=window_right, sink_tokens=sink_tokens, sink_logits=sink_logits,
                alibi_slopes=alibi_slopes, q_offset=q_offset)
    out, lse = new_outputs(q)
    b, sq, hq, d = q.shape
    if b * sq * hq == 0:
        return out, lse
    # ALiBi is a compile-time flag; a non-positive scale also takes that path
    # (it scales scores before the row max), as in flash_fwd_launch.cuh.
    has_alibi = p.alibi_slopes is not None or not p.softmax_scale > 0
    device = q.device.index if q.device.index is not None else torch.cuda.current_device()
    kern, block_m, threads, smem = _kernel(d, q.dtype == torch.bfloat16, has_alibi, device)
    grid = (b * hq, (sq + block_m - 1) // block_m, 1)
    args = (_params(p, out, lse),)
    with current_stream(q.device):
        if device == cp_current_device():
            kern(grid, (threads, 1, 1), args, shared_mem=smem)
        else:
            with torch.cuda.device(device):
                kern(grid, (threads, 1, 1), args, shared_mem=smem)
    return out, lse
