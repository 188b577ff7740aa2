// The attention backward's dK/dV kernel on Hopper (sm_90a): wgmma tensor
// cores fed by a producer warpgroup, the FlashAttention-3 backward's division
// of work (Shah et al. 2024, section 3 and appendix B), with cp.async in place
// of TMA loads as in flash_fwd_sm90_kernel.cuh.
//
// Same math, tile ranges, mask, ALiBi, scratch and outputs as
// flash_bwd_dkdv_kernel (flash_bwd_kernel.cuh; its header has the formulas),
// and the same launch grid: one CTA per (batch, KV head, 128-key tile),
// walking every query head of its GQA group and, for each, the query tiles
// of QueryTileRange. Preprocess, dQ conversion and the deterministic dQ
// kernel are flash_bwd_kernel.cuh's. What changes is where the operands live:
//
//   producer        K and V once; then, per step, Q and dO of one query
//   (1 warpgroup)   tile into a kStages ring (128B-swizzled tiles,
//                   hopper/smem_tile.cuh), arriving on full[s]; it waits on
//                   empty[s] before it reuses a slot.
//   2 consumer      each owns 64 keys: the rows of every product below.
//   warpgroups      Per query tile:
//                     S^T  = K_w Q^T    dP^T = V_w dO^T     (wgmma, both operands in shared memory)
//                     P^T  = exp2(S^T - lse),  dS^T = P^T (dP^T - delta)   (registers)
//                     dV_w += P^T dO    dK_w += dS^T Q      (wgmma, A from registers, B MN-major)
//                     dS^T -> shared memory; both warpgroups meet (named barrier)
//                     dQ slice = dS K                        (wgmma, A = dS^T read transposed)
//                     dQ slice -> shared memory -> dq_accum by bulk reduce-add (hopper/bulk_reduce.cuh)
//
// Why this is faster than the mma.sync kernel: there, each warp fetched the
// whole Q and dO tile from shared memory into registers for its own 16 keys,
// and again for dV and dK (ncu: shared-memory bound, 73% L1/shared
// throughput, short-scoreboard stalls; docs/attention_kernel.md). wgmma reads
// its shared-memory operands once per warpgroup of 64 keys, straight into the
// tensor cores. And the dQ atomics (16-byte red per 4 floats) become one
// 256-byte bulk reduction per row, issued and forgotten.
//
// With deterministic=True (params.dq_accum == nullptr) the consumers skip the
// dS^T / dQ steps and flash_bwd_dq_kernel computes dQ afterwards.
#pragma once

#include "attention/alibi.cuh"
#include "attention/block_info.cuh"
#include "attention/flash_bwd.h"
#include "attention/flash_bwd_kernel.cuh"  // KeyTileWork, store_dk_dv, acc_to_a, sink_grad_part, shared-memory helpers
#include "attention/hopper/bulk_reduce.cuh"
#include "attention/hopper/mbarrier.cuh"
#include "attention/hopper/smem_tile.cuh"
#include "attention/hopper/wgmma.cuh"
#include "attention/kernel_traits.cuh"
#include "attention/mask.cuh"

namespace pykernels {
namespace attention {
namespace sm90 {

// Shared memory of the kernel: byte addresses of the tiles and barriers.
template <int kHeadDim>
struct BwdSm90Smem {
  using Tr = BwdSm90Traits<kHeadDim>;
  using KVTile = SwizzledTile<Tr::kBlockN, kHeadDim>;  // keys x head dim
  using QTile = SwizzledTile<Tr::kBlockM, kHeadDim>;   // query rows x head dim (Q and dO)
  using DsTile = SwizzledTile<Tr::kBlockN, Tr::kBlockM>;  // dS^T: keys x query rows
  static constexpr int kStages = Tr::kStages;
  unsigned k, v, q, dout, ds, dq, lse, delta, bars;

