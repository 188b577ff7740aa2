// The one mask of the attention kernels: causal, sliding window and sink
// tokens are all (left, right, sink) plus the causal flag.
//
// Mirrors pykernels/masks.py (MaskSpec.visible) exactly. Query row i sits at
// position p = i + q_offset; key j is visible when
//
//     (p - left <= j <= p + right  or  j < sink)  and  (not causal or j <= p)  and  j < seqlen_k
//
// with -1 meaning "unbounded" for left and right, and causal capping right at 0
// (so causal alone is (-1, 0)). The element mask runs only on key tiles that
// block_info.cuh could not prove fully visible.
#pragma once

namespace pykernels {
namespace attention {

constexpr int kUnbounded = -1;

struct Mask {
  int left;    // kUnbounded (-1) = no limit on that side
  int right;   // after the causal cap; kUnbounded = no limit
  int sink;    // the first `sink` keys stay visible outside the window
  int offset;  // q_offset
  int seqlen_k;
  bool causal;

  __host__ __device__ __forceinline__ static Mask make(int left, int right, int sink, int offset, int seqlen_k,
                                                       bool causal) {
    // Causal is the window (left, 0): cap right here once, as MaskSpec.right_eff does.
    if (causal) right = (right == kUnbounded) ? 0 : (right < 0 ? right : 0);
    return Mask{left, right, sink, offset, seqlen_k, causal};
  }

  __host__ __device__ __forceinline__ bool visible(int row, int col) const {
    const int p = row + offset;
    const bool in_band = (left == kUnbounded || col >= p - left) && (right == kUnbounded || col <= p + right);
    const bool in_sink = col < sink;
    return (in_band || in_sink) && (!causal || col <= p) && col < seqlen_k;
  }

  // Whether every visible key lies at or before its query (j <= p): causal,
  // or a window ending at or before the diagonal with no sinks (sinks are
  // visible from every row).
  __host__ __device__ __forceinline__ bool keys_at_or_before_query() const {
    return causal || (right != kUnbounded && right <= 0 && sink == 0);
  }

  // The same predicate for one row as column bounds: key j is visible iff
  //   band_lo <= j <= band_hi  or  j < sink_hi.
  // Three compares per element instead of re-deriving the window each time.
  __host__ __device__ __forceinline__ void row_bounds(int row, int& band_lo, int& band_hi, int& sink_hi) const {
    const int p = row + offset;
    band_lo = (left == kUnbounded) ? 0 : max(0, p - left);
    band_hi = (right == kUnbounded) ? seqlen_k - 1 : min(seqlen_k - 1, p + right);  // causal: right <= 0
    sink_hi = min(sink, seqlen_k);
    if (causal) sink_hi = min(sink_hi, p + 1);
  }
};

// Set the scores a thread holds for one key tile to -inf where masked.
// S[mf][j][e] is row  row0 + 16 mf + 8 (e / 2)  (row0 already includes this
// thread's g = lane / 4) and column  col0 + 8 j + (e % 2)  (col0 already
// includes 2 t), the C layout of mma.cuh.
template <int kMFrags, int kNTiles>
__device__ __forceinline__ void apply_mask(float (&S)[kMFrags][kNTiles][4], const Mask& m, int row0, int col0) {
#pragma unroll
  for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      int band_lo, band_hi, sink_hi;
      m.row_bounds(row0 + 16 * mf + 8 * half, band_lo, band_hi, sink_hi);
#pragma unroll
      for (int j = 0; j < kNTiles; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = col0 + 8 * j + e;
          const bool visible = (col >= band_lo && col <= band_hi) || col < sink_hi;
          if (!visible) S[mf][j][2 * half + e] = -__int_as_float(0x7f800000);
        }
    }
}

// The backward's layout: the same mask on a transposed tile, rows = keys and
// columns = queries. S[nf][j][e] is key  key0 + 16 nf + 8 (e / 2)  and query
// q0 + 8 j + (e % 2)  (key0 includes g, q0 includes 2 t). Only boundary tiles
// reach it, so it tests each element with the plain predicate.
template <int kNFrags, int kMTiles>
__device__ __forceinline__ void apply_mask_transposed(float (&S)[kNFrags][kMTiles][4], const Mask& m, int key0,
                                                      int q0) {
#pragma unroll
  for (int nf = 0; nf < kNFrags; ++nf)
#pragma unroll
    for (int j = 0; j < kMTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (!m.visible(q0 + 8 * j + (e & 1), key0 + 16 * nf + 8 * (e >> 1))) {
          S[nf][j][e] = -__int_as_float(0x7f800000);
        }
      }
}

}  // namespace attention
}  // namespace pykernels
