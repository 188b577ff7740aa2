// Which key tiles a query tile must visit, worked out before any element mask
// (the tile-level half of mask.cuh; mirrors MaskSpec.band / sink_range /
// key_blocks / block_is_full in pykernels/masks.py).
//
// Rows [row_lo, row_hi) sit at positions [p_first, p_last]. Together they can
// see only
//   * the window band  [max(0, p_first - left), min(Sk, p_last + right + 1)), and
//   * the sink keys    [0, n_sink), n_sink = min(sink, Sk), and under causal at
//     most p_last + 1 of them.
// So a query tile visits the sink tiles right of the band (only without causal,
// when the sinks reach past a bounded right edge), the key tiles overlapping the
// band, then the sink tiles left of the band, and nothing else: a 1024-wide
// window at 16K costs the band, not the square. Tiles are visited from the right
// (the diagonal) to the left, so the first tile is the only partially visible
// one under plain causal. The three segments never overlap, so no tile is
// visited twice (which would count its keys twice in the softmax).
//
// Everything here is __host__ __device__ so csrc/tests/tile_range_test.cu can
// check it against brute force on a machine with no GPU.
#pragma once

#include "attention/mask.cuh"

namespace pykernels {
namespace attention {

template <int kBlockN>
struct KeyTileRange {
  int band_lo;    // first key tile of the band
  int band_hi;    // one past its last key tile (band_hi == band_lo: empty band)
  int sink_only;  // sink tiles [0, sink_only) that lie left of the band
  int sink_hi;    // sink tiles [band_hi, sink_hi) that lie right of the band

  __host__ __device__ __forceinline__ static KeyTileRange make(const Mask& m, int row_lo, int row_hi) {
    const int p_first = row_lo + m.offset;
    const int p_last = row_hi - 1 + m.offset;
    int lo = (m.left == kUnbounded) ? 0 : max(0, p_first - m.left);
    int hi = (m.right == kUnbounded) ? m.seqlen_k : min(m.seqlen_k, p_last + m.right + 1);
    hi = max(lo, hi);
    int n_sink = min(m.sink, m.seqlen_k);
    if (m.causal) n_sink = min(n_sink, max(0, p_last + 1));
    const int sink_tiles = (n_sink + kBlockN - 1) / kBlockN;
    KeyTileRange r;
    if (hi > lo) {
      r.band_lo = lo / kBlockN;
      r.band_hi = (hi + kBlockN - 1) / kBlockN;
      r.sink_only = min(sink_tiles, r.band_lo);
      r.sink_hi = max(r.band_hi, sink_tiles);
    } else {  // no band: the sink tiles are all there is
      r.band_lo = r.band_hi = 0;
      r.sink_only = 0;
      r.sink_hi = sink_tiles;
    }
    return r;
  }

  __host__ __device__ __forceinline__ int count() const {
    return (sink_hi - band_hi) + (band_hi - band_lo) + sink_only;
  }

  // The i-th tile to visit, right to left: sinks right of the band, the band, sinks left of it.
  __host__ __device__ __forceinline__ int tile(int i) const {
    const int n_right = sink_hi - band_hi;
    if (i < n_right) return sink_hi - 1 - i;
    i -= n_right;
    const int n_band = band_hi - band_lo;
    return (i < n_band) ? band_hi - 1 - i : sink_only - 1 - (i - n_band);
  }
};

// True when every key in [col_lo, col_lo + kBlockN) is visible to every row in
// [row_lo, row_hi), so the tile needs no element mask (MaskSpec.block_is_full).
template <int kBlockN>
__host__ __device__ __forceinline__ bool key_tile_is_full(const Mask& m, int row_lo, int row_hi, int col_lo) {
  const int col_hi = col_lo + kBlockN;
  if (col_hi > m.seqlen_k) return false;
  const int p_first = row_lo + m.offset;
  const int p_last = row_hi - 1 + m.offset;
  const bool in_band = (m.left == kUnbounded || col_lo >= p_last - m.left) &&
                       (m.right == kUnbounded || col_hi - 1 <= p_first + m.right);
  const bool in_sink = col_hi <= m.sink && (!m.causal || col_hi - 1 <= p_first);
  return in_band || in_sink;
}

// The inverse, for the backward: which query tiles can see key tile
// [col_lo, col_lo + kBlockN). Key j is visible to positions p with
//   j - right <= p <= j + left          (the band), or
//   p >= j (causal) / any p             (when j is a sink key, j < n_sink),
// so the tile is seen by positions [col_lo - right, col_hi - 1 + left] and,
// when it holds sink keys, by every position from col_lo (causal) or 0 on.
// The union is returned as one range of query tiles: where the band and the
// sink rows do not touch, the gap is visited and masked (only a negative
// window side can make one).
template <int kBlockM>
struct QueryTileRange {
  int lo;  // first query tile
  int hi;  // one past the last (hi <= lo: no query sees this key tile)

  __host__ __device__ __forceinline__ static QueryTileRange make(const Mask& m, int col_lo, int col_hi, int seqlen_q) {
    col_hi = min(col_hi, m.seqlen_k);
    // Rows are positions minus offset; an unbounded side admits every row.
    int row_lo = (m.right == kUnbounded) ? 0 : max(0, col_lo - m.right - m.offset);  // causal: right <= 0
    int row_hi = (m.left == kUnbounded) ? seqlen_q : min(seqlen_q, col_hi + m.left - m.offset);
    row_hi = max(row_lo, row_hi);
    if (col_lo < min(m.sink, m.seqlen_k)) {  // sink keys: every later row sees them
      const int sink_row_lo = m.causal ? max(0, col_lo - m.offset) : 0;
      if (sink_row_lo < seqlen_q) {
        row_lo = (row_hi > row_lo) ? min(row_lo, sink_row_lo) : sink_row_lo;
        row_hi = seqlen_q;
      }
    }
    QueryTileRange r;
    r.lo = row_lo / kBlockM;
    r.hi = (row_hi > row_lo) ? (row_hi + kBlockM - 1) / kBlockM : r.lo;
    return r;
  }
};

}  // namespace attention
}  // namespace pykernels
