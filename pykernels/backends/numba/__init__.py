"""Numba backend: the readable kernels, written with numba-cuda.

On a GPU it runs on CUDA tensors. Under ``NUMBA_ENABLE_CUDASIM=1`` (CI, no
GPU) Numba's simulator runs the same kernels on CPU tensors, slowly: only
when this backend is asked for by name, and only at small sizes.
"""
from __future__ import annotations

import os

import torch

DESCRIPTION = "numba-cuda kernels (the readable ones)"


def simulator() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"


def _numpy_compat() -> None:
    """Let numba-cuda 0.30 import under NumPy >= 2.5.

    numba-cuda registers an overload for ``np.row_stack``, which NumPy 2.5
    removed; it was only ever an alias of ``np.vstack``, so restore the alias
    when it is missing (seen on the GPU image: numpy 2.5.2).
    """
    import numpy as np

    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


# Before any numba.cuda import, here or in this package's op modules.
_numpy_compat()


def availability():
    try:
        from numba import cuda
    except ImportError as exc:
        return f"numba-cuda is not installed (pip install numba numba-cuda): {exc}"
    if simulator():
        return None
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch (set NUMBA_ENABLE_CUDASIM=1 to run the simulator)"
    if not cuda.is_available():
        return "numba.cuda sees no GPU"
    return None


def supports(op, device, dtype, head_dim):
    if device.type != "cuda" and not (simulator() and device.type == "cpu"):
        return f"it needs CUDA tensors (or CPU tensors under NUMBA_ENABLE_CUDASIM=1), got tensors on {device}"
    if op == "rope":
        return None if dtype in (torch.float16, torch.bfloat16, torch.float32) else f"rope takes fp16/bf16/fp32, got {dtype}"
    if op in ("attention_fwd", "attention_bwd"):
        from . import attention

        return attention.supports(op, dtype, head_dim)
    return f"{op} has no Numba kernel"
