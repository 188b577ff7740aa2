"""Dev loop for the attention backward on a GPU machine, without setup.py.

Builds csrc/attention (forward and backward) + its binding through
scripts/dev/attn_dev.py's build(), then runs the backward GPU tests and the
backward dev benchmark.

    python scripts/dev/attn_bwd_dev.py [--tests] [--bench ARGS...]
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from attn_dev import build  # noqa: E402

if __name__ == "__main__":
    build()
    args = sys.argv[1:]
    rc = 0
    if "--tests" in args:
        import pytest

        extra = ["-k", os.environ["PK_TEST_K"]] if os.environ.get("PK_TEST_K") else []
        rc = pytest.main(["-q", "--maxfail=15", "--tb=short", "-p", "no:cacheprovider", "--durations=8",
                          os.path.join(ROOT, "tests/test_attention_cuda_bwd.py"), *extra])
    if "--bench" in args:
        sys.argv = ["bench_attention_bwd_dev.py"] + args[args.index("--bench") + 1:]
        sys.path.insert(0, os.path.join(ROOT, "scripts"))
        import bench_attention_bwd_dev

        bench_attention_bwd_dev.main()
    sys.exit(int(rc))
