"""Reference implementations of every op in API.md, written for clarity.

They materialise the full (Sq x Sk) score matrix and exist for tests: every
backend is compared against ``attention_ref(..., upcast=True)`` computed in
float64. ``upcast=False`` runs the same math in the input dtype, which is how
tests measure PyTorch's own low-precision error (flash-attn's ``attention_ref``
convention): a kernel may be at most about twice as far from the float64
answer as that.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .masks import MaskSpec, UNBOUNDED


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: Tuple[int, int] = (UNBOUNDED, UNBOUNDED),
    sink_tokens: int = 0,
    sink_logits: Optional[torch.Tensor] = None,
    alibi_slopes: Optional[torch.Tensor] = None,
    q_offset: Optional[int] = None,
    upcast: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Attention in (B, S, H, D) layout. Returns ``(out, lse)``.

    ``upcast=True`` computes in float64 and returns float64; ``upcast=False``
    computes in q's dtype (softmax in float32 for half types, as PyTorch's
    eager attention does) and returns ``out`` in q's dtype.
    """
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    dt = torch.float64 if upcast else q.dtype
    qf, kf, vf = (t.to(dt) for t in (q, k, v))
    # GQA: query head h reads KV head h // g.
    kf = kf.repeat_interleave(g, dim=2)
    vf = vf.repeat_interleave(g, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", qf, kf) * scale
    sm_dt = torch.float64 if upcast else (torch.float32 if dt in (torch.float16, torch.bfloat16) else dt)
    s = s.to(sm_dt)
    spec = MaskSpec(sq, sk, causal, window_size[0], window_size[1], sink_tokens, q_offset)
    rows = torch.arange(sq, device=q.device)[:, None]
    cols = torch.arange(sk, device=q.device)[None, :]
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(sm_dt).expand(b, hq)[:, :, None, None]
        s = s - slopes * (rows + spec.offset - cols).abs().to(sm_dt)
    s = s.masked_fill(~spec.visible(rows, cols), float("-inf"))
    if sink_logits is not None:
        sink = sink_logits.to(sm_dt).reshape(1, hq, 1, 1).expand(b, hq, sq, 1)
        lse = torch.logsumexp(torch.cat([s, sink], dim=-1), dim=-1)
    else:
        lse = torch.logsumexp(s, dim=-1)
    # A row with no visible key has lse = -inf (or the sink logit): its weights are 0.
    lse_safe = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)
    p = torch.exp(s - lse_safe[..., None])
    out = torch.einsum("bhqk,bkhd->bqhd", p.to(dt), vf)
    return out, lse.to(torch.float64 if upcast else torch.float32)


def sdpa_ref(query, key, value, is_causal=False, scale=None, upcast=True, **kw):
    """The SDPA drop-in's semantics, (B, H, S, D) layout, rows aligned top-left."""
    out, _ = attention_ref(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
        softmax_scale=scale, causal=is_causal, q_offset=0, upcast=upcast, **kw,
    )
    return out.transpose(1, 2)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """GPT-NeoX convention: (x1, x2) -> (-x2, x1) over the two halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotary_ref(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    interleaved: bool = False,
    conjugate: bool = False,
    upcast: bool = True,
) -> torch.Tensor:
    """Rotary embedding of x (B, S, H, D) with cos/sin of shape (S, rot_dim/2) or (B, S, rot_dim/2).

    Only the first ``rot_dim`` features rotate; the rest pass through. Pair
    ``i`` is ``(x[i], x[i + rot_dim/2])`` (neox) or ``(x[2i], x[2i+1])``
    (interleaved); ``conjugate`` rotates by -theta.
    """
    dt = torch.float64 if upcast else torch.float32
    rot = cos.shape[-1] * 2
    xr, tail = x[..., :rot].to(dt), x[..., rot:]
    c, s = cos.to(dt), sin.to(dt)
    if conjugate:
        s = -s
    # Broadcast (S, R/2) or (B, S, R/2) over heads.
    c, s = c.unsqueeze(-2), s.unsqueeze(-2)
    if interleaved:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
        o1, o2 = x1 * c - x2 * s, x1 * s + x2 * c
        y = torch.stack((o1, o2), dim=-1).flatten(-2)
    else:
        c2, s2 = torch.cat((c, c), -1), torch.cat((s, s), -1)
        y = xr * c2 + rotate_half(xr) * s2
    out_dt = torch.float64 if upcast else x.dtype
    return torch.cat((y.to(out_dt), tail.to(out_dt)), dim=-1)
