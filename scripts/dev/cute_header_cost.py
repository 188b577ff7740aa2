"""What the CUTLASS/CuTe headers would cost this project's builds, measured
(csrc/attention/mma.cuh cites the result): nvcc's time for a TU that only
includes them against one of our real translation units, and whether NVRTC
(the CuPy backend's compiler) takes them, with which options.

    python scripts/dev/cute_header_cost.py [--nvrtc /path/libnvrtc.so.13] [--out F.json]

Needs nvcc and the nvidia-cutlass wheel (cutlass_library) importable; NVRTC
only if a libnvrtc is found (CuPy's, or the nvidia-cuda-nvrtc wheel's).
Times are the median of 3 runs, sm_90a, as .ci/run and setup.py compile.
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from profiling.common import git_commit, now_utc  # noqa: E402
NVCC = ["nvcc", "-O3", "--use_fast_math", "--expt-relaxed-constexpr", "-std=c++17",
        "-gencode=arch=compute_90a,code=sm_90a", "-c"]
KERNEL = "__global__ void probe(float* x) { x[threadIdx.x] = 0.f; }\n"
# What a CuTe formulation of the Hopper forward would include: layouts, the
# swizzle, the SM90 wgmma and TMA atoms, CUTLASS's barriers.
CUTE_SETS = {
    "cute/swizzle.hpp": ["cute/swizzle.hpp"],
    "cute/tensor.hpp": ["cute/tensor.hpp"],
    "cute atoms (tensor, mma/copy atoms, sm90 tma and gmma, barrier)": [
        "cute/tensor.hpp", "cute/atom/mma_atom.hpp", "cute/atom/copy_atom.hpp", "cute/arch/copy_sm90_tma.hpp",
        "cute/atom/mma_traits_sm90_gmma.hpp", "cutlass/arch/barrier.h"],
}


def cutlass_include() -> str:
    import cutlass_library

    return os.path.join(os.path.dirname(cutlass_library.__file__), "source", "include")


def nvcc_seconds(source_path: str, includes: list[str], reps: int = 3) -> float:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run(NVCC + [f"-I{i}" for i in includes] + [source_path, "-o", os.path.join(tmp, "x.o")],
                           check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def nvrtc_compile(lib, source: str, options: list[str]) -> tuple[bool, str]:
    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"probe.cu", 0, None, None) != 0:
        return False, "nvrtcCreateProgram failed"
    arr = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    rc = lib.nvrtcCompileProgram(prog, len(options), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    first_error = next((line for line in log.value.decode(errors="replace").splitlines() if "error" in line), "")
    return rc == 0, first_error.replace(cutlass_include(), "<cutlass>")[:200]


def find_nvrtc(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    for pattern in ("/usr/local/cuda/lib64/libnvrtc.so*", os.path.join(sys.prefix, "lib/python3*/site-packages/nvidia/*/lib/libnvrtc.so*")):
        hits = sorted(p for p in glob.glob(pattern) if "builtins" not in p and "alt" not in p)
        if hits:
            return hits[0]
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nvrtc", help="path of libnvrtc.so (its builtins library must sit beside it)")
    ap.add_argument("--out", help="write the result as JSON here")
    args = ap.parse_args()
    cut = cutlass_include()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def probe(name: str, headers: list[str]) -> str:
            path = os.path.join(tmp, "".join(ch if ch.isalnum() else "_" for ch in name)[:40] + ".cu")
            with open(path, "w") as f:
                f.write("".join(f"#include <{h}>\n" for h in headers) + KERNEL)
            return path

        base = nvcc_seconds(probe("empty", []), [])
        rows.append({"tu": "an empty kernel", "nvcc_s": round(base, 2)})
        for name, headers in CUTE_SETS.items():
            s = nvcc_seconds(probe(name, headers), [cut])
            rows.append({"tu": f"includes {name}", "nvcc_s": round(s, 2), "headers_s": round(s - base, 2)})
        for tu in ("flash_fwd_hdim128_bf16.cu", "flash_fwd_hdim64_bf16.cu"):
            s = nvcc_seconds(os.path.join(ROOT, "csrc/attention/instantiations", tu), [os.path.join(ROOT, "csrc")])
            rows.append({"tu": f"csrc/attention/instantiations/{tu} (the mma.sync and wgmma kernels)",
                         "nvcc_s": round(s, 2)})
        for r in rows:
            print(f"{r['nvcc_s']:6.2f} s  {r['tu']}")

        nvrtc_rows = []
        lib_path = find_nvrtc(args.nvrtc)
        if lib_path:
            # NVRTC dlopens its builtins library by name: load it first, from beside libnvrtc.
            ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(lib_path), "libnvrtc-builtins.so*"))[0])
            lib = ctypes.CDLL(lib_path)
            major, minor = ctypes.c_int(), ctypes.c_int()
            lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
            src = "".join(f"#include <{h}>\n" for h in CUTE_SETS["cute/tensor.hpp"]) + KERNEL
            cuda_inc = "/usr/local/cuda/include"
            for label, opts in [
                ("with the CuPy backend's own options alone (pykernels/backends/cupy/_compile.py)", []),
                ("plus the CUDA toolkit's CCCL headers", [f"-I{cuda_inc}/cccl", f"-I{cuda_inc}"]),
                ("plus the CCCL headers and -default-device", [f"-I{cuda_inc}/cccl", f"-I{cuda_inc}", "-default-device"]),
            ]:
                ok, err = nvrtc_compile(lib, src, ["-std=c++17", "--use_fast_math", f"-I{cut}", "-arch=compute_90", *opts])
                nvrtc_rows.append({"options": label, "ok": ok, "first_error": err})
                print(f"NVRTC {major.value}.{minor.value}, cute/tensor.hpp {label}: {'ok' if ok else 'fails: ' + err}")
        else:
            print("NVRTC: no libnvrtc found (--nvrtc PATH)")
    if args.out:
        from importlib import metadata

        version = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
        result = {"bench": "cute_header_cost", "date": now_utc(), "commit": git_commit(),
                  "host": f"{platform.machine()}, {os.cpu_count()} cores", "nvcc": version,
                  "nvidia_cutlass": metadata.version("nvidia-cutlass"),
                  "nvcc_rows": rows, "nvrtc_rows": nvrtc_rows}
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
