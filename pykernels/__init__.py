"""pykernels: long-context attention kernels for PyTorch.

Public API (see README.md and ../shared/API.md):

* ``flash_attn_func`` and ``scaled_dot_product_attention``: fused attention
  with causal, sliding-window, sink-token, learned-sink and ALiBi masks, GQA;
* ``rope`` (frequencies for every context-extension method),
  ``RotaryEmbedding`` and ``apply_rotary``;
* ``alibi_slopes``;
* ``available_backends()``: which of cuda / cupy / numba / torch run here.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .alibi import alibi_slopes
from .attention import flash_attn_func, scaled_dot_product_attention
from .backends import available_backends
from . import rope
from .rope import RotaryEmbedding, apply_rotary
from . import ops  # noqa: F401  (registers the torch.library ops)

__all__ = [
    "flash_attn_func",
    "scaled_dot_product_attention",
    "rope",
    "RotaryEmbedding",
    "apply_rotary",
    "alibi_slopes",
    "available_backends",
    "build_info",
]


def build_info() -> str:
    """One line on whether the CUDA extension was built, and why not."""
    from .backends.cuda import extension_status

    return extension_status()
