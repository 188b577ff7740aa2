"""pytest-benchmark: RoPE on q and k, pykernels against HF's eager rotate_half and torch.compile (GPU only)."""
import pytest
import torch

import pykernels
from bench_helpers import run_benchmark
from profiling import counting
from profiling.bench import ROPE_BASE, _compiled_rope, _pykernels_backend, hf_cos_sin, hf_rope

SHAPES = [(8, 4096, 32, 128), (1, 32768, 32, 128)]
PROVIDERS = [f"pykernels:{b}" for b in pykernels.available_backends()] + ["hf_eager", "compiled"]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_rope(benchmark, provider, shape):
    device, dtype = torch.device("cuda"), torch.bfloat16
    b, s, h, d = shape
    q, k = (torch.randn(shape, dtype=dtype, device=device) for _ in range(2))
    if provider.startswith("pykernels:"):
        backend = provider.split(":", 1)[1]
        st = pykernels.available_backends()[backend]
        if not st.available:
            pytest.skip(f"{provider}: {st.reason}")
        cos, sin = pykernels.RotaryEmbedding(d, base=ROPE_BASE).cos_sin(torch.arange(s, device=device))
        with _pykernels_backend(backend):
            run_benchmark(benchmark, lambda: pykernels.apply_rotary(q, cos, sin, k=k))  # q and k in one launch
    else:
        cos, sin = hf_cos_sin(s, d, device, dtype)
        fn = hf_rope if provider == "hf_eager" else _compiled_rope()
        run_benchmark(benchmark, lambda: fn(q, k, cos, sin))
    nbytes = counting.rope_bytes(b, s, h, d, q.element_size())
    benchmark.extra_info.update(bytes=nbytes, gbps=nbytes / benchmark.stats.stats.median / 1e9)
