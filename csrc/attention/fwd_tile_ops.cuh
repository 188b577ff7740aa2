// The per-key-tile register work both forward kernels share, on tiles in the
// mma.sync C layout (mma.cuh): flash_fwd_kernel.cuh holds kMFrags 16-row
// fragments per warp, flash_fwd_sm90_kernel.cuh one (a wgmma accumulator has
// the same layout per warp). Only where the tiles come from differs.
//
//   scores_to_probs   ALiBi, the element mask (boundary tiles only), online softmax
//   rescale_o         O *= alpha, skipped when no row max moved (kLazy)
//   pack_p            P for one k16 step of P V, the A-operand layout
//   store_output      out = O / l and the lse, straight from registers
#pragma once

#include "attention/alibi.cuh"
#include "attention/block_info.cuh"
#include "attention/mask.cuh"
#include "attention/params.h"
#include "attention/softmax.cuh"
#include "common/half_pairs.cuh"

namespace pykernels {
namespace attention {

// One key tile's scores S (raw) -> probabilities p in place, updating the
// softmax; alpha gets each row's rescale factor for O. The warp's rows are
// [warp_row_lo, warp_row_hi) and this thread's first is row0 (g included);
// the tile's first key is col_lo.
//
// With alibi_shifted (the caller's OnlineSoftmax shifted to match), ALiBi
// adds only its column term relative to position p_base
// (apply_alibi_log2_at_or_before); warp-uniform too.
//
// The element mask is decided per warp, not per CTA: a band edge crosses a
// warp's rows within as many columns, so a warp masks about half the tiles
// its CTA would. Warp-uniform, so the branch never diverges. (A warp whose
// rows all lie past Sq skips the mask: its scores are never stored, and keys
// past Sk are zero-filled, so they stay finite.)
template <int kBlockN, bool kHasAlibi, int kMFrags, int kNTiles>
__device__ __forceinline__ void scores_to_probs(float (&S)[kMFrags][kNTiles][4], OnlineSoftmax<kMFrags>& softmax,
                                                float (&alpha)[2 * kMFrags], const FlashFwdParams& params,
                                                const Mask& mask, float exp2_scale, float slope_log2,
                                                int warp_row_lo, int warp_row_hi, int row0, int col_lo, int t,
                                                bool alibi_shifted = false, int p_base = 0) {
  if constexpr (kHasAlibi) {
    if (alibi_shifted) {
      apply_alibi_log2_at_or_before(S, params.softmax_scale_log2, slope_log2, col_lo + 2 * t - p_base);
    } else {
      apply_alibi_log2(S, params.softmax_scale_log2, slope_log2, row0, params.q_offset, col_lo + 2 * t);
    }
  }
  if (warp_row_lo < warp_row_hi && !key_tile_is_full<kBlockN>(mask, warp_row_lo, warp_row_hi, col_lo)) {
    apply_mask(S, mask, row0, col_lo + 2 * t);
  }
  softmax.update(S, exp2_scale, alpha);
}

// O *= alpha per row (row r = 2 mf + half). With kLazy the warp votes first:
// once a row's max settles (most tiles of a long row), alpha is exactly 1 and
// the multiplies are skipped; the vote keeps the branch warp-uniform.
template <bool kLazy, int kMFrags, int kDTiles>
__device__ __forceinline__ void rescale_o(float (&O)[kMFrags][kDTiles][4], const float (&alpha)[2 * kMFrags]) {
  bool needed = !kLazy;
#pragma unroll
  for (int r = 0; r < 2 * kMFrags; ++r) needed |= alpha[r] != 1.f;
  if (__any_sync(0xffffffffu, needed)) {
#pragma unroll
    for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
      for (int d = 0; d < kDTiles; ++d) {
        O[mf][d][0] *= alpha[2 * mf];
        O[mf][d][1] *= alpha[2 * mf];
        O[mf][d][2] *= alpha[2 * mf + 1];
        O[mf][d][3] *= alpha[2 * mf + 1];
      }
  }
}

// The A operand of k16 step ks of P V from one 16-row fragment of P: the C
// layout of two adjacent 8-key tiles is the A layout of one k16 step, so P
// never leaves registers.
template <bool kIsBf16, int kNTiles>
__device__ __forceinline__ void pack_p(const float (&S)[kNTiles][4], int ks, unsigned (&p)[4]) {
  p[0] = pack_float2<kIsBf16>(S[2 * ks][0], S[2 * ks][1]);
  p[1] = pack_float2<kIsBf16>(S[2 * ks][2], S[2 * ks][3]);
  p[2] = pack_float2<kIsBf16>(S[2 * ks + 1][0], S[2 * ks + 1][1]);
  p[3] = pack_float2<kIsBf16>(S[2 * ks + 1][2], S[2 * ks + 1][3]);
}

// lse (natural log) of the rows row0 + 16 mf + 8 half of (b, h) below Sq,
// from the quad's first thread.
template <int kRows>
__device__ __forceinline__ void store_lse(const float (&lse)[kRows], const FlashFwdParams& params, int b, int h,
                                          int row0, int t) {
  if (t != 0) return;
  float* lse_row = params.lse + (static_cast<index_t>(b) * params.heads_q + h) * params.seqlen_q;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int row = row0 + 16 * (r / 2) + 8 * (r % 2);
    if (row < params.seqlen_q) lse_row[row] = lse[r];
  }
}

// Epilogue: out = O / l in the input dtype, lse in natural log, for the rows
// row0 + 16 mf + 8 half of (b, h) below Sq. A row that saw no key (or only
// the sink) writes zeros and -inf (or the sink logit).
template <bool kIsBf16, int kMFrags, int kDTiles>
__device__ __forceinline__ void store_output(const float (&O)[kMFrags][kDTiles][4], OnlineSoftmax<kMFrags>& softmax,
                                             const FlashFwdParams& params, int b, int h, int row0, int t) {
  using elem = unsigned short;
  float inv_l[2 * kMFrags], lse[2 * kMFrags];
  softmax.finalize(inv_l, lse);
  elem* o_head = static_cast<elem*>(params.out) + b * params.o_batch_stride + h * params.o_head_stride;
#pragma unroll
  for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = 2 * mf + half;
      const int row = row0 + 16 * mf + 8 * half;
      if (row < params.seqlen_q) {
        elem* o_row = o_head + static_cast<index_t>(row) * params.o_row_stride + 2 * t;
#pragma unroll
        for (int d = 0; d < kDTiles; ++d) {
          *reinterpret_cast<unsigned*>(o_row + 8 * d) =
              pack_float2<kIsBf16>(O[mf][d][2 * half] * inv_l[r], O[mf][d][2 * half + 1] * inv_l[r]);
        }
      }
    }
  store_lse(lse, params, b, h, row0, t);
}

}  // namespace attention
}  // namespace pykernels
