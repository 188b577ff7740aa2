"""RoPE scaling as curves: frequency, wavelength and position stretch per dimension,
and the long-distance decay of attention scores, for notebooks/03_rope_scaling.

The frequencies come from ``pykernels.rope.inv_freq``, the same function the
kernels' tables use; a method it cannot compute is reported with the reason
and left out rather than re-implemented here.

Decay (RoFormer, Su et al. 2021, section 3.4.3; the curve Llama 2 Long,
Xiong et al. 2023, plots to motivate a larger base, "ABF"): for relative
distance m, the score of a rotated pair is bounded by a constant times
``B(m) = (2/R) * sum_{j=1..R/2} |S_j(m)|`` with ``S_j(m) = sum_{k<j} exp(i m theta_k)``.
The expected score of identical random q and k, ``(2/R) * |sum_k cos(m theta_k)|``,
is drawn beside it: the simpler curve that shows the same trend.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch

TRAINED = 4096  # Llama 2's context
FACTOR = 8  # extension to 32K
DIM = 128
BASE = 10_000.0
ABF_BASE = 500_000.0  # Llama 2 Long / Llama 3


def methods(dim: int = DIM, trained: int = TRAINED, factor: float = FACTOR) -> Dict[str, Tuple[float, Optional[dict]]]:
    """``{label: (base, scaling)}`` for every method, extending ``trained`` by ``factor``."""
    half = dim // 2
    # LongRoPE's per-dimension factors are searched per model; this ramp from 1
    # (fast dims kept) to `factor` (slow dims interpolated) only illustrates the shape.
    ramp = [1.0 + (factor - 1.0) * i / (half - 1) for i in range(half)]
    return {
        "default": (BASE, None),
        f"ABF (base {ABF_BASE:,.0f})": (ABF_BASE, None),
        "linear (PI)": (BASE, {"rope_type": "linear", "factor": factor}),
        "NTK-aware": (BASE, {"rope_type": "ntk", "factor": factor}),
        "dynamic NTK @ target": (BASE, {"rope_type": "dynamic", "factor": factor, "max_position_embeddings": trained}),
        "YaRN": (BASE, {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": trained}),
        "LongRoPE (illustrative factors)": (BASE, {"rope_type": "longrope", "short_factor": [1.0] * half,
                                                   "long_factor": ramp,
                                                   "original_max_position_embeddings": trained,
                                                   "factor": factor}),
        "Llama 3": (BASE, {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": trained}),
    }


def frequency_table(dim: int = DIM, trained: int = TRAINED, factor: float = FACTOR):
    """``({label: inv_freq (R/2,) float64}, {label: attention_factor}, {label: why missing})``."""
    try:
        from pykernels.rope import inv_freq
    except ImportError as exc:
        return {}, {}, {"all": f"pykernels.rope.inv_freq is not available yet ({exc})"}
    freqs, factors, missing = {}, {}, {}
    target = int(trained * factor)
    for label, (base, scaling) in methods(dim, trained, factor).items():
        try:
            inv, att = inv_freq(dim, base, scaling, seq_len=target)
        except (NotImplementedError, ValueError, TypeError, KeyError) as exc:
            missing[label] = f"{type(exc).__name__}: {exc}"
            continue
        freqs[label], factors[label] = inv.double(), att
    return freqs, factors, missing


def wavelengths(inv: torch.Tensor) -> torch.Tensor:
    """Positions per full turn of each feature pair: 2*pi / theta."""
    return 2 * math.pi / inv


def stretch(inv: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """How much each dimension compresses positions against plain RoPE (1 = unchanged, 8 = interpolated 8x)."""
    return reference / inv


def decay_bound(inv: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """RoFormer's relative upper bound ``(2/R) * sum_j |S_j(m)|`` at each distance m."""
    angles = distances.double()[:, None] * inv.double()[None, :]
    partial = torch.cumsum(torch.polar(torch.ones_like(angles), angles), dim=1)
    return partial.abs().mean(dim=1)


def expected_score(inv: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """``(2/R) * |sum_k cos(m theta_k)|``: the mean score of identical random q, k at distance m."""
    angles = distances.double()[:, None] * inv.double()[None, :]
    return torch.cos(angles).mean(dim=1).abs()


def log_distances(max_distance: int, points: int = 2000) -> torch.Tensor:
    return torch.unique(torch.logspace(0, math.log10(max_distance), points).round()).double()
