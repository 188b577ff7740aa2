"""Backend dispatch: available_backends, backend=, PYKERNELS_BACKEND."""
import pytest
import torch

import pykernels
from pykernels import backends


def test_available_backends_lists_all_with_reasons():
    st = pykernels.available_backends()
    assert list(st) == ["cuda", "cupy", "numba", "torch"]
    assert st["torch"].available
    for name, s in st.items():
        assert s.name == name and isinstance(s.reason, str) and s.reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU reasons")
def test_gpu_backends_say_why_not_here():
    st = pykernels.available_backends()
    assert not st["cuda"].available and "GPU" in st["cuda"].reason


def test_cpu_picks_torch():
    name, _ = backends.resolve("attention_fwd", None, torch.device("cpu"), torch.float32, 64)
    assert name == "torch"


def test_env_var_selects_backend(monkeypatch):
    monkeypatch.setenv("PYKERNELS_BACKEND", "torch")
    assert backends.resolve("attention_fwd", None, torch.device("cpu"), torch.float32, 64)[0] == "torch"
    monkeypatch.setenv("PYKERNELS_BACKEND", "cuda")
    q = torch.randn(1, 4, 2, 8)
    if not pykernels.available_backends()["cuda"].available:
        with pytest.raises(ValueError, match="backend 'cuda'"):
            pykernels.flash_attn_func(q, q, q)
    monkeypatch.setenv("PYKERNELS_BACKEND", "bogus")
    with pytest.raises(ValueError, match="'bogus'"):
        pykernels.flash_attn_func(q, q, q)


def test_explicit_backend_beats_env(monkeypatch):
    monkeypatch.setenv("PYKERNELS_BACKEND", "cuda")
    q = torch.randn(1, 4, 2, 8)
    pykernels.flash_attn_func(q, q, q, backend="torch")


def test_gpu_backend_on_cpu_tensors_is_a_clear_error():
    q = torch.randn(1, 4, 2, 8, dtype=torch.float16)
    for name in ("cuda", "cupy"):
        with pytest.raises(ValueError, match=f"backend '{name}'"):
            pykernels.flash_attn_func(q, q, q, backend=name)


def test_build_info_line():
    line = pykernels.build_info()
    assert line.startswith("pykernels: ")
