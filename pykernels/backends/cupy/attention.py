"""Attention forward and backward through CuPy: the csrc/attention kernels compiled by NVRTC.

The very kernels the C++ extension runs (``csrc/attention/flash_fwd_kernel.cuh``
and ``flash_bwd_kernel.cuh``), compiled at first use for each (head dim, dtype,
ALiBi for the forward) and launched on ``torch.cuda.current_stream()``. Input
preparation, mask normalisation, output and scratch allocation and the
sink-logit reduction are shared with the CUDA backend
(``pykernels.backends.cuda.attention``: ``prepare``, ``prepare_backward``,
``sink_gradient``), so both backends compute the same function from the same
numbers. The backward's launch sequence mirrors ``flash_bwd_launch.cuh``.

The kernels take their ``FlashFwdParams`` / ``FlashBwdParams`` by value. CuPy
passes a NumPy structured scalar as a by-value struct argument;
``_PARAMS_DTYPE`` and ``_BWD_PARAMS_DTYPE`` mirror ``csrc/attention/params.h``
and ``flash_bwd.h`` field for field, the compiled source ``static_assert``s the
sizes, and ``pk_*_layout`` kernels report every field offset once per module,
so a drift between the two fails loudly instead of misreading the struct.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch

from ..cuda.attention import (  # noqa: F401
    BWD_ROW_PAD, SUPPORTED_BWD_HEAD_DIMS, SUPPORTED_HEAD_DIMS, new_outputs, prepare, prepare_backward, sink_gradient, supports,
    supports_backward,
)
from ._compile import LaunchScope, allow_smem, cached, compile_module, read_ints

_PTRS = ("q", "k", "v", "out", "lse", "sink_logits", "alibi_slopes")
_STRIDES = ("q_batch_stride", "q_row_stride", "q_head_stride", "k_batch_stride", "k_row_stride", "k_head_stride",
            "v_batch_stride", "v_row_stride", "v_head_stride", "o_batch_stride", "o_row_stride", "o_head_stride",
            "alibi_batch_stride")
_INTS = ("batch", "seqlen_q", "seqlen_k", "heads_q", "heads_kv", "head_dim", "q_offset", "window_left",
         "window_right", "sink_tokens", "causal")
_FLOATS = ("softmax_scale", "softmax_scale_log2")
# FlashFwdParams (csrc/attention/params.h), with C alignment rules.
# tile_counter, last, is the Hopper kernel's scratch: the NVRTC kernels leave it null.
_PARAMS_DTYPE = np.dtype(
    [(n, np.uint64) for n in _PTRS] + [(n, np.int64) for n in _STRIDES]
    + [(n, np.int32) for n in _INTS] + [(n, np.float32) for n in _FLOATS] + [("tile_counter", np.uint64)],
    align=True,
)
# FlashBwdParams (csrc/attention/flash_bwd.h) extends FlashFwdParams; the base
# is a plain struct, so its fields come first and the derived ones start at
# the next 8-byte boundary, which align=True reproduces for the flat list.
_BWD_PTRS = ("dout", "dlse", "lse_log2", "delta", "dq_accum", "dq", "dk", "dv", "dsink_partial")
_BWD_STRIDES = ("do_batch_stride", "do_row_stride", "do_head_stride", "dq_batch_stride", "dq_row_stride",
                "dq_head_stride", "dk_batch_stride", "dk_row_stride", "dk_head_stride", "dv_batch_stride",
                "dv_row_stride", "dv_head_stride")
_BWD_PARAMS_DTYPE = np.dtype(
    [(n, _PARAMS_DTYPE.fields[n][0]) for n in _PARAMS_DTYPE.names]
    + [(n, np.uint64) for n in _BWD_PTRS] + [(n, np.int64) for n in _BWD_STRIDES] + [("seqlen_q_pad", np.int32)],
    align=True,
)
LOG2E = 1.4426950408889634

# Extra NVRTC options for every module, e.g. ("-DPK_FWD_KV_STAGES=1",): a dev
# knob for kernel experiments (scripts/dev/attn_variants.py); leave empty.
EXTRA_OPTIONS: Tuple[str, ...] = ()



def _layout_kernel(name: str, struct: str, dtype: np.dtype) -> str:
    # NVRTC has no offsetof, so the field offsets are checked at run time: the
    # kernel writes them out once, and _check_layout compares them with dtype.
    offsets = " ".join(f"out[{i}] = (const char*)&p.{n} - (const char*)&p;" for i, n in enumerate(dtype.names))
    return (f"static_assert(sizeof({struct}) == {dtype.itemsize}, \"{struct} changed size: update the dtype\");\n"
            f'extern "C" __global__ void {name}(long long* out) {{ {struct} p; {offsets} }}\n')


def fwd_source() -> str:
    return (
        '#include "attention/flash_fwd_kernel.cuh"\n'
        + _layout_kernel("pk_params_layout", "pykernels::attention::FlashFwdParams", _PARAMS_DTYPE)
        + "template <int D> struct Shape { using Tr = typename pykernels::attention::FwdTileShape<D>::type; };\n"
        # The launch geometry, read back by the host, so that no tile size is
        # written down twice.
        'extern "C" __device__ int pk_fwd_geometry[3] = {Shape<PK_HEAD_DIM>::Tr::kBlockM, '
        "Shape<PK_HEAD_DIM>::Tr::kNThreads, Shape<PK_HEAD_DIM>::Tr::kSmemBytes};\n"
    )


def _check_layout(mod, name: str, dtype: np.dtype) -> None:
    import cupy as cp

    names = dtype.names
    got = cp.zeros(len(names), dtype=cp.int64)
    mod.get_function(name)((1,), (1,), (got,))
    got = got.get().tolist()
    want = [dtype.fields[n][1] for n in names]
    if got != want:
        bad = [n for n, g, w in zip(names, got, want) if g != w]
        raise RuntimeError(f"{name}: the C++ parameter struct and its NumPy mirror disagree on {bad}")


def _cpp_bool(x: bool) -> str:
    return "true" if x else "false"


def kernel_options(head_dim: int) -> Tuple[str, ...]:
    """The NVRTC options of one head dim's modules (before module_options adds the common ones)."""
    return (f"-DPK_HEAD_DIM={head_dim}", *EXTRA_OPTIONS)


