// The attention forward on Hopper (sm_90a): wgmma tensor cores fed by a
// producer warpgroup (FlashAttention-3's warp specialisation, Shah et al.
// 2024), loads and stores by the tensor memory accelerator (TMA).
//
// Same algorithm, mask, tile ranges and outputs as flash_fwd_kernel.cuh; what
// changes is who does what, and when:
//
//   producer        per work tile, Q, then K_t and V_t for every visible key
//   (1 warpgroup)   tile, into a kStages-deep ring of 128B-swizzled tiles
//                   (hopper/smem_tile.cuh): one thread issues TMA boxes that
//                   complete on full_* (hopper/tma.cuh), and waits on empty_*
//                   before it reuses a buffer. (-DPK_SM90_TMA_LOAD=0: the
//                   warpgroup's cp.asyncs instead, arriving on full_*.)
//   2 consumer      each owns 64 query rows (3 warpgroups for 192-row
//   warpgroups      tiles, d = 64). Per key tile t (FA3's intra-warpgroup
//                   overlap, their Algorithm 2):
//                     issue S_t = Q K_t^T           (wgmma, A and B in shared memory)
//                     issue O += P_{t-1} V_{t-1}    (wgmma, P from registers, V MN-major)
//                     wait for S_t; release K_t
//                     ALiBi, element mask (boundary tiles only), online softmax of S_t
//                       -- while the tensor cores still run P_{t-1} V_{t-1}
//                     wait for O; release V_{t-1}; rescale O; P_t = S_t in 16 bits
//                   then out / l straight from registers. (-DPK_SM90_TMA_STORE=1:
//                   through a shared tile, each warp's 16 rows stored by one
//                   TMA box per 64 columns, 8 stmatrix instead of 64
//                   scattered 4-byte stores; measured slower on windows.
//                   -1: per launch, where sm90_tma_store_pays.)
//                   (-DPK_SM90_PINGPONG=1: the warpgroups issue their wgmmas
//                   in turns, hopper/warpgroup_turns.cuh.)
//
// Persistent CTAs: one per SM, each walking work tiles (a query tile of one
// (batch, head)) in a fixed order (hopper/work_order.cuh), so the producer loads the next tile's Q
// and first K/V while the consumers still finish and store the last one; a
// 1024-wide window (9 key tiles per query tile) no longer pays a CTA launch
// and cold loads per 9 tiles (it still drains the consumers' S / P V overlap
// once per query tile; -DPK_SM90_CHAINED_TILES=1 carries the overlap across
// work tiles, issuing the next tile's first S with this tile's last P V). Work tile i is query tile
// (Mq - 1 - i / BH) of (batch, head) i % BH: the longest causal rows first,
// heads sharing a KV head side by side (as query_tile.cuh orders its grid);
// up to 2K keys, that order runs within L2-sized sections of heads.
// CTA c takes tiles c, 2G - 1 - c, 2G + c, 4G - 1 - c, ... (G CTAs): a
// snake, so that under causal every CTA gets both long and short tiles
// (hopper/work_order.cuh); or (-DPK_SM90_DYNAMIC_TILES=-1), where the
// launcher finds it pays (tile_queue_pays: up to 4K keys, and past them
// without a left window), the producer draws each next tile from a counter
// as its CTA frees up (hopper/tile_queue.cuh), in L2-sized sections of heads.
// (-DPK_SM90_PAIRED_TILES=1: pairs of query tiles m and Mq-1-m of one head.)
//
// No CTA-wide barrier inside the loops: the two warpgroups drift apart, so one
// runs its softmax while the other's wgmmas keep the tensor cores busy. A
// wgmma accumulator tile has the mma.sync C layout per warp (hopper/wgmma.cuh),
// so softmax.cuh, mask.cuh and alibi.cuh run unchanged with kMFrags = 1.
//
// Head dims 64 and 128 (whole 64-column swizzle blocks); the launcher sends
// the others, and GPUs without sm_90a, to flash_fwd_kernel.cuh.
#pragma once

