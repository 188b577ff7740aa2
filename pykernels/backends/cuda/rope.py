"""Rotary embedding through the CUDA C++ extension (csrc/rope/, csrc/bindings/rope.cpp).

Same interface as ``pykernels/backends/torch/rope.py`` (see its docstring):
q and k are rotated in one launch, reading the float32 cos/sin table. The
extension also has ``rope_rotary_freqs``, which computes cos/sin in the
kernel from inv_freq; ``apply_rotary_freqs`` exposes it for the benchmark
(scripts/bench_rope_dev.py) that justifies reading the table instead.
"""
from __future__ import annotations

from . import load_extension


def apply_rotary(q, k, cos, sin, positions, offset, q_out, k_out, *, interleaved, conjugate) -> None:
    load_extension().rope_rotary(q, k, cos, sin, positions, int(offset), q_out, k_out, interleaved, conjugate)


def apply_rotary_freqs(q, k, inv_freq, scale, positions, offset, q_out, k_out, *, interleaved, conjugate) -> None:
    """As ``apply_rotary``, with cos/sin = (cos, sin)(position * inv_freq) * scale computed in the kernel."""
    load_extension().rope_rotary_freqs(q, k, inv_freq, float(scale), positions, int(offset), q_out, k_out,
                                       interleaved, conjugate)