def fwd_kernel_name(head_dim: int, is_bf16: bool, has_alibi: bool) -> str:
    return f"pykernels::attention::flash_fwd_kernel<{head_dim}, {_cpp_bool(is_bf16)}, {_cpp_bool(has_alibi)}>"


def _device_of(t: torch.Tensor) -> int:
    return t.device.index if t.device.index is not None else torch.cuda.current_device()


def _kernel(head_dim: int, is_bf16: bool, has_alibi: bool, device: int):
    """(kernel, block_m, threads, smem_bytes) for one instantiation, compiled once per device."""

    def build():
        import cupy as cp

        name = fwd_kernel_name(head_dim, is_bf16, has_alibi)
        mod = compile_module(fwd_source(), [name], options=kernel_options(head_dim), device=device)
        with cp.cuda.Device(device):
            _check_layout(mod, "pk_params_layout", _PARAMS_DTYPE)
            block_m, threads, smem = read_ints(mod, "pk_fwd_geometry", 3)
            kern = mod.get_function(name)
            allow_smem(kern, smem)
        return kern, block_m, threads, smem

    return cached(("attention_fwd", device, head_dim, is_bf16, has_alibi, EXTRA_OPTIONS), build)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _ptr(t) -> int:
    return 0 if t is None else t.data_ptr()


def _fwd_values(p, out: torch.Tensor, lse: torch.Tensor) -> tuple:
    """The FlashFwdParams fields of one call, in _PARAMS_DTYPE's order."""
    q, k, v = p.q, p.k, p.v
    b, sq, hq, d = q.shape
    slopes = p.alibi_slopes
    return (
        q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr(), _ptr(p.sink_logits), _ptr(slopes),
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        hq if (slopes is not None and slopes.numel() == b * hq) else 0,
        b, sq, k.shape[1], hq, k.shape[2], d, p.q_offset, p.window_left, p.window_right, p.sink_tokens, int(p.causal),
        p.softmax_scale, p.softmax_scale * LOG2E, 0,
    )


