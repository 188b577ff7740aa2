"""The mask variants every measurement sweeps, described once.

Each variant is causal (decoder attention) plus at most one extra:

* ``causal``: plain causal;
* ``window``: causal sliding window, each query sees itself and the
  ``WINDOW`` keys before it (Mistral-style);
* ``sinks``: the window plus ``SINKS`` attention-sink keys (StreamingLLM);
* ``alibi``: causal with ALiBi biases (standard slopes).

A variant knows how each provider expresses it: keyword arguments of
``pykernels.flash_attn_func``, a dense mask or bias for naive attention and
torch's SDPA (``MaskSpec.dense`` / ``pykernels.alibi_slopes``: the same
predicate and slopes the kernels use), and mask_mod / score_mod for FlexAttention.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

import pykernels
from pykernels.masks import UNBOUNDED, MaskSpec

WINDOW = 1024
SINKS = 4


@dataclass(frozen=True)
class Variant:
    name: str
    causal: bool = True
    left: int = UNBOUNDED
    sink_tokens: int = 0
    alibi: bool = False

    # ------------------------------------------------------------ counting
    def spec(self, seqlen_q: int, seqlen_k: int) -> MaskSpec:
        return MaskSpec(seqlen_q, seqlen_k, self.causal, self.left, UNBOUNDED, self.sink_tokens)

    def visible_pairs(self, seqlen_q: int, seqlen_k: int) -> int:
        return self.spec(seqlen_q, seqlen_k).visible_pairs()

    @property
    def dense_needed(self) -> bool:
        """True when torch's SDPA cannot express the variant with ``is_causal`` alone."""
        return self.left != UNBOUNDED or self.sink_tokens > 0 or self.alibi

    def describe(self) -> str:
        parts = ["causal"] if self.causal else []
        if self.left != UNBOUNDED:
            parts.append(f"window {self.left}")
        if self.sink_tokens:
            parts.append(f"{self.sink_tokens} sinks")
        if self.alibi:
            parts.append("ALiBi")
        return " + ".join(parts) or "full"

    # ----------------------------------------------------------- pykernels
    def pykernels_kwargs(self, heads: int, device) -> Dict[str, object]:
        kw: Dict[str, object] = {"causal": self.causal}
        if self.left != UNBOUNDED:
            kw["window_size"] = (self.left, UNBOUNDED if not self.causal else 0)
        if self.sink_tokens:
            kw["sink_tokens"] = self.sink_tokens
        if self.alibi:
            kw["alibi_slopes"] = pykernels.alibi_slopes(heads).to(device)
        return kw

    # ------------------------------------------------------- naive / SDPA
    def dense_bias(self, heads: int, seqlen: int, dtype: torch.dtype, device) -> Optional[torch.Tensor]:
        """What naive attention and torch's SDPA need beyond ``is_causal``.

        None for plain causal; a (1, 1, S, S) boolean mask for window/sinks
        (S² bytes); a (1, H, S, S) float bias in ``dtype`` for ALiBi, with the
        causal mask folded in as -inf (H·S²·element-size bytes): the memory
        hog that a fused kernel avoids.
        """
        if not self.dense_needed:
            return None
        visible = self.spec(seqlen, seqlen).dense(device)
        if not self.alibi:
            return visible[None, None]
        slopes = pykernels.alibi_slopes(heads).to(device=device, dtype=torch.float32)
        pos = torch.arange(seqlen, device=device)
        dist = (pos[:, None] - pos[None, :]).abs().to(torch.float32)
        bias = (-slopes[:, None, None] * dist).to(dtype)
        return bias.masked_fill_(~visible, float("-inf"))[None]

    def dense_description(self, heads: int) -> str:
        if not self.dense_needed:
            return "is_causal=True" if self.causal else "no mask"
        if self.alibi:
            return f"float bias (1,{heads},S,S) with the causal mask as -inf"
        return "bool mask (1,1,S,S)"

    # ------------------------------------------------------- FlexAttention
    def flex_mods(self, heads: int, device):
        """``(mask_mod, score_mod)`` for torch's FlexAttention, the same predicate as MaskSpec."""
        left, sinks, causal = self.left, self.sink_tokens, self.causal

        def mask_mod(b, h, q_idx, kv_idx):
            ok = (kv_idx <= q_idx) if causal else (kv_idx >= 0)
            if left != UNBOUNDED:
                in_window = q_idx - kv_idx <= left
                if sinks:
                    in_window = in_window | (kv_idx < sinks)
                ok = ok & in_window
            return ok

        if not self.alibi:
            return mask_mod, None
        slopes = pykernels.alibi_slopes(heads).to(device)

        def alibi_mod(score, b, h, q_idx, kv_idx):
            return score - slopes[h] * (q_idx - kv_idx).abs()

        return mask_mod, alibi_mod


VARIANTS: Dict[str, Variant] = {
    "causal": Variant("causal"),
    "window": Variant("window", left=WINDOW),
    "sinks": Variant("sinks", left=WINDOW, sink_tokens=SINKS),
    "alibi": Variant("alibi", alibi=True),
}


def get_variants(names) -> Dict[str, Variant]:
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; expected some of {list(VARIANTS)}")
    return {n: VARIANTS[n] for n in names}
