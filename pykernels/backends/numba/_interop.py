"""Moving torch tensors in and out of Numba kernels, shared by ``attention.py`` and ``rope.py``.

Three things live here, each small:

* ``kernel_array``: a zero-copy view of a tensor that a Numba kernel accepts.
  On a GPU it goes through the CUDA array interface (``cuda.as_cuda_array``);
  under the simulator it wraps a NumPy view of the CPU tensor, so the
  kernel's writes land in the tensor either way.
* ``launch_stream``: the stream to launch on, torch's current one, so a
  kernel is ordered with the torch work around it without a synchronisation.
* ``converters``: device functions that turn one stored element into a
  float32 and back. Kernels do all their arithmetic in float32.
* ``array_type``: the Numba type of such an array, for kernel signatures.

Why bfloat16 is stored as int16: neither the CUDA array interface nor NumPy
knows bfloat16, so Numba cannot type a bf16 array. A bf16 number is exactly
the upper 16 bits of a float32, so the kernel reads the raw 16 bits through an
int16 view and rebuilds the float32 with a shift. This costs one integer
instruction per element and no extra memory traffic, where upcasting the whole
tensor to float32 before the launch would read and write it once more.
float16 needs no trick: Numba types float16 arrays and converts natively.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch
from numba import cuda, float32, int16, int32, types, uint32
from numba.core.types import float16

from . import simulator

# How each torch dtype is stored in the arrays a kernel sees.
STORAGE = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}

BF16_QUIET_NAN = 0x7FC0


def storage(dtype: torch.dtype) -> str:
    return STORAGE[dtype]


def array_type(storage_name: str, ndim: int):
    """The type of an ``ndim``-d kernel argument stored as ``storage_name``.

    Layout "A" (any strides) so that one compiled kernel serves contiguous
    and strided tensors alike, instead of one compilation per layout.
    """
    element = {"float32": types.float32, "float16": types.float16, "bfloat16": types.int16,
               "int64": types.int64}[storage_name]
    return types.Array(element, ndim, "A")


def kernel_array(t: torch.Tensor):
    """A view of ``t`` (same memory, same strides) for a kernel argument."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    if simulator():
        # Wrapped as the simulator's own device array: a plain NumPy argument
        # would be copied in and out, and must then be contiguous.
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(t.numpy())
    # sync=False: the kernel is launched on torch's current stream, which
    # already orders it after whatever wrote ``t``.
    return cuda.as_cuda_array(t, sync=False)


@contextlib.contextmanager
def launch_stream(device: torch.device):
    """Make ``device`` Numba's current GPU and yield torch's current stream on it."""
    if simulator():
        yield 0
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    with cuda.gpus[index]:
        yield cuda.external_stream(torch.cuda.current_stream(index).cuda_stream)


# ----------------------------------------------------------------- conversions
@cuda.jit(device=True, inline=True)
def _f32_from_f32(x):
    return float32(x)


@cuda.jit(device=True, inline=True)
def _f16_from_f32(x):
    return float16(x)


@cuda.jit(device=True, inline=True)
def _f32_from_bf16_bits(h):
    # bf16 is the top half of a float32: put its 16 bits back on top. The
    # one-word local array is only a bit cast; the compiler keeps it in a register.
    word = cuda.local.array(1, np.uint32)
    word[0] = uint32(int32(h) & 0xFFFF) << 16
    return word.view(np.float32)[0]


@cuda.jit(device=True, inline=True)
def _bf16_bits_from_f32(x):
    # Round to nearest, ties to even, on the 16 low bits that are dropped:
    # adding 0x7FFF (+1 when the kept part is odd) carries into the kept part
    # exactly when the dropped part is above half (or at half with an odd kept part).
    if x != x:
        return int16(BF16_QUIET_NAN)
    word = cuda.local.array(1, np.float32)
    word[0] = x
    bits = word.view(np.uint32)[0]
    bits += uint32(0x7FFF) + ((bits >> 16) & uint32(1))
    top = int32(bits >> 16)
    # Two's complement in 16 bits, written out so that it also holds in Python.
    return int16(top - 0x10000 if top >= 0x8000 else top)


@functools.lru_cache(maxsize=None)
def converters(storage_name: str):
    """``(to_f32, from_f32)`` device functions for elements stored as ``storage_name``."""
    if storage_name == "float32":
        return _f32_from_f32, _f32_from_f32
    if storage_name == "float16":
        return _f32_from_f32, _f16_from_f32
    if storage_name == "bfloat16":
        return _f32_from_bf16_bits, _bf16_bits_from_f32
    raise ValueError(f"storage: expected one of {sorted(set(STORAGE.values()))}, got {storage_name!r}")
