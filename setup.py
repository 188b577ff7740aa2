"""Build pykernels: the Python package always, the CUDA extension when it can.

    python -m pip install --no-build-isolation -e .

* torch without CUDA, or no nvcc: the package installs with no extension and
  one line says why (also kept in pykernels/_build_info.json, which
  ``pykernels.available_backends()`` reports).
* torch with CUDA and nvcc: builds ``pykernels._C`` from csrc/ for
  ``PYKERNELS_CUDA_ARCHS`` (default "90a;80": Hopper with wgmma, and Ampere).
  ``MAX_JOBS`` caps parallel compile jobs (torch's ninja build reads it).
* ``PYKERNELS_SKIP_CUDA_BUILD=1`` skips the extension on purpose.

``--no-build-isolation`` matters: the build must see the torch you installed,
not download another one into an isolated environment.
"""
from __future__ import annotations

import glob
import json
import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
BUILD_INFO = os.path.join(ROOT, "pykernels", "_build_info.json")
DEFAULT_ARCHS = "90a;80"


def _say(msg: str) -> None:
    # pip hides a build's stdout unless -v; stderr and the info file keep it visible.
    print(msg, file=sys.stderr, flush=True)


def _gencode_flags(archs: str):
    flags = []
    for arch in [a.strip() for a in archs.replace(",", ";").split(";") if a.strip()]:
        num = arch.replace("sm_", "")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
    return flags


def _cutlass_include():
    try:
        import cutlass_library  # the nvidia-cutlass wheel ships CUTLASS/CuTe headers

        path = os.path.join(os.path.dirname(cutlass_library.__file__), "source", "include")
        return path if os.path.isdir(path) else None
    except ImportError:
        return None


def _plan():
    """Return (ext_modules, cmdclass, info) for this machine."""
    if os.environ.get("PYKERNELS_SKIP_CUDA_BUILD", "") == "1":
        return [], {}, {"built": False, "reason": "skipped: PYKERNELS_SKIP_CUDA_BUILD=1"}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError as exc:
        return [], {}, {"built": False, "reason": f"torch is not importable at build time ({exc}); "
                        "install torch first and use --no-build-isolation"}
    if torch.version.cuda is None:
        return [], {}, {"built": False, "reason": f"torch {torch.__version__} is a CPU-only build"}
    if CUDA_HOME is None:
        return [], {}, {"built": False, "reason": "nvcc was not found (set CUDA_HOME)"}

    archs = os.environ.get("PYKERNELS_CUDA_ARCHS", DEFAULT_ARCHS)
    sources = sorted(glob.glob("csrc/bindings/*.cpp"))
    sources += sorted(s for s in glob.glob("csrc/**/*.cu", recursive=True) if not s.startswith("csrc/tests"))
    include_dirs = [os.path.join(ROOT, "csrc")]
    cutlass = _cutlass_include()
    if cutlass:
        include_dirs.append(cutlass)
    nvcc = [
        "-O3", "-std=c++17", "--use_fast_math", "--expt-relaxed-constexpr", "-lineinfo",
        "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
        *_gencode_flags(archs),
    ]
    ext = CUDAExtension(
        name="pykernels._C",
        sources=sources,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": ["-O3", "-std=c++17"], "nvcc": nvcc},
    )
    info = {"built": True, "reason": "", "archs": archs, "torch": torch.__version__, "cuda": torch.version.cuda}
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}, info


ext_modules, cmdclass, info = _plan()
with open(BUILD_INFO, "w") as f:
    json.dump(info, f, indent=1)
if info["built"]:
    _say(f"pykernels: building the CUDA extension pykernels._C for {info['archs']} "
         f"(MAX_JOBS={os.environ.get('MAX_JOBS', 'auto')})")
else:
    _say(f"pykernels: CUDA extension skipped: {info['reason']}")

setup(
    name="pykernels",
    version="0.1.0",
    description="Long-context attention kernels for PyTorch: flash attention with windows, sinks and ALiBi; scaled RoPE",
    packages=find_packages(include=["pykernels", "pykernels.*", "profiling", "profiling.*"]),
    package_data={"pykernels": ["_build_info.json"], "": ["*.cuh", "*.h"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.11", "numpy"],
    extras_require={
        "cupy": ["cupy-cuda13x"],
        "numba": ["numba>=0.68", "numba-cuda>=0.30"],
        "profile": ["matplotlib", "nvtx"],
        "hf": ["transformers>=5"],
    },
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["pykernels-profile=profiling.memory:main"]},
)
