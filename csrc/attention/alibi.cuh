// ALiBi (Press et al. 2022), computed in the kernel: no (Sq x Sk) bias tensor.
//
// Score x = scale <q, k> - slope_h |p - j|. The kernel works in log2 units
// (exp2 is one MUFU instruction, exp is two), so a score tile becomes
//
//     x * log2(e) = <q, k> * softmax_scale_log2 - slope_h * log2(e) * |p - j|
//
// in place, one FFMA per element after the distance. Slopes arrive as (Hq,) or
// (B, Hq) float32; alibi_batch_stride is 0 for the first.
#pragma once

#include "attention/params.h"

namespace pykernels {
namespace attention {

constexpr float LOG2E = 1.4426950408889634f;  // log2(e): exp(x) = exp2(x * LOG2E)

__device__ __forceinline__ float alibi_slope_log2(const FlashFwdParams& p, int b, int h) {
  return p.alibi_slopes[b * p.alibi_batch_stride + h] * LOG2E;
}

// Both tile layouts put S[f][j][e] (the C layout of mma.cuh) at tile row
// row0 + 16 f + 8 (e / 2) and column col0 + 8 j + (e % 2). With queries on the
// rows the distance is |row + offset - col|; with keys on the rows (the
// backward's transposed tiles) it is |col + offset - row|, the same with the
// offset negated: `shift` is that signed offset.
template <int kFrags, int kTiles>
__device__ __forceinline__ void apply_alibi_log2_tile(float (&S)[kFrags][kTiles][4], float softmax_scale_log2,
                                                      float slope_log2, int row0, int col0, int shift) {
#pragma unroll
  for (int f = 0; f < kFrags; ++f)
#pragma unroll
    for (int j = 0; j < kTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = row0 + 16 * f + 8 * (e >> 1);
        const int col = col0 + 8 * j + (e & 1);
        const float dist = static_cast<float>(abs(row + shift - col));
        S[f][j][e] = S[f][j][e] * softmax_scale_log2 - slope_log2 * dist;
      }
}

// Rows = queries (as apply_mask): `offset` turns a row into its position p.
template <int kMFrags, int kNTiles>
__device__ __forceinline__ void apply_alibi_log2(float (&S)[kMFrags][kNTiles][4], float softmax_scale_log2,
                                                 float slope_log2, int row0, int offset, int col0) {
  apply_alibi_log2_tile(S, softmax_scale_log2, slope_log2, row0, col0, offset);
}

// Rows = queries, when every visible key lies at or before its query
// (Mask::keys_at_or_before_query): then |p - j| = p - j and the bias splits,
//
//     -slope (p - j) = slope (j - p_base)  -  slope (p - p_base),
//
// into a column term and a row constant, which softmax ignores. The tile gets
// only the column term: one FFMA per element after one per column, instead
// of an integer distance, its absolute value and an int-to-float conversion
// per element (the last a quarter-rate instruction). The row term moves into
// the running max (OnlineSoftmax::shift: the sink logit going in, the lse
// coming out). p_base, the query tile's first position, keeps both terms
// small (|p - p_base| < the tile height) whatever the sequence length, so no
// fp32 precision is lost far from position 0. Masked scores (j > p) get a
// wrong finite value here; the element mask that follows clears them.
// col0 includes 2 t; col_minus_base = col0 - p_base.
template <int kMFrags, int kNTiles>
__device__ __forceinline__ void apply_alibi_log2_at_or_before(float (&S)[kMFrags][kNTiles][4],
                                                              float softmax_scale_log2, float slope_log2,
                                                              int col_minus_base) {
  const float col_term0 = slope_log2 * static_cast<float>(col_minus_base);
#pragma unroll
  for (int j = 0; j < kNTiles; ++j)
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const float col_term = fmaf(slope_log2, static_cast<float>(8 * j + c), col_term0);
#pragma unroll
      for (int f = 0; f < kMFrags; ++f)
#pragma unroll
        for (int h = 0; h < 2; ++h) S[f][j][2 * h + c] = fmaf(S[f][j][2 * h + c], softmax_scale_log2, col_term);
    }
}

// Rows = keys, columns = queries (the backward, as apply_mask_transposed):
// S[nf][j][e] is key key0 + 16 nf + 8 (e / 2) and query q0 + 8 j + (e % 2).
template <int kNFrags, int kMTiles>
__device__ __forceinline__ void apply_alibi_log2_transposed(float (&S)[kNFrags][kMTiles][4], float softmax_scale_log2,
                                                            float slope_log2, int key0, int q0, int offset) {
  apply_alibi_log2_tile(S, softmax_scale_log2, slope_log2, key0, q0, -offset);
}

// Scores to log2 units without ALiBi (any tile layout).
template <int kRows, int kCols>
__device__ __forceinline__ void scale_log2(float (&S)[kRows][kCols][4], float softmax_scale_log2) {
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int c = 0; c < kCols; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) S[r][c][e] *= softmax_scale_log2;
}

}  // namespace attention
}  // namespace pykernels
