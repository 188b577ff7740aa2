"""CuPy backend: the csrc/ kernels compiled at first use through NVRTC.

No build step: ``cupy.RawModule`` compiles the same headers as the C++
extension (guarded for NVRTC with ``__CUDACC_RTC__``) and caches the result on
disk. Tensors cross over zero-copy through DLPack and kernels launch on
``torch.cuda.current_stream()``.
"""
from __future__ import annotations

import torch

DESCRIPTION = "CuPy + NVRTC, csrc/ headers compiled at first use"

_HALF = (torch.float16, torch.bfloat16)


def availability():
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    try:
        import cupy  # noqa: F401
    except ImportError as exc:
        return f"CuPy is not installed (pip install cupy-cuda13x): {exc}"
    return None


def supports(op, device, dtype, head_dim):
    if device.type != "cuda":
        return f"it needs CUDA tensors, got tensors on {device}"
    if op == "rope":
        return None if dtype in (*_HALF, torch.float32) else f"rope takes float16, bfloat16 or float32, got {dtype}"
    if dtype not in _HALF:
        return f"it takes float16 or bfloat16, got {dtype}"
    from . import attention

    if op == "attention_fwd":
        return attention.supports(dtype, head_dim)
    if op == "attention_bwd":
        return attention.supports_backward(dtype, head_dim)
    return f"{op} has no CuPy kernel"
