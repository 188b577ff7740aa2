"""Helpers shared by the benchmark files (kept out of conftest.py, which pytest imports by path)."""
import pytest
import torch


def synced(fn):
    """``fn`` followed by a device synchronisation: what pytest-benchmark's wall clock should see."""

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def run_benchmark(benchmark, fn, rounds: int = 20, warmup_rounds: int = 3):
    """Try ``fn`` once (an unsupported configuration skips with the reason), then benchmark it."""
    try:
        synced(fn)()
    except Exception as exc:  # noqa: BLE001  (cuDNN without a kernel for this config, a backend without bwd, ...)
        pytest.skip(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return benchmark.pedantic(synced(fn), rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
