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
