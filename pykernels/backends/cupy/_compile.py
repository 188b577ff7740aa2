"""NVRTC loader shared by the CuPy backend's ops (attention, rope).

The CuPy backend compiles the very headers under ``csrc/`` that the C++
extension builds with nvcc; those headers guard host-only code with
``#ifndef __CUDACC_RTC__``. This module is the one place that knows how:

* :func:`csrc_dir` finds ``csrc/`` (repository root = parent of the package);
* :func:`compile_module` compiles a source string that ``#include``s csrc
  headers, with explicit template instantiations named by
  ``name_expressions``; modules are cached per (source, names, options,
  device) in memory, and CuPy caches the binaries on disk;
* :func:`cached` keeps what an op derives from a module (kernels, launch
  geometry read with :func:`read_ints`), built once per key;
* :class:`LaunchScope` launches on the tensor's device and on
  ``torch.cuda.current_stream()`` there (no implicit synchronisation with
  torch); :func:`current_stream` is the stream part alone;
* :func:`allow_smem` opts a kernel in to more than 48 KiB of shared memory;
* :func:`as_cupy` views a torch tensor as a CuPy array without a copy (DLPack).

Example::

    from ._compile import LaunchScope, compile_module
    mod = compile_module('#include "attention/flash_fwd_kernel.cuh"', [name])
    kern = mod.get_function(name)
    with LaunchScope(x.device.index):
        kern(grid, block, args)
"""
from __future__ import annotations

import functools
import os
import threading
import warnings
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import torch

__all__ = ["csrc_dir", "module_options", "compile_module", "cached", "read_ints", "current_stream", "LaunchScope",
           "allow_smem", "as_cupy", "BASE_OPTIONS"]

# Flags for every module: C++17 as the nvcc build uses, fast math to match its
# --use_fast_math (exp2f -> ex2.approx.ftz).
BASE_OPTIONS: Tuple[str, ...] = ("-std=c++17", "--use_fast_math")

_lock = threading.Lock()
_modules: Dict[tuple, object] = {}


def _cupy():
    import cupy  # imported lazily: the package must import without CuPy

    return cupy


@functools.lru_cache(maxsize=None)
def csrc_dir() -> str:
    """Absolute path of the repository's ``csrc/`` directory.

    The package sits at ``<root>/pykernels``; an installed copy may also ship
    the headers next to it. ``PYKERNELS_CSRC`` overrides both.
    """
    env = os.environ.get("PYKERNELS_CSRC")
    if env:
        return os.path.abspath(env)
    pkg = Path(__file__).resolve().parents[2]  # .../pykernels
    for cand in (pkg.parent / "csrc", pkg / "csrc"):
        if cand.is_dir():
            return str(cand)
    raise FileNotFoundError(f"cannot find csrc/ next to {pkg}; set PYKERNELS_CSRC to its path")


@functools.lru_cache(maxsize=None)
def _cuda_include_dirs() -> Tuple[str, ...]:
    """CUDA toolkit include dirs (cuda_fp16.h, cuda_bf16.h) for NVRTC, if found."""
    dirs = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root and os.path.isdir(os.path.join(root, "include")):
            dirs.append(os.path.join(root, "include"))
    if os.path.isdir("/usr/local/cuda/include"):
        dirs.append("/usr/local/cuda/include")
    return tuple(dict.fromkeys(dirs))


def module_options(options: Iterable[str] = ()) -> Tuple[str, ...]:
    """Every NVRTC option of a module: BASE_OPTIONS, ``options``, then the include paths.

    Also what tests/test_cupy_nvrtc.py compiles with, on CPU, through NVRTC alone.
    """
    opts = tuple(BASE_OPTIONS) + tuple(options) + (f"-I{csrc_dir()}",)
    return opts + tuple(f"-I{d}" for d in _cuda_include_dirs())


