"""Public attention entry points: ``flash_attn_func`` and the SDPA drop-in."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _validate as V
from .ops import attention as _ops  # noqa: F401  (registers torch.ops.pykernels.attention_*)


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: Tuple[int, int] = (-1, -1),
    sink_tokens: int = 0,
    sink_logits: Optional[torch.Tensor] = None,
    alibi_slopes: Optional[torch.Tensor] = None,
    return_lse: bool = False,
    backend: Optional[str] = None,
    *,
    deterministic: bool = False,
):
    """Fused attention over (B, S, H, D) tensors, flash-attn conventions.

    Rows are aligned bottom-right (query ``i`` sits at ``i + Sk - Sq``); see
    ``../shared/API.md`` and ``pykernels.masks`` for the exact mask. Returns
    ``out`` (B, Sq, Hq, D) in q's dtype, or ``(out, lse)`` with lse
    (B, Hq, Sq) float32 when ``return_lse``. ``deterministic`` asks the
    backward for bitwise-reproducible gradients.
    """
    scale, left, right = V.check_attention(
        q, k, v, softmax_scale=softmax_scale, causal=causal, window_size=window_size, sink_tokens=sink_tokens,
        sink_logits=sink_logits, alibi_slopes=alibi_slopes, return_lse=return_lse, backend=backend,
    )
    V.check_bool(deterministic, "deterministic")
    q_offset = k.shape[1] - q.shape[1]
    out, lse = torch.ops.pykernels.attention_fwd(
        q, k, v, sink_logits, alibi_slopes, scale, causal, left, right, sink_tokens, q_offset,
        deterministic, backend or "",
    )
    return (out, lse) if return_lse else out


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
    *,
    window_size: Tuple[int, int] = (-1, -1),
    sink_tokens: int = 0,
    sink_logits: Optional[torch.Tensor] = None,
    alibi_slopes: Optional[torch.Tensor] = None,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.scaled_dot_product_attention``, (B, H, S, D) layout.

    Masks follow PyTorch's top-left alignment (query ``i`` at position ``i``),
    so ``is_causal`` matches PyTorch even when Sq != Sk; the window, sinks and
    ALiBi distances use the same positions. ``attn_mask`` and dropout are not
    served: they raise instead of being ignored.
    """
    if attn_mask is not None:
        V.fail(ValueError, "attn_mask", "None (arbitrary masks are not supported; express the mask with "
               "is_causal, window_size and sink_tokens, or call torch's SDPA)", f"a {type(attn_mask).__name__}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        V.fail(TypeError, "dropout_p", "a float", type(dropout_p).__name__)
    if dropout_p != 0.0:
        V.fail(ValueError, "dropout_p", "0.0 (attention dropout is not supported)", dropout_p)
    V.check_bool(is_causal, "is_causal")
    V.check_bool(enable_gqa, "enable_gqa")
    for x, arg in ((query, "query"), (key, "key"), (value, "value")):
        V.check_tensor(x, arg, ndim=4)
    if query.shape[1] != key.shape[1] and not enable_gqa:
        V.fail(ValueError, "key", f"{query.shape[1]} heads like query (or pass enable_gqa=True)", f"{key.shape[1]} heads")
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))
    scale_, left, right = V.check_attention(
        q, k, v, softmax_scale=scale, causal=is_causal, window_size=window_size, sink_tokens=sink_tokens,
        sink_logits=sink_logits, alibi_slopes=alibi_slopes, return_lse=False, backend=backend,
        names=("query", "key", "value"),
    )
    out, _ = torch.ops.pykernels.attention_fwd(
        q, k, v, sink_logits, alibi_slopes, scale_, is_causal, left, right, sink_tokens, 0, False, backend or "",
    )
    return out.transpose(1, 2)
