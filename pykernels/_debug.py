"""Output allocation shared by the GPU backends, with an optional poison fill.

With ``PYKERNELS_POISON_OUTPUTS=1`` every output a kernel is about to write is
first filled with NaN (integers: -1), so a test sees any element the kernel
forgot to write instead of stale memory that happens to look right.
"""
from __future__ import annotations

import os

import torch


def poisoning() -> bool:
    return os.environ.get("PYKERNELS_POISON_OUTPUTS", "") == "1"


def new_output(shape, dtype: torch.dtype, device) -> torch.Tensor:
    t = torch.empty(shape, dtype=dtype, device=device)
    if poisoning():
        t.fill_(float("nan") if t.is_floating_point() else -1)
    return t
