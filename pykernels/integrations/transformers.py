"""pykernels inside Hugging Face transformers: an attention implementation and a RoPE swap.

Usage::

    import pykernels.integrations.transformers as pk_hf
    pk_hf.register()
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="pykernels")

``register()`` adds two functions under one name (default ``"pykernels"``):

* an attention function in ``AttentionInterface``, which runs
  ``pykernels.flash_attn_func`` on the model's (B, H, S, D) query/key/value;
* a mask function in ``AttentionMaskInterface``. It is registered too because
  transformers skips mask creation for an implementation that has none, and
  the attention function would then never hear of padding or of an unusual
  mask pattern.

What the kernel serves
    Causal attention (``module.is_causal``, or the ``is_causal`` argument),
    sliding windows from the ``sliding_window`` argument the model passes
    (Mistral, Qwen2, gpt-oss: key j is visible to query p when
    ``p - sliding_window < j <= p``), GQA/MQA, the ``scaling`` argument, and
    learned sinks passed as ``s_aux`` (gpt-oss). Rows are aligned bottom-right
    (flash-attn's convention), which is what decoding with a KV cache needs:
    the last query sits at the last key. All of it is differentiable.

How masks are decided
    The mask function returns ``None``, so no (B, 1, Sq, Sk) mask is ever
    built, exactly when the kernel computes the same mask by itself:

    * the pattern is the plain causal one, or a sliding window that either
      matches ``config.sliding_window`` or cannot bind yet (a chunked-attention
      pattern counts only while the sequence fits in one chunk);
    * the keys end at the last query (true for dynamic and sliding-window
      caches, not for a static cache whose keys include empty slots);
    * the 2-D ``attention_mask`` has no zeros among the keys of this call.

    Otherwise it builds the same boolean mask as transformers' "sdpa".

Padding and other masks: a visible fallback
    A dense mask (padding zeros in ``attention_mask``, packed sequences,
    bidirectional or overlaid patterns, a static cache, or a 4-D mask the
    caller made), attention dropout during training, and logit soft-capping
    cannot be served by the kernel. Such calls run PyTorch instead:
    ``torch.nn.functional.scaled_dot_product_attention`` with the mask, or,
    when the model has learned sinks or soft-capping, the same math written
    out. The results match transformers' "sdpa" / "eager" implementations.
    The first fallback of each kind (a dense mask, dropout, soft-capping)
    emits one ``PykernelsFallbackWarning``. ``register(strict=True)`` raises
    a ``ValueError`` naming the exact cause instead, for runs that must never
    leave the kernel.

    Left-padded batched generation therefore works, on PyTorch's attention;
    unpadded batches and single prompts run on the kernel.

The RoPE swap
    ``patch_rope(model)`` replaces the model's rotary embedding module with a
    ``PykernelsRotaryEmbedding`` built by ``pykernels.rope.from_hf_config``
    (one ``RotaryEmbedding`` per layer type where the config has per-type
    rope parameters). It returns the same (cos, sin) the original returns
    (full or half width, with the attention scaling of yarn/longrope folded
    in), so the model's own ``apply_rotary_pos_emb`` is unchanged and the
    logits match for the rope types default, linear, dynamic, yarn, longrope
    and llama3. Before swapping it compares both on probe positions and
    raises a ``ValueError`` on a mismatch. Its tables stay float32 when the
    model is cast to bf16, where transformers' own ``inv_freq`` is rounded.

transformers is imported here and nowhere else: ``import pykernels`` never
needs it.
"""
from __future__ import annotations

import copy
import functools
import warnings
from typing import Optional, Tuple

import torch

try:
    from transformers import masking_utils
    from transformers.modeling_utils import AttentionInterface
    from transformers.utils.import_utils import is_tracing
except ImportError as exc:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "pykernels.integrations.transformers needs the transformers package (pip install transformers); "
        "the rest of pykernels does not"
    ) from exc

from ..attention import flash_attn_func
from ..masks import MaskSpec, UNBOUNDED
from ..rope import RotaryEmbedding, from_hf_config

__all__ = [
    "NAME",
    "register",
    "attention_forward",
    "create_mask",
    "PykernelsFallbackWarning",
    "PykernelsRotaryEmbedding",
    "patch_rope",
]