  __device__ __forceinline__ explicit BwdSm90Smem(unsigned base) {
    // Swizzled tiles first (each a multiple of 1024 bytes), then the fp32 parts.
    k = base;
    v = k + KVTile::kBytes;
    q = v + KVTile::kBytes;
    dout = q + kStages * QTile::kBytes;
    ds = dout + kStages * QTile::kBytes;
    dq = ds + 2 * DsTile::kBytes;
    lse = dq + Tr::kDqBytes;
    delta = lse + 2 * Tr::kStatBytes;
    bars = delta + 2 * Tr::kStatBytes;
  }
  // One step's lse (log2 units) and delta: slot step & 1 (the consumers fill them, see below).
  __device__ __forceinline__ unsigned lse_row(int i) const { return lse + i * Tr::kStatBytes; }
  __device__ __forceinline__ unsigned delta_row(int i) const { return delta + i * Tr::kStatBytes; }
  __device__ __forceinline__ unsigned q_tile(int s) const { return q + s * QTile::kBytes; }
  __device__ __forceinline__ unsigned do_tile(int s) const { return dout + s * QTile::kBytes; }
  __device__ __forceinline__ unsigned ds_tile(int i) const { return ds + i * DsTile::kBytes; }
  // 8-byte mbarriers: K and V landed; ring slot s full (Q and dO landed) and empty (consumers done).
  __device__ __forceinline__ unsigned full_kv() const { return bars; }
  __device__ __forceinline__ unsigned full(int s) const { return bars + 8 * (1 + s); }
  __device__ __forceinline__ unsigned empty(int s) const { return bars + 8 * (1 + kStages + s); }

