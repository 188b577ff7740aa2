"""Peak extra memory of one measured call, on a GPU and on the CPU.

GPU (:class:`CudaMeter`): the primary number is torch's own peak,
``max_memory_allocated() - memory_allocated()`` after
``reset_peak_memory_stats()``, taken once the inputs exist. Memory that
CuPy allocates is routed through torch's caching allocator
(:func:`route_cupy_through_torch`), so the CuPy backend's scratch buffers are
in that peak too. Numba allocates through its own driver calls, which torch
cannot see, so a second number comes from NVML: the device's used memory,
sampled every millisecond on a thread while the call runs, less its value
before. NVML counts torch's cached blocks too, so it is an upper bound and a
cross-check; the summary says which number each chart draws.

CPU (:class:`CpuMeter`): torch has no CPU allocator statistics and
tracemalloc sees no tensor memory, so the meter reads the process's peak
resident set (VmHWM in /proc/self/status) after resetting it to the current
RSS (writing 5 to /proc/self/clear_refs). glibc is told to serve every
allocation above 64 KiB with its own mmap, so a freed tensor leaves the
resident set at once and the peak tracks live tensors, not malloc's cache.
Where /proc cannot be reset, a thread samples psutil's RSS instead.
"""
from __future__ import annotations

import ctypes
import re
import threading
import time
from typing import Dict, Optional

import torch

from .common import sync

SAMPLE_PERIOD_S = 1e-3
# glibc's mallopt parameter number for M_MMAP_THRESHOLD, and the threshold we set:
# small enough that every tensor worth measuring gets its own mapping.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 * 1024
KIB = 1024  # /proc/self/status reports sizes in kB


class _Sampler:
    """Polls ``read()`` on a thread and keeps the maximum (the caller's thread waits in a sync)."""

    def __init__(self, read):
        self.read, self.peak, self._stop = read, read(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.read())
            time.sleep(SAMPLE_PERIOD_S)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.read())


# ------------------------------------------------------------------- GPU
def route_cupy_through_torch() -> Optional[str]:
    """Make CuPy allocate from torch's caching allocator; returns a note, or None without CuPy."""
    try:
        import cupy
    except ImportError:
        return None

    def alloc(nbytes: int):
        # The tensor owns the memory; CuPy keeps it alive as the owner of the pointer.
        t = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=f"cuda:{cupy.cuda.Device().id}")
        return cupy.cuda.MemoryPointer(cupy.cuda.UnownedMemory(t.data_ptr(), nbytes, t), 0)

    cupy.cuda.set_allocator(alloc)
    return "CuPy allocations routed through torch's caching allocator"


def _nvml_reader(device: torch.device):
    try:
        torch.cuda.device_memory_used(device)
    except Exception:  # no pynvml / nvidia-ml-py on this machine
        return None
    return lambda: torch.cuda.device_memory_used(device)


class CudaMeter:
    def __init__(self, device: torch.device):
        self.device = device
        self.cupy_note = route_cupy_through_torch()
        self.nvml = _nvml_reader(device)
        self.method = ("torch.cuda.max_memory_allocated - memory_allocated after the inputs exist"
                       + (f" ({self.cupy_note})" if self.cupy_note else "")
                       + ("; NVML device used memory sampled every 1 ms as a cross-check (counts Numba "
                          "and torch's cached blocks)" if self.nvml else "; NVML not available"))
        self._sampler = None

    def start(self) -> None:
        sync(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base = torch.cuda.memory_allocated(self.device)
        self.base_reserved = torch.cuda.memory_reserved(self.device)
        if self.nvml:
            self.base_nvml = self.nvml()
            self._sampler = _Sampler(self.nvml).__enter__()

    def stop(self) -> Dict[str, Optional[int]]:
        sync(self.device)
        out = {
            "peak_extra_bytes": torch.cuda.max_memory_allocated(self.device) - self.base,
            "reserved_extra_bytes": torch.cuda.max_memory_reserved(self.device) - self.base_reserved,
            "nvml_extra_bytes": None,
        }
        if self._sampler is not None:
            self._sampler.__exit__()
            out["nvml_extra_bytes"] = self._sampler.peak - self.base_nvml
            self._sampler = None
        return out

    def abort(self) -> None:
        if self._sampler is not None:
            self._sampler.__exit__()
            self._sampler = None


# ------------------------------------------------------------------- CPU
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+)", f.read(), re.M)
    return int(m.group(1)) * KIB if m else 0


def _can_reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmHWM") > 0
    except OSError:
        return False


def _mmap_every_tensor() -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


class CpuMeter:
    def __init__(self, device: torch.device):
        self.device = device
        mmap_ok = _mmap_every_tensor()
        self.use_hwm = _can_reset_hwm()
        if self.use_hwm:
            self.method = "peak RSS (VmHWM, reset through /proc/self/clear_refs) less the RSS after the inputs exist"
        else:
            self.method = "psutil RSS sampled every 1 ms, peak less the RSS after the inputs exist"
        if mmap_ok:
            self.method += "; glibc mmap threshold 64 KiB so freed tensors leave the RSS"
        self._sampler = None

    def _rss(self) -> int:
        if self.use_hwm:
            return _status_kib("VmRSS")
        import psutil

        return psutil.Process().memory_info().rss

    def start(self) -> None:
        if self.use_hwm:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        self.base = self._rss()
        if not self.use_hwm:
            self._sampler = _Sampler(self._rss).__enter__()

    def stop(self) -> Dict[str, Optional[int]]:
        if self.use_hwm:
            peak = _status_kib("VmHWM")
        else:
            self._sampler.__exit__()
            peak, self._sampler = self._sampler.peak, None
        return {"peak_extra_bytes": max(0, peak - self.base), "reserved_extra_bytes": None, "nvml_extra_bytes": None}

    def abort(self) -> None:
        if self._sampler is not None:
            self._sampler.__exit__()
            self._sampler = None


def make_meter(device: torch.device):
    return CudaMeter(device) if device.type == "cuda" else CpuMeter(device)
