"""The CuPy backend needs no build step: it runs where the C++ extension was never
built and no nvcc is on the PATH (NVRTC compiles the csrc/ headers at first use).

The check runs in a fresh interpreter that cannot import ``pykernels._C`` and
whose PATH holds no nvcc, then compares attention (forward and, through
autograd, backward) and RoPE with the float64 reference.
"""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import sys
sys.modules["pykernels._C"] = None  # as if the extension had never been built
import shutil, torch, pykernels
from pykernels.reference import attention_ref, rotary_ref
assert shutil.which("nvcc") is None, "nvcc is still on the PATH"
st = pykernels.available_backends()
assert not st["cuda"].available, st["cuda"]
assert st["cupy"].available, st["cupy"]
q = torch.randn(1, 97, 4, 128, device="cuda", dtype=torch.bfloat16)
k = torch.randn(1, 130, 2, 128, device="cuda", dtype=torch.bfloat16)
v = torch.randn_like(k)
out = pykernels.flash_attn_func(q, k, v, causal=True, window_size=(32, -1), sink_tokens=2)
ref, _ = attention_ref(q, k, v, causal=True, window_size=(32, -1), sink_tokens=2)
low, _ = attention_ref(q, k, v, causal=True, window_size=(32, -1), sink_tokens=2, upcast=False)
assert (out.double() - ref).abs().max() <= 2 * (low.double() - ref).abs().max() + 1e-5
# The backward: the same NVRTC build of csrc/'s backward kernels, through autograd.
from pykernels import backends
assert backends.resolve("attention_bwd", None, q.device, q.dtype, 128)[0] == "cupy"
dout = torch.randn_like(q)
grads = {}
for dt in (None, torch.float64, q.dtype):
    leaves = [t.detach().clone().to(dt or t.dtype).requires_grad_() for t in (q, k, v)]
    if dt is None:
        o = pykernels.flash_attn_func(*leaves, causal=True, window_size=(32, -1), sink_tokens=2)
    else:
        o, _ = attention_ref(*leaves, causal=True, window_size=(32, -1), sink_tokens=2, upcast=dt is torch.float64)
    o.backward(dout.to(o.dtype))
    grads[dt] = [t.grad.double() for t in leaves]
for name, g, r, lo in zip("qkv", grads[None], grads[torch.float64], grads[q.dtype]):
    err, base = (g - r).abs().max(), (lo - r).abs().max()
    assert err <= 2 * base + 1e-4, f"d{name}: {err:.3e} vs PyTorch's {base:.3e}"
ang = torch.randn(97, 64, device="cuda")
x = pykernels.apply_rotary(q, ang.cos(), ang.sin())
assert (x.double() - rotary_ref(q, ang.cos(), ang.sin())).abs().max() < 2e-2
print("cupy standalone ok")
"""


@pytest.mark.gpu
def test_cupy_runs_without_extension_or_nvcc():
    pytest.importorskip("cupy")
    nvcc_dirs = {os.path.dirname(p) for p in [shutil.which("nvcc")] if p}
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep) if d not in nvcc_dirs)
    env = dict(os.environ, PATH=path)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0 and "cupy standalone ok" in proc.stdout, proc.stdout + proc.stderr