def _params(p, out: torch.Tensor, lse: torch.Tensor) -> np.void:
    """The FlashFwdParams of one call, built in one go (this runs on every launch)."""
    return np.array([_fwd_values(p, out, lse)], dtype=_PARAMS_DTYPE)[0]


def _bwd_params(p, f) -> np.void:
    """The FlashBwdParams of one backward call (p: Prepared, f: BackwardBuffers)."""
    values = _fwd_values(p, f.out, f.lse) + (
        f.dout.data_ptr(), _ptr(f.dlse), f.lse_log2.data_ptr(), f.delta.data_ptr(), _ptr(f.dq_accum),
        f.dq.data_ptr(), f.dk.data_ptr(), f.dv.data_ptr(), _ptr(f.dsink_partial),
        *f.dout.stride()[:3], *f.dq.stride()[:3], *f.dk.stride()[:3], *f.dv.stride()[:3],
        f.lse_log2.shape[-1],
    )
    return np.array([values], dtype=_BWD_PARAMS_DTYPE)[0]


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
    device = _device_of(q)
    kern, block_m, threads, smem = _kernel(d, q.dtype == torch.bfloat16, has_alibi, device)
    grid = (b * hq, _cdiv(sq, block_m), 1)
    with LaunchScope(device):
        kern(grid, (threads, 1, 1), (_params(p, out, lse),), shared_mem=smem)
    return out, lse


# ---------------------------------------------------------------------------
# Backward: flash_bwd_kernel.cuh's three or four kernels, launched as
# flash_bwd_launch.cuh launches them.

_BWD_GEOMETRY = ("block_n", "dkdv_threads", "dkdv_smem", "dq_block_m", "dq_threads", "dq_smem", "preprocess_warps",
                 "convert_threads", "dsink_warps", "row_pad")


def bwd_source() -> str:
    return (
        '#include "attention/flash_bwd_kernel.cuh"\n'
        + _layout_kernel("pk_bwd_params_layout", "pykernels::attention::FlashBwdParams", _BWD_PARAMS_DTYPE)
        + "namespace pa = pykernels::attention;\n"
        "using TrKV = pa::BwdTileShape<PK_HEAD_DIM>::type;\n"
        # Every launch constant comes from the headers, in _BWD_GEOMETRY's order.
        f'extern "C" __device__ int pk_bwd_geometry[{len(_BWD_GEOMETRY)}] = {{TrKV::kBlockN, TrKV::kNThreads, '
        "TrKV::kSmemBytes, pa::DqTileShape<PK_HEAD_DIM>::type::kBlockM, pa::kDqThreads, "
        "pa::dq_smem_bytes<PK_HEAD_DIM>(), pa::kPreprocessWarps, pa::kConvertDqThreads, "
        "pa::bwd_warps(PK_HEAD_DIM), pa::kBwdRowPad};\n"
    )


def bwd_kernel_names(head_dim: int, is_bf16: bool) -> Dict[str, str]:
    """The backward's kernels by role (preprocess, dkdv, convert_dq, dq): template instantiations."""
    bf16, ns = _cpp_bool(is_bf16), "pykernels::attention::"
    return {
        "preprocess": f"{ns}flash_bwd_preprocess_kernel<{bf16}>",
        "dkdv": f"{ns}flash_bwd_dkdv_kernel<{head_dim}, {bf16}>",
        "convert_dq": f"{ns}flash_bwd_convert_dq_kernel<{bf16}>",
        "dq": f"{ns}flash_bwd_dq_kernel<{head_dim}, {bf16}>",
    }


