"""The learned sink logits' gradient, which every backend's backward ends with.

A sink logit is a key with value 0 in every row's softmax: it moves only lse,
and ``d lse_i / d sink_h = exp(sink_h - lse_i)``. With
``delta_i = rowsum(dO_i * O_i) - dlse_i`` (the backward's usual row term)::

    dsink_h = -sum_{b, i} exp(sink_h - lse_i) * delta_i

The torch and numba backends pass their delta; the CUDA kernel sums the
rowsum part itself (in fp32, from P and dP) and passes ``-dlse`` for the rest.
"""
from __future__ import annotations

import math

import torch


def sink_logit_grad(sink_logits: torch.Tensor, lse: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``(Hq,)`` gradient in sink_logits' dtype; lse and delta are (B, Hq, Sq), summed in lse's dtype.

    A row with lse = -inf saw nothing (and no sink): it contributes 0.
    """
    lse = torch.where(torch.isneginf(lse), torch.full_like(lse, math.inf), lse)
    p_sink = torch.exp(sink_logits.to(lse.dtype)[None, :, None] - lse)
    return -(p_sink * delta).sum(dim=(0, 2)).to(sink_logits.dtype)
