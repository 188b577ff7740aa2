// The attention forward kernel (FlashAttention-2's algorithm on mma.sync).
//
// One CTA = kBlockM query rows of one (batch, query head). It keeps its Q tile
// in shared memory and walks only the key tiles the mask lets it see
// (block_info.cuh), right to left:
//
//     wait K_t ; issue the copy of V_t
//     S = Q K_t^T                       (fp32 accumulators, mma.sync m16n8k16)
//     ALiBi / element mask on S         (the mask only where the tile is not fully visible)
//     online softmax: P = exp2(S - m), rescale O and l by exp2(m_old - m)
//                       (O's rescale skipped when no row max moved, d >= 96)
//     wait V_t ; issue the copy of K_{t+1}
//     O += P V_t                        (P converted to 16 bits in registers: the A operand)
//
// so V's copy overlaps Q K^T and the softmax, and the next K's copy overlaps
// P V. At the end O / l goes to global memory with the lse.
//
// Work split: warp w owns 16 * kMFrags query rows and computes them against
// the whole key tile, so a row's max and sum live in one quad of threads
// (softmax.cuh) and warps never exchange partial results.
//
// Head h reads KV head h / (Hq / Hkv) (GQA/MQA) through its strides; K and V
// are never repeated. All global offsets are 64-bit (B * H * S * D may pass
// 2^31); row and column indices within a head are 32-bit.
//
// Compiled by nvcc (instantiations/*.cu) and by NVRTC (CuPy backend) alike:
// device code only, no includes outside csrc/attention.
#pragma once

#include "attention/alibi.cuh"
#include "attention/block_info.cuh"
#include "attention/copy.cuh"
#include "attention/fwd_tile_ops.cuh"
#include "attention/kernel_traits.cuh"
#include "attention/mask.cuh"
#include "attention/mma.cuh"
#include "attention/params.h"
#include "attention/query_tile.cuh"
#include "attention/softmax.cuh"

