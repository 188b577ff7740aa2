"""The mask predicate's tile ranges against brute force.

Tile skipping is only safe if every visible key lies in a visited block, and
skipping the element mask only if a block said to be full really is.
"""
import itertools

import pytest
import torch

from pykernels.masks import MaskSpec, iter_tiles

CASES = list(itertools.product(
    [1, 17, 97, 130],          # Sq
    [1, 17, 97, 130],          # Sk
    [False, True],             # causal
    [(-1, -1), (0, 0), (5, -1), (-1, 3), (16, 2)],
    [0, 3],                    # sink tokens
))


@pytest.mark.parametrize("sq,sk,causal,window,sinks", CASES)
@pytest.mark.parametrize("q_offset", [None, 0])
def test_tiles_cover_visible_keys(sq, sk, causal, window, sinks, q_offset):
    spec = MaskSpec(sq, sk, causal, window[0], window[1], sinks, q_offset)
    dense = spec.dense()
    covered = torch.zeros_like(dense)
    for r0, r1, tiles in iter_tiles(spec, 16, 32):
        for c0, c1, needs_mask in tiles:
            covered[r0:r1, c0:c1] = True
            if not needs_mask:
                assert dense[r0:r1, c0:c1].all(), (r0, r1, c0, c1)
    assert not (dense & ~covered).any(), "a visible key lies in a skipped block"
    assert spec.visible_pairs() == int(dense.sum())


def test_window_costs_the_band():
    # A 1024-wide window at 16K must visit about the band, not the row.
    spec = MaskSpec(16384, 16384, causal=True, left=1024, right=-1)
    visited = sum((c1 - c0) * (r1 - r0) for r0, r1, tiles in iter_tiles(spec, 128, 128) for c0, c1, _ in tiles)
    assert visited < 1.2 * 16384 * (1024 + 256)


def test_causal_is_window_left_unbounded_right_zero():
    a = MaskSpec(37, 53, causal=True).dense()
    b = MaskSpec(37, 53, causal=False, left=-1, right=0).dense()
    assert torch.equal(a, b)


def test_sinks_stay_causal():
    # Sink keys are visible outside the window but never after the query.
    spec = MaskSpec(8, 8, causal=True, left=1, right=-1, sink_tokens=4)
    dense = spec.dense()
    assert not dense[1, 2] and not dense[1, 3]  # sinks 2, 3 lie after query 1
    assert dense[7, 0] and dense[7, 3] and not dense[7, 4]
