"""ALiBi slopes (Press et al. 2022, "Train Short, Test Long").

Head ``h`` of ``n`` adds ``-slope_h * |p_i - j|`` to its scores. For ``n`` a
power of two the slopes are the geometric sequence ``2^(-8/n * (h+1))``; for
other counts the paper (and BLOOM, MPT, HF) take the ``2^floor(log2 n)``
sequence and fill the rest with every other slope of the next power of two.
"""
from __future__ import annotations

import math

import torch


def _power_of_2_slopes(n: int) -> list:
    start = 2.0 ** (-8.0 / n)
    return [start ** (i + 1) for i in range(n)]


def alibi_slopes(nheads: int, interpolation: float = 1.0) -> torch.Tensor:
    """The (nheads,) float32 ALiBi slopes.

    ``interpolation`` > 1 divides every slope by that factor, stretching the
    bias over a longer context as positional interpolation does for RoPE
    (Al-Khateeb et al. 2023): a model trained at L with factor f sees at f*L
    the distance penalties it saw at L.
    """
    if isinstance(nheads, bool) or not isinstance(nheads, int):
        raise TypeError(f"nheads: expected an int, got {type(nheads).__name__}")
    if nheads < 1:
        raise ValueError(f"nheads: expected a positive head count, got {nheads}")
    if isinstance(interpolation, bool) or not isinstance(interpolation, (int, float)):
        raise TypeError(f"interpolation: expected a float, got {type(interpolation).__name__}")
    if not (interpolation > 0 and math.isfinite(interpolation)):
        raise ValueError(f"interpolation: expected a finite factor > 0, got {interpolation}")
    closest = 2 ** int(math.floor(math.log2(nheads)))
    slopes = _power_of_2_slopes(closest)
    if closest < nheads:
        slopes += _power_of_2_slopes(2 * closest)[0::2][: nheads - closest]
    return torch.tensor(slopes, dtype=torch.float32) / float(interpolation)
