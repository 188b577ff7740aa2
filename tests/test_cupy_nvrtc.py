"""The CuPy backend's kernels, checked on CPU: no GPU is needed to compile them or to lay out their arguments.

* NVRTC (the same library CuPy calls, through ``cuda.bindings.nvrtc``)
  compiles the exact sources, template instantiations and options that
  ``pykernels.backends.cupy`` compiles at first use on a GPU: every head dim
  and dtype of the attention forward and backward, and every RoPE module. A
  header change that breaks the ``__CUDACC_RTC__`` guards fails here, in CI,
  rather than on a user's first call.
* The NumPy structured dtypes that the backend passes by value as
  ``FlashFwdParams`` and ``FlashBwdParams`` have the field offsets and sizes
  that g++ gives the C++ structs (``offsetof``). On a GPU the backend checks
  the same thing against NVRTC's layout before its first launch.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from pykernels.backends.cupy import attention as cupy_attention
from pykernels.backends.cupy import rope as cupy_rope
from pykernels.backends.cupy._compile import _cuda_include_dirs, csrc_dir, module_options

from cuda.bindings import nvrtc  # cuda-bindings and nvidia-cuda-nvrtc are pinned in requirements-ci.txt

# What CuPy passes on an H100/H200 (sm_90); PTX is enough to prove the source compiles.
ARCH = "-arch=compute_90"


def _ok(result, prog=None):
    err = result[0] if isinstance(result, tuple) else result
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        log = ""
        if prog is not None:
            _, size = nvrtc.nvrtcGetProgramLogSize(prog)
            buf = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, buf)
            log = buf.decode(errors="replace")
        pytest.fail(f"NVRTC: {err}\n{log}")
    return result[1:] if isinstance(result, tuple) else ()


def nvrtc_compile(source: str, names, options) -> dict:
    """Compile like ``cupy.RawModule(code=source, options=options, name_expressions=names)``.

    Returns each name expression's lowered (mangled) symbol.
    """
    (prog,) = _ok(nvrtc.nvrtcCreateProgram(source.encode(), b"pykernels_module.cu", 0, [], []))
    try:
        for name in names:
            _ok(nvrtc.nvrtcAddNameExpression(prog, name.encode()))
        opts = [o.encode() for o in (*options, ARCH)]
        _ok(nvrtc.nvrtcCompileProgram(prog, len(opts), opts), prog)
        (size,) = _ok(nvrtc.nvrtcGetPTXSize(prog))
        assert size > 1000, "NVRTC returned an empty module"
        lowered = {}
        for name in names:
            (symbol,) = _ok(nvrtc.nvrtcGetLoweredName(prog, name.encode()))
            lowered[name] = symbol.decode()
        return lowered
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


@pytest.fixture(scope="module", autouse=True)
def _nvrtc_loads():
    try:
        _ok(nvrtc.nvrtcVersion())
    except Exception as exc:  # libnvrtc missing: the pinned nvidia-cuda-nvrtc wheel provides it
        pytest.fail(f"libnvrtc cannot be loaded ({exc}); pip install -r requirements-ci.txt")


@pytest.mark.parametrize("head_dim", cupy_attention.SUPPORTED_HEAD_DIMS)
def test_attention_forward_compiles(head_dim):
    names = [cupy_attention.fwd_kernel_name(head_dim, bf16, alibi) for bf16 in (False, True) for alibi in (False, True)]
    lowered = nvrtc_compile(cupy_attention.fwd_source(), names,
                            module_options(cupy_attention.kernel_options(head_dim)))
    assert all("flash_fwd_kernel" in s for s in lowered.values())


@pytest.mark.parametrize("head_dim", cupy_attention.SUPPORTED_BWD_HEAD_DIMS)
def test_attention_backward_compiles(head_dim):
    names = [n for bf16 in (False, True) for n in cupy_attention.bwd_kernel_names(head_dim, bf16).values()]
    lowered = nvrtc_compile(cupy_attention.bwd_source(), list(dict.fromkeys(names)),
                            module_options(cupy_attention.kernel_options(head_dim)))
    assert len(set(lowered.values())) == len(lowered)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_rope_compiles(dtype):
    nvrtc_compile(cupy_rope.source(), cupy_rope.kernel_names(dtype), module_options())


def _gxx_offsets(struct: str, dtype, build_dir) -> list:
    """``[offsetof(struct, f) for f in dtype.names] + [sizeof(struct)]`` as g++ lays the struct out."""
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.fail("no C++ compiler on the PATH (CI needs one for the CMake build of csrc/ anyway)")
    prints = "\n".join(f'  std::printf("%zu\\n", offsetof({struct}, {n}));' for n in dtype.names)
    src = ("#include <cstddef>\n#include <cstdio>\n#include \"attention/flash_bwd.h\"\n"
           f"int main() {{\n{prints}\n  std::printf(\"%zu\\n\", sizeof({struct}));\n}}\n")
    exe = str(build_dir / "layout")
    includes = [f"-I{csrc_dir()}"] + [f"-I{d}" for d in _cuda_include_dirs()]
    # offsetof on a derived struct is conditionally supported; g++ gives the real offsets.
    proc = subprocess.run([cxx, "-std=c++17", "-Wno-invalid-offsetof", *includes, "-x", "c++", "-", "-o", exe],
                          input=src, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([exe], capture_output=True, text=True, check=True, timeout=60).stdout
    return [int(x) for x in out.split()]


@pytest.mark.parametrize("struct,dtype", [
    ("pykernels::attention::FlashFwdParams", cupy_attention._PARAMS_DTYPE),
    ("pykernels::attention::FlashBwdParams", cupy_attention._BWD_PARAMS_DTYPE),
], ids=["FlashFwdParams", "FlashBwdParams"])
def test_params_mirror_matches_cpp_layout(struct, dtype, tmp_path):
    *offsets, size = _gxx_offsets(struct, dtype, tmp_path)
    want = [dtype.fields[n][1] for n in dtype.names]
    bad = [f"{n}: C++ {o}, NumPy {w}" for n, o, w in zip(dtype.names, offsets, want) if o != w]
    assert not bad, "field offsets differ: " + "; ".join(bad)
    assert size == dtype.itemsize, f"sizeof: C++ {size}, NumPy {dtype.itemsize}"