NAME = "pykernels"


class PykernelsFallbackWarning(UserWarning):
    """An attention call the kernel cannot serve ran on PyTorch's attention instead."""


_warned: set = set()


def _fall_back(reason: str, strict: bool) -> None:
    """Raise (strict) or warn once per reason that a call leaves the kernel."""
    if strict:
        raise ValueError(
            f"pykernels attention: cannot serve {reason}; register(strict=False) runs such calls on PyTorch's "
            f"attention instead, or load the model with attn_implementation='sdpa'"
        )
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(
            f"pykernels attention: {reason} is not served by the kernel; such calls run PyTorch's attention "
            f"instead (shown once; register(strict=True) raises instead)",
            PykernelsFallbackWarning,
            stacklevel=3,  # the model's attention module, which called the attention function
        )


# ---------------------------------------------------------------------------- masks
def _is_sliding_window(config, local_size: int) -> bool:
    """Whether a windowed mask of ``local_size`` is the model's sliding window, not a chunked pattern."""
    return (
        getattr(config, "sliding_window", None) == local_size
        and getattr(config, "attention_chunk_size", None) != local_size
    )


def _unservable(
    q_length: int,
    kv_length: int,
    q_offset,
    kv_offset,
    mask_function,
    padding_mask: Optional[torch.Tensor],
    local_size: Optional[int],
    allow_is_causal_skip: bool,
    config,
) -> Optional[str]:
    """Why the kernel cannot compute this mask by itself, or None when it can."""
    # transformers' mask creators clear this flag whenever they overlay
    # anything on the causal pattern (packed sequences, image-token overlays,
    # block-wise masks, bidirectional attention, compiled static decoding).
    if not allow_is_causal_skip:
        return "a mask pattern other than causal or sliding-window"
    if isinstance(q_offset, torch.Tensor) or isinstance(kv_offset, torch.Tensor):
        return "a static KV cache"
    if local_size is None:
        if mask_function is not masking_utils.causal_mask_function:
            return "a mask pattern other than causal or sliding-window"
    elif kv_offset + kv_length > local_size and not _is_sliding_window(config, local_size):
        # The window binds, and it is not the one the attention call will pass.
        return "chunked attention"
    if q_offset + q_length != kv_offset + kv_length:
        return "a KV cache whose keys do not end at the last query (static cache)"
    if padding_mask is not None:
        if is_tracing(padding_mask):
            return "a padding mask under tracing"
        visible = masking_utils.prepare_padding_mask(padding_mask, kv_length, kv_offset)
        if not bool(visible[:, kv_offset:kv_offset + kv_length].all()):
            return "padding in attention_mask"
    return None


def create_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset=0,
    kv_offset=0,
    mask_function=masking_utils.causal_mask_function,
    attention_mask: Optional[torch.Tensor] = None,
    local_size: Optional[int] = None,
    allow_is_causal_skip: bool = True,
    config=None,
    *,
    strict: bool = False,
    **kwargs,
) -> Optional[torch.Tensor]:
    """The "pykernels" entry of ``AttentionMaskInterface``.

    Returns None when the kernel computes the mask itself (causal, sliding
    window, no padding; see the module docstring), else transformers' dense
    boolean mask, which sends the attention call to the PyTorch fallback.
    The other keyword arguments transformers passes (``dtype``,
    ``allow_is_bidirectional_skip``, ...) do not change that choice.
    """
    reason = _unservable(
        q_length, kv_length, q_offset, kv_offset, mask_function, attention_mask, local_size,
        allow_is_causal_skip, config,
    )
    if reason is None:
        return None
    if strict:
        _fall_back(reason, strict=True)
    return masking_utils.sdpa_mask(
        batch_size=batch_size,
        q_length=q_length,
        kv_length=kv_length,
        q_offset=q_offset,
        kv_offset=kv_offset,
        mask_function=mask_function,
        attention_mask=attention_mask,
        local_size=local_size,
        allow_is_causal_skip=False,
        allow_is_bidirectional_skip=False,
        **{k: v for k, v in kwargs.items() if k in ("use_vmap", "device")},
    )


