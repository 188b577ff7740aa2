"""Pure-PyTorch backend: runs on any device, the CPU implementation of every op.

Its attention is tiled with an online softmax, so memory stays linear in the
sequence length; it is the fallback everywhere and the readable baseline.
"""
from __future__ import annotations

import torch

DESCRIPTION = "plain PyTorch, tiled online softmax (CPU and GPU)"

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def availability():
    return None


def supports(op, device, dtype, head_dim):
    if dtype not in _DTYPES:
        return f"dtype {dtype} is not one of {_DTYPES}"
    return None
