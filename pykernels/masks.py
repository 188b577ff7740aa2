"""The one mask predicate of pykernels, and the tile ranges it implies.

Every backend describes causal, sliding-window and sink masks with the same
four numbers, mirrored in ``csrc/attention/mask.cuh``:

* ``left``, ``right``: the window around a query's position (-1 = unbounded);
* ``sink_tokens``: the first keys stay visible outside the window
  (StreamingLLM, Xiao et al. 2023);
* ``causal``: caps ``right`` at 0 and hides keys after the query, sinks too.

A query row ``i`` sits at position ``p_i = i + q_offset``. ``flash_attn_func``
aligns rows bottom-right (``q_offset = Sk - Sq``, flash-attn's convention);
the SDPA drop-in aligns them top-left (``q_offset = 0``, PyTorch's).

Key ``j`` is visible to row ``i`` when::

    (p_i - left <= j <= p_i + right  or  j < sink_tokens)  and  (not causal or j <= p_i)

Tile ranges are worked out before any element mask (FA3's
``get_n_block_min_max``): a block of query rows can only see the sink keys and
the band ``[p_first - left, p_last + right]``, so every other key block is
skipped, and only blocks that are not fully visible pay for the element mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Tuple

import torch

UNBOUNDED = -1


@dataclass(frozen=True)
class MaskSpec:
    """Causal / window / sink mask for ``seqlen_q`` query rows over ``seqlen_k`` keys."""

    seqlen_q: int
    seqlen_k: int
    causal: bool = False
    left: int = UNBOUNDED
    right: int = UNBOUNDED
    sink_tokens: int = 0
    q_offset: int | None = None  # None: bottom-right, Sk - Sq

    @property
    def offset(self) -> int:
        return self.seqlen_k - self.seqlen_q if self.q_offset is None else self.q_offset

    @property
    def right_eff(self) -> int:
        """``right`` after causal capping: causal is simply (left, 0)."""
        if self.causal:
            return 0 if self.right == UNBOUNDED else min(self.right, 0)
        return self.right

    @property
    def is_full(self) -> bool:
        """True when every key is visible to every row (no mask at all)."""
        return not self.causal and self.left == UNBOUNDED and self.right == UNBOUNDED

    # ------------------------------------------------------------------ elements
    def visible(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Boolean visibility of keys ``cols`` for query rows ``rows`` (broadcast)."""
        p = rows + self.offset
        ok = torch.ones(torch.broadcast_shapes(rows.shape, cols.shape), dtype=torch.bool, device=rows.device)
        if self.left != UNBOUNDED:
            ok = ok & (cols >= p - self.left)
        if self.right_eff != UNBOUNDED:
            ok = ok & (cols <= p + self.right_eff)
        if self.sink_tokens > 0:
            ok = ok | (cols < self.sink_tokens)
        if self.causal:
            ok = ok & (cols <= p)
        return ok & (cols < self.seqlen_k) & (cols >= 0)

    def dense(self, device=None) -> torch.Tensor:
        """The (Sq, Sk) boolean mask; for references and tests only."""
        rows = torch.arange(self.seqlen_q, device=device)[:, None]
        cols = torch.arange(self.seqlen_k, device=device)[None, :]
        return self.visible(rows, cols)

    # ------------------------------------------------------------------- tiles
    def band(self, row_lo: int, row_hi: int) -> Tuple[int, int]:
        """Keys ``[lo, hi)`` of the window band seen by rows ``[row_lo, row_hi)``."""
        p_first, p_last = row_lo + self.offset, row_hi - 1 + self.offset
        lo = 0 if self.left == UNBOUNDED else max(0, p_first - self.left)
        hi = self.seqlen_k if self.right_eff == UNBOUNDED else min(self.seqlen_k, p_last + self.right_eff + 1)
        return lo, max(lo, hi)

    def sink_range(self, row_hi: int) -> int:
        """Keys ``[0, n)`` kept visible as sinks for rows below ``row_hi``."""
        n = min(self.sink_tokens, self.seqlen_k)
        if self.causal:
            n = min(n, max(0, row_hi - 1 + self.offset + 1))
        return n

    def key_blocks(self, row_lo: int, row_hi: int, block_k: int) -> List[int]:
        """Start indices of the key blocks rows ``[row_lo, row_hi)`` must visit."""
        lo, hi = self.band(row_lo, row_hi)
        blocks = set(range((lo // block_k) * block_k, hi, block_k)) if hi > lo else set()
        n_sink = self.sink_range(row_hi)
        blocks.update(range(0, n_sink, block_k))
        return sorted(blocks)

    def block_is_full(self, row_lo: int, row_hi: int, col_lo: int, col_hi: int) -> bool:
        """True when keys ``[col_lo, col_hi)`` are visible to all rows, so no element mask is needed."""
        if col_hi > self.seqlen_k:
            return False
        p_first, p_last = row_lo + self.offset, row_hi - 1 + self.offset
        in_band = (self.left == UNBOUNDED or col_lo >= p_last - self.left) and (
            self.right_eff == UNBOUNDED or col_hi - 1 <= p_first + self.right_eff
        )
        in_sink = col_hi <= self.sink_tokens and (not self.causal or col_hi - 1 <= p_first)
        return in_band or in_sink

    def visible_pairs(self) -> int:
        """Number of visible (row, key) pairs, for counting useful FLOPs, in O(Sq)."""
        total = 0
        rows = torch.arange(self.seqlen_q, dtype=torch.int64)
        p = rows + self.offset
        lo = torch.zeros_like(p) if self.left == UNBOUNDED else (p - self.left).clamp(min=0)
        hi = torch.full_like(p, self.seqlen_k) if self.right_eff == UNBOUNDED else (p + self.right_eff + 1).clamp(max=self.seqlen_k)
        hi = torch.maximum(hi, lo)
        band = hi - lo
        sinks = torch.full_like(p, min(self.sink_tokens, self.seqlen_k))
        if self.causal:
            sinks = torch.minimum(sinks, (p + 1).clamp(min=0))
        # Sinks that fall inside the band are already counted there.
        overlap = (torch.minimum(sinks, hi) - lo).clamp(min=0)
        total = int((band + sinks - overlap).clamp(min=0).sum())
        return total


def iter_tiles(spec: MaskSpec, block_q: int, block_k: int) -> Iterator[Tuple[int, int, List[Tuple[int, int, bool]]]]:
    """Yield ``(row_lo, row_hi, [(col_lo, col_hi, needs_mask), ...])`` for every query block."""
    for r0 in range(0, spec.seqlen_q, block_q):
        r1 = min(r0 + block_q, spec.seqlen_q)
        tiles = []
        for c0 in spec.key_blocks(r0, r1, block_k):
            c1 = min(c0 + block_k, spec.seqlen_k)
            tiles.append((c0, c1, not spec.block_is_full(r0, r1, c0, c1)))
        yield r0, r1, tiles
