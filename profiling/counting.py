"""What a kernel has to do: FLOPs, bytes moved, and the analytic memory model.

FLOPs follow flash-attn's convention: a forward is two matmuls of
``2·Sq·Sk·D`` each per (batch, head), so ``4·B·H·Sq·Sk·D``; causal halves it;
the backward is 2.5 forwards (five matmuls against two) and a full fwd+bwd
3.5. Masks that leave fewer pairs visible count only those
(``MaskSpec.visible_pairs()``), so a sliding window is not credited for work
it rightly skips.

Memory model (per layer, batch ``B``, ``H`` heads, element size ``e``):

* naive attention materialises the scores ``B·H·Sq·Sk·e`` and a softmax copy
  of the same size: ``2·B·H·S²·e``, quadratic in S;
* its backward also holds the gradient of the probabilities and of the scores
  beside the saved probabilities: ``3·B·H·S²·e``;
* a fused kernel keeps q, k, v, out (``B·S·H·D·e`` each) and the float32 lse
  (``B·H·S·4``): linear in S. Only out and lse are extra to the inputs; the
  backward adds dq, dk, dv.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from pykernels.masks import MaskSpec

MODE_FACTOR = {"fwd": 1.0, "bwd": 2.5, "full": 3.5}
LSE_BYTES = 4  # lse is float32 whatever the input dtype

# The seed's example: a 13B Llama-style model, 40 layers of 40 heads, fp16 scores.
LLAMA_13B = {"layers": 40, "heads": 40, "head_dim": 128, "elem_bytes": 2}


# ---------------------------------------------------------------- FLOPs
def visible_pairs(seqlen_q: int, seqlen_k: int, causal: bool = False, left: int = -1, right: int = -1,
                  sink_tokens: int = 0) -> int:
    """Visible (query, key) pairs of one (batch, head), bottom-right aligned as flash_attn_func is."""
    return MaskSpec(seqlen_q, seqlen_k, causal, left, right, sink_tokens).visible_pairs()


def attention_flops(batch: int, heads: int, seqlen_q: int, seqlen_k: int, head_dim: int, mode: str = "fwd",
                    causal: bool = False, pairs: Optional[int] = None) -> float:
    """4·B·H·pairs·D × mode factor; ``pairs`` defaults to Sq·Sk, halved for causal."""
    if mode not in MODE_FACTOR:
        raise ValueError(f"mode: expected one of {sorted(MODE_FACTOR)}, got {mode!r}")
    if pairs is None:
        pairs = seqlen_q * seqlen_k / (2 if causal else 1)
    return 4.0 * batch * heads * pairs * head_dim * MODE_FACTOR[mode]


def attention_io_bytes(batch: int, heads: int, seqlen_q: int, seqlen_k: int, head_dim: int, elem_bytes: int,
                       mode: str = "fwd", kv_heads: Optional[int] = None) -> float:
    """Bytes a fused kernel must read and write at least (each tensor once).

    fwd reads q, k, v and writes out and lse; bwd reads q, k, v, out, dout, lse
    and writes dq, dk, dv; full is both.
    """
    hkv = heads if kv_heads is None else kv_heads
    q = batch * seqlen_q * heads * head_dim * elem_bytes
    kv = batch * seqlen_k * hkv * head_dim * elem_bytes
    lse = batch * heads * seqlen_q * LSE_BYTES
    fwd = q + 2 * kv + q + lse
    bwd = 3 * q + 2 * kv + lse + q + 2 * kv
    return {"fwd": fwd, "bwd": bwd, "full": fwd + bwd}[mode]


def rope_bytes(batch: int, seqlen: int, heads: int, head_dim: int, elem_bytes: int, n_tensors: int = 2,
               table_elem_bytes: int = 4, rot_dim: Optional[int] = None) -> float:
    """Read and write every rotated tensor (q and k) once, read the cos and sin tables once."""
    rd = head_dim if rot_dim is None else rot_dim
    x = batch * seqlen * heads * head_dim * elem_bytes
    tables = 2 * seqlen * (rd // 2) * table_elem_bytes
    return n_tensors * 2 * x + tables


def copy_bytes(nbytes: int) -> float:
    """A device-to-device copy reads and writes every byte."""
    return 2.0 * nbytes


def matmul_flops(m: int, n: int, k: int) -> float:
    return 2.0 * m * n * k


# --------------------------------------------------------- memory model
def score_bytes(batch: int, heads: int, seqlen_q: int, seqlen_k: int, elem_bytes: int) -> float:
    """One materialised (B, H, Sq, Sk) score matrix."""
    return float(batch) * heads * seqlen_q * seqlen_k * elem_bytes


def naive_extra_bytes(batch: int, heads: int, seqlen: int, head_dim: int, elem_bytes: int, mode: str = "fwd") -> float:
    """Analytic peak beyond the inputs for naive attention: scores + softmax copy (fwd), 3 score-sized
    tensors (fwd+bwd), plus the output (and input gradients)."""
    s = score_bytes(batch, heads, seqlen, seqlen, elem_bytes)
    act = batch * seqlen * heads * head_dim * elem_bytes
    if mode == "fwd":
        return 2 * s + act
    return 3 * s + 4 * act  # out, dq, dk, dv


def fused_extra_bytes(batch: int, heads: int, seqlen: int, head_dim: int, elem_bytes: int, mode: str = "fwd") -> float:
    """Analytic peak beyond the inputs for a fused kernel: out + lse (fwd); + dq, dk, dv (fwd+bwd)."""
    act = batch * seqlen * heads * head_dim * elem_bytes
    lse = batch * heads * seqlen * LSE_BYTES
    return act + lse if mode == "fwd" else 4 * act + lse


def fused_total_bytes(batch: int, heads: int, seqlen: int, head_dim: int, elem_bytes: int) -> float:
    """q, k, v, out and lse: everything a fused forward holds, linear in S."""
    return 4.0 * batch * seqlen * heads * head_dim * elem_bytes + batch * heads * seqlen * LSE_BYTES


def llama13b_table(seqlens: Sequence[int], model: Dict[str, int] = LLAMA_13B) -> List[Dict[str, float]]:
    """The seed's example: scores of every layer of a 13B model (batch 1) against a fused kernel's tensors."""
    rows = []
    for s in seqlens:
        one_layer = score_bytes(1, model["heads"], s, s, model["elem_bytes"])
        rows.append({
            "seqlen": s,
            "scores_one_layer_bytes": one_layer,
            "scores_all_layers_bytes": one_layer * model["layers"],
            "fused_one_layer_bytes": fused_total_bytes(1, model["heads"], s, model["head_dim"], model["elem_bytes"]),
        })
    return rows
