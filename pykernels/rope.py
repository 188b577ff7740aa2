"""Rotary position embeddings: frequencies for every context-extension method,
a caching ``RotaryEmbedding`` module and the fused ``apply_rotary``.

Frequencies. Plain RoPE (Su et al. 2021) turns feature pair i of a rotary
dim R at position p by ``theta_i(p) = p * base ** (-2i / R)``. Context
extension rescales those inverse frequencies; ``inv_freq`` implements each
method the way Hugging Face transformers' rope init functions define it:

=========  =================================================================
default    ``inv_i = base ** (-2i/R)`` (a changed ``base`` is ABF)
linear     ``inv_i / factor`` (position interpolation)
ntk        static NTK-aware: base -> ``base * factor ** (R / (R - 2))``
dynamic    NTK with ``alpha = factor * L / M - (factor - 1)``, L = max(seq_len, M),
           M = ``max_position_embeddings`` (the trained length)
yarn       per-frequency blend of ``inv_i`` and ``inv_i / factor`` by a linear
           ramp between the dims that turn ``beta_fast`` and ``beta_slow`` times
           over ``original_max_position_embeddings``; cos/sin scaled by
           ``0.1 * mscale * ln(factor) + 1`` (or the ``mscale`` /
           ``mscale_all_dim`` ratio, or ``attention_factor``)
longrope   ``inv_i / ext_i`` with ext = ``short_factor`` up to
           ``original_max_position_embeddings`` and ``long_factor`` beyond;
           cos/sin scaled by ``sqrt(1 + ln(factor) / ln(original))``
llama3     wavelengths above ``original / low_freq_factor`` divided by factor,
           below ``original / high_freq_factor`` kept, blended in between
=========  =================================================================

``attention_factor`` multiplies cos and sin, as transformers applies it.

Kernels. ``apply_rotary`` and ``RotaryEmbedding.__call__`` rotate q and k in
one launch of the ``pykernels::rotary`` op on the fastest backend, reading
cos/sin from a float32 table indexed by position (computed in float64).
Measured against sincos in the kernel from inv_freq (``scripts/
bench_rope_dev.py``, ``cuda`` vs ``cuda-freqs``; H200, q and k of (8, 4096,
32, 128) and (1, 32768, 32, 128) bf16): with the current kernel the
in-kernel variant takes 0.98-0.99x the time (0.89-0.98x in earlier runs,
with other kernel versions and, at 0.89x, host overhead the timing no longer
counts), since the table costs 4R bytes of reads per token
against the 8HD bytes q and k move (the rows are shared across heads and the
batch, so mostly L2 hits). The table stays the default for what those 1-2% buy: cos/sin computed in float64
exactly as transformers computes them, any scaling or attention factor and
any user-supplied table unchanged, and no float32 sincos accuracy to argue
about at long positions. The in-kernel variant stays at the backend level
(``apply_rotary_freqs`` of the cuda and cupy backends) for a caller whose
table would be too large: at 1M positions and R = 128 it is 512 MiB.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from ._validate import check_backend, check_bool, check_int, fail

__all__ = ["ROPE_TYPES", "inv_freq", "from_hf_config", "RotaryEmbedding", "apply_rotary"]

ROPE_TYPES = ("default", "linear", "ntk", "dynamic", "yarn", "longrope", "llama3")
LAYOUTS = ("BSHD", "BHSD")

# YaRN's ramp bounds, in full turns over the original context (the paper's
# alpha = 1, beta = 32), used when a config leaves them out or sets them to 0.
YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0
# YaRN's ramp must not have zero width; transformers widens it by this much.
YARN_MIN_RAMP = 0.001
# YaRN's attention scale: 0.1 * mscale * ln(factor) + 1.
YARN_MSCALE_SLOPE = 0.1

# The smallest cache a RotaryEmbedding builds, so short prompts and decode
# steps don't regrow it one position at a time.
MIN_CACHE_LEN = 256

_Q_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_POS_DTYPES = (torch.int32, torch.int64)
_REQUIRED = object()


# --------------------------------------------------------------------------
# Frequencies
# --------------------------------------------------------------------------

def _rope_type(scaling: Optional[Mapping[str, Any]]) -> str:
    if scaling is None:
        return "default"
    if not isinstance(scaling, Mapping):
        fail(TypeError, "scaling", "None or a dict such as {'rope_type': 'yarn', 'factor': 4.0, ...}",
             f"{type(scaling).__name__} {scaling!r}")
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ROPE_TYPES:
        fail(ValueError, "scaling['rope_type']", f"one of {ROPE_TYPES}", repr(kind))
    return kind


def _param(scaling: Mapping[str, Any], key: str, default: Any = _REQUIRED, kind: str = "a number") -> Any:
    value = scaling.get(key, None)
    if value is None:
        if default is _REQUIRED:
            fail(ValueError, f"scaling[{key!r}]", f"{kind} for rope_type {_rope_type(scaling)!r}", "nothing")
        return default
    if kind == "a number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        fail(TypeError, f"scaling[{key!r}]", kind, f"{type(value).__name__} {value!r}")
    return value


def _positive(value: float, arg: str) -> float:
    if not math.isfinite(value) or value <= 0:
        fail(ValueError, arg, "a finite number > 0", value)
    return float(value)


def _check_dim(dim, arg: str = "dim") -> int:
    check_int(dim, arg)
    if dim < 2 or dim % 2:
        fail(ValueError, arg, "an even rotary dim >= 2", dim)
    return dim


def _exponents(dim: int) -> Tensor:
    """2i / R for i < R/2, float64."""
    return torch.arange(0, dim, 2, dtype=torch.float64) / dim


def _ntk_base(base: float, alpha: float, dim: int) -> float:
    """NTK-aware scaling stretches the lowest frequency by alpha, leaving the highest."""
    if dim <= 2:
        fail(ValueError, "dim", "a rotary dim > 2 for NTK scaling (its exponent is R / (R - 2))", dim)
    return base * alpha ** (dim / (dim - 2))


def _yarn(dim: int, base: float, scaling: Mapping[str, Any]) -> Tuple[Tensor, float]:
    original = _param(scaling, "original_max_position_embeddings", kind="an int (the trained context)")
    factor = _param(scaling, "factor", None)
    if factor is None:
        factor = _param(scaling, "max_position_embeddings", kind="an int, to infer factor") / original
    factor = _positive(factor, "scaling['factor']")

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else YARN_MSCALE_SLOPE * m * math.log(scale) + 1.0

    attention_factor = _param(scaling, "attention_factor", None)
    if attention_factor is None:
        m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
        attention_factor = mscale(factor, m) / mscale(factor, m_all) if (m and m_all) else mscale(factor)
    beta_fast = _param(scaling, "beta_fast", 0) or YARN_BETA_FAST
    beta_slow = _param(scaling, "beta_slow", 0) or YARN_BETA_SLOW
    truncate = scaling.get("truncate", True)

    # The dim whose frequency turns n times over the original context:
    # original * base ** (-2d / R) = 2 pi n  =>  d = R ln(original / (2 pi n)) / (2 ln base).
    def dim_for_turns(n: float) -> float:
        return dim * math.log(original / (n * 2 * math.pi)) / (2 * math.log(base))

    low, high = dim_for_turns(beta_fast), dim_for_turns(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += YARN_MIN_RAMP
    # ramp 0 below `low` (fast dims: keep, extrapolate) to 1 above `high` (slow dims: interpolate).
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    inv = base ** -_exponents(dim)
    return inv * (1 - ramp) + (inv / factor) * ramp, float(attention_factor)


def _longrope(dim: int, base: float, scaling: Mapping[str, Any], seq_len: Optional[int]) -> Tuple[Tensor, float]:
    original = _param(scaling, "original_max_position_embeddings", kind="an int (the trained context)")
    short = _param(scaling, "short_factor", kind="a list of R/2 numbers")
    long = _param(scaling, "long_factor", kind="a list of R/2 numbers")
    for key, val in (("short_factor", short), ("long_factor", long)):
        if len(val) != dim // 2:
            fail(ValueError, f"scaling[{key!r}]", f"{dim // 2} numbers (rotary dim {dim} / 2)", f"{len(val)}")
    factor = _param(scaling, "factor", None)
    if factor is None:
        factor = _param(scaling, "max_position_embeddings", kind="an int, to infer factor") / original
    attention_factor = _param(scaling, "attention_factor", None)
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(original))
    ext = torch.tensor(long if (seq_len and seq_len > original) else short, dtype=torch.float64)
    return 1.0 / (ext * base ** _exponents(dim)), float(attention_factor)


def _llama3(dim: int, base: float, scaling: Mapping[str, Any]) -> Tuple[Tensor, float]:
    factor = _positive(_param(scaling, "factor"), "scaling['factor']")
    low_ff = _param(scaling, "low_freq_factor")
    high_ff = _param(scaling, "high_freq_factor")
    original = _param(scaling, "original_max_position_embeddings", kind="an int (the trained context)")
    if high_ff <= low_ff:
        fail(ValueError, "scaling['high_freq_factor']", f"> low_freq_factor ({low_ff})", high_ff)
    inv = base ** -_exponents(dim)
    wavelen = 2 * math.pi / inv
    # smooth = 0 at wavelength original / low_ff (fully divided), 1 at original / high_ff (kept).
    smooth = (original / wavelen - low_ff) / (high_ff - low_ff)
    scale = torch.where(wavelen > original / low_ff, 1.0 / factor, 1.0)
    medium = (wavelen >= original / high_ff) & (wavelen <= original / low_ff)
    scale = torch.where(medium, (1 - smooth) / factor + smooth, scale)
    return inv * scale, 1.0


def inv_freq(dim: int, base: float = 10000.0, scaling: Optional[Mapping[str, Any]] = None,
             seq_len: Optional[int] = None, *, device=None) -> Tuple[Tensor, float]:
    """Inverse frequencies (R/2,) float32 and the attention factor for rotary dim ``dim``.

    ``scaling`` is None (plain RoPE) or a dict in transformers' ``rope_scaling``
    / ``rope_parameters`` form: ``rope_type`` (or ``type``) in ``ROPE_TYPES``
    plus that type's keys (``factor``, ``original_max_position_embeddings``,
    ``beta_fast``, ``short_factor``, ...; ``max_position_embeddings`` for
    ``dynamic``, and to infer a missing ``factor`` for yarn and longrope).
    ``seq_len`` matters for ``dynamic`` (the current length) and ``longrope``
    (long factors beyond the original length). Matches
    ``transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS[rope_type]``.
    """
    _check_dim(dim)
    if isinstance(base, bool) or not isinstance(base, (int, float)):
        fail(TypeError, "base", "a number", f"{type(base).__name__} {base!r}")
    base = _positive(base, "base")
    if seq_len is not None:
        check_int(seq_len, "seq_len", minimum=0)
    kind = _rope_type(scaling)
    attention_factor = 1.0
    if kind == "default":
        inv = base ** -_exponents(dim)
    elif kind == "linear":
        inv = base ** -_exponents(dim) / _positive(_param(scaling, "factor"), "scaling['factor']")
    elif kind == "ntk":
        inv = _ntk_base(base, _positive(_param(scaling, "factor"), "scaling['factor']"), dim) ** -_exponents(dim)
    elif kind == "dynamic":
        factor = _positive(_param(scaling, "factor"), "scaling['factor']")
        trained = _param(scaling, "max_position_embeddings", kind="an int (the trained context)")
        length = max(seq_len if seq_len is not None else trained, trained)
        inv = _ntk_base(base, factor * length / trained - (factor - 1), dim) ** -_exponents(dim)
    elif kind == "yarn":
        inv, attention_factor = _yarn(dim, base, scaling)
    elif kind == "longrope":
        inv, attention_factor = _longrope(dim, base, scaling, seq_len)
    else:
        inv, attention_factor = _llama3(dim, base, scaling)
    return inv.to(device=device, dtype=torch.float32), float(attention_factor)


# --------------------------------------------------------------------------
# Hugging Face configs
# --------------------------------------------------------------------------

def _field(config, name: str, default=None):
    if isinstance(config, Mapping):
        value = config.get(name, default)
    else:
        value = getattr(config, name, default)
    return default if value is None else value


def _is_per_layer(params: Mapping[str, Any]) -> bool:
    """transformers nests rope_parameters per layer type (gemma3: full / sliding attention)."""
    return bool(params) and all(v is None or isinstance(v, Mapping) for v in params.values())


def from_hf_config(config, *, layer_type: Optional[str] = None, **kwargs) -> "RotaryEmbedding":
    """A ``RotaryEmbedding`` for a transformers config object or config dict.

    Reads ``rope_parameters`` (transformers 5) or ``rope_scaling`` +
    ``rope_theta`` (older configs), ``partial_rotary_factor`` (in either place),
    ``head_dim`` (else ``hidden_size // num_attention_heads``),
    ``max_position_embeddings`` and ``original_max_position_embeddings``. For
    per-layer-type parameters pass ``layer_type``. ``kwargs`` go to
    ``RotaryEmbedding`` (``interleaved``, ``max_seq_len``, ``backend``, ...).
    """
    params = _field(config, "rope_parameters")
    if params and not isinstance(params, Mapping):
        fail(TypeError, "config.rope_parameters", "a dict", type(params).__name__)
    if params and _is_per_layer(params):
        if layer_type not in params or params[layer_type] is None:
            fail(ValueError, "layer_type", f"one of {sorted(k for k, v in params.items() if v)} "
                 "(this config has rope parameters per layer type)", repr(layer_type))
        params = params[layer_type]
    if not params:
        params = _field(config, "rope_scaling") or {}
    params = dict(params)

    head_dim = _field(config, "head_dim")
    if head_dim is None:
        hidden, heads = _field(config, "hidden_size"), _field(config, "num_attention_heads")
        if hidden is None or heads is None:
            fail(ValueError, "config", "head_dim, or hidden_size and num_attention_heads", "neither")
        head_dim = hidden // heads
    partial = params.get("partial_rotary_factor", None)
    if partial is None:
        partial = _field(config, "partial_rotary_factor", 1.0)
    dim = int(head_dim * partial)
    base = params.get("rope_theta", None)
    if base is None:
        base = _field(config, "rope_theta", 10000.0)

    kind = params.get("rope_type", params.get("type", "default"))
    scaling = {k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor", "type")}
    scaling["rope_type"] = kind
    max_pos = _field(config, "max_position_embeddings")
    if max_pos is not None:
        scaling["max_position_embeddings"] = max_pos
    if kind in ("yarn", "longrope", "llama3"):
        # A top-level original_max_position_embeddings (Phi-3) wins over the nested one.
        original = _field(config, "original_max_position_embeddings") or scaling.get("original_max_position_embeddings")
        scaling["original_max_position_embeddings"] = original if original is not None else max_pos
    return RotaryEmbedding(dim, float(base), scaling if kind != "default" else None, **kwargs)


# --------------------------------------------------------------------------
# The fused rotation
# --------------------------------------------------------------------------

def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _check_rows(x, arg: str, layout: str) -> None:
    if not isinstance(x, Tensor):
        fail(TypeError, arg, "a torch.Tensor", type(x).__name__)
    if x.dim() != 4:
        fail(ValueError, arg, f"a 4-d {layout} tensor", f"{x.dim()}-d tensor of shape {tuple(x.shape)}")
    if x.dtype not in _Q_DTYPES:
        fail(TypeError, arg, "dtype float16, bfloat16, float32 or float64", x.dtype)
    if x.stride(-1) != 1 and x.shape[-1] != 1:
        fail(ValueError, arg, "a contiguous last (head) dimension; other strides may be anything",
             f"stride {x.stride(-1)} in shape {tuple(x.shape)} ({layout})")


def _check_table(cos, sin, q: Tensor) -> int:
    """Validate cos/sin (cache_len, R/2); return R."""
    for t, arg in ((cos, "cos"), (sin, "sin")):
        if not isinstance(t, Tensor):
            fail(TypeError, arg, "a torch.Tensor (cache_len, rot_dim/2)", type(t).__name__)
        if t.dim() != 2:
            fail(ValueError, arg, "a 2-d (cache_len, rot_dim/2) table", f"shape {tuple(t.shape)}")
        if not t.is_floating_point():
            fail(TypeError, arg, "a floating-point table", t.dtype)
        if t.device != q.device:
            fail(ValueError, arg, f"a tensor on q's device ({q.device})", t.device)
    if sin.dtype != cos.dtype:
        fail(TypeError, "sin", f"cos's dtype ({cos.dtype})", sin.dtype)
    if sin.shape != cos.shape:
        fail(ValueError, "sin", f"cos's shape {tuple(cos.shape)}", tuple(sin.shape))
    rot = 2 * cos.shape[1]
    if rot == 0 or rot > q.shape[-1]:
        fail(ValueError, "cos/sin", f"(cache_len, rot_dim/2) with 2 <= rot_dim <= head dim {q.shape[-1]} "
             "(a full (S, rot_dim) table from transformers needs [..., :rot_dim // 2])",
             f"shape {tuple(cos.shape)}, i.e. rot_dim {rot}")
    return rot


def _normalise_positions(positions, offset: int, b: int, s: int, q: Tensor, cache_len: int
                         ) -> Tuple[Optional[Tensor], int]:
    """``(ids, offset)`` for the op; validates ranges that are visible without a device sync."""
    if isinstance(positions, bool) or not isinstance(positions, (int, Tensor)):
        fail(TypeError, "positions", "an int offset, a (B,) offset tensor or (B, S) position ids",
             f"{type(positions).__name__} {positions!r}")
    if isinstance(positions, int):
        first = offset + positions
        if first < 0 or first + s > cache_len:
            fail(ValueError, "positions", f"an offset >= 0 with offset + S <= {cache_len} (the cos/sin rows)",
                 f"offset {first} with S = {s}")
        return None, first
    ids = positions
    if ids.dtype not in _POS_DTYPES:
        fail(TypeError, "positions", "an int32 or int64 tensor", ids.dtype)
    if ids.device != q.device:
        fail(ValueError, "positions", f"a tensor on q's device ({q.device})", ids.device)
    if ids.dim() == 2 and ids.shape[0] == 1 and b != 1:
        ids = ids.expand(b, -1)
    if not ((ids.dim() == 1 and ids.shape[0] == b) or (ids.dim() == 2 and tuple(ids.shape) == (b, s))):
        fail(ValueError, "positions", f"({b},) per-batch offsets or ({b}, {s}) position ids",
             f"shape {tuple(ids.shape)}")
    ids = ids.to(torch.int64)
    if ids.device.type == "cpu" and ids.numel() and s and not _compiling():
        lo, hi = (int(v) for v in torch.aminmax(ids))
        first, last = offset + lo, offset + hi + (s - 1 if ids.dim() == 1 else 0)
        if first < 0 or last >= cache_len:
            fail(ValueError, "positions", f"positions in [0, {cache_len}) (the cos/sin rows)",
                 f"positions from {first} to {last}")
    return ids, offset


def _rotate(q, k, cos, sin, positions, *, offset: int = 0, interleaved: bool, inplace: bool, conjugate: bool,
            layout: str, backend: Optional[str]):
    """Validate, bring everything to the op's (B, S, H, D) form, run it, restore the layout."""
    if layout not in LAYOUTS:
        fail(ValueError, "layout", f"one of {LAYOUTS}", repr(layout))
    check_bool(interleaved, "interleaved")
    check_bool(inplace, "inplace")
    check_bool(conjugate, "conjugate")
    check_backend(backend)
    _check_rows(q, "q" if k is not None else "x", layout)
    if k is not None:
        _check_rows(k, "k", layout)
        if k.dtype != q.dtype:
            fail(TypeError, "k", f"q's dtype ({q.dtype})", k.dtype)
        if k.device != q.device:
            fail(ValueError, "k", f"a tensor on q's device ({q.device})", k.device)
    to_bshd = (lambda t: t) if layout == "BSHD" else (lambda t: t.transpose(1, 2))
    qv = to_bshd(q)
    kv = to_bshd(k) if k is not None else None
    b, s, _, d = qv.shape
    if kv is not None and (kv.shape[0] != b or kv.shape[1] != s or kv.shape[3] != d):
        fail(ValueError, "k", f"batch, sequence and head dim ({b}, {s}, {d}) of q in layout {layout}",
             f"shape {tuple(k.shape)}")
    _check_table(cos, sin, qv)
    ids, pos_offset = _normalise_positions(positions, offset, b, s, qv, cos.shape[0])
    table_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    cos, sin = (t.to(table_dtype) for t in (cos, sin))
    if cos.stride(-1) != 1:
        cos, sin = cos.contiguous(), sin.contiguous()
    backend = backend or ""

    if inplace:
        tracked = torch.is_grad_enabled() and (q.requires_grad or (k is not None and k.requires_grad))
        if tracked:
            # The in-place op has no autograd formula: rotate out of place and
            # copy back, which autograd records.
            q_out, k_out = torch.ops.pykernels.rotary(qv, kv, cos, sin, ids, pos_offset, interleaved, conjugate,
                                                      backend)
            qv.copy_(q_out)
            if kv is not None:
                kv.copy_(k_out)
        else:
            torch.ops.pykernels.rotary_(qv, kv, cos, sin, ids, pos_offset, interleaved, conjugate, backend)
        return q, k
    q_out, k_out = torch.ops.pykernels.rotary(qv, kv, cos, sin, ids, pos_offset, interleaved, conjugate, backend)
    return to_bshd(q_out), (to_bshd(k_out) if k is not None else None)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool = False, inplace: bool = False,
                 conjugate: bool = False, *, k: Optional[Tensor] = None, positions: Union[int, Tensor] = 0,
                 layout: str = "BSHD", backend: Optional[str] = None):
    """Rotate the first ``rot_dim = 2 * cos.shape[1]`` features of x (and k) by their positions.

    x (and k) are (B, S, H, D) (``layout="BHSD"``: (B, H, S, D)); k may have
    its own head count and is rotated in the same launch. cos/sin are
    (cache_len, rot_dim/2) tables indexed by position, e.g. from
    ``RotaryEmbedding.cos_sin``. The position of token (b, s) is
    ``positions + s`` for an int, ``positions[b] + s`` for a (B,) tensor and
    ``positions[b, s]`` for a (B, S) tensor. Pair i is (x[i], x[i + R/2])
    (GPT-NeoX) or, with ``interleaved``, (x[2i], x[2i+1]) (GPT-J).
    ``conjugate`` rotates by -theta; ``inplace`` writes into x (and k).
    Math in float32; fp16/bf16/fp32 on every backend, fp64 on torch.

    Returns the rotated x, or ``(x, k)`` when k is given. Positions beyond the
    table raise ValueError where that is visible without a device sync (an
    int, or a CPU tensor); on the GPU such rows come out NaN.
    """
    q_out, k_out = _rotate(x, k, cos, sin, positions, interleaved=interleaved, inplace=inplace,
                           conjugate=conjugate, layout=layout, backend=backend)
    return q_out if k is None else (q_out, k_out)