def _bwd_kernels(head_dim: int, is_bf16: bool, device: int):
    """``(kernels, geometry)`` of the backward for one (head dim, dtype), compiled once per device.

    kernels: preprocess, dkdv, convert_dq, dq (CuPy RawKernels); geometry: a
    dict keyed by _BWD_GEOMETRY.
    """

    def build():
        import cupy as cp

        names = bwd_kernel_names(head_dim, is_bf16)
        mod = compile_module(bwd_source(), list(names.values()), options=kernel_options(head_dim), device=device)
        with cp.cuda.Device(device):
            _check_layout(mod, "pk_bwd_params_layout", _BWD_PARAMS_DTYPE)
            geom = dict(zip(_BWD_GEOMETRY, read_ints(mod, "pk_bwd_geometry", len(_BWD_GEOMETRY))))
            if geom["row_pad"] != BWD_ROW_PAD:
                raise RuntimeError(f"kBwdRowPad is {geom['row_pad']} in csrc/attention/flash_bwd.h but "
                                   f"BWD_ROW_PAD is {BWD_ROW_PAD} in pykernels/backends/cuda/attention.py")
            kernels = {role: mod.get_function(name) for role, name in names.items()}
            allow_smem(kernels["dkdv"], geom["dkdv_smem"])
            allow_smem(kernels["dq"], geom["dq_smem"])
        return kernels, geom

    return cached(("attention_bwd", device, head_dim, is_bf16, EXTRA_OPTIONS), build)


def _launch_bwd(kernels, geom, p, f, args) -> None:
    """The launches of flash_bwd_launch.cuh (run_flash_bwd_), on the current CuPy stream."""
    b, sq, hq, d = p.q.shape
    sk, hkv = p.k.shape[1], p.k.shape[2]
    # With Sq = 0 only dK/dV run (and write zeros); with Sk = 0 only dQ (zeros).
    stat_rows = b * hq * f.lse_log2.shape[-1]
    if stat_rows > 0:
        warps = geom["preprocess_warps"]
        kernels["preprocess"]((_cdiv(stat_rows, warps),), (32 * warps,), args)
    n_blocks = _cdiv(sk, geom["block_n"])
    if n_blocks > 0:
        kernels["dkdv"]((b * hkv, n_blocks), (geom["dkdv_threads"],), args, shared_mem=geom["dkdv_smem"])
    if f.dq_accum is not None:
        pairs = b * sq * hq * (d // 2)
        if pairs > 0:
            threads = geom["convert_threads"]
            kernels["convert_dq"]((_cdiv(pairs, threads),), (threads,), args)
        return
    m_blocks = _cdiv(sq, geom["dq_block_m"])
    if m_blocks > 0:
        kernels["dq"]((b * hq, m_blocks), (geom["dq_threads"],), args, shared_mem=geom["dq_smem"])


def backward(dout, dlse, q, k, v, out, lse, *, softmax_scale, causal, window_left, window_right, sink_tokens,
             sink_logits, alibi_slopes, q_offset, deterministic=False):
    """``(dq, dk, dv, dsink)`` of flash attention; see ``pykernels.ops.attention``.

    The CUDA backend's backward (same kernels, same modes): ``deterministic=True``
    computes dQ in its own kernel instead of fp32 atomics.
    """
    device, is_bf16 = _device_of(q), q.dtype == torch.bfloat16

    def dsink_slots(head_dim, seqlen_k):  # called after prepare_backward has checked the head dim
        geom = _bwd_kernels(head_dim, is_bf16, device)[1]
        return _cdiv(seqlen_k, geom["block_n"]) * geom["dsink_warps"]

    p, f = prepare_backward(dout, dlse, q, k, v, out, lse, deterministic=deterministic, dsink_slots=dsink_slots,
                            softmax_scale=softmax_scale, causal=causal, window_left=window_left,
                            window_right=window_right, sink_tokens=sink_tokens, sink_logits=sink_logits,
                            alibi_slopes=alibi_slopes, q_offset=q_offset)
    b, sq, hq, d = q.shape
    if b * hq > 0 and (sq > 0 or k.shape[1] > 0):
        kernels, geom = _bwd_kernels(d, is_bf16, device)
        with LaunchScope(device):
            _launch_bwd(kernels, geom, p, f, (_bwd_params(p, f),))
    return f.dq, f.dk, f.dv, sink_gradient(p, f, sink_logits, hq)
