"""compute-sanitizer on the attention kernels of a dev build (scripts/dev/attn_dev.py):
scripts/sanitize_cases.py's attention matrix, without the other ops (the dev
module has only attention, so the RoPE check reports "not run").

    [PK_DEV_FLAGS="-DKNOB=1"] compute-sanitizer --tool racecheck python scripts/dev/attn_sanitize_dev.py

PK_DEV_FLAGS (and PK_DEV_NAME), as in attn_dev.py, check a knob build.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from attn_dev import env_build  # noqa: E402

env_build()
import pykernels  # noqa: E402
import sanitize_cases  # noqa: E402


def _no_rope(*args, **kwargs):
    raise NotImplementedError("the dev build has attention only")


pykernels.apply_rotary = _no_rope
sys.exit(sanitize_cases.main())