#include "attention/block_info.cuh"
#include "attention/fwd_tile_ops.cuh"
#include "attention/hopper/mbarrier.cuh"
#include "attention/hopper/smem_tile.cuh"
#include "attention/hopper/tile_queue.cuh"
#include "attention/hopper/tma.cuh"
#include "attention/hopper/warpgroup_turns.cuh"
#include "attention/hopper/wgmma.cuh"
#include "attention/hopper/work_order.cuh"
#include "attention/kernel_traits.cuh"
#include "attention/mask.cuh"
#include "attention/mma.cuh"
#include "attention/params.h"
#include "attention/query_tile.cuh"
#include "attention/softmax.cuh"

namespace pykernels {
namespace attention {
namespace sm90 {

// Shared memory of the kernel: byte addresses of the tiles and barriers.
template <int kHeadDim, int kBlockM_>
struct Sm90Smem {
  using Tr = FwdSm90Traits<kHeadDim, kBlockM_>;
  using QTile = SwizzledTile<Tr::kBlockM, kHeadDim>;
  using KVTile = SwizzledTile<Tr::kBlockN, kHeadDim>;
  static constexpr int kStages = Tr::kStages;
  static constexpr int kQStages = Tr::kQStages;
  // Out, staged for the TMA store: one 16-row swizzled tile per consumer
  // warp (2 KB per 64 columns, so every block starts 1024-aligned).
  using OutTile = SwizzledTile<16, kHeadDim>;
  static constexpr unsigned kFullCount = Tr::kTmaLoad ? 1 : Tr::kProducerThreads;  // arrivals per load
  static_assert(Tr::kQueueBytes == (Tr::kDynamicTiles ? TileQueueSmem::kBytes : 0), "the queue's bytes, reserved");
  static constexpr int kQBars = 2 * kQStages;  // full and empty of each Q buffer, first among the barriers
  unsigned q, k, v, o, bars;
  TileQueueSmem queue;  // after the barriers below; there when the queue is compiled in (FwdSm90Traits::kDynamicTiles)

  __device__ __forceinline__ explicit Sm90Smem(unsigned base) {
    q = base;
    k = q + kQStages * QTile::kBytes;
    v = k + kStages * KVTile::kBytes;
    o = v + kStages * KVTile::kBytes;
    bars = o + (Tr::kTmaStore ? Tr::kConsumerWarps * OutTile::kBytes : 0);
    queue = TileQueueSmem::at(bars + 8 * (kQBars + 4 * kStages));
  }
  __device__ __forceinline__ unsigned q_tile(int s) const { return q + s * QTile::kBytes; }
  __device__ __forceinline__ unsigned k_tile(int s) const { return k + s * KVTile::kBytes; }
  __device__ __forceinline__ unsigned v_tile(int s) const { return v + s * KVTile::kBytes; }
  __device__ __forceinline__ unsigned o_warp(int warp) const { return o + warp * OutTile::kBytes; }
  // 8-byte mbarriers: full (data landed) and empty (consumers done) for Q and each stage of K and V.
  __device__ __forceinline__ unsigned full_q(int s) const { return bars + 16 * s; }
  __device__ __forceinline__ unsigned empty_q(int s) const { return bars + 16 * s + 8; }
  __device__ __forceinline__ unsigned full_k(int s) const { return bars + 8 * (kQBars + s); }
  __device__ __forceinline__ unsigned full_v(int s) const { return bars + 8 * (kQBars + kStages + s); }
  __device__ __forceinline__ unsigned empty_k(int s) const { return bars + 8 * (kQBars + 2 * kStages + s); }
  __device__ __forceinline__ unsigned empty_v(int s) const { return bars + 8 * (kQBars + 3 * kStages + s); }

