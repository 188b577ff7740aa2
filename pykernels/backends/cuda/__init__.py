"""CUDA C++ backend: the compiled extension ``pykernels._C`` (csrc/).

Built by ``setup.py`` when torch has CUDA and nvcc is found; otherwise the
build records why it was skipped in ``pykernels/_build_info.json`` and this
backend reports that reason.
"""
from __future__ import annotations

import json
import os

import torch

DESCRIPTION = "CUDA C++ extension pykernels._C (csrc/)"

_HALF = (torch.float16, torch.bfloat16)
_BUILD_INFO = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "_build_info.json")


def _build_info() -> dict:
    try:
        with open(_BUILD_INFO) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def load_extension():
    """Import and return ``pykernels._C``; raises ImportError with the build's reason."""
    try:
        from ... import _C  # type: ignore[attr-defined]
    except ImportError as exc:
        info = _build_info()
        why = info.get("reason") or f"{exc}"
        raise ImportError(f"the CUDA extension pykernels._C is not built: {why}") from exc
    return _C


def extension_status() -> str:
    try:
        load_extension()
    except ImportError as exc:
        return f"pykernels: {exc}"
    info = _build_info()
    return f"pykernels: CUDA extension pykernels._C built for {info.get('archs', '?')}"


def availability():
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to torch"
    try:
        load_extension()
    except ImportError as exc:
        return str(exc)
    return None


def supports(op, device, dtype, head_dim):
    if device.type != "cuda":
        return f"it needs CUDA tensors, got tensors on {device}"
    if op == "rope":
        return None if dtype in (*_HALF, torch.float32) else f"rope takes float16, bfloat16 or float32, got {dtype}"
    if dtype not in _HALF:
        return f"it takes float16 or bfloat16, got {dtype}"
    if op in ("attention_fwd",):
        from . import attention

        return attention.supports(dtype, head_dim)
    if op == "attention_bwd":
        from . import attention

        return attention.supports_backward(dtype, head_dim)
    return f"{op} has no CUDA C++ kernel yet"