# ------------------------------------------------------------------------ attention
def _window(sliding_window: Optional[int], causal: bool) -> Tuple[int, int]:
    """transformers' sliding window as flash-attn's (left, right).

    Causal masks keep key j for query p when ``p - sliding_window < j``, i.e.
    ``sliding_window - 1`` keys to the left; the bidirectional overlay keeps
    ``|p - j| <= sliding_window``.
    """
    if sliding_window is None or sliding_window <= 0:
        return UNBOUNDED, UNBOUNDED
    if causal:
        return sliding_window - 1, 0
    return sliding_window, sliding_window


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, Hkv, S, D) -> (B, Hkv * groups, S, D), query head h reading KV head h // groups."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def _torch_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: Optional[torch.Tensor],
    dropout: float,
    scaling: Optional[float],
    softcap: Optional[float],
    sinks: Optional[torch.Tensor],
    causal: bool,
    window: Tuple[int, int],
) -> torch.Tensor:
    """The fallback: the same attention on PyTorch ops, (B, H, S, D) in, (B, Sq, H, D) out.

    ``mask`` (boolean, True = visible, or additive float) replaces the causal
    flag and the window, as in transformers' sdpa/eager functions.
    """
    sq, sk = query.shape[2], key.shape[2]
    if mask is None and (causal or window != (UNBOUNDED, UNBOUNDED)):
        mask = MaskSpec(sq, sk, causal, window[0], window[1]).dense(query.device)
    groups = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    if sinks is None and softcap is None:
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(query.dtype)  # SDPA takes an additive mask only in q's dtype
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling,
        )
        return out.transpose(1, 2).contiguous()
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    # Half-precision scores and softmax run in float32, as the eager code does.
    acc = torch.float32 if query.dtype in (torch.float16, torch.bfloat16) else query.dtype
    scores = torch.matmul(query.to(acc), key.to(acc).transpose(-1, -2)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.to(acc)
    if sinks is not None:
        # A learned sink is one extra logit per head that takes probability
        # mass and contributes no value.
        sink_col = sinks.to(acc).reshape(1, -1, 1, 1).expand(scores.shape[0], -1, sq, 1)
        scores = torch.cat([scores, sink_col], dim=-1)
    # Rows that see nothing get zeros, as the kernel and PyTorch's SDPA give.
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isneginf(row_max), torch.zeros_like(row_max), row_max)
    weights = torch.exp(scores - row_max)
    denom = weights.sum(dim=-1, keepdim=True)
    probs = weights / torch.where(denom > 0, denom, torch.ones_like(denom))
    if sinks is not None:
        probs = probs[..., :-1]
    if dropout > 0.0:
        probs = torch.nn.functional.dropout(probs, p=dropout, training=True)
    out = torch.matmul(probs.to(value.dtype), value)
    return out.transpose(1, 2).contiguous()


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    sliding_window: Optional[int] = None,
    softcap: Optional[float] = None,
    is_causal: Optional[bool] = None,
    s_aux: Optional[torch.Tensor] = None,
    *,
    strict: bool = False,
    **kwargs,
) -> Tuple[torch.Tensor, None]:
    """The "pykernels" entry of ``AttentionInterface``.

    query (B, Hq, Sq, D), key/value (B, Hkv, Sk, D) as transformers passes
    them; returns ``(out (B, Sq, Hq, D), None)``. ``s_aux`` (Hq,) are learned
    sink logits.
    """
    causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
    window = _window(sliding_window, causal)
    sinks = s_aux
    if sinks is not None and sinks.dtype not in (torch.float32, torch.float64):
        # The kernel keeps sink logits in float32; the cast is differentiable.
        sinks = sinks.float()

    reason = None
    if attention_mask is not None:
        reason = "a dense attention mask (padding in attention_mask, a custom mask pattern or a static cache)"
    elif dropout and dropout > 0.0:
        reason = "attention dropout"
    elif softcap is not None:
        reason = "logit soft-capping"
    if reason is not None:
        _fall_back(reason, strict)
        out = _torch_attention(query, key, value, attention_mask, dropout, scaling, softcap, sinks, causal, window)
        return out, None

    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
    d_qk, d_v = q.shape[-1], v.shape[-1]
    if scaling is None:
        scaling = d_qk ** -0.5
    # The kernel takes one head dim. Heads whose values are narrower or wider
    # than their keys (MLA) get zeros on the narrower side: zero features
    # change no dot product, and padded value features are cropped away.
    if d_v < d_qk:
        v = torch.nn.functional.pad(v, (0, d_qk - d_v))
    elif d_qk < d_v:
        q, k = (torch.nn.functional.pad(t, (0, d_v - d_qk)) for t in (q, k))
    out = flash_attn_func(q, k, v, softmax_scale=scaling, causal=causal, window_size=window, sink_logits=sinks)
    return out[..., :d_v], None