  __device__ __forceinline__ void init_barriers() const {
    mbarrier_init(full_kv(), Tr::kProducerThreads);
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(full(s), Tr::kProducerThreads);
      mbarrier_init(empty(s), Tr::kConsumerWarps);
    }
  }
};

// The CTA's key tile and steps (flash_bwd_kernel.cuh), at this kernel's tile shape.
template <int kHeadDim>
using BwdSm90Work = KeyTileWork<BwdSm90Traits<kHeadDim>::kBlockM, BwdSm90Traits<kHeadDim>::kBlockN>;

// ---- producer: one warpgroup of cp.async loads ----
template <int kHeadDim>
__device__ __forceinline__ void produce_bwd(const FlashBwdParams& params, const BwdSm90Smem<kHeadDim>& sm,
                                            const BwdSm90Work<kHeadDim>& work,
                                            int ptid) {
  using Tr = BwdSm90Traits<kHeadDim>;
  using Smem = BwdSm90Smem<kHeadDim>;
  using elem = unsigned short;
  constexpr int kThreads = Tr::kProducerThreads;
  if (work.n_steps == 0) return;
  const elem* k_head = head_rows<const elem>(params.k, work.b, work.h_kv, params.k_batch_stride, params.k_head_stride);
  const elem* v_head = head_rows<const elem>(params.v, work.b, work.h_kv, params.v_batch_stride, params.v_head_stride);
  Smem::KVTile::template load<kThreads>(sm.k, k_head, params.k_row_stride, work.col_lo, params.seqlen_k, ptid);
  Smem::KVTile::template load<kThreads>(sm.v, v_head, params.v_row_stride, work.col_lo, params.seqlen_k, ptid);
  arrive_on_copies(sm.full_kv());

  RingSlot<Tr::kStages> slot;
  for (int step = 0; step < work.n_steps; ++step) {
    const int hh = work.head(step), row_lo = work.row_lo(step);
    // A fresh barrier reports parity 1 as complete: the ring starts empty (as in the forward).
    mbarrier_wait(sm.empty(slot.stage), slot.phase ^ 1);
    const elem* q_head = head_rows<const elem>(params.q, work.b, hh, params.q_batch_stride, params.q_head_stride);
    const elem* do_head =
        head_rows<const elem>(params.dout, work.b, hh, params.do_batch_stride, params.do_head_stride);
    Smem::QTile::template load<kThreads>(sm.q_tile(slot.stage), q_head, params.q_row_stride, row_lo,
                                         params.seqlen_q, ptid);
    Smem::QTile::template load<kThreads>(sm.do_tile(slot.stage), do_head, params.do_row_stride, row_lo,
                                         params.seqlen_q, ptid);
    arrive_on_copies(sm.full(slot.stage));
    slot.advance();
  }
  cp_async_wait<0>();
}

}  // namespace sm90

// ---- consumers: warpgroup wg owns keys [64 wg, 64 wg + 64) of the CTA's tile ----
template <int kHeadDim, bool kIsBf16>
__device__ __forceinline__ void flash_bwd_sm90_consume(const FlashBwdParams& params,
                                                       const sm90::BwdSm90Smem<kHeadDim>& sm,
                                                       const sm90::BwdSm90Work<kHeadDim>& work,
                                                       int warp, int lane) {
  using Tr = BwdSm90Traits<kHeadDim>;
  using Smem = sm90::BwdSm90Smem<kHeadDim>;
  using WgmmaS = sm90::Wgmma<Tr::kBlockM, kIsBf16>;  // S^T, dP^T: 64 keys x kBlockM queries
  using WgmmaD = sm90::Wgmma<kHeadDim, kIsBf16>;     // dV, dK: 64 keys x head dim
  using WgmmaQ = sm90::Wgmma<64, kIsBf16>;           // this warpgroup's 64 x 64 slice of dQ
  constexpr int kBlockM = Tr::kBlockM, kBlockN = Tr::kBlockN;
  constexpr int kMTiles = kBlockM / 8, kDTiles = kHeadDim / 8, kMSteps = kBlockM / 16;
  const int wg = warp / 4, warp_in_wg = warp % 4;
  const int g = lane >> 2, t = lane & 3;  // mma fragment coordinates (mma.cuh)
  const int warp_key = 64 * wg + 16 * warp_in_wg;  // this warp's 16 keys within the tile
  const int key0 = work.col_lo + warp_key + g;     // this thread's keys: key0 and key0 + 8
  const bool dq_atomics = params.dq_accum != nullptr;
  const bool has_alibi = params.alibi_slopes != nullptr;
  const bool sink_grad = params.dsink_partial != nullptr;

  // This warpgroup's dQ slice (BwdSm90Traits): rows [dq_row0, +64), columns [dq_col0, +64).
  const int dq_row0 = Tr::kDqByColumns ? 0 : 64 * wg;
  const int dq_col0 = Tr::kDqByColumns ? 64 * wg : 0;

  // S^T = K_w Q^T (or dP^T = V_w dO^T): both K-major, as the forward's Q K^T.
  const unsigned k_wg = sm.k + 64 * wg * 128, v_wg = sm.v + 64 * wg * 128;
  auto issue_transposed_scores = [&](float (&D)[kMTiles][4], unsigned a_rows, unsigned b_tile) {
#pragma unroll
    for (int ks = 0; ks < kHeadDim / 16; ++ks)
      WgmmaS::template ss<0>(D, Smem::KVTile::k_major_desc(a_rows, ks), Smem::QTile::k_major_desc(b_tile, ks), ks > 0);
    sm90::commit();
  };
  // dV += P^T dO (or dK += dS^T Q): A from registers, B (dO or Q) MN-major, k = query row.
  auto issue_key_grad = [&](float (&D)[kDTiles][4], const unsigned (&A)[kMSteps][4], unsigned b_tile) {
#pragma unroll
    for (int ks = 0; ks < kMSteps; ++ks) WgmmaD::template rs<1>(D, A[ks], Smem::QTile::mn_major_desc(b_tile, ks), 1);
  };

  float dK[1][kDTiles][4], dV[1][kDTiles][4];
#pragma unroll
  for (int d = 0; d < kDTiles; ++d)
#pragma unroll
    for (int e = 0; e < 4; ++e) dK[0][d][e] = dV[0][d][e] = 0.f;

  // lse and delta of each step's query rows (padded to kBwdRowPad,
  // flash_bwd.h, so never read past the end), which every thread reads at
  // columns 8 j + 2t: the consumers stage them in shared memory themselves,
  // one step ahead. Consumer thread c loads value c of step + 1 (lse, then
  // delta) at the start of step, and stores it into slot (step + 1) & 1 just
  // before the named barrier that both warpgroups meet at every step, which
  // orders those stores before step + 1's reads and after step - 1's reads
  // of the same slot. (The first version had the producer stage them, but
  // racecheck does not see an mbarrier as ordering plain loads and stores:
  // 56 hazard reports with cp.async, 28 with plain stores.)
  constexpr int kConsumerThreads = 32 * Tr::kConsumerWarps;
  constexpr int kNamedBarrier = 1;
  const int ct = 32 * warp + lane;
  auto load_stat = [&](int step) {
    const index_t row = (static_cast<index_t>(work.b) * params.heads_q + work.head(step)) * params.seqlen_q_pad +
                        work.row_lo(step);
    if (ct < kBlockM) return __ldg(params.lse_log2 + row + ct);
    if (ct < 2 * kBlockM) return __ldg(params.delta + row + ct - kBlockM);
    return 0.f;
  };
  auto store_stat = [&](int step, float x) {
    if (ct < kBlockM) {
      st_shared_f32(sm.lse_row(step & 1) + 4 * ct, x);
    } else if (ct < 2 * kBlockM) {
      st_shared_f32(sm.delta_row(step & 1) + 4 * (ct - kBlockM), x);
    }
  };
  float stat_next = 0.f;
  if (work.n_steps > 0) {
    store_stat(0, load_stat(0));
    sm90::named_barrier_sync(kNamedBarrier, kConsumerThreads);
    if (work.n_steps > 1) stat_next = load_stat(1);
    sm90::acquire(sm.full_kv(), 0);
  }
  sm90::RingSlot<Tr::kStages> slot;
  for (int step = 0; step < work.n_steps; ++step) {
    const int hh = work.head(step), row_lo = work.row_lo(step);
    const int row_hi = min(row_lo + kBlockM, params.seqlen_q);
    const unsigned q_tile = sm.q_tile(slot.stage), do_tile = sm.do_tile(slot.stage);
    const unsigned s_lse = sm.lse_row(step & 1), s_delta = sm.delta_row(step & 1);
    sm90::acquire(sm.full(slot.stage), slot.phase);

    float S[1][kMTiles][4], dP[1][kMTiles][4];
    sm90::fence();
    issue_transposed_scores(S[0], k_wg, q_tile);
    issue_transposed_scores(dP[0], v_wg, do_tile);
    sm90::wait<1>();  // S^T is in; dP^T may still run
    sm90::fence_operand(S[0]);

    // Scores in log2 units, the element mask on boundary tiles, then
    // P^T = exp2(x - lse_log2) (lse_log2 = +inf makes padded rows inert).
    if (has_alibi) {
      apply_alibi_log2_transposed(S, params.softmax_scale_log2, alibi_slope_log2(params, work.b, hh), key0,
                                  row_lo + 2 * t, params.q_offset);
    } else {
      scale_log2(S, params.softmax_scale_log2);
    }
    if (!key_tile_is_full<16>(work.mask, row_lo, row_hi, work.col_lo + warp_key)) {
      apply_mask_transposed(S, work.mask, key0, row_lo + 2 * t);
    }
#pragma unroll
    for (int j = 0; j < kMTiles; ++j) {
      const float l0 = ld_shared_f32(s_lse + (8 * j + 2 * t) * 4);
      const float l1 = ld_shared_f32(s_lse + (8 * j + 2 * t + 1) * 4);
      S[0][j][0] = exp2f(S[0][j][0] - l0);
      S[0][j][1] = exp2f(S[0][j][1] - l1);
      S[0][j][2] = exp2f(S[0][j][2] - l0);
      S[0][j][3] = exp2f(S[0][j][3] - l1);
    }
    unsigned Pa[kMSteps][4];  // P^T as the A operand of dV += P^T dO
#pragma unroll
    for (int ks = 0; ks < kMSteps; ++ks) acc_to_a<kIsBf16>(Pa[ks], S[0][2 * ks], S[0][2 * ks + 1]);

    sm90::wait<0>();
    sm90::fence_operand(dP[0]);
    // The sink gradient's sum_i exp(sink - lse_i) sum_j P_ij dP_ij over this
    // warp's keys, one slot per warp as flash_bwd_dkdv_block's (same keys per
    // warp, so the same slots), before dP becomes dS.
    if (sink_grad) {
      const float part = sink_grad_part(S, dP, params.sink_logits[hh] * LOG2E, s_lse, t);
      if (lane == 0) {
        params.dsink_partial[((static_cast<long long>(work.b) * params.heads_q + hh) * gridDim.y + blockIdx.y) *
                                 Tr::kConsumerWarps + warp] += part;
      }
    }
    unsigned dSa[kMSteps][4];  // dS^T = P^T (dP^T - delta), as the A operand of dK += dS^T Q
#pragma unroll
    for (int j = 0; j < kMTiles; ++j) {
      const float d0 = ld_shared_f32(s_delta + (8 * j + 2 * t) * 4);
      const float d1 = ld_shared_f32(s_delta + (8 * j + 2 * t + 1) * 4);
      dP[0][j][0] = S[0][j][0] * (dP[0][j][0] - d0);
      dP[0][j][1] = S[0][j][1] * (dP[0][j][1] - d1);
      dP[0][j][2] = S[0][j][2] * (dP[0][j][2] - d0);
      dP[0][j][3] = S[0][j][3] * (dP[0][j][3] - d1);
    }
#pragma unroll
    for (int ks = 0; ks < kMSteps; ++ks) acc_to_a<kIsBf16>(dSa[ks], dP[0][2 * ks], dP[0][2 * ks + 1]);

    sm90::fence_operand(dV[0]);
    sm90::fence_operand(dK[0]);
    sm90::fence();
    issue_key_grad(dV[0], Pa, do_tile);
    issue_key_grad(dK[0], dSa, q_tile);
    sm90::commit();

    if (dq_atomics) {
      // dS^T to shared memory, swizzled like every wgmma tile (smem_tile.cuh);
      // a0..a3 of k16 step ks hold
      // (key g, query 16 ks + 2t), (key g + 8, same), (g, + 8), (g + 8, + 8).
      const unsigned ds = sm.ds_tile(step & 1);
#pragma unroll
      for (int ks = 0; ks < kMSteps; ++ks)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = warp_key + g + 8 * (e & 1);
          const int chunk = 2 * ks + (e >> 1);  // query columns 8 chunk .. + 7; the thread's pair is 2t, 2t + 1
          st_shared_u32(ds + Smem::DsTile::chunk_offset(r, chunk) + 4 * t, dSa[ks][e]);
        }
      sm90::fence_async_proxy();
      if (step + 1 < work.n_steps) store_stat(step + 1, stat_next);
      // Both warpgroups' halves of dS^T are in, and the next step's lse and
      // delta. (The other dS^T buffer may still be read by the other
      // warpgroup's dQ of the last step: it is only rewritten after the next
      // meeting here.)
      sm90::named_barrier_sync(kNamedBarrier, kConsumerThreads);
      if (step + 2 < work.n_steps) stat_next = load_stat(step + 2);

      // dQ slice = dS K: A = dS (query rows x keys) read transposed from dS^T,
      // B = K (keys x head dim) MN-major; k = key.
      float dQ[1][8][4];
      sm90::fence();
#pragma unroll
      for (int ks = 0; ks < kBlockN / 16; ++ks)
        WgmmaQ::template ss<1, 1>(dQ[0], Smem::DsTile::mn_major_desc(ds, ks, dq_row0 / 64),
                                  Smem::KVTile::mn_major_desc(sm.k, ks, dq_col0 / 64), ks > 0);
      sm90::commit();
      sm90::wait<0>();
      sm90::fence_operand(dQ[0]);
      sm90::fence_operand(dV[0]);
      sm90::fence_operand(dK[0]);
      sm90::release(sm.empty(slot.stage), lane);

      // The slice through shared memory into dq_accum (B, Sq, Hq, D): a warp
      // owns 16 whole rows of it, and lane l < 16 adds row l with one bulk
      // reduction (hopper/bulk_reduce.cuh), so only the warp synchronises.
      if (lane < 16) sm90::bulk_wait_read();  // the last step's reduction has read the tile
      __syncwarp();
      const int r_lo = dq_row0 + 16 * warp_in_wg;  // this warp's rows within the query tile
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const unsigned at = sm.dq + ((r_lo + g + 8 * half) * Tr::kDqRow + dq_col0 + 8 * j + 2 * t) * 4;
          st_shared_f32x2(at, dQ[0][j][2 * half], dQ[0][j][2 * half + 1]);
        }
      sm90::fence_async_proxy();
      __syncwarp();
      const int q_row = row_lo + r_lo + lane;
      if (lane < 16 && q_row < params.seqlen_q) {
        float* dst = params.dq_accum +
                     ((static_cast<index_t>(work.b) * params.seqlen_q + q_row) * params.heads_q + hh) * kHeadDim +
                     dq_col0;
        sm90::bulk_reduce_add_f32(dst, sm.dq + ((r_lo + lane) * Tr::kDqRow + dq_col0) * 4, 64 * 4);
        sm90::bulk_commit();
      }
    } else {
      sm90::wait<0>();
      sm90::fence_operand(dV[0]);
      sm90::fence_operand(dK[0]);
      sm90::release(sm.empty(slot.stage), lane);
      if (step + 1 < work.n_steps) {  // the stats hand-over alone (see above)
        store_stat(step + 1, stat_next);
        sm90::named_barrier_sync(kNamedBarrier, kConsumerThreads);
        if (step + 2 < work.n_steps) stat_next = load_stat(step + 2);
      }
    }
    slot.advance();
  }
  if (lane < 16) sm90::bulk_wait_all();  // before the CTA's shared memory goes away

  store_dk_dv<kIsBf16>(params, work.b, work.h_kv, key0, dK, dV, t);
}

template <int kHeadDim, bool kIsBf16>
__global__ void __launch_bounds__(BwdSm90Traits<kHeadDim>::kNThreads, 1)
    flash_bwd_sm90_kernel(const FlashBwdParams params) {
#if PK_SM90A
  using Tr = BwdSm90Traits<kHeadDim>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const sm90::BwdSm90Smem<kHeadDim> sm(sm90::swizzle_aligned(smem_raw));  // kSmemBytes has the slack
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const auto work = sm90::BwdSm90Work<kHeadDim>::make(params);
  if (tid == 0) sm.init_barriers();
  __syncthreads();
  if (warp >= Tr::kConsumerWarps) {
    sm90::shrink_registers<Tr::kProducerRegs>();
    sm90::produce_bwd<kHeadDim>(params, sm, work, tid - 32 * Tr::kConsumerWarps);
  } else {
    sm90::grow_registers<Tr::kConsumerRegs>();
    flash_bwd_sm90_consume<kHeadDim, kIsBf16>(params, sm, work, warp, lane);
  }
#endif
}

}  // namespace attention
}  // namespace pykernels
