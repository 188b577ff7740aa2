"""Dev loop for the attention kernel on a GPU machine, without setup.py.

Builds only csrc/attention + csrc/bindings/attention.cpp (other ops may be
mid-edit) with torch.utils.cpp_extension.load, installs the result as
pykernels._C, then runs the attention GPU tests and the dev benchmark.

    [PK_DEV_FLAGS="-DKNOB=1"] python scripts/dev/attn_dev.py [--tests] [--bench ARGS...]
"""
from __future__ import annotations

import glob
import importlib
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.environ.get("OUT", "/tmp")
sys.path.insert(0, ROOT)  # the package need not be installed on the GPU machine


def build(archs=("90a",), name="pk_attn_dev", flags=(), install=True):
    """Build the attention-only module; ``flags`` (e.g. -D knobs) go to nvcc, and a
    module under another ``name`` can live beside the installed one (scripts/dev/attn_ab.py)."""
    from torch.utils.cpp_extension import load

    os.environ.setdefault("MAX_JOBS", "16")
    sources = sorted(glob.glob(os.path.join(ROOT, "csrc/attention/**/*.cu"), recursive=True))
    sources += [os.path.join(ROOT, "csrc/bindings/attention.cpp"), os.path.join(ROOT, "scripts/dev/attn_dev_module.cpp")]
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    build_dir = os.environ.get("PK_DEV_BUILD") or None  # reuse objects across runs
    if build_dir:
        build_dir = build_dir if name == "pk_attn_dev" else f"{build_dir}_{name}"
        if flags:  # objects built with other -D knobs must not be reused
            build_dir += "_" + "_".join(f.lstrip("-").replace("=", "") for f in flags)
        os.makedirs(build_dir, exist_ok=True)
    t0 = time.time()
    mod = load(
        name=name, sources=sources, extra_include_paths=[os.path.join(ROOT, "csrc")],
        extra_cflags=["-O3", "-std=c++17"],
        extra_cuda_cflags=["-O3", "--use_fast_math", "-std=c++17", "-Xptxas=-v", *gencode, *flags],
        build_directory=build_dir, verbose=True,
    )
    print(f"built {name} in {time.time() - t0:.0f}s", flush=True)
    if not install:
        return mod
    import pykernels

    sys.modules["pykernels._C"] = mod
    pykernels._C = mod
    return mod


def env_build(install=True):
    """build() as the environment asks: PK_DEV_FLAGS="-DPK_KNOB=1 ..." picks a knob
    build, PK_DEV_NAME another module name (pk_attn_ab_<variant> reuses the
    objects scripts/dev/attn_ab.py built for that variant with the same flags)."""
    return build(name=os.environ.get("PK_DEV_NAME", "pk_attn_dev"),
                 flags=tuple(os.environ.get("PK_DEV_FLAGS", "").split()), install=install)


def main(test_file: str, bench_module: str) -> int:
    """Build, then run ``test_file`` with --tests and ``bench_module``.main() with --bench ARGS..."""
    env_build()  # PK_DEV_FLAGS: the tests and benchmark on a knob build
    args = sys.argv[1:]
    rc = 0
    if "--tests" in args:
        import pytest

        extra = ["-k", os.environ["PK_TEST_K"]] if os.environ.get("PK_TEST_K") else []
        rc = pytest.main(["-q", "--maxfail=15", "--tb=short", "-p", "no:cacheprovider", "--durations=8",
                          os.path.join(ROOT, test_file), *extra])
    if "--bench" in args:
        sys.argv = [bench_module + ".py"] + args[args.index("--bench") + 1:]
        sys.path.insert(0, os.path.join(ROOT, "scripts"))
        importlib.import_module(bench_module).main()
    return int(rc)


if __name__ == "__main__":
    sys.exit(main("tests/test_attention_cuda.py", "bench_attention_dev"))
