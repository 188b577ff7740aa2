"""Flash attention written with numba-cuda: the kernels to read first.

This is FlashAttention-2 (Dao 2023) without tensor cores, so every step is
plain Python a reader can follow. ``pykernels/backends/torch/attention.py``
states the same algorithm with tensor ops; this file shows how one thread
block carries it out.

How a block is organised
------------------------
A block owns ``block_q`` query rows of one (batch, head). Each row is served
by a *team* of ``team`` consecutive threads, so a block has
``block_q * team`` threads. Thread ``lane`` of a row's team owns

* the score columns ``lane, lane + team, lane + 2*team, ...`` of each key tile;
* the output features ``lane, lane + team, ...`` of its row.

The interleaving makes the threads of a warp read consecutive shared-memory
words, so there are no bank conflicts. Tiles of Q, K and V are staged in
shared memory as float32 (converted from fp16/bf16 on load; see
``_interop.py``), with one word of padding per tile row so that threads
reading the same feature of different rows hit different banks.
``tile_shape`` picks the tile sizes for each head dim.

Everything runs on CUDA cores in float32: there are no tensor cores in
Numba, so this backend is for reading and checking, and is several times
slower than the CUDA C++ one.

Which key tiles a block visits
------------------------------
Exactly those of ``pykernels.masks.MaskSpec.key_blocks``: the sink tiles
``[0, sink_end)`` and the window band ``[band_lo, band_hi)``. Only tiles that
are not fully visible (``block_is_full``) evaluate the element mask. The
device functions below mirror ``masks.py`` line by line.

The backward recomputes ``P = exp(S - lse)`` from the saved lse and runs as two
kernels, one per query tile (dQ) and one per key tile (dK, dV, summed over the
query heads of a GQA group). Neither uses atomics, so the gradients are
deterministic whatever ``deterministic`` says.

The same kernels run on CPU tensors under ``NUMBA_ENABLE_CUDASIM=1``, slowly:
that is how CI checks them against the float64 reference.
"""
from __future__ import annotations

import functools
import math
from collections import namedtuple
from typing import Optional, Tuple

import numpy as np
import torch
from numba import cuda, float32, typeof, types

from ..._debug import new_output
from ..sink_grad import sink_logit_grad
from ._interop import array_type, converters, kernel_array, launch_stream, storage

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 256

NEG_INF = np.float32(-np.inf)
POS_INF = np.float32(np.inf)
UNBOUNDED = -1

# ---------------------------------------------------------------------- tiles
# Numba kernels declare their shared memory statically, and static shared
# memory is capped at 48 KiB per block.
SHARED_BYTES = 48 * 1024
# Four warps per block: enough to hide shared-memory latency, few enough that
# a team owns several columns and features and reuses what it loads.
THREADS = 128

TileShape = namedtuple("TileShape", "block_q block_k team")


