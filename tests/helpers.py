"""Tolerance rules and input makers shared by the tests.

The rule (flash-attn's ``tests/test_flash_attn.py``): a kernel's error against
the float64 reference may be at most about twice PyTorch's own error when it
computes the same thing in the low-precision dtype.
"""
from __future__ import annotations

import pykernels
import pytest
import torch


def gpu_backends(op: str = "attention_fwd"):
    """pytest params for every backend, skipped with the reason where unusable."""
    params = []
    for name, st in pykernels.available_backends().items():
        marks = [pytest.mark.gpu]
        if not st.available:
            marks.append(pytest.mark.skip(reason=f"{name}: {st.reason}"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Max abs difference, treating matching infinities (e.g. lse = -inf) as equal."""
    x, ref = x.double(), ref.double()
    same_inf = torch.isinf(x) & torch.isinf(ref) & (torch.sign(x) == torch.sign(ref))
    diff = torch.where(same_inf, torch.zeros_like(x), (x - ref).abs())
    return float(diff.max()) if diff.numel() else 0.0


def assert_within_2x(out: torch.Tensor, ref64: torch.Tensor, ref_lowp: torch.Tensor, what: str = "out",
                     factor: float = 2.0, floor: float = 1e-5) -> None:
    err = max_err(out, ref64)
    base = max_err(ref_lowp, ref64)
    assert err <= factor * base + floor, (
        f"{what}: max error {err:.3e} vs float64 reference exceeds {factor}x PyTorch's own "
        f"low-precision error {base:.3e} (+{floor:g})"
    )


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill with NaN so that any element a kernel forgets to write fails the comparison."""
    return t.fill_(float("nan"))


def attention_inputs(b, sq, sk, hq, hkv, d, dtype, device, sink_logits=False, alibi=None):
    """Random q, k, v (B, S, H, D), optional sink logits and ALiBi slopes ("heads": (Hq,), "batch": (B, Hq))."""
    q = torch.randn(b, sq, hq, d, device=device, dtype=dtype)
    k = torch.randn(b, sk, hkv, d, device=device, dtype=dtype)
    v = torch.randn(b, sk, hkv, d, device=device, dtype=dtype)
    sinks = torch.randn(hq, device=device) if sink_logits else None
    slopes = None
    if alibi == "heads":
        slopes = pykernels.alibi_slopes(hq).to(device)
    elif alibi == "batch":
        slopes = torch.rand(b, hq, device=device) * 0.3
    return q, k, v, sinks, slopes


def choose_extension_kernel(request, monkeypatch, env_var: str) -> str:
    """Body of the kernel-choice fixtures (params "default", "mma_sync").

    "mma_sync" sets ``env_var`` (PYKERNELS_FWD_KERNEL or PYKERNELS_BWD_KERNEL)
    to sm80, which makes the CUDA extension run its portable mma.sync kernel
    where it would take the Hopper wgmma one; the variable picks between the
    extension's kernels only, so other backends skip that param.
    """
    if request.param == "mma_sync":
        backend = getattr(request.node, "callspec", None) and request.node.callspec.params.get("backend")
        if getattr(backend, "id", backend) != "cuda":
            pytest.skip(f"{env_var} picks between the CUDA extension's kernels only")
        monkeypatch.setenv(env_var, "sm80")
    return request.param
