"""The backend registry: one place that knows which implementations exist.

Every backend is a package ``pykernels.backends.<name>`` that mirrors the same
op files (``attention.py``, ``rope.py``) and exposes, in its ``__init__``:

* ``availability() -> str | None``: None when usable here, else why not;
* ``supports(op, device, dtype, head_dim) -> str | None``: None when this
  backend can run ``op`` ("attention_fwd", "attention_bwd", "rope") on such
  inputs, else why not.

Dispatch picks, for ``backend=None``, the first usable backend in
``PREFERENCE`` (fastest first); ``PYKERNELS_BACKEND`` overrides the default.
"""
from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass
from typing import Dict, Optional

import torch

# Fastest first. "torch" runs everywhere and is the fallback.
PREFERENCE = ("cuda", "cupy", "numba", "torch")
ENV_VAR = "PYKERNELS_BACKEND"


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    reason: str  # why it is unavailable, or a short description when it is

    def __bool__(self) -> bool:
        return self.available


def _module(name: str):
    return importlib.import_module(f"pykernels.backends.{name}")


def op_module(name: str, op_file: str):
    """The module ``pykernels.backends.<name>.<op_file>`` (e.g. "attention", "rope")."""
    return importlib.import_module(f"pykernels.backends.{name}.{op_file}")


@functools.lru_cache(maxsize=None)
def status(name: str) -> BackendStatus:
    """Whether backend ``name`` can run on this machine, and why not."""
    if name not in PREFERENCE:
        raise ValueError(f"backend: expected one of {PREFERENCE} or None, got {name!r}")
    try:
        mod = _module(name)
        reason = mod.availability()
    except Exception as exc:  # an import error of an optional dependency
        return BackendStatus(name, False, f"failed to load: {type(exc).__name__}: {exc}")
    if reason is None:
        return BackendStatus(name, True, getattr(mod, "DESCRIPTION", "available"))
    return BackendStatus(name, False, reason)


def available_backends() -> Dict[str, BackendStatus]:
    """Every backend with whether it is usable here and, if not, why.

    >>> {n: s.available for n, s in pykernels.available_backends().items()}
    {'cuda': False, 'cupy': False, 'numba': False, 'torch': True}
    """
    return {name: status(name) for name in PREFERENCE}


def requested(backend: Optional[str]) -> Optional[str]:
    """The backend asked for: ``backend`` if given, else ``PYKERNELS_BACKEND``, else None (automatic)."""
    if backend is None or backend == "":
        env = os.environ.get(ENV_VAR, "").strip()
        return env or None
    return backend


def resolve(op: str, backend: Optional[str], device: torch.device, dtype: torch.dtype, head_dim: int,
            use_env: bool = True):
    """Return ``(name, module)`` of the backend that runs ``op`` on these inputs.

    An explicit request (``backend``, or ``PYKERNELS_BACKEND`` unless
    ``use_env`` is False) that cannot be served raises a ``ValueError`` naming
    the backend and the reason; otherwise the fastest backend that can is picked.
    """
    name = requested(backend) if use_env else (backend or None)
    if name is not None:
        if name not in PREFERENCE:
            raise ValueError(f"backend: expected one of {PREFERENCE} or None, got {name!r}")
        st = status(name)
        if not st.available:
            raise ValueError(f"backend {name!r} is unavailable: {st.reason}")
        why = _module(name).supports(op, device, dtype, head_dim)
        if why is not None:
            raise ValueError(f"backend {name!r} cannot run {op}: {why}")
        return name, _module(name)
    reasons = []
    # Only the torch backend runs on CPU tensors by default; the Numba
    # simulator takes them too, but only when asked for by name.
    candidates = PREFERENCE if device.type == "cuda" else ("torch",)
    for cand in candidates:
        st = status(cand)
        if not st.available:
            reasons.append(f"{cand}: {st.reason}")
            continue
        why = _module(cand).supports(op, device, dtype, head_dim)
        if why is None:
            return cand, _module(cand)
        reasons.append(f"{cand}: {why}")
    raise ValueError(f"no backend can run {op} on {device} {dtype} head_dim={head_dim}: " + "; ".join(reasons))
