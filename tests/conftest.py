"""Shared pytest set-up: the ``gpu`` marker and backend parametrisation.

GPU-only tests carry ``@pytest.mark.gpu`` and skip, with the reason, where no
CUDA device is visible; ``scripts/gpu_check.sh`` runs them on the lent GPU.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (run by scripts/gpu_check.sh)")
    config.addinivalue_line("markers", "slow: long-running; still part of the default run")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: run scripts/gpu_check.sh on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
