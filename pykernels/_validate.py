"""Input validation for every public op, in one place.

Each failure raises ``TypeError`` (wrong kind of thing) or ``ValueError``
(right kind, wrong value) with one message shape::

    <argument>: expected <what>, got <what was given>

The checks only read shapes, dtypes, devices and Python scalars, so they cost
nothing next to a kernel and trace cleanly under ``torch.compile``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

ATTN_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
PARAM_DTYPES = (torch.float32, torch.float64)
BACKEND_NAMES = ("cuda", "cupy", "numba", "torch")
# The kernels take window sides and sink counts as 32-bit ints.
INT32_MAX = 2 ** 31 - 1
# Devices the ops are registered for ("meta" for shape-only tracing).
DEVICE_TYPES = ("cpu", "cuda", "meta")


def fail(exc: type, arg: str, expected: str, got) -> None:
    raise exc(f"{arg}: expected {expected}, got {got}")


def _desc(t: torch.Tensor) -> str:
    return f"{tuple(t.shape)} {t.dtype} on {t.device}"


def check_tensor(x, arg: str, ndim: Optional[int] = None, dtypes=None) -> None:
    if not isinstance(x, torch.Tensor):
        fail(TypeError, arg, "a torch.Tensor", type(x).__name__)
    if ndim is not None and x.dim() != ndim:
        fail(ValueError, arg, f"a {ndim}-d tensor", f"{x.dim()}-d tensor of shape {tuple(x.shape)}")
    if dtypes is not None and x.dtype not in dtypes:
        fail(TypeError, arg, "dtype " + " or ".join(str(d) for d in dtypes), x.dtype)


def check_bool(x, arg: str) -> None:
    if not isinstance(x, bool):
        fail(TypeError, arg, "a bool", f"{type(x).__name__} {x!r}")


def check_int(x, arg: str, minimum: Optional[int] = None) -> None:
    if isinstance(x, bool) or not isinstance(x, int):
        fail(TypeError, arg, "an int", f"{type(x).__name__} {x!r}")
    if minimum is not None and x < minimum:
        fail(ValueError, arg, f"an int >= {minimum}", x)
    if x > INT32_MAX:
        fail(ValueError, arg, f"an int <= {INT32_MAX}", x)


def check_backend(backend) -> None:
    if backend is None:
        return
    if not isinstance(backend, str):
        fail(TypeError, "backend", f"None or one of {BACKEND_NAMES}", f"{type(backend).__name__} {backend!r}")
    if backend not in BACKEND_NAMES:
        fail(ValueError, "backend", f"None or one of {BACKEND_NAMES}", repr(backend))


def check_window(window_size) -> Tuple[int, int]:
    if not isinstance(window_size, (tuple, list)) or len(window_size) != 2:
        fail(TypeError, "window_size", "a (left, right) pair of ints, -1 for unbounded", repr(window_size))
    left, right = window_size
    for side, val in (("left", left), ("right", right)):
        if isinstance(val, bool) or not isinstance(val, int):
            fail(TypeError, f"window_size[{side}]", "an int (-1 for unbounded)", f"{type(val).__name__} {val!r}")
        if val < -1 or val > INT32_MAX:
            fail(ValueError, f"window_size[{side}]", f"an int in [0, {INT32_MAX}], or -1 for unbounded", val)
    return int(left), int(right)


def check_scale(softmax_scale, head_dim: int, arg: str = "softmax_scale") -> float:
    if softmax_scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(softmax_scale, bool) or not isinstance(softmax_scale, (int, float)):
        fail(TypeError, arg, "None or a float", f"{type(softmax_scale).__name__} {softmax_scale!r}")
    if not math.isfinite(softmax_scale):
        fail(ValueError, arg, "a finite float", softmax_scale)
    return float(softmax_scale)


def check_attention(
    q, k, v, *, softmax_scale, causal, window_size, sink_tokens, sink_logits, alibi_slopes, return_lse, backend,
    names=("q", "k", "v"),
) -> Tuple[float, int, int]:
    """Validate ``flash_attn_func`` arguments in (B, S, H, D) layout.

    Returns ``(softmax_scale, window_left, window_right)`` with defaults filled in.
    """
    nq, nk, nv = names
    for x, arg in ((q, nq), (k, nk), (v, nv)):
        check_tensor(x, arg, ndim=4, dtypes=ATTN_DTYPES)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        fail(TypeError, f"{nk}/{nv}", f"the dtype of {nq} ({q.dtype})", f"{k.dtype} and {v.dtype}")
    if q.device.type not in DEVICE_TYPES:
        fail(ValueError, nq, "a CPU or CUDA tensor", f"a tensor on {q.device}")
    if k.device != q.device or v.device != q.device:
        fail(ValueError, f"{nk}/{nv}", f"tensors on {nq}'s device ({q.device})", f"{k.device} and {v.device}")
    b, sq, hq, d = q.shape
    if b == 0 or sq == 0 or hq == 0 or d == 0:
        fail(ValueError, nq, "non-empty batch, sequence, heads and head dim", f"shape {tuple(q.shape)}")
    if k.shape != v.shape:
        fail(ValueError, nv, f"the shape of {nk} {tuple(k.shape)}", tuple(v.shape))
    if k.shape[0] != b:
        fail(ValueError, nk, f"batch {b} like {nq}", f"batch {k.shape[0]}")
    if k.shape[1] == 0 or k.shape[2] == 0:
        fail(ValueError, nk, "non-empty sequence and heads", f"shape {tuple(k.shape)}")
    if k.shape[3] != d:
        fail(ValueError, nk, f"head dim {d} like {nq}", f"head dim {k.shape[3]}")
    hkv = k.shape[2]
    if hq % hkv != 0:
        fail(ValueError, f"{nq}/{nk} heads", "query heads divisible by key/value heads (GQA/MQA)", f"Hq={hq}, Hkv={hkv}")
    for x, arg in ((q, nq), (k, nk), (v, nv)):
        if x.stride(-1) != 1:
            fail(ValueError, arg, "a contiguous last (head) dimension", f"stride {x.stride(-1)} in shape {tuple(x.shape)}")
    scale = check_scale(softmax_scale, d)
    check_bool(causal, "causal")
    left, right = check_window(window_size)
    check_int(sink_tokens, "sink_tokens", minimum=0)
    if sink_logits is not None:
        check_tensor(sink_logits, "sink_logits", ndim=1, dtypes=PARAM_DTYPES)
        if sink_logits.shape[0] != hq:
            fail(ValueError, "sink_logits", f"shape ({hq},), one logit per query head", tuple(sink_logits.shape))
        if sink_logits.device != q.device:
            fail(ValueError, "sink_logits", f"a tensor on {q.device}", sink_logits.device)
    if alibi_slopes is not None:
        check_tensor(alibi_slopes, "alibi_slopes", dtypes=PARAM_DTYPES)
        if tuple(alibi_slopes.shape) not in ((hq,), (b, hq)):
            fail(ValueError, "alibi_slopes", f"shape ({hq},) or ({b}, {hq})", tuple(alibi_slopes.shape))
        if alibi_slopes.device != q.device:
            fail(ValueError, "alibi_slopes", f"a tensor on {q.device}", alibi_slopes.device)
    check_bool(return_lse, "return_lse")
    check_backend(backend)
    return scale, left, right
