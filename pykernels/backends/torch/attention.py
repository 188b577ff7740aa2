"""Tiled flash attention in plain PyTorch: forward and backward.

The algorithm is FlashAttention-2's (Dao 2023), written with tensor ops so it
runs on any device. For each block of query rows it visits only the key
blocks the mask lets it see (``MaskSpec.key_blocks``) and applies the element
mask only on blocks that are not fully visible. Memory is
O(block_q * block_k) per (batch, head), so linear in the sequence length.

Online softmax, for one query row over key blocks ``K_1 .. K_n``::

    m_0 = sink (or -inf),  l_0 = 1 (or 0),  acc_0 = 0
    s_t   = scale * q K_t^T - slope * |p - j|          (masked keys: -inf)
    m_t   = max(m_{t-1}, max(s_t))
    l_t   = l_{t-1} * exp(m_{t-1} - m_t) + sum(exp(s_t - m_t))
    acc_t = acc_{t-1} * exp(m_{t-1} - m_t) + exp(s_t - m_t) V_t
    out   = acc_n / l_n,  lse = m_n + log(l_n)

A learned sink logit (gpt-oss) is a key with logit ``sink`` and value 0, so it
simply seeds ``m`` and ``l``. A row that sees nothing keeps ``l = 0`` and
returns zeros with lse = -inf.

Backward, with ``P = exp(S - lse)`` recomputed from the saved lse and
``delta_i = rowsum(dO_i * O_i) - dlse_i``::

    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - delta),
    dQ = scale * dS K,   dK = scale * dS^T Q,   dsink_h = -sum_i exp(sink_h - lse_i) * delta_i
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ...masks import MaskSpec, iter_tiles
from ..sink_grad import sink_logit_grad

NEG_INF = float("-inf")


def _block_size(seqlen: int) -> int:
    # Big enough that Python's loop overhead stays small next to the matmuls,
    # small enough that one (block_q x block_k) score tile per head is cheap.
    return int(min(1024, max(128, 1 << max(0, (seqlen // 32 - 1).bit_length()))))


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _heads(x: torch.Tensor, hkv: int, acc: torch.dtype) -> torch.Tensor:
    """(B, n, Hq, D) -> (B, Hkv, G, n, D) in the accumulation dtype."""
    b, n, hq, d = x.shape
    return x.to(acc).reshape(b, n, hkv, hq // hkv, d).permute(0, 2, 3, 1, 4)


def _scores(qb, kb, scale, spec: MaskSpec, rows, cols, slopes, needs_mask):
    """Scores of a (rows x cols) tile, (B, Hkv, G, n, m), with ALiBi and the mask applied."""
    s = torch.matmul(qb, kb.transpose(-1, -2).unsqueeze(2)) * scale
    if slopes is not None:
        dist = (rows[:, None] + spec.offset - cols[None, :]).abs().to(s.dtype)
        s = s - slopes * dist
    if needs_mask:
        s = s.masked_fill(~spec.visible(rows[:, None], cols[None, :]), NEG_INF)
    return s


def _slopes(alibi_slopes: Optional[torch.Tensor], b: int, hkv: int, g: int, acc) -> Optional[torch.Tensor]:
    if alibi_slopes is None:
        return None
    return alibi_slopes.to(acc).expand(b, hkv * g).reshape(b, hkv, g, 1, 1)


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    softmax_scale: float,
    causal: bool,
    window_left: int,
    window_right: int,
    sink_tokens: int,
    sink_logits: Optional[torch.Tensor],
    alibi_slopes: Optional[torch.Tensor],
    q_offset: int,
    block_q: Optional[int] = None,
    block_k: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    acc = _acc_dtype(q.dtype)
    spec = MaskSpec(sq, sk, causal, window_left, window_right, sink_tokens, q_offset)
    block_q = block_q or _block_size(sq)
    block_k = block_k or _block_size(sk)
    slopes = _slopes(alibi_slopes, b, hkv, g, acc)

    out = torch.empty(b, sq, hq, d, dtype=q.dtype, device=q.device)
    lse = torch.empty(b, hkv, g, sq, dtype=acc, device=q.device)
    for r0, r1, tiles in iter_tiles(spec, block_q, block_k):
        n = r1 - r0
        rows = torch.arange(r0, r1, device=q.device)
        qb = _heads(q[:, r0:r1], hkv, acc)
        if sink_logits is not None:
            m = sink_logits.to(acc).reshape(1, hkv, g, 1).expand(b, hkv, g, n).clone()
            l = torch.ones(b, hkv, g, n, dtype=acc, device=q.device)
        else:
            m = torch.full((b, hkv, g, n), NEG_INF, dtype=acc, device=q.device)
            l = torch.zeros(b, hkv, g, n, dtype=acc, device=q.device)
        o = torch.zeros(b, hkv, g, n, d, dtype=acc, device=q.device)
        for c0, c1, needs_mask in tiles:
            cols = torch.arange(c0, c1, device=q.device)
            kb = k[:, c0:c1].to(acc).permute(0, 2, 1, 3)  # (B, Hkv, m, D)
            vb = v[:, c0:c1].to(acc).permute(0, 2, 1, 3)
            s = _scores(qb, kb, softmax_scale, spec, rows, cols, slopes, needs_mask)
            m_new = torch.maximum(m, s.amax(-1))
            # A row that has seen only masked keys keeps m = -inf; shift by 0 there
            # so that exp(-inf - -inf) never makes a NaN.
            m_use = torch.where(torch.isneginf(m_new), torch.zeros_like(m_new), m_new)
            alpha = torch.exp(m - m_use)
            p = torch.exp(s - m_use[..., None])
            l = l * alpha + p.sum(-1)
            o = o * alpha[..., None] + torch.matmul(p, vb.unsqueeze(2))
            m = m_new
        seen = l > 0
        l_safe = torch.where(seen, l, torch.ones_like(l))
        o = o / l_safe[..., None]
        lse[..., r0:r1] = torch.where(seen, m + torch.log(l_safe), torch.full_like(l, NEG_INF))
        out[:, r0:r1] = o.permute(0, 3, 1, 2, 4).reshape(b, n, hq, d).to(q.dtype)
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return out, lse.reshape(b, hq, sq).to(lse_dtype)


def backward(
    dout: torch.Tensor,
    dlse: Optional[torch.Tensor],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    *,
    softmax_scale: float,
    causal: bool,
    window_left: int,
    window_right: int,
    sink_tokens: int,
    sink_logits: Optional[torch.Tensor],
    alibi_slopes: Optional[torch.Tensor],
    q_offset: int,
    deterministic: bool = False,
    block_q: Optional[int] = None,
    block_k: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # Every reduction here is a plain tensor op in a fixed order, so this
    # backend is deterministic whatever ``deterministic`` says.
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    g = hq // hkv
    acc = _acc_dtype(q.dtype)
    spec = MaskSpec(sq, sk, causal, window_left, window_right, sink_tokens, q_offset)
    block_q = block_q or _block_size(sq)
    block_k = block_k or _block_size(sk)
    slopes = _slopes(alibi_slopes, b, hkv, g, acc)

    lse4 = lse.to(acc).reshape(b, hkv, g, sq)
    # Rows that saw nothing have lse = -inf; +inf there makes P = 0 instead of NaN.
    lse4 = torch.where(torch.isneginf(lse4), torch.full_like(lse4, math.inf), lse4)
    delta = (dout.to(acc) * out.to(acc)).sum(-1).permute(0, 2, 1).reshape(b, hkv, g, sq)
    if dlse is not None:
        delta = delta - dlse.to(acc).reshape(b, hkv, g, sq)

    dq = torch.zeros(b, hkv, g, sq, d, dtype=acc, device=q.device)
    dk = torch.zeros(b, hkv, sk, d, dtype=acc, device=q.device)
    dv = torch.zeros(b, hkv, sk, d, dtype=acc, device=q.device)
    for r0, r1, tiles in iter_tiles(spec, block_q, block_k):
        rows = torch.arange(r0, r1, device=q.device)
        qb = _heads(q[:, r0:r1], hkv, acc)
        dob = _heads(dout[:, r0:r1], hkv, acc)
        lb = lse4[..., r0:r1, None]
        db = delta[..., r0:r1, None]
        for c0, c1, needs_mask in tiles:
            cols = torch.arange(c0, c1, device=q.device)
            kb = k[:, c0:c1].to(acc).permute(0, 2, 1, 3)
            vb = v[:, c0:c1].to(acc).permute(0, 2, 1, 3)
            s = _scores(qb, kb, softmax_scale, spec, rows, cols, slopes, needs_mask)
            p = torch.exp(s - lb)
            dv[:, :, c0:c1] += torch.matmul(p.transpose(-1, -2), dob).sum(2)
            dp = torch.matmul(dob, vb.transpose(-1, -2).unsqueeze(2))
            ds = p * (dp - db)
            dq[..., r0:r1, :] += torch.matmul(ds, kb.unsqueeze(2)) * softmax_scale
            dk[:, :, c0:c1] += torch.matmul(ds.transpose(-1, -2), qb).sum(2) * softmax_scale

    if sink_logits is not None:
        dsink = sink_logit_grad(sink_logits, lse4.reshape(b, hq, sq), delta.reshape(b, hq, sq))
    else:
        dsink = torch.zeros(hq, dtype=torch.float32, device=q.device)
    dq = dq.permute(0, 3, 1, 2, 4).reshape(b, sq, hq, d).to(q.dtype).contiguous()
    dk = dk.permute(0, 2, 1, 3).to(k.dtype).contiguous()
    dv = dv.permute(0, 2, 1, 3).to(v.dtype).contiguous()
    return dq, dk, dv, dsink