# --------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------

class RotaryEmbedding(torch.nn.Module):
    """RoPE with a cos/sin cache that grows on demand, for any ``ROPE_TYPES`` scaling.

    ``dim`` is the rotary dim (features past it pass through: partial rotary).
    ``scaling`` is as for ``inv_freq``. ``max_seq_len`` sizes the cache up
    front; with ``grow=False`` positions past it raise instead of growing it
    (and tensor positions cost no device sync for the static scaling types).
    ``layout`` ("BSHD" or "BHSD") and ``backend`` apply to every call.

    ``rope(q, k, positions=None, seqlen_offset=0)`` returns the rotated
    ``(q, k)``: positions default to ``seqlen_offset + s``; a (B,) tensor adds
    per-batch offsets, a (B, S) tensor gives position ids; ``seqlen_offset``
    is added in every case. Like transformers' rotary modules, ``dynamic``
    recomputes frequencies when a call's length ``max position + 1`` passes the
    trained length (and back once it is under it again), and ``longrope``
    switches to its long factors beyond ``original_max_position_embeddings``;
    for tensor positions that needs the max position, hence one device sync.
    Under ``torch.compile`` tensor positions neither grow the cache nor switch
    frequencies (that would need the sync): size the cache with ``max_seq_len``.
    """

    def __init__(self, dim: int, base: float = 10000.0, scaling: Optional[Mapping[str, Any]] = None,
                 interleaved: bool = False, *, max_seq_len: int = 0, grow: bool = True, layout: str = "BSHD",
                 backend: Optional[str] = None, device=None):
        super().__init__()
        inv, self.attention_factor = inv_freq(dim, base, scaling)
        check_bool(interleaved, "interleaved")
        check_bool(grow, "grow")
        check_int(max_seq_len, "max_seq_len", minimum=0)
        if not grow and max_seq_len == 0:
            fail(ValueError, "max_seq_len", "a cache length > 0 when grow=False", max_seq_len)
        if layout not in LAYOUTS:
            fail(ValueError, "layout", f"one of {LAYOUTS}", repr(layout))
        check_backend(backend)
        self.dim, self.base = dim, float(base)
        self.scaling: Optional[Dict[str, Any]] = dict(scaling) if scaling else None
        self.rope_type = _rope_type(self.scaling)
        self.interleaved, self.grow, self.layout, self.backend = interleaved, grow, layout, backend
        self._capacity = max_seq_len
        # dynamic: the length the current frequencies were made for (transformers'
        # max_seq_len_cached); longrope: whether the long factors are in use.
        self._trained_len = self._trained_length()
        self._freq_len = self._trained_len
        self._long = False
        self.register_buffer("inv_freq", inv.to(device), persistent=False)
        self.register_buffer("_cos", torch.empty(0, dim // 2, device=device), persistent=False)
        self.register_buffer("_sin", torch.empty(0, dim // 2, device=device), persistent=False)

    def _trained_length(self) -> int:
        if self.rope_type == "dynamic":
            return int(self.scaling["max_position_embeddings"])
        if self.rope_type == "longrope":
            return int(self.scaling["original_max_position_embeddings"])
        return 0

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, base={self.base:g}, rope_type={self.rope_type!r}, "
                f"attention_factor={self.attention_factor:g}, interleaved={self.interleaved}, layout={self.layout!r}")

    # -- frequencies and cache ------------------------------------------------

    def _set_frequencies(self, seq_len: Optional[int]) -> None:
        inv, self.attention_factor = inv_freq(self.dim, self.base, self.scaling, seq_len)
        self.inv_freq = inv.to(self.inv_freq.device)
        self._cos = self._cos[:0]
        self._sin = self._sin[:0]

    def _update_frequencies(self, seq_len: int) -> None:
        """transformers' rules for the types whose frequencies depend on the length."""
        if self.rope_type == "dynamic":
            if seq_len > self._freq_len:
                self._set_frequencies(seq_len)
                self._freq_len = seq_len
            elif seq_len < self._trained_len < self._freq_len:
                self._set_frequencies(None)
                self._freq_len = self._trained_len
        elif self.rope_type == "longrope":
            long = seq_len > self._trained_len
            if long != self._long:
                self._set_frequencies(self._trained_len + 1 if long else None)
                self._long = long

    def _ensure_cache(self, length: int, device) -> None:
        """Make the cache cover positions [0, length) on ``device``."""
        device = torch.device(device)
        if self._cos.device == device and self._cos.shape[0] >= max(length, 1):
            return
        if length > self._capacity:
            if not self.grow:
                fail(ValueError, "positions", f"positions < max_seq_len = {self._capacity} (grow=False)",
                     f"a maximum position of {length - 1}")
            self._capacity = max(length, 2 * self._capacity, MIN_CACHE_LEN)
        pos = torch.arange(self._capacity, dtype=torch.float64, device=device)
        angles = pos[:, None] * self.inv_freq.to(device=device, dtype=torch.float64)[None, :]
        self.inv_freq = self.inv_freq.to(device)
        self._cos = (angles.cos() * self.attention_factor).to(torch.float32)
        self._sin = (angles.sin() * self.attention_factor).to(torch.float32)

    def cos_sin(self, positions: Union[int, Tensor], device=None) -> Tuple[Tensor, Tensor]:
        """float32 cos and sin, attention factor applied, shape ``(*positions.shape, dim/2)``.

        An int n means positions 0..n-1. These are the tables ``apply_rotary``
        takes (with ``positions`` indexing them), and half of transformers'
        (..., dim) cos/sin, whose second half repeats the first.
        """
        if isinstance(positions, bool) or not isinstance(positions, (int, Tensor)):
            fail(TypeError, "positions", "an int n (positions 0..n-1) or an int tensor of positions",
                 f"{type(positions).__name__} {positions!r}")
        if isinstance(positions, int):
            check_int(positions, "positions", minimum=0)
            device = device if device is not None else self.inv_freq.device
            self._update_frequencies(positions)
            self._ensure_cache(positions, device)
            return self._cos[:positions], self._sin[:positions]
        if positions.dtype not in _POS_DTYPES:
            fail(TypeError, "positions", "an int32 or int64 tensor", positions.dtype)
        device = device if device is not None else positions.device
        lo, hi = (int(v) for v in torch.aminmax(positions)) if positions.numel() else (0, -1)
        if lo < 0:
            fail(ValueError, "positions", "positions >= 0", f"a minimum of {lo}")
        self._update_frequencies(hi + 1)
        self._ensure_cache(hi + 1, device)
        idx = positions.to(device=device, dtype=torch.int64)
        return self._cos[idx], self._sin[idx]

    def _call_length(self, positions: Optional[Tensor], offset: int, s: int) -> Optional[int]:
        """max position + 1 of a call, or None when it is unknown without a sync we choose not to make."""
        if positions is None:
            return offset + s
        needs_len = self.rope_type in ("dynamic", "longrope") or self.grow
        if not needs_len or _compiling() or positions.numel() == 0:
            return None
        lo, hi = (int(v) for v in torch.aminmax(positions))
        last = offset + hi + (s - 1 if positions.dim() == 1 else 0)
        if offset + lo < 0:
            fail(ValueError, "positions", "positions + seqlen_offset >= 0", f"a minimum of {offset + lo}")
        return last + 1

    def forward(self, q: Tensor, k: Optional[Tensor] = None, positions: Optional[Tensor] = None,
                seqlen_offset: int = 0, *, inplace: bool = False, conjugate: bool = False):
        """Rotated ``(q, k)`` (k None stays None); see the class docstring for positions."""
        check_int(seqlen_offset, "seqlen_offset")
        if positions is not None and not isinstance(positions, Tensor):
            fail(TypeError, "positions", "None or an int tensor ((B,) offsets or (B, S) position ids); "
                 "an int offset goes in seqlen_offset", f"{type(positions).__name__} {positions!r}")
        _check_rows(q, "q", self.layout)
        s = q.shape[1] if self.layout == "BSHD" else q.shape[2]
        length = self._call_length(positions, seqlen_offset, s)
        if length is not None:
            if length > 0 and self.rope_type in ("dynamic", "longrope"):
                self._update_frequencies(length)
            self._ensure_cache(length, q.device)
        else:
            self._ensure_cache(self._capacity, q.device)
        pos = positions if positions is not None else seqlen_offset
        return _rotate(q, k, self._cos, self._sin, pos, offset=seqlen_offset if positions is not None else 0,
                       interleaved=self.interleaved, inplace=inplace, conjugate=conjugate, layout=self.layout,
                       backend=self.backend)
