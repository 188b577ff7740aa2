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

from attn_dev import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("tests/test_attention_cuda_bwd.py", "bench_attention_bwd_dev"))