  __device__ __forceinline__ void init_barriers() const {
    for (int s = 0; s < kQStages; ++s) {
      mbarrier_init(full_q(s), kFullCount);
      mbarrier_init(empty_q(s), Tr::kConsumerWarps);
    }
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(full_k(s), kFullCount);
      mbarrier_init(full_v(s), kFullCount);
      mbarrier_init(empty_k(s), Tr::kConsumerWarps);
      mbarrier_init(empty_v(s), Tr::kConsumerWarps);
    }
    if (Tr::kDynamicTiles) queue.init(Tr::kConsumerWarps);
  }
};

// The kernel's tensor maps (hopper/tma_host.h builds them): boxes of 64
// columns by kBlockM rows of q, kBlockN rows of k and v, 16 rows of out.
struct Sm90FwdMaps {
  TmaMap q, k, v, o;
};

// The kernel's work order (hopper/work_order.cuh), for the producer and the
// consumers alike: the grid once per CTA, the static list's i-th tile of this
// CTA, then work tile w of the grid.
template <int kHeadDim, int kBlockM_>
__device__ __forceinline__ WorkGrid work_grid(const FlashFwdParams& params, int m_blocks, bool tile_queue) {
  return WorkGrid::make(params.batch, params.heads_q, params.heads_kv, params.seqlen_k, m_blocks, kHeadDim,
                        section_mb_for(params.seqlen_k, FwdSm90Traits<kHeadDim, kBlockM_>::kL2SectionMB, tile_queue));
}

template <int kHeadDim, int kBlockM_>
__device__ __forceinline__ int static_work_tile(int i, int n_work) {
  return FwdSm90Traits<kHeadDim, kBlockM_>::kPairedTiles ? work_tile_paired(i, blockIdx.x, gridDim.x, n_work)
                                                         : work_tile(i, blockIdx.x, gridDim.x, n_work);
}

template <int kHeadDim, int kBlockM_>
__device__ __forceinline__ QueryTileWork<kBlockM_, FwdSm90Traits<kHeadDim, kBlockM_>::kBlockN> work_at(
    const FlashFwdParams& params, const WorkGrid& grid, int w) {
  using Tr = FwdSm90Traits<kHeadDim, kBlockM_>;
  int bh, m;
  grid.at<(Tr::kL2SectionMB != 0), Tr::kPairedTiles>(w, bh, m);
  return QueryTileWork<kBlockM_, Tr::kBlockN>::at(params, bh, m);
}

// out = O / l of one warp's 16 x kHeadDim fragment into its shared tile
// (Sm90Smem::o_warp, a SwizzledTile<16, kHeadDim>), in the 16-bit input
// type. One stmatrix.x4 takes two 8-column tiles of both 8-row halves:
// matrix j of lane l's address is row 8 (j % 2) + l % 8 of column tile (a
// 16-byte chunk) d + j / 2; the swizzle puts the 8 rows of each matrix on
// different banks.
template <bool kIsBf16, int kDTiles>
__device__ __forceinline__ void stage_output(const float (&O)[1][kDTiles][4], const float (&inv_l)[2], unsigned o_warp,
                                             int lane) {
  using OutTile = SwizzledTile<16, 8 * kDTiles>;
  const int j = lane >> 3;
  const int row = (lane & 7) + 8 * (j & 1);
#pragma unroll
  for (int d = 0; d < kDTiles; d += 2) {
    const unsigned addr = o_warp + OutTile::chunk_offset(row, d + (j >> 1));
    stmatrix_x4(addr, pack_float2<kIsBf16>(O[0][d][0] * inv_l[0], O[0][d][1] * inv_l[0]),
                pack_float2<kIsBf16>(O[0][d][2] * inv_l[1], O[0][d][3] * inv_l[1]),
                pack_float2<kIsBf16>(O[0][d + 1][0] * inv_l[0], O[0][d + 1][1] * inv_l[0]),
                pack_float2<kIsBf16>(O[0][d + 1][2] * inv_l[1], O[0][d + 1][3] * inv_l[1]));
  }
}

// ---- producer: one thread of TMA loads, or one warpgroup of cp.asyncs ----
// (-DPK_SM90_TMA_LOAD=0). Both walk the same work tiles in the same order
// and take the same ring slots; only the way a tile is filled differs.
template <int kHeadDim, int kBlockM_>
__device__ __forceinline__ void produce(const FlashFwdParams& params, const Sm90FwdMaps& maps,
                                        const Sm90Smem<kHeadDim, kBlockM_>& sm, int ptid, int n_work, int m_blocks,
                                        int* tile_counter) {
  using Tr = FwdSm90Traits<kHeadDim, kBlockM_>;
  using QTile = typename Sm90Smem<kHeadDim, kBlockM_>::QTile;
  using KVTile = typename Sm90Smem<kHeadDim, kBlockM_>::KVTile;
  using elem = unsigned short;
  constexpr int kBlockM = Tr::kBlockM, kBlockN = Tr::kBlockN;
  if constexpr (Tr::kTmaLoad) {
    tma_prefetch_map(&maps.q);
    tma_prefetch_map(&maps.k);
    tma_prefetch_map(&maps.v);
  }
  // Rows [row0, row0 + Tile rows) of head (h, b) into `smem`, landing on `full`.
  auto fill = [&](auto tile, unsigned smem, unsigned full, const TmaMap* map, const elem* head, index_t row_stride,
                  int row0, int n_rows, int h, int b) {
    using Tile = decltype(tile);
    if constexpr (Tr::kTmaLoad) {
      Tile::load_tma(smem, map, full, row0, h, b);
    } else {
      Tile::template load<Tr::kProducerThreads>(smem, head, row_stride, row0, n_rows, ptid);
      arrive_on_copies(full);
    }
  };
  const bool tile_queue = Tr::kDynamicTiles && tile_counter != nullptr;  // the launcher's pick
  const WorkGrid grid = work_grid<kHeadDim, kBlockM_>(params, m_blocks, tile_queue);
  RingSlot<Tr::kStages> k_slot, v_slot;
  int q_uses = 0;  // work tiles that loaded Q so far
  for (int i = 0;; ++i) {
    const int w = tile_queue ? draw_tile(sm.queue, i, tile_counter, n_work)
                             : static_work_tile<kHeadDim, kBlockM_>(i, n_work);
    if (w < 0) break;
    const QueryTileWork<kBlockM, kBlockN> work = sm90::work_at<kHeadDim, kBlockM_>(params, grid, w);
    const int n_tiles = work.tiles.count();
    if (n_tiles == 0) continue;
    const elem* q_head = head_rows<const elem>(params.q, work.b, work.h, params.q_batch_stride, params.q_head_stride);
    const elem* k_head = head_rows<const elem>(params.k, work.b, work.h_kv, params.k_batch_stride, params.k_head_stride);
    const elem* v_head = head_rows<const elem>(params.v, work.b, work.h_kv, params.v_batch_stride, params.v_head_stride);
    // Q's buffers are a ring of kQStages (-DPK_SM90_Q_STAGES=2 lets the next
    // tile's Q load while this tile's consumers still read theirs).
    auto load_q = [&] {
      const int qs = ring_stage<Tr::kQStages>(q_uses);
      mbarrier_wait(sm.empty_q(qs), ring_phase<Tr::kQStages>(q_uses) ^ 1);
      fill(QTile{}, sm.q_tile(qs), sm.full_q(qs), &maps.q, q_head, params.q_row_stride, work.row_lo, params.seqlen_q, work.h,
           work.b);
      ++q_uses;
    };
    // Q after the first K, so that K_0 need not wait for the last tile's
    // consumers; but chained (-DPK_SM90_CHAINED_TILES=1) with two Q buffers,
    // where no wait holds it and the consumers want it with K_0, first.
    constexpr bool kQFirst = Tr::kChainedTiles && Tr::kQStages == 2;
    for (int it = 0; it < n_tiles; ++it) {
      const int col_lo = work.tiles.tile(it) * kBlockN;
      if (kQFirst && it == 0) load_q();
      // Wait for the consumers' release of this buffer's previous use: parity
      // phase ^ 1. On the first pass (phase 0) that is parity 1, which a fresh
      // barrier (in phase 0) reports as complete at once: the ring starts empty.
      mbarrier_wait(sm.empty_k(k_slot.stage), k_slot.phase ^ 1);
      fill(KVTile{}, sm.k_tile(k_slot.stage), sm.full_k(k_slot.stage), &maps.k, k_head, params.k_row_stride, col_lo,
           params.seqlen_k, work.h_kv, work.b);
      k_slot.advance();
      if (!kQFirst && it == 0) load_q();
      mbarrier_wait(sm.empty_v(v_slot.stage), v_slot.phase ^ 1);
      fill(KVTile{}, sm.v_tile(v_slot.stage), sm.full_v(v_slot.stage), &maps.v, v_head, params.v_row_stride, col_lo,
           params.seqlen_k, work.h_kv, work.b);
      v_slot.advance();
    }
  }
  if constexpr (!Tr::kTmaLoad) cp_async_wait<0>();
}

}  // namespace sm90

// ---- consumers: warpgroup wg owns rows [64 wg, 64 wg + 64) of every work tile ----
template <int kHeadDim, int kBlockM_, bool kIsBf16, bool kHasAlibi>
__device__ __forceinline__ void flash_fwd_sm90_consume(const FlashFwdParams& params, const sm90::Sm90FwdMaps& maps,
                                                       const sm90::Sm90Smem<kHeadDim, kBlockM_>& sm, int warp, int lane,
                                                       int n_work, int m_blocks, bool tile_queue, bool tma_store) {
  using Tr = FwdSm90Traits<kHeadDim, kBlockM_>;
  using QTile = typename sm90::Sm90Smem<kHeadDim, kBlockM_>::QTile;
  using KVTile = typename sm90::Sm90Smem<kHeadDim, kBlockM_>::KVTile;
  using WgmmaS = sm90::Wgmma<Tr::kBlockN, kIsBf16>;
  using WgmmaO = sm90::Wgmma<kHeadDim, kIsBf16>;
  constexpr int kBlockM = Tr::kBlockM, kBlockN = Tr::kBlockN;
  constexpr int kNTiles = kBlockN / 8, kDTiles = kHeadDim / 8, kPSteps = kBlockN / 16;
  const int wg = warp / 4, warp_in_wg = warp % 4;
  const int g = lane >> 2, t = lane & 3;  // mma fragment coordinates (mma.cuh)
  const sm90::WorkGrid grid = sm90::work_grid<kHeadDim, kBlockM_>(params, m_blocks, tile_queue);
  const float exp2_scale = kHasAlibi ? 1.f : params.softmax_scale_log2;

  // Descriptors (hopper/smem_tile.cuh): Q and K are K-major operands, V an
  // MN-major one.
  unsigned q_wg = sm.q + 64 * wg * 128;  // this warpgroup's rows of the work tile's Q buffer
  auto issue_s = [&](float (&S)[1][kNTiles][4], unsigned k_tile) {
#pragma unroll
    for (int ks = 0; ks < kHeadDim / 16; ++ks)
      WgmmaS::template ss<0>(S[0], QTile::k_major_desc(q_wg, ks), KVTile::k_major_desc(k_tile, ks), ks > 0);
    sm90::commit();
  };
  auto issue_o = [&](float (&O)[1][kDTiles][4], const unsigned (&P)[kPSteps][4], unsigned v_tile) {
#pragma unroll
    for (int ks = 0; ks < kPSteps; ++ks) WgmmaO::template rs<1>(O[0], P[ks], KVTile::mn_major_desc(v_tile, ks), 1);
    sm90::commit();
  };

  // A full buffer: TMA wrote it through the async proxy, which wgmma reads;
  // cp.async wrote it through the generic proxy, which needs a fence.
  auto acquire = [&](unsigned bar, int phase) {
    if constexpr (Tr::kTmaLoad) {
      sm90::mbarrier_wait(bar, phase);
    } else {
      sm90::acquire(bar, phase);
    }
  };

  if (tma_store && warp == 0 && lane == 0) sm90::tma_prefetch_map(&maps.o);
  const sm90::WarpgroupTurns<Tr::kConsumerWarps / 4, Tr::kPingPong> turns(wg);
  sm90::RingSlot<Tr::kStages> k_slot, v_slot;
  int q_uses = 0;

  // One work tile as this thread sees it: its rows, mask, key tiles and softmax.
  struct Tile {
    QueryTileWork<kBlockM, kBlockN> work;
    int n_tiles = 0, qs = 0;  // visible key tiles; its Q buffer (set by take_q, if it has keys)
    int warp_row_lo, warp_row_hi, row0;  // this warp's rows [lo, hi), this thread's first
    float slope_log2;
    bool alibi_shifted;
    OnlineSoftmax<1> softmax;
  };
  // ALiBi's row term, when it can leave the tile (alibi.cuh): slope times
  // this thread's two rows' distance from the query tile's first, signed.
  auto shift_rows = [&](Tile& c, float sign) {
    const float d = sign * c.slope_log2;
    c.softmax.shift({d * static_cast<float>(c.row0 - c.work.row_lo), d * static_cast<float>(c.row0 + 8 - c.work.row_lo)});
  };
  auto begin_tile = [&](int w) {
    Tile c;
    c.work = sm90::work_at<kHeadDim, kBlockM_>(params, grid, w);
    c.n_tiles = c.work.tiles.count();
    c.slope_log2 = (kHasAlibi && params.alibi_slopes != nullptr) ? alibi_slope_log2(params, c.work.b, c.work.h) : 0.f;
    const float sink_log2 = params.sink_logits != nullptr ? params.sink_logits[c.work.h] * LOG2E : neg_inf();
    c.warp_row_lo = c.work.row_lo + 64 * wg + 16 * warp_in_wg;
    c.warp_row_hi = min(c.warp_row_lo + 16, c.work.row_hi);
    c.row0 = c.warp_row_lo + g;
    c.softmax.init(sink_log2, t == 0);
    c.alibi_shifted = kHasAlibi && c.work.mask.keys_at_or_before_query();
    if (c.alibi_shifted) shift_rows(c, 1.f);
    return c;
  };
  // The tile's Q buffer, once the producer filled it.
  auto take_q = [&](Tile& c) {
    c.qs = sm90::ring_stage<Tr::kQStages>(q_uses);
    acquire(sm.full_q(c.qs), sm90::ring_phase<Tr::kQStages>(q_uses));
    ++q_uses;
    q_wg = sm.q_tile(c.qs) + 64 * wg * 128;
  };
  // ALiBi, mask and online softmax of key tile `it` (fwd_tile_ops.cuh); returns with S = p.
  auto softmax_tile = [&](Tile& c, float (&S)[1][kNTiles][4], int it, float (&alpha)[2]) {
    scores_to_probs<kBlockN, kHasAlibi>(S, c.softmax, alpha, params, c.work.mask, exp2_scale, c.slope_log2,
                                        c.warp_row_lo, c.warp_row_hi, c.row0, c.work.tiles.tile(it) * kBlockN, t,
                                        c.alibi_shifted, c.work.row_lo + c.work.mask.offset);
  };
  // S_t is in: K_t's buffer goes back, and Q's with the tile's last S.
  auto after_s = [&](const Tile& c, float (&S)[1][kNTiles][4], int it) {
    sm90::fence_operand(S[0]);
    sm90::release(sm.empty_k(k_slot.stage), lane);
    k_slot.advance();
    if (it == c.n_tiles - 1) sm90::release(sm.empty_q(c.qs), lane);
  };
  // P V is in: V's buffer goes back.
  auto after_o = [&](float (&O)[1][kDTiles][4]) {
    sm90::fence_operand(O[0]);
    sm90::release(sm.empty_v(v_slot.stage), lane);
    v_slot.advance();
  };
  auto zero_o = [&](float (&O)[1][kDTiles][4]) {
#pragma unroll
    for (int d = 0; d < kDTiles; ++d)
#pragma unroll
      for (int e = 0; e < 4; ++e) O[0][d][e] = 0.f;
  };
  // Out and lse (while the producer loads the next tile).
  auto finish = [&](Tile& c, const float (&O)[1][kDTiles][4]) {
    if (c.alibi_shifted) shift_rows(c, -1.f);
    if (Tr::kTmaStore && tma_store) {
      const unsigned o_warp = sm.o_warp(warp);
      if (lane == 0) sm90::bulk_wait_read();  // the last tile's store has left o_warp
      __syncwarp();
      float inv_l[2], lse[2];
      c.softmax.finalize(inv_l, lse);
      sm90::stage_output<kIsBf16>(O, inv_l, o_warp, lane);
      sm90::fence_async_proxy();  // stmatrix wrote through the generic proxy; TMA reads through the async one
      __syncwarp();
      if (lane == 0)
        sm90::Sm90Smem<kHeadDim, kBlockM_>::OutTile::store_tma(&maps.o, o_warp, c.warp_row_lo, c.work.h, c.work.b);
      store_lse(lse, params, c.work.b, c.work.h, c.row0, t);
    } else {
      store_output<kIsBf16>(O, c.softmax, params, c.work.b, c.work.h, c.row0, t);
    }
  };
  auto to_p = [&](unsigned (&P)[kPSteps][4], const float (&S)[1][kNTiles][4]) {
#pragma unroll
    for (int ks = 0; ks < kPSteps; ++ks) pack_p<kIsBf16>(S[0], ks, P[ks]);
  };
  auto next_work = [&](int i) {
    return tile_queue ? sm90::take_tile(sm.queue, i, lane) : sm90::static_work_tile<kHeadDim, kBlockM_>(i, n_work);
  };

  // The three kinds of key-tile step. Tile 0 of a work tile: S alone (there
  // is no P V yet; O is 0, nothing to rescale).
  auto first_key_tile = [&](Tile& c, unsigned (&P)[kPSteps][4]) {
    float S[1][kNTiles][4];
    acquire(sm.full_k(k_slot.stage), k_slot.phase);
    sm90::fence();
    turns.wait();
    issue_s(S, sm.k_tile(k_slot.stage));
    turns.pass();
    sm90::wait<0>();
    after_s(c, S, 0);
    float alpha[2];
    softmax_tile(c, S, 0, alpha);
    to_p(P, S);
  };
  // Key tile `it` of work tile c with the P V of the key tile before it: S
  // first, then P V, and S's softmax while the P V still runs; returns with
  // S = p, alpha its rescale, O's P V done. Within a work tile the caller
  // then rescales O; chained (-DPK_SM90_CHAINED_TILES=1), c is the next work
  // tile, at its key tile 0, and O is the last one's, to finish.
  auto key_tile_with_pv = [&](Tile& c, int it, float (&S)[1][kNTiles][4], float (&alpha)[2],
                              float (&O)[1][kDTiles][4], const unsigned (&P)[kPSteps][4]) {
    acquire(sm.full_k(k_slot.stage), k_slot.phase);
    acquire(sm.full_v(v_slot.stage), v_slot.phase);
    sm90::fence_operand(O[0]);
    sm90::fence();
    turns.wait();
    issue_s(S, sm.k_tile(k_slot.stage));
    issue_o(O, P, sm.v_tile(v_slot.stage));
    turns.pass();
    sm90::wait<1>();  // S_t is in; P_{t-1} V_{t-1} may still run
    after_s(c, S, it);
    softmax_tile(c, S, it, alpha);
    sm90::wait<0>();
    after_o(O);
  };
  auto key_tiles_after_first = [&](Tile& c, float (&O)[1][kDTiles][4], unsigned (&P)[kPSteps][4]) {
    for (int it = 1; it < c.n_tiles; ++it) {
      float S[1][kNTiles][4];
      float alpha[2];
      key_tile_with_pv(c, it, S, alpha, O, P);
      rescale_o</*kLazy=*/true>(O, alpha);
      to_p(P, S);
    }
  };
  // The work tile's last P V, alone.
  auto last_pv = [&](float (&O)[1][kDTiles][4], const unsigned (&P)[kPSteps][4]) {
    acquire(sm.full_v(v_slot.stage), v_slot.phase);
    sm90::fence_operand(O[0]);
    sm90::fence();
    turns.wait();
    issue_o(O, P, sm.v_tile(v_slot.stage));
    turns.pass();
    sm90::wait<0>();
    after_o(O);
  };

  if constexpr (!Tr::kChainedTiles) {
    for (int i = 0;; ++i) {
      const int w = next_work(i);
      if (w < 0) break;
      Tile cur = begin_tile(w);
      float O[1][kDTiles][4];  // one 16-row fragment per warp (fwd_tile_ops.cuh)
      zero_o(O);
      unsigned P[kPSteps][4];  // the register A operand of P V, one k16 step each
      if (cur.n_tiles > 0) {
        take_q(cur);
        first_key_tile(cur, P);
        key_tiles_after_first(cur, O, P);
        last_pv(O, P);
      }
      finish(cur, O);
    }
  } else {
    // Chained: a work tile's last P V runs alongside the next work tile's
    // first Q K^T, whose softmax then overlaps it, as the key-tile loop
    // overlaps them inside a work tile; only the CTA's last work tile, and
    // one before a tile with no visible key, end with a P V alone.
    // `carried`: cur's key tile 0 already ran in the last tile's tail (O is
    // 0, P holds its P_0, its softmax has seen S_0).
    float O[1][kDTiles][4];
    unsigned P[kPSteps][4];
    int i = 0;
    int w = next_work(i++);
    Tile cur;
    if (w >= 0) cur = begin_tile(w);
    bool carried = false;
    while (w >= 0) {
      if (!carried) {
        zero_o(O);
        if (cur.n_tiles > 0) {
          take_q(cur);
          first_key_tile(cur, P);
        }
      }
      carried = false;
      key_tiles_after_first(cur, O, P);
      // The next work tile now, so that its first Q K^T can go with this
      // last P V. (-1 ends the loop: past the last tile the queue's producer
      // publishes no further slot, so it is asked once only.)
      w = next_work(i++);
      Tile next;
      if (w >= 0) next = begin_tile(w);
      if (cur.n_tiles > 0) {
        if (w >= 0 && next.n_tiles > 0) {
          take_q(next);
          float S[1][kNTiles][4];
          float alpha[2];
          key_tile_with_pv(next, 0, S, alpha, O, P);
          finish(cur, O);
          zero_o(O);  // the next tile's O starts at 0: its alpha is moot
          to_p(P, S);
          carried = true;
        } else {
          last_pv(O, P);
        }
      }
      if (!carried) finish(cur, O);
      if (w >= 0) cur = next;
    }
  }
  if (tma_store && lane == 0) sm90::bulk_wait_all();  // the shared tile must outlive its last store
}

template <int kHeadDim, int kBlockM_, bool kIsBf16, bool kHasAlibi>
__global__ void __launch_bounds__(FwdSm90Traits<kHeadDim, kBlockM_>::kNThreads, 1)
    flash_fwd_sm90_kernel(const FlashFwdParams params, const __grid_constant__ sm90::Sm90FwdMaps maps,
                          int* tile_counter, int store_o) {
#if PK_SM90A
  using Tr = FwdSm90Traits<kHeadDim, kBlockM_>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const sm90::Sm90Smem<kHeadDim, kBlockM_> sm(sm90::swizzle_aligned(smem_raw));  // kSmemBytes has the slack
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int m_blocks = (params.seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM;
  const int n_work = params.batch * params.heads_q * m_blocks;  // the launcher keeps this < 2^31
  if (tid == 0) sm.init_barriers();
  __syncthreads();
  if (warp >= Tr::kConsumerWarps) {
    sm90::shrink_registers<Tr::kProducerRegs>();
    const int ptid = tid - 32 * Tr::kConsumerWarps;
    if (!Tr::kTmaLoad || ptid == 0) {
      sm90::produce<kHeadDim, kBlockM_>(params, maps, sm, ptid, n_work, m_blocks, tile_counter);
    }
  } else {
    sm90::grow_registers<Tr::kConsumerRegs>();
    flash_fwd_sm90_consume<kHeadDim, kBlockM_, kIsBf16, kHasAlibi>(
        params, maps, sm, warp, lane, n_work, m_blocks, Tr::kDynamicTiles && tile_counter != nullptr,
        Tr::kTmaStore && (Tr::kTmaStoreAlways || store_o != 0));
  }
#endif
}

}  // namespace attention
}  // namespace pykernels
