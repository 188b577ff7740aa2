"""Every attention implementation the profiler and the benchmarks compare.

A provider is named ``naive``, ``sdpa`` (torch's default dispatch),
``sdpa:<flash|efficient|cudnn|math>`` (one SDPA backend, forced with
``torch.nn.attention.sdpa_kernel``), ``flex`` (FlexAttention under
``torch.compile``) or ``pykernels:<backend>``.

Each has a ``prepare`` step (dense masks, block masks, slopes) and a call.
The memory profiler measures both together, because a dense mask exists only
for the provider that needs it; the benchmarks time the call alone.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import pykernels

from .variants import Variant

SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")


def sdpa_backend(name: str):
    """The SDPBackend for one of SDPA_BACKENDS."""
    from torch.nn.attention import SDPBackend

    return {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]


def make_qkv(layout: str, batch: int, heads: int, seqlen: int, head_dim: int, dtype: torch.dtype, device,
             requires_grad: bool = False, generator: Optional[torch.Generator] = None):
    """Random q, k, v (never zeros: a kernel may shortcut them) in ``layout`` "bshd" or "bhsd"."""
    shape = (batch, seqlen, heads, head_dim) if layout == "bshd" else (batch, heads, seqlen, head_dim)
    return tuple(torch.randn(shape, dtype=dtype, device=device, generator=generator).requires_grad_(requires_grad)
                 for _ in range(3))


@dataclass
class Provider:
    name: str
    layout: str  # "bshd" (flash_attn_func) or "bhsd" (torch SDPA)
    prepare: Callable  # (variant, heads, seqlen, dtype, device) -> state
    call: Callable  # (q, k, v, variant, state) -> out
    how: Callable  # (variant, heads) -> how this provider expressed the variant
    reason: Optional[str] = None  # why it cannot run here, or None

    @property
    def family(self) -> str:
        return self.name.split(":")[0]

    @property
    def backend(self) -> str:
        return self.name.split(":", 1)[1] if ":" in self.name else "default"


# ------------------------------------------------------------------ naive
def _naive_prepare(variant: Variant, heads: int, seqlen: int, dtype, device):
    """The hidden-key mask (bool, S²) or the ALiBi bias (H·S² elements) that naive attention adds."""
    if variant.alibi:
        return variant.dense_bias(heads, seqlen, dtype, device)
    return ~variant.spec(seqlen, seqlen).dense(device)


def naive_attention(q, k, v, variant: Variant, state):
    """Textbook attention in (B, H, S, D): scores, mask, softmax, then the weighted sum.

    Scale and mask are applied in place, as an eager model would, so the peak
    is the score matrix plus its softmax copy, exactly the analytic model.
    """
    scores = torch.matmul(q, k.transpose(-2, -1))
    scores.mul_(q.shape[-1] ** -0.5)
    if variant.alibi:
        scores.add_(state)
    else:
        scores.masked_fill_(state, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    del scores
    return torch.matmul(probs, v)


def _naive_how(variant: Variant, heads: int) -> str:
    extra = f"float bias (1,{heads},S,S)" if variant.alibi else "bool mask (S,S)"
    return f"scores (B,H,S,S) + softmax copy, {extra}"


# ------------------------------------------------------------------- SDPA
def _sdpa_prepare(variant: Variant, heads: int, seqlen: int, dtype, device):
    return variant.dense_bias(heads, seqlen, dtype, device)


def _sdpa_call(backend: Optional[str]):
    def call(q, k, v, variant: Variant, state):
        kw = {"attn_mask": state} if state is not None else {"is_causal": variant.causal}
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v, **kw)
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(sdpa_backend(backend)):
            return F.scaled_dot_product_attention(q, k, v, **kw)

    return call


def _sdpa_how(variant: Variant, heads: int) -> str:
    return variant.dense_description(heads)


# -------------------------------------------------------------- pykernels
def _pyk_prepare(variant: Variant, heads: int, seqlen: int, dtype, device):
    return variant.pykernels_kwargs(heads, device)


def _pyk_call(backend: str):
    def call(q, k, v, variant: Variant, state):
        return pykernels.flash_attn_func(q, k, v, backend=backend, **state)

    return call


def _pyk_how(variant: Variant, heads: int) -> str:
    return "fused: " + variant.describe()


# ------------------------------------------------------------------- flex
# A sweep compiles FlexAttention once per (shape, mask, score_mod); past
# Dynamo's default limit (8) it would silently fall back to eager attention,
# which materialises the scores and would be timed under the flex label.
RECOMPILE_LIMIT = 1024


def raise_recompile_limit() -> None:
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):  # the newer name, then the older
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), RECOMPILE_LIMIT))
            return


@functools.lru_cache(maxsize=None)
def compiled_flex():
    """torch.compile(flex_attention), one wrapper per process, with the recompile limit raised."""
    from torch.nn.attention.flex_attention import flex_attention

    raise_recompile_limit()
    return torch.compile(flex_attention, dynamic=False)


def _flex_prepare(variant: Variant, heads: int, seqlen: int, dtype, device):
    from torch.nn.attention.flex_attention import create_block_mask

    mask_mod, score_mod = variant.flex_mods(heads, device)
    block_mask = create_block_mask(mask_mod, None, None, seqlen, seqlen, device=device)
    return block_mask, score_mod


def _flex_call(q, k, v, variant: Variant, state):
    block_mask, score_mod = state
    return compiled_flex()(q, k, v, score_mod=score_mod, block_mask=block_mask)


def _flex_how(variant: Variant, heads: int) -> str:
    return "torch.compile(flex_attention): mask_mod" + (" + ALiBi score_mod" if variant.alibi else "")


# --------------------------------------------------------------- registry
def unsupported(provider: Provider, op: str, device, dtype, head_dim: int) -> Optional[str]:
    """Why a pykernels backend cannot run ``op`` ("attention_fwd", "attention_bwd", "rope") here, or None.

    Asked of the registry up front: a backend without a backward would
    otherwise fall back to another backend's (with a warning), and its row
    would time the wrong kernel.
    """
    if provider.family != "pykernels":
        return None
    from pykernels import backends

    try:
        backends.resolve(op, provider.backend, device, dtype, head_dim)
    except ValueError as exc:
        return str(exc)
    return None


def pykernels_backends() -> Dict[str, Optional[str]]:
    """Every pykernels backend and why it is unusable (None when usable)."""
    return {n: (None if s.available else s.reason) for n, s in pykernels.available_backends().items()}


def get_provider(name: str, device: torch.device) -> Provider:
    """The provider ``name`` with ``reason`` set when it cannot run on ``device``."""
    cuda_only = None if device.type == "cuda" else "needs a CUDA GPU"
    if name == "naive":
        return Provider(name, "bhsd", _naive_prepare, naive_attention, _naive_how)
    if name == "sdpa":
        return Provider(name, "bhsd", _sdpa_prepare, _sdpa_call(None), _sdpa_how)
    if name.startswith("sdpa:"):
        backend = name.split(":", 1)[1]
        if backend not in SDPA_BACKENDS:
            raise SystemExit(f"unknown provider {name!r}: SDPA backends are {SDPA_BACKENDS}")
        reason = None if backend == "math" else cuda_only
        return Provider(name, "bhsd", _sdpa_prepare, _sdpa_call(backend), _sdpa_how, reason)
    if name == "flex":
        return Provider(name, "bhsd", _flex_prepare, _flex_call, _flex_how, cuda_only)
    if name.startswith("pykernels:"):
        backend = name.split(":", 1)[1]
        reasons = pykernels_backends()
        if backend not in reasons:
            raise SystemExit(f"unknown provider {name!r}: pykernels backends are {list(reasons)}")
        reason = reasons[backend]
        if reason is None and device.type != "cuda" and backend != "torch":
            reason = "runs on CUDA tensors only"
        return Provider(name, "bshd", _pyk_prepare, _pyk_call(backend), _pyk_how, reason)
    raise SystemExit(f"unknown provider {name!r}: expected naive, sdpa, sdpa:<{'|'.join(SDPA_BACKENDS)}>, "
                     "flex or pykernels:<backend>")


def expand_providers(names: List[str]) -> List[str]:
    """``pykernels`` stands for every pykernels backend, ``sdpa:*`` for every SDPA backend."""
    out: List[str] = []
    for n in names:
        if n == "pykernels":
            out += [f"pykernels:{b}" for b in pykernels_backends()]
        elif n == "sdpa:*":
            out += [f"sdpa:{b}" for b in SDPA_BACKENDS]
        else:
            out.append(n)
    return list(dict.fromkeys(out))