def _padded_dim(head_dim: int, team: int) -> int:
    """Tile width: head_dim rounded up so that every lane owns the same number of features."""
    return -(-head_dim // team) * team


def _team(rows: int, cols: int) -> int:
    """Threads per row: THREADS in all, but never more than the row has columns."""
    return max(1, min(cols, THREADS // rows))


def _shared_floats(kernel: str, block_q: int, block_k: int, team: int, head_dim: int) -> int:
    width = _padded_dim(head_dim, team) + 1
    if kernel == "forward":  # Q, K, V tiles, P tile, a team-max per row
        return block_q * width + 2 * block_k * width + block_q * (block_k + 1) + block_q * team
    if kernel == "dq":  # Q, dO, K, V tiles, dS tile
        return 2 * block_q * width + 2 * block_k * width + block_q * (block_k + 1)
    if kernel == "dkdv":  # K, V, Q, dO tiles, P and dS tiles, lse and delta rows
        return 2 * block_k * width + 2 * block_q * width + 2 * block_k * (block_q + 1) + 2 * block_q
    raise ValueError(f"kernel: expected 'forward', 'dq' or 'dkdv', got {kernel!r}")


def tile_shape(kernel: str, head_dim: int, block_q: Optional[int] = None, block_k: Optional[int] = None) -> TileShape:
    """The (block_q, block_k, team) of ``kernel`` for this head dim.

    Start from 64 x 64 and halve the larger side (the key side on ties) until
    the tiles fit in shared memory: a taller query tile reuses every K/V load
    for more rows, while a wider key tile only saves barriers. Tests pass
    small explicit sizes to cover many tiles at tiny shapes.
    """
    explicit = block_q is not None and block_k is not None
    if explicit:
        for name, n in (("block_q", block_q), ("block_k", block_k)):
            # Powers of two, so that a team's lanes split a tile's columns evenly.
            if n < 1 or n & (n - 1) or n > 64:
                raise ValueError(f"{name}: expected a power of two up to 64, got {n}")
    bq, bk = (block_q, block_k) if explicit else (64, 64)
    while True:
        # The dK/dV kernel gives its teams to key rows; the other two to query rows.
        rows, cols = (bk, bq) if kernel == "dkdv" else (bq, bk)
        team = _team(rows, cols)
        if 4 * _shared_floats(kernel, bq, bk, team, head_dim) <= SHARED_BYTES:
            return TileShape(bq, bk, team)
        if explicit or (bq == 1 and bk == 1):
            raise ValueError(f"block_q/block_k: {bq}x{bk} tiles of head dim {head_dim} do not fit in "
                             f"{SHARED_BYTES} bytes of shared memory")
        if bk >= bq:
            bk //= 2
        else:
            bq //= 2


# ----------------------------------------------------------------------- mask
# The four numbers of masks.MaskSpec plus the sizes, as one kernel argument.
# ``right`` is already capped by causal (MaskSpec.right_eff); -1 = unbounded.
Mask = namedtuple("Mask", "seqlen_q seqlen_k offset causal left right sink_tokens")


def make_mask(seqlen_q, seqlen_k, causal, window_left, window_right, sink_tokens, q_offset) -> Mask:
    right = window_right
    if causal:
        right = 0 if window_right == UNBOUNDED else min(window_right, 0)
    return Mask(int(seqlen_q), int(seqlen_k), int(q_offset), bool(causal), int(window_left), int(right), int(sink_tokens))


@cuda.jit(device=True, inline=True)
def visible(mask, row, col):
    """MaskSpec.visible for one (row, key) pair."""
    p = row + mask.offset
    in_band = (mask.left == UNBOUNDED or col >= p - mask.left) and (mask.right == UNBOUNDED or col <= p + mask.right)
    ok = in_band or col < mask.sink_tokens
    if mask.causal:
        ok = ok and col <= p
    return ok and col >= 0 and col < mask.seqlen_k


@cuda.jit(device=True, inline=True)
def score(x, row, col, slope, has_alibi, needs_mask, mask):
    """The score of (row, col) from its scaled dot product x: x - slope |p - col|
    (ALiBi, p = row + offset), or -inf where the mask hides col (checked only
    on tiles that need it). Every kernel here, forward and backward, uses it."""
    if has_alibi:
        x -= slope * float32(abs(row + mask.offset - col))
    if needs_mask and not visible(mask, row, col):
        x = NEG_INF
    return x


@cuda.jit(device=True, inline=True)
def key_band(mask, row_lo, row_hi):
    """MaskSpec.band: keys [lo, hi) of the window seen by rows [row_lo, row_hi)."""
    p_first = row_lo + mask.offset
    p_last = row_hi - 1 + mask.offset
    lo = 0 if mask.left == UNBOUNDED else max(0, p_first - mask.left)
    hi = mask.seqlen_k if mask.right == UNBOUNDED else min(mask.seqlen_k, p_last + mask.right + 1)
    return lo, max(lo, hi)


@cuda.jit(device=True, inline=True)
def sink_end(mask, row_hi):
    """MaskSpec.sink_range: keys [0, n) kept visible as sinks for rows below row_hi."""
    n = min(mask.sink_tokens, mask.seqlen_k)
    if mask.causal:
        n = min(n, max(0, row_hi + mask.offset))
    return n


@cuda.jit(device=True, inline=True)
def tile_is_full(mask, row_lo, row_hi, col_lo, col_hi):
    """MaskSpec.block_is_full: every key of [col_lo, col_hi) is visible to every row."""
    if col_hi > mask.seqlen_k:
        return False
    p_first = row_lo + mask.offset
    p_last = row_hi - 1 + mask.offset
    in_band = (mask.left == UNBOUNDED or col_lo >= p_last - mask.left) and (
        mask.right == UNBOUNDED or col_hi - 1 <= p_first + mask.right)
    in_sink = col_hi <= mask.sink_tokens and (not mask.causal or col_hi - 1 <= p_first)
    return in_band or in_sink


@cuda.jit(device=True, inline=True)
def key_tiles(mask, row_lo, row_hi, block_k):
    """MaskSpec.key_blocks as tile indices: the union of [0, sink_hi) and [band_lo, band_hi)."""
    lo, hi = key_band(mask, row_lo, row_hi)
    band_lo = lo // block_k
    band_hi = (hi + block_k - 1) // block_k if hi > lo else band_lo
    sink_hi = (sink_end(mask, row_hi) + block_k - 1) // block_k
    return sink_hi, band_lo, band_hi


@cuda.jit(device=True, inline=True)
def query_band(mask, col_lo, col_hi):
    """Rows [lo, hi) that may see a key of [col_lo, col_hi): the key band, inverted.

    Key j lies in row i's window when j - right <= p_i <= j + left. A tile that
    holds a sink key is seen by every row; causal keeps only rows with p_i >= j.
    """
    lo = 0 if mask.right == UNBOUNDED else max(0, col_lo - mask.right - mask.offset)
    hi = mask.seqlen_q if mask.left == UNBOUNDED else min(mask.seqlen_q, col_hi + mask.left - mask.offset)
    if col_lo < mask.sink_tokens:
        lo = 0
        hi = mask.seqlen_q
    if mask.causal:
        lo = max(lo, col_lo - mask.offset)
    return lo, max(lo, hi)


@functools.lru_cache(maxsize=None)
def _tile_loader(storage_name: str):
    to_f32, _ = converters(storage_name)

    @cuda.jit(device=True, inline=True)
    def load_tile(dst, src, b, start, n_valid, head, scale, head_dim):
        """dst[i, d] = scale * src[b, start + i, head, d], as float32.

        Rows past ``n_valid`` and features past ``head_dim`` are zero, so a
        partial tile adds nothing to any sum. All threads of the block share
        the work; neighbouring threads read neighbouring features (coalesced).
        """
        width = dst.shape[1] - 1
        for idx in range(cuda.threadIdx.x, dst.shape[0] * width, cuda.blockDim.x):
            i = idx // width
            d = idx - i * width
            x = float32(0)
            if i < n_valid and d < head_dim:
                x = to_f32(src[b, start + i, head, d]) * scale
            dst[i, d] = x

    return load_tile


# -------------------------------------------------------------------- forward
# Kernel signatures are given explicitly, so each kernel compiles once, when
# first used, for every layout of its arguments (see _interop.array_type).
MASK_TYPE = typeof(make_mask(1, 1, False, UNBOUNDED, UNBOUNDED, 0, 0))
ROWS_TYPE = array_type("float32", 3)  # lse and delta, (B, Hq, Sq)
PER_HEAD_TYPE = array_type("float32", 1)  # sink logits, (Hq,)
SLOPES_TYPE = array_type("float32", 2)  # ALiBi slopes, (B, Hq)


@functools.lru_cache(maxsize=None)
def _forward_kernel(head_dim: int, storage_name: str, shape: TileShape):
    # Every size below is a compile-time constant of this kernel: Numba sizes
    # shared and local arrays at compile time, and constant trip counts let
    # the compiler unroll the per-thread loops into registers. ALiBi and sink
    # logits are run-time switches: they cost a uniform branch, and keeping
    # them out of the cache key saves a compilation per combination.
    D = head_dim
    BQ, BK, TEAM = shape
    COLS = BK // TEAM  # score columns per thread
    FEATS = _padded_dim(D, TEAM) // TEAM  # output features per thread
    WIDTH = FEATS * TEAM + 1  # tile row length, +1 so rows start in different banks
    P_WIDTH = BK + 1
    _, from_f32 = converters(storage_name)
    load_tile = _tile_loader(storage_name)

    x = array_type(storage_name, 4)
    signature = types.void(x, x, x, x, ROWS_TYPE, PER_HEAD_TYPE, SLOPES_TYPE, types.float32, types.boolean,
                           types.boolean, MASK_TYPE)

    @cuda.jit(signature)
    def attention_forward(q, k, v, out, lse, sink_logits, alibi_slopes, softmax_scale, has_alibi, has_sink_logits,
                          mask):
        r0 = cuda.blockIdx.x * BQ
        h = cuda.blockIdx.y
        b = cuda.blockIdx.z
        hk = h // (q.shape[2] // k.shape[2])  # GQA: the KV head this query head reads
        r = cuda.threadIdx.x // TEAM  # this thread's row in the tile
        lane = cuda.threadIdx.x % TEAM  # and its place in the row's team
        row = r0 + r
        row_hi = min(r0 + BQ, mask.seqlen_q)

        q_tile = cuda.shared.array((BQ, WIDTH), float32)
        k_tile = cuda.shared.array((BK, WIDTH), float32)
        v_tile = cuda.shared.array((BK, WIDTH), float32)
        p_tile = cuda.shared.array((BQ, P_WIDTH), float32)
        team_share = cuda.shared.array((BQ, TEAM), float32)
        s = cuda.local.array(COLS, float32)
        acc = cuda.local.array(FEATS, float32)

        # The online softmax state of this row: running max m, this lane's
        # share of the denominator l, and the unnormalised output acc. A learned
        # sink logit is a key with value 0, so it seeds m = sink, l = 1 (counted
        # once, by lane 0).
        m = NEG_INF
        l = float32(0)
        if has_sink_logits:
            m = sink_logits[h]
            if lane == 0:
                l = float32(1)
        for c in range(FEATS):
            acc[c] = 0
        slope = alibi_slopes[b, h] if has_alibi else float32(0)

        # Q is scaled once on load, so a score is one dot product.
        load_tile(q_tile, q, b, r0, row_hi - r0, h, softmax_scale, D)

        # For each visible key tile t, with S_t the scores of this row:
        #   m_t   = max(m_{t-1}, max_j S_t[j])
        #   alpha = exp(m_{t-1} - m_t)
        #   P_t   = exp(S_t - m_t)
        #   l_t   = alpha * l_{t-1} + sum_j P_t[j]
        #   acc_t = alpha * acc_{t-1} + P_t V_t
        # and at the end out = acc / l, lse = m + log(l). While a row has seen
        # only masked keys, m = -inf: exponents are then taken against 0 so
        # that exp(-inf - -inf) never makes a NaN.
        sink_hi, band_lo, band_hi = key_tiles(mask, r0, row_hi, BK)
        t = 0 if sink_hi > 0 else band_lo
        while t < max(sink_hi, band_hi):
            c0 = t * BK
            needs_mask = not tile_is_full(mask, r0, row_hi, c0, c0 + BK)
            cuda.syncthreads()  # the previous tile is no longer read
            load_tile(k_tile, k, b, c0, mask.seqlen_k - c0, hk, float32(1), D)
            load_tile(v_tile, v, b, c0, mask.seqlen_k - c0, hk, float32(1), D)
            cuda.syncthreads()

            # S[j] = <scale q, k_j> - slope * |p - j|, and -inf where j is hidden.
            for c in range(COLS):
                s[c] = 0
            for d in range(D):
                qd = q_tile[r, d]
                for c in range(COLS):
                    s[c] += qd * k_tile[lane + TEAM * c, d]
            lane_max = NEG_INF
            for c in range(COLS):
                x = score(s[c], row, c0 + lane + TEAM * c, slope, has_alibi, needs_mask, mask)
                s[c] = x
                lane_max = max(lane_max, x)

            # The team agrees on the row max through shared memory.
            team_share[r, lane] = lane_max
            cuda.syncthreads()
            m_new = m
            for i in range(TEAM):
                m_new = max(m_new, team_share[r, i])
            m_ref = float32(0) if m_new == NEG_INF else m_new
            alpha = math.exp(m - m_ref)
            l *= alpha
            for c in range(COLS):
                p = math.exp(s[c] - m_ref)
                p_tile[r, lane + TEAM * c] = p
                l += p
            for c in range(FEATS):
                acc[c] *= alpha
            m = m_new
            cuda.syncthreads()

            # acc[d] += sum_j P[j] V[j, d]
            for j in range(BK):
                pj = p_tile[r, j]
                for c in range(FEATS):
                    acc[c] += pj * v_tile[j, lane + TEAM * c]

            t += 1
            if t == sink_hi and t < band_lo:
                t = band_lo  # jump the gap between the sink tiles and the band

        # l = sum of the lanes' shares. A row that saw nothing has l = 0: its
        # output is 0 and its lse -inf (or the sink logit, when l = 1 from it).
        cuda.syncthreads()
        team_share[r, lane] = l
        cuda.syncthreads()
        l = float32(0)
        for i in range(TEAM):
            l += team_share[r, i]
        if row < mask.seqlen_q:
            inv_l = float32(0) if l == 0 else float32(1) / l
            for c in range(FEATS):
                d = lane + TEAM * c
                if d < D:
                    out[b, row, h, d] = from_f32(acc[c] * inv_l)
            if lane == 0:
                lse[b, h, row] = NEG_INF if l == 0 else m + math.log(l)

    return attention_forward


# ------------------------------------------------------------------- backward
# With P = exp(S - lse) recomputed from the saved lse and
# delta_i = sum_d dO[i, d] O[i, d] - dlse_i:
#   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - delta),
#   dQ = scale * dS K,  dK = scale * dS^T Q.
# Rows that saw nothing saved lse = -inf; reading it as +inf makes their P = 0.

@functools.lru_cache(maxsize=None)
def _dq_kernel(head_dim: int, storage_name: str, shape: TileShape):
    D = head_dim
    BQ, BK, TEAM = shape
    COLS = BK // TEAM
    FEATS = _padded_dim(D, TEAM) // TEAM
    WIDTH = FEATS * TEAM + 1
    P_WIDTH = BK + 1
    _, from_f32 = converters(storage_name)
    load_tile = _tile_loader(storage_name)

    x = array_type(storage_name, 4)
    signature = types.void(x, x, x, x, ROWS_TYPE, ROWS_TYPE, x, SLOPES_TYPE, types.float32, types.boolean, MASK_TYPE)

    @cuda.jit(signature)
    def attention_backward_dq(q, k, v, dout, lse, delta, dq, alibi_slopes, softmax_scale, has_alibi, mask):
        r0 = cuda.blockIdx.x * BQ
        h = cuda.blockIdx.y
        b = cuda.blockIdx.z
        hk = h // (q.shape[2] // k.shape[2])
        r = cuda.threadIdx.x // TEAM
        lane = cuda.threadIdx.x % TEAM
        row = r0 + r
        row_hi = min(r0 + BQ, mask.seqlen_q)

        q_tile = cuda.shared.array((BQ, WIDTH), float32)
        do_tile = cuda.shared.array((BQ, WIDTH), float32)
        k_tile = cuda.shared.array((BK, WIDTH), float32)
        v_tile = cuda.shared.array((BK, WIDTH), float32)
        ds_tile = cuda.shared.array((BQ, P_WIDTH), float32)
        s = cuda.local.array(COLS, float32)
        dp = cuda.local.array(COLS, float32)
        acc = cuda.local.array(FEATS, float32)

        row_lse = POS_INF
        row_delta = float32(0)
        if row < mask.seqlen_q:
            row_lse = lse[b, h, row]
            row_delta = delta[b, h, row]
        if row_lse == NEG_INF:
            row_lse = POS_INF
        for c in range(FEATS):
            acc[c] = 0
        slope = alibi_slopes[b, h] if has_alibi else float32(0)

        load_tile(q_tile, q, b, r0, row_hi - r0, h, softmax_scale, D)
        load_tile(do_tile, dout, b, r0, row_hi - r0, h, float32(1), D)

        # Over the key tiles this row sees (as in the forward):
        #   dS[j] = P[j] (<dO, v_j> - delta),  P[j] = exp(S[j] - lse)
        #   dq   += dS K_t                     (times scale at the end)
        sink_hi, band_lo, band_hi = key_tiles(mask, r0, row_hi, BK)
        t = 0 if sink_hi > 0 else band_lo
        while t < max(sink_hi, band_hi):
            c0 = t * BK
            needs_mask = not tile_is_full(mask, r0, row_hi, c0, c0 + BK)
            cuda.syncthreads()
            load_tile(k_tile, k, b, c0, mask.seqlen_k - c0, hk, float32(1), D)
            load_tile(v_tile, v, b, c0, mask.seqlen_k - c0, hk, float32(1), D)
            cuda.syncthreads()

            for c in range(COLS):
                s[c] = 0
                dp[c] = 0
            for d in range(D):
                qd = q_tile[r, d]
                dod = do_tile[r, d]
                for c in range(COLS):
                    s[c] += qd * k_tile[lane + TEAM * c, d]
                    dp[c] += dod * v_tile[lane + TEAM * c, d]
            for c in range(COLS):
                # exp(-inf - lse) = 0: hidden keys and inert rows (lse = +inf) add nothing.
                p = math.exp(score(s[c], row, c0 + lane + TEAM * c, slope, has_alibi, needs_mask, mask) - row_lse)
                ds_tile[r, lane + TEAM * c] = p * (dp[c] - row_delta)
            cuda.syncthreads()

            for j in range(BK):
                dsj = ds_tile[r, j]
                for c in range(FEATS):
                    acc[c] += dsj * k_tile[j, lane + TEAM * c]

            t += 1
            if t == sink_hi and t < band_lo:
                t = band_lo

        if row < mask.seqlen_q:
            for c in range(FEATS):
                d = lane + TEAM * c
                if d < D:
                    dq[b, row, h, d] = from_f32(acc[c] * softmax_scale)

    return attention_backward_dq


@functools.lru_cache(maxsize=None)
def _dkdv_kernel(head_dim: int, storage_name: str, shape: TileShape):
    D = head_dim
    BQ, BK, TEAM = shape
    ROWS = BQ // TEAM  # query rows per thread: here teams serve key rows
    FEATS = _padded_dim(D, TEAM) // TEAM
    WIDTH = FEATS * TEAM + 1
    P_WIDTH = BQ + 1
    _, from_f32 = converters(storage_name)
    load_tile = _tile_loader(storage_name)

    x = array_type(storage_name, 4)
    signature = types.void(x, x, x, x, ROWS_TYPE, ROWS_TYPE, x, x, SLOPES_TYPE, types.float32, types.boolean,
                           MASK_TYPE)

    @cuda.jit(signature)
    def attention_backward_dkdv(q, k, v, dout, lse, delta, dk, dv, alibi_slopes, softmax_scale, has_alibi, mask):
        c0 = cuda.blockIdx.x * BK
        hk = cuda.blockIdx.y
        b = cuda.blockIdx.z
        group = q.shape[2] // k.shape[2]
        r = cuda.threadIdx.x // TEAM  # this thread's key row in the tile
        lane = cuda.threadIdx.x % TEAM
        col = c0 + r
        col_hi = min(c0 + BK, mask.seqlen_k)

        k_tile = cuda.shared.array((BK, WIDTH), float32)
        v_tile = cuda.shared.array((BK, WIDTH), float32)
        q_tile = cuda.shared.array((BQ, WIDTH), float32)
        do_tile = cuda.shared.array((BQ, WIDTH), float32)
        p_tile = cuda.shared.array((BK, P_WIDTH), float32)
        ds_tile = cuda.shared.array((BK, P_WIDTH), float32)
        lse_row = cuda.shared.array(BQ, float32)
        delta_row = cuda.shared.array(BQ, float32)
        s = cuda.local.array(ROWS, float32)
        dp = cuda.local.array(ROWS, float32)
        dk_acc = cuda.local.array(FEATS, float32)
        dv_acc = cuda.local.array(FEATS, float32)
        for c in range(FEATS):
            dk_acc[c] = 0
            dv_acc[c] = 0

        load_tile(k_tile, k, b, c0, col_hi - c0, hk, float32(1), D)
        load_tile(v_tile, v, b, c0, col_hi - c0, hk, float32(1), D)

        # For every query head h of the GQA group and every query tile whose
        # rows may see this key tile:
        #   P[i] = exp(S[i] - lse_i),  dS[i] = P[i] (<dO_i, v> - delta_i)
        #   dv  += sum_i P[i] dO_i,     dk  += sum_i dS[i] (scale q_i)
        # Summing the group's heads here, in a fixed order, is what makes the
        # GQA reduction deterministic without atomics.
        row_lo, row_end = query_band(mask, c0, col_hi)
        for h in range(hk * group, (hk + 1) * group):
            slope = alibi_slopes[b, h] if has_alibi else float32(0)
            for r0 in range(row_lo - row_lo % BQ, row_end, BQ):
                row_hi = min(r0 + BQ, mask.seqlen_q)
                needs_mask = not tile_is_full(mask, r0, row_hi, c0, c0 + BK)
                cuda.syncthreads()
                load_tile(q_tile, q, b, r0, row_hi - r0, h, softmax_scale, D)
                load_tile(do_tile, dout, b, r0, row_hi - r0, h, float32(1), D)
                # Padding rows get lse = +inf, so their P, and all they add, is 0.
                for i in range(cuda.threadIdx.x, BQ, cuda.blockDim.x):
                    x = POS_INF
                    y = float32(0)
                    if r0 + i < mask.seqlen_q:
                        x = lse[b, h, r0 + i]
                        y = delta[b, h, r0 + i]
                    lse_row[i] = POS_INF if x == NEG_INF else x
                    delta_row[i] = y
                cuda.syncthreads()

                for c in range(ROWS):
                    s[c] = 0
                    dp[c] = 0
                for d in range(D):
                    kd = k_tile[r, d]
                    vd = v_tile[r, d]
                    for c in range(ROWS):
                        s[c] += kd * q_tile[lane + TEAM * c, d]
                        dp[c] += vd * do_tile[lane + TEAM * c, d]
                for c in range(ROWS):
                    i = lane + TEAM * c
                    p = math.exp(score(s[c], r0 + i, col, slope, has_alibi, needs_mask, mask) - lse_row[i])
                    p_tile[r, i] = p
                    ds_tile[r, i] = p * (dp[c] - delta_row[i])
                cuda.syncthreads()

                for i in range(BQ):
                    pi = p_tile[r, i]
                    dsi = ds_tile[r, i]
                    for c in range(FEATS):
                        dv_acc[c] += pi * do_tile[i, lane + TEAM * c]
                        dk_acc[c] += dsi * q_tile[i, lane + TEAM * c]

        if col < mask.seqlen_k:
            for c in range(FEATS):
                d = lane + TEAM * c
                if d < D:
                    dk[b, col, hk, d] = from_f32(dk_acc[c])
                    dv[b, col, hk, d] = from_f32(dv_acc[c])

    return attention_backward_dkdv


# ----------------------------------------------------------------------- host
def supports(op: str, dtype: torch.dtype, head_dim: int) -> Optional[str]:
    if op not in ("attention_fwd", "attention_bwd"):
        return f"{op} is not an attention op"
    if dtype not in DTYPES:
        return f"it takes float16, bfloat16 or float32, got {dtype}"
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        return f"it takes head dims 1..{MAX_HEAD_DIM}, got {head_dim}"
    return None


def _per_head(x: Optional[torch.Tensor], b: int, hq: int, device) -> Tuple[object, bool]:
    """(B, Hq) float32 slopes for the kernel, or a placeholder when there are none."""
    if x is None:
        return kernel_array(torch.zeros(1, 1, dtype=torch.float32, device=device)), False
    return kernel_array(x.to(torch.float32).expand(b, hq).contiguous()), True


def _grid(n: int, block: int, heads: int, batch: int) -> Tuple[int, int, int]:
    return (-(-n // block), heads, batch)


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    softmax_scale: float,
    causal: bool,
    window_left: int,
    window_right: int,
    sink_tokens: int,
    sink_logits: Optional[torch.Tensor],
    alibi_slopes: Optional[torch.Tensor],
    q_offset: int,
    block_q: Optional[int] = None,
    block_k: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    shape = tile_shape("forward", d, block_q, block_k)
    mask = make_mask(sq, sk, causal, window_left, window_right, sink_tokens, q_offset)
    out = new_output((b, sq, hq, d), q.dtype, q.device)
    lse = new_output((b, hq, sq), torch.float32, q.device)
    with launch_stream(q.device) as stream:
        slopes, has_alibi = _per_head(alibi_slopes, b, hq, q.device)
        sinks = sink_logits if sink_logits is not None else torch.zeros(hq, device=q.device)
        kernel = _forward_kernel(d, storage(q.dtype), shape)
        kernel[_grid(sq, shape.block_q, hq, b), shape.block_q * shape.team, stream](
            kernel_array(q), kernel_array(k), kernel_array(v), kernel_array(out), kernel_array(lse),
            kernel_array(sinks.to(torch.float32).contiguous()), slopes, np.float32(softmax_scale),
            has_alibi, sink_logits is not None, mask,
        )
    return out, lse


def backward(
    dout: torch.Tensor,
    dlse: Optional[torch.Tensor],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    *,
    softmax_scale: float,
    causal: bool,
    window_left: int,
    window_right: int,
    sink_tokens: int,
    sink_logits: Optional[torch.Tensor],
    alibi_slopes: Optional[torch.Tensor],
    q_offset: int,
    deterministic: bool = False,
    block_q: Optional[int] = None,
    block_k: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    mask = make_mask(sq, sk, causal, window_left, window_right, sink_tokens, q_offset)
    # delta_i = <dO_i, O_i> - dlse_i and dsink are O(S * D) elementwise
    # bookkeeping with nothing to tile, so torch does them.
    delta = (dout.float() * out.float()).sum(-1).transpose(1, 2)
    if dlse is not None:
        delta = delta - dlse.float()
    delta = delta.contiguous()
    lse = lse.float().contiguous()
    dout = dout if dout.stride(-1) == 1 else dout.contiguous()

    dq = new_output(q.shape, q.dtype, q.device)
    dk = new_output(k.shape, k.dtype, k.device)
    dv = new_output(v.shape, v.dtype, v.device)
    scale = np.float32(softmax_scale)
    store = storage(q.dtype)
    with launch_stream(q.device) as stream:
        slopes, has_alibi = _per_head(alibi_slopes, b, hq, q.device)
        args = (kernel_array(q), kernel_array(k), kernel_array(v), kernel_array(dout),
                kernel_array(lse), kernel_array(delta))
        shape = tile_shape("dq", d, block_q, block_k)
        kernel = _dq_kernel(d, store, shape)
        kernel[_grid(sq, shape.block_q, hq, b), shape.block_q * shape.team, stream](
            *args, kernel_array(dq), slopes, scale, has_alibi, mask)
        shape = tile_shape("dkdv", d, block_q, block_k)
        kernel = _dkdv_kernel(d, store, shape)
        kernel[_grid(sk, shape.block_k, hkv, b), shape.block_k * shape.team, stream](
            *args, kernel_array(dk), kernel_array(dv), slopes, scale, has_alibi, mask)

    if sink_logits is not None:
        dsink = sink_logit_grad(sink_logits, lse, delta)
    else:
        dsink = torch.zeros(hq, dtype=torch.float32, device=q.device)
    return dq, dk, dv, dsink