def compile_module(source: str, name_expressions: Iterable[str] = (), options: Iterable[str] = (),
                   device: Optional[int] = None):
    """Compile ``source`` (which may ``#include`` csrc headers) into a ``cupy.RawModule``.

    ``name_expressions`` lists the template instantiations to emit (e.g.
    ``"pykernels::attention::flash_fwd_kernel<128, true, false>"``); get each
    with ``module.get_function(expr)``. CuPy picks ``-arch`` for the device
    (sm_90 on Hopper): enough for mma.sync, ldmatrix and cp.async, which are
    sm_80 instructions; nothing here needs sm_90a (wgmma, setmaxnreg).
    Modules are cached per device.
    """
    cp = _cupy()
    if device is None:
        device = torch.cuda.current_device()
    names = tuple(name_expressions)
    opts = module_options(options)
    key = (source, names, opts, device)
    with _lock:
        mod = _modules.get(key)
        if mod is None:
            with cp.cuda.Device(device):
                mod = cp.RawModule(code=source, options=opts, backend="nvrtc", name_expressions=names or None)
                # Compile now (not at first launch) so errors surface here.
                if names:
                    mod.get_function(names[0])
            _modules[key] = mod
    return mod


_built: Dict[tuple, object] = {}


def cached(key: tuple, build):
    """``build()`` once per ``key``: what an op derives from a compiled module (kernels, launch geometry).

    Compiling is slow and every launch looks its kernels up, so ops keep the
    result here; keys start with the op's name ("attention_fwd", "rope", ...).
    """
    with _lock:
        hit = _built.get(key)
    if hit is None:
        hit = build()
        with _lock:
            _built[key] = hit
    return hit


def read_ints(module, symbol: str, n: int) -> Tuple[int, ...]:
    """The ``n`` ints of the ``__device__ int symbol[n]`` a module defines (launch geometry from the headers)."""
    cp = _cupy()
    return tuple(int(x) for x in cp.ndarray((n,), cp.int32, module.get_global(symbol)).get())


_streams: Dict[Tuple[int, int], object] = {}


def current_stream(device=None):
    """A CuPy stream wrapping ``torch.cuda.current_stream(device)``; use it as a context manager.

    The wrapper is cached per torch stream, so a launch costs no allocation.
    """
    cp = _cupy()
    ts = torch.cuda.current_stream(device)
    key = (ts.device.index, ts.cuda_stream)
    st = _streams.get(key)
    if st is None:
        if hasattr(cp.cuda.Stream, "from_external") and hasattr(ts, "__cuda_stream__"):
            st = cp.cuda.Stream.from_external(ts)  # CuPy >= 14: the CUDA stream protocol
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # CuPy 14 deprecates it
                st = cp.cuda.ExternalStream(ts.cuda_stream, ts.device.index)
        _streams[key] = st
    return st


class LaunchScope:
    """``with LaunchScope(device):`` launches on ``device``, on torch's current stream there.

    The device is made current only when it is not already:
    ``torch.cuda.device`` costs host time, and almost every call is already on
    the right device. A plain class rather than a generator context manager,
    as it wraps every launch.
    """

    __slots__ = ("_stream", "_device")

    def __init__(self, device: int):
        self._stream = current_stream(device)
        same = _cupy().cuda.runtime.getDevice() == device
        self._device = None if same else torch.cuda.device(device)

    def __enter__(self):
        if self._device is not None:
            self._device.__enter__()
        self._stream.__enter__()

    def __exit__(self, *exc):
        self._stream.__exit__(*exc)
        if self._device is not None:
            self._device.__exit__(*exc)
        return False


def allow_smem(kernel, nbytes: int) -> None:
    """Opt ``kernel`` in to ``nbytes`` of dynamic shared memory beyond the default 48 KiB (as allow_smem in C++)."""
    if nbytes > 48 * 1024:
        kernel.max_dynamic_shared_size_bytes = nbytes


def as_cupy(t: torch.Tensor):
    """A CuPy array sharing ``t``'s memory (zero-copy, via DLPack)."""
    cp = _cupy()
    if not t.is_cuda:
        raise ValueError(f"as_cupy: expected a CUDA tensor, got one on {t.device}")
    return cp.from_dlpack(t.detach())