namespace pykernels {
namespace attention {

// 16-bit element storage; the arithmetic type (fp16 or bf16) is a template flag.
using elem_t = unsigned short;

// Copy rows [row0, row0 + kRows) of one head (row stride in elements) into a
// padded shared tile at byte address smem, zero-filling rows at or past n_rows.
// Thread tid moves 16-byte chunk tid, tid + kNThreads, ...; when a row's
// chunk count divides kNThreads (every head dim but 96) those chunks sit a
// fixed number of rows apart, so one pointer advances by a fixed stride and
// only one 64-bit address stays live.
template <class Tr, int kRows>
__device__ __forceinline__ void load_rows(unsigned smem, const elem_t* gmem, index_t row_stride, int row0,
                                          int n_rows, int tid) {
  constexpr int kCpr = Tr::kChunksPerRow;
  constexpr int kChunks = kRows * kCpr;
  constexpr int kIters = (kChunks + Tr::kNThreads - 1) / Tr::kNThreads;
  if constexpr (Tr::kNThreads % kCpr == 0) {
    constexpr int kRowStep = Tr::kNThreads / kCpr;
    const int r = tid / kCpr, col = (tid % kCpr) * 8;
    const int rows_left = n_rows - row0 - r;  // rows r, r + kRowStep, ... are valid while < rows_left
    const elem_t* src = gmem + static_cast<index_t>(row0 + r) * row_stride + col;
    const unsigned dst = smem + (r * Tr::kSmemRow + col) * 2;
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      if (kChunks % Tr::kNThreads == 0 || tid + i * Tr::kNThreads < kChunks) {
        const bool valid = i * kRowStep < rows_left;
        cp_async_16(dst + i * kRowStep * Tr::kSmemRow * 2, valid ? src : gmem, valid);
      }
      src += kRowStep * row_stride;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kIters; ++i) {
      const int c = tid + i * Tr::kNThreads;
      if (kChunks % Tr::kNThreads == 0 || c < kChunks) {
        const int r = c / kCpr, col = (c % kCpr) * 8;
        const bool valid = row0 + r < n_rows;
        const elem_t* src = gmem + (valid ? static_cast<index_t>(row0 + r) * row_stride : 0) + col;
        cp_async_16(smem + (r * Tr::kSmemRow + col) * 2, src, valid);
      }
    }
  }
}

template <int kHeadDim, bool kIsBf16, bool kHasAlibi>
__device__ __forceinline__ void flash_fwd_block(const FlashFwdParams& params) {
  using Tr = typename FwdTileShape<kHeadDim>::type;
  static_assert(Tr::kNThreads == kFwdThreads, "every tile shape runs kFwdThreads threads");
  constexpr int kBlockM = Tr::kBlockM, kBlockN = Tr::kBlockN, kMFrags = Tr::kMFrags;
  constexpr int kNTiles = Tr::kNTiles, kDTiles = Tr::kDTiles, kSmemRow = Tr::kSmemRow;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  // Q, K and V tiles as shared-space byte addresses (see kernel_traits.cuh).
  const unsigned sQ = smem_addr(smem_raw);
  const unsigned sK = sQ + Tr::kSmemQ * 2;
  const unsigned sV = sK + Tr::kSmemK * 2;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;  // mma fragment coordinates (mma.cuh)

  const QueryTileWork<kBlockM, kBlockN> work = QueryTileWork<kBlockM, kBlockN>::make(params);
  const int b = work.b, h = work.h, h_kv = work.h_kv, row_lo = work.row_lo, row_hi = work.row_hi;
  const Mask& mask = work.mask;
  const KeyTileRange<kBlockN>& tiles = work.tiles;
  const int n_tiles = tiles.count();

  // Without ALiBi, S stays in raw units and softmax_scale_log2 rides in the
  // exp2's FFMA; with it, S is converted in place and the softmax scale is 1.
  const float exp2_scale = kHasAlibi ? 1.f : params.softmax_scale_log2;
  const float slope_log2 = (kHasAlibi && params.alibi_slopes != nullptr) ? alibi_slope_log2(params, b, h) : 0.f;
  const float sink_log2 = params.sink_logits != nullptr ? params.sink_logits[h] * LOG2E : neg_inf();

  const elem_t* q_head = head_rows<const elem_t>(params.q, b, h, params.q_batch_stride, params.q_head_stride);
  const elem_t* k_head = head_rows<const elem_t>(params.k, b, h_kv, params.k_batch_stride, params.k_head_stride);
  const elem_t* v_head = head_rows<const elem_t>(params.v, b, h_kv, params.v_batch_stride, params.v_head_stride);

  // This thread's first row within the tile (then + 16 mf + 8 half).
  const int warp_row = warp * 16 * kMFrags;
  const int row0 = row_lo + warp_row + g;
  const int warp_row_lo = row_lo + warp_row;  // this warp's rows [warp_row_lo, warp_row_hi)
  const int warp_row_hi = min(warp_row_lo + 16 * kMFrags, row_hi);

  OnlineSoftmax<kMFrags> softmax;
  softmax.init(sink_log2, t == 0);
  float O[kMFrags][kDTiles][4];
#pragma unroll
  for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
    for (int d = 0; d < kDTiles; ++d)
#pragma unroll
      for (int e = 0; e < 4; ++e) O[mf][d][e] = 0.f;

  // Per-lane ldmatrix addresses into the padded tiles, see the lane -> tile
  // mapping in mma.cuh (row and column below count elements):
  //   Q (A operand): lanes 0-15 rows 0-15 at column 0, lanes 16-31 at column 8;
  //   K (B operand, two 8-key tiles): key (lane & 7) + 8 (lane / 16), column 8 ((lane / 8) & 1);
  //   V (B operand, transposed, two 8-column tiles): key (lane & 7) + 8 ((lane / 8) & 1), column 8 (lane / 16).
  // Addresses are 32-bit shared-space byte addresses, base + compile-time
  // offsets, so that the offsets fold into the ldmatrix immediates instead of
  // each taking a register for the whole loop.
  constexpr int kRowBytes = kSmemRow * 2;
  const unsigned q_addr = sQ + (warp_row + (lane & 15)) * kRowBytes + (lane >> 4) * 16;
  const unsigned k_addr = sK + ((lane & 7) + (lane >> 4) * 8) * kRowBytes + ((lane >> 3) & 1) * 16;
  const unsigned v_addr = sV + ((lane & 7) + ((lane >> 3) & 1) * 8) * kRowBytes + (lane >> 4) * 16;

  if (n_tiles > 0) {
    load_rows<Tr, kBlockM>(sQ, q_head, params.q_row_stride, row_lo, params.seqlen_q, tid);
    load_rows<Tr, kBlockN>(sK, k_head, params.k_row_stride, tiles.tile(0) * kBlockN, params.seqlen_k, tid);
    cp_async_commit();
  }

  for (int it = 0; it < n_tiles; ++it) {
    const int col_lo = tiles.tile(it) * kBlockN;
    cp_async_wait<0>();
    __syncthreads();  // K_t is in; every warp is done with V_{t-1}
    load_rows<Tr, kBlockN>(sV, v_head, params.v_row_stride, col_lo, params.seqlen_k, tid);
    cp_async_commit();

    // S = Q K^T for this warp's rows and the whole key tile.
    float S[kMFrags][kNTiles][4];
#pragma unroll
    for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
      for (int j = 0; j < kNTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) S[mf][j][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < Tr::kKSteps; ++ks) {
      unsigned a[kMFrags][4];
#pragma unroll
      for (int mf = 0; mf < kMFrags; ++mf) ldmatrix_x4(a[mf], q_addr + mf * 16 * kRowBytes + ks * 32);
#pragma unroll
      for (int jp = 0; jp < kNTiles / 2; ++jp) {
        unsigned bk[4];
        ldmatrix_x4(bk, k_addr + jp * 16 * kRowBytes + ks * 32);
#pragma unroll
        for (int mf = 0; mf < kMFrags; ++mf) {
          mma_16816<kIsBf16>(S[mf][2 * jp], a[mf], bk[0], bk[1]);
          mma_16816<kIsBf16>(S[mf][2 * jp + 1], a[mf], bk[2], bk[3]);
        }
      }
    }

    float alpha[2 * kMFrags];
    scores_to_probs<kBlockN, kHasAlibi>(S, softmax, alpha, params, mask, exp2_scale, slope_log2, warp_row_lo,
                                        warp_row_hi, row0, col_lo, t);
    rescale_o<Tr::kLazyRescale>(O, alpha);

    cp_async_wait<0>();
    __syncthreads();  // V_t is in; every warp is done with K_t
    if (it + 1 < n_tiles) {
      load_rows<Tr, kBlockN>(sK, k_head, params.k_row_stride, tiles.tile(it + 1) * kBlockN, params.seqlen_k, tid);
      cp_async_commit();
    }

    // O += P V, P straight from the S registers (pack_p).
#pragma unroll
    for (int ks = 0; ks < kBlockN / 16; ++ks) {
      unsigned p[kMFrags][4];
#pragma unroll
      for (int mf = 0; mf < kMFrags; ++mf) pack_p<kIsBf16>(S[mf], ks, p[mf]);
#pragma unroll
      for (int dp = 0; dp < kDTiles / 2; ++dp) {
        unsigned bv[4];
        ldmatrix_x4_trans(bv, v_addr + ks * 16 * kRowBytes + dp * 32);
#pragma unroll
        for (int mf = 0; mf < kMFrags; ++mf) {
          mma_16816<kIsBf16>(O[mf][2 * dp], p[mf], bv[0], bv[1]);
          mma_16816<kIsBf16>(O[mf][2 * dp + 1], p[mf], bv[2], bv[3]);
        }
      }
    }
  }

  store_output<kIsBf16>(O, softmax, params, b, h, row0, t);
}

// Kernel entry: the parameter block by value (kernel parameter space, cached
// on chip). Instantiated per (head dim, dtype, ALiBi) by instantiations/*.cu
// and by the CuPy backend through NVRTC name expressions.
template <int kHeadDim, bool kIsBf16, bool kHasAlibi>
__global__ void __launch_bounds__(kFwdThreads)
    flash_fwd_kernel(const FlashFwdParams params) {
  flash_fwd_block<kHeadDim, kIsBf16, kHasAlibi>(params);
}

}  // namespace attention
}  // namespace pykernels
