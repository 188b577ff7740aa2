"""ALiBi slopes against the standard geometric sequence (Press et al. 2022)."""
import math

import pytest
import torch

import pykernels


def _standard(n):
    # The paper's recipe, written independently of pykernels.alibi.
    def pow2(m):
        return [2 ** (-8 * (i + 1) / m) for i in range(m)]

    c = 2 ** math.floor(math.log2(n))
    return pow2(c) + pow2(2 * c)[::2][: n - c]


@pytest.mark.parametrize("n", range(1, 65))
def test_slopes_match_standard(n):
    got = pykernels.alibi_slopes(n)
    assert got.dtype == torch.float32 and got.shape == (n,)
    torch.testing.assert_close(got, torch.tensor(_standard(n), dtype=torch.float32))


@pytest.mark.parametrize("n", [1, 5, 8, 12, 32, 40, 64])
def test_slopes_match_bloom(n):
    # transformers' BLOOM builds its bias from the same slopes: bias[h, j] = slope_h * j.
    bloom = pytest.importorskip("transformers.models.bloom.modeling_bloom")
    seq = 4
    mask = torch.ones(1, seq)
    bias = bloom.build_alibi_tensor(mask, n, torch.float32).reshape(n, seq)
    torch.testing.assert_close(bias[:, 1], pykernels.alibi_slopes(n))


def test_interpolation_divides():
    torch.testing.assert_close(pykernels.alibi_slopes(8, interpolation=4.0), pykernels.alibi_slopes(8) / 4)


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError)])
def test_bad_head_count(bad, exc):
    with pytest.raises(exc, match="nheads"):
        pykernels.alibi_slopes(bad)


def test_bad_interpolation():
    with pytest.raises(ValueError, match="interpolation"):
        pykernels.alibi_slopes(8, interpolation=0.0)