def register(name: str = NAME, *, strict: bool = False) -> str:
    """Register the "pykernels" attention and mask functions with transformers; returns ``name``.

    Then ``from_pretrained(..., attn_implementation=name)`` or
    ``model.set_attn_implementation(name)`` selects them. With ``strict``,
    calls the kernel cannot serve raise instead of falling back to PyTorch.
    Registering again replaces the earlier functions.
    """
    if not isinstance(name, str) or not name or "/" in name or name.startswith("paged|"):
        raise ValueError(f"name: expected a plain implementation name such as 'pykernels', got {name!r}")
    AttentionInterface.register(name, functools.partial(attention_forward, strict=strict))
    masking_utils.AttentionMaskInterface.register(name, functools.partial(create_mask, strict=strict))
    return name


# ----------------------------------------------------------------------------- RoPE
def _per_layer_types(config) -> Optional[list]:
    """The layer types of a config whose rope parameters are given per layer type (gemma3-style), else None."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and params and all(isinstance(v, dict) or v is None for v in params.values()):
        # Rotary modules build tables only for the layer types the model has.
        used = set(getattr(config, "layer_types", None) or params)
        return [k for k, v in params.items() if v is not None and k in used]
    return None


class PykernelsRotaryEmbedding(torch.nn.Module):
    """A transformers rotary-embedding module whose (cos, sin) pykernels computes.

    ``forward(x, position_ids, layer_type=None)`` returns cos and sin of shape
    (B, S, R) in x's dtype, the second half repeating the first as transformers'
    ``apply_rotary_pos_emb`` expects, or (B, S, R/2) where the replaced module
    returned half tables (gpt-oss). The attention factor of yarn and longrope
    is applied, and dynamic and longrope follow the same length rules as
    transformers (``pykernels.RotaryEmbedding`` implements them).
    """

    def __init__(self, config, half: bool = False):
        super().__init__()
        types = _per_layer_types(config)
        ropes = {t: from_hf_config(config, layer_type=t) for t in types} if types else {None: from_hf_config(config)}
        # Kept out of the module tree on purpose: model.to(torch.bfloat16)
        # would otherwise round the float32 frequency and cos/sin tables.
        # cos_sin(device=...) moves them to where the activations are.
        self.__dict__["ropes"] = ropes
        self.half = half

    def extra_repr(self) -> str:
        return ", ".join(f"{t or 'rope'}=({r.extra_repr()})" for t, r in self.ropes.items()) + f", half={self.half}"

    def rope(self, layer_type: Optional[str] = None) -> RotaryEmbedding:
        if layer_type not in self.ropes:
            raise ValueError(f"layer_type: expected one of {list(self.ropes)}, got {layer_type!r}")
        return self.ropes[layer_type]

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, layer_type: Optional[str] = None):
        cos, sin = self.rope(layer_type).cos_sin(position_ids, device=x.device)
        if not self.half:
            cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
        return cos.to(x.dtype), sin.to(x.dtype)


def _rotary_modules(model: torch.nn.Module):
    """(parent, attribute name, module) of every transformers rotary-embedding module in ``model``."""
    found = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if (type(child).__name__.endswith("RotaryEmbedding") and hasattr(child, "config")
                    and not isinstance(child, PykernelsRotaryEmbedding)):
                found.append((parent, name, child))
    return found


def _probe_positions(rope: RotaryEmbedding, device) -> torch.Tensor:
    """Positions that exercise a rope type: the first 64, and for the length-dependent types, past the switch."""
    pos = list(range(64))
    switch = {"dynamic": "max_position_embeddings", "longrope": "original_max_position_embeddings"}.get(rope.rope_type)
    if switch is not None:
        trained = int(rope.scaling[switch])
        pos += list(range(trained - 8, trained + 24))
    return torch.tensor(sorted(set(p for p in pos if p >= 0)), device=device)[None]


def _reference_module(original: torch.nn.Module) -> torch.nn.Module:
    """A float32 CPU copy of a rotary module to check the replacement against.

    The module as found, unless ``model.to(torch.bfloat16)`` has rounded its
    ``inv_freq``: then a fresh one built from its config, which is what the
    replacement reproduces (its tables stay float32).
    """
    # Per-layer-type modules keep one "<layer_type>_inv_freq" per type.
    tables = [b for n, b in original.named_buffers() if n.endswith("inv_freq")]
    if tables and all(b.dtype == torch.float32 and b.device.type != "meta" for b in tables):
        return copy.deepcopy(original).to("cpu")
    try:
        return type(original)(original.config)
    except TypeError:
        return copy.deepcopy(original).to(device="cpu", dtype=torch.float32)


def _check_same(reference: torch.nn.Module, half: bool, layer_type) -> None:
    """Compare (cos, sin) of the reference and of a fresh replacement, short and (dynamic/longrope) long calls."""
    fresh = PykernelsRotaryEmbedding(reference.config, half)
    x = torch.zeros(1, dtype=torch.float32)
    probe = _probe_positions(fresh.rope(layer_type), "cpu")
    kw = {} if layer_type is None else {"layer_type": layer_type}
    for positions in (probe[:, :64], probe):
        want = reference(x, positions, **kw)
        got = fresh(x, positions, **kw)
        for name, w, g in zip(("cos", "sin"), want, got):
            if w.shape != g.shape:
                raise ValueError(
                    f"patch_rope: {type(reference).__name__} returns {name} of shape {tuple(w.shape)}, "
                    f"pykernels.rope.from_hf_config gives {tuple(g.shape)}; this model's rotary layout is not supported"
                )
            # transformers forms the angles in float32 (pykernels in float64),
            # so its error grows with the position.
            tol = 1e-5 + 2e-7 * positions[0, :, None].float()
            if not bool(((w.float() - g.float()).abs() <= tol).all()):
                err = float((w.float() - g.float()).abs().max())
                raise ValueError(
                    f"patch_rope: pykernels' {name} differs from {type(reference).__name__}'s by up to {err:.2e} "
                    f"(layer_type={layer_type!r}); the config's rope parameters are not read the same way"
                )


def patch_rope(model: torch.nn.Module, check: bool = True) -> torch.nn.Module:
    """Replace every rotary-embedding module of a transformers model with a ``PykernelsRotaryEmbedding``.

    The replacement is built with ``pykernels.rope.from_hf_config`` from the
    replaced module's config and returns the same (cos, sin), so the model's
    own ``apply_rotary_pos_emb`` keeps working. With ``check`` (the default)
    both are compared on probe positions first, and a mismatch raises a
    ``ValueError`` rather than changing the model's outputs. Returns the model.
    """
    targets = _rotary_modules(model)
    if not targets and any(isinstance(m, PykernelsRotaryEmbedding) for m in model.modules()):
        return model  # already patched
    if not targets:
        raise ValueError(
            f"model: expected a transformers model with a rotary embedding module, got {type(model).__name__}"
        )
    for parent, name, original in targets:
        reference = _reference_module(original)
        types = _per_layer_types(original.config) or [None]
        kw = {} if types[0] is None else {"layer_type": types[0]}
        width = reference(torch.zeros(1), torch.zeros(1, 1, dtype=torch.long), **kw)[0].shape[-1]
        replacement = PykernelsRotaryEmbedding(original.config)
        rot = replacement.rope(types[0]).dim
        if width not in (rot, rot // 2):
            raise ValueError(
                f"patch_rope: {type(original).__name__} returns cos/sin of width {width}, expected the rotary dim "
                f"{rot} (or half of it) that pykernels.rope.from_hf_config reads from the config"
            )
        replacement.half = width == rot // 2
        if check:
            for layer_type in types:
                _check_same(reference, replacement.half, layer_type)
        setattr(parent, name, replacement)
    return model
