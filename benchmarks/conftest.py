"""pytest-benchmark set-up: GPU only, repository root importable.

    pytest benchmarks/ --benchmark-json=bench.json     # on a GPU machine

Every benchmark synchronises inside the timed function, so the time is the
kernel's and not the launch's. Without a GPU each one is skipped with the reason.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NO_GPU = "benchmarks time GPU kernels: no CUDA GPU is visible to torch"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=NO_GPU)
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)
