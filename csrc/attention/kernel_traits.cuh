// Tile shapes of the attention forward kernel, all in one place.
//
// A CTA owns kBlockM query rows of one (batch, head) and walks key tiles of
// kBlockN rows. Its kNWarps warps split the query rows: warp w owns rows
// [w * 16 * kMFrags, (w + 1) * 16 * kMFrags), as kMFrags 16-row mma fragments.
//
// Why these numbers:
// * 4 warps, 32 rows each (kMFrags = 2): every K/V fragment read from shared
//   memory feeds two mmas instead of one. With 16 rows per warp the kernel
//   would need as many shared-memory bytes per mma as the tensor cores finish
//   in two cycles, and would stall on ldmatrix.
// * kBlockN = 64 keeps the fp32 accumulators (O: 32 x d / 32 per thread,
//   S: 32 x kBlockN / 32) under the 255-register cap with Q re-read from
//   shared memory (128-wide key tiles at d = 64 spilled 52 bytes); d = 32 has
//   a small O, so it takes 128-wide key tiles: half the rescales and barriers.
// * d = 256: the O accumulator alone is 32 x 256 / 32 = 256 floats at 32 rows
//   per warp, so warps own 16 rows (kBlockM = 64).
// * Shared-memory rows are padded by 16 bytes (kSmemPad halves): a row of
//   d halves is a multiple of 128 bytes for d = 64/128/256, so without padding
//   the 8 row addresses of an ldmatrix would hit the same 4 banks (8-way
//   conflict); with it, consecutive rows shift by 16 bytes and the 8 rows of
//   every 8x8 tile cover all 32 banks, for every supported d.
#pragma once

#include "common/host_device.h"

// The Hopper forward's TMA knobs (FwdSm90Traits), 1 unless a build says otherwise.
#ifndef PK_SM90_TMA_LOAD
#define PK_SM90_TMA_LOAD 1
#endif
// d = 64 takes 192-row query tiles where no window narrows the rows
// (FwdSm90Traits); -DPK_SM90_D64_WIDE=0 keeps 128 everywhere, for A/B runs.
#ifndef PK_SM90_D64_WIDE
#define PK_SM90_D64_WIDE 1
#endif
// The Hopper forward's output through a shared tile and TMA stores
// (flash_fwd_sm90_kernel.cuh): 1 on every launch, -1 where the launcher finds
// it pays (sm90_tma_store_pays, flash_fwd_launch.cuh), 0 (the default)
// straight from registers.
#ifndef PK_SM90_TMA_STORE
#define PK_SM90_TMA_STORE 0
#endif
// The consumer warpgroups issue their wgmmas in turns
// (hopper/warpgroup_turns.cuh); -DPK_SM90_PINGPONG=1. Off: with TMA loads it
// measured within -5% to +3% of the free-running warpgroups (H100 A/B,
// docs/attention_kernel.md).
#ifndef PK_SM90_PINGPONG
#define PK_SM90_PINGPONG 0
#endif
// Work tiles in L2-sized sections of heads (hopper/work_order.cuh, WorkGrid):
// -1 (the default) picks per launch from seqlen_k (section_mb_for, with the
// A/B behind it); -DPK_SM90_L2_SECTION_MB=n forces n MB, 0 the plain order.
#ifndef PK_SM90_L2_SECTION_MB
#define PK_SM90_L2_SECTION_MB -1
#endif
// Work tiles drawn from a per-launch counter as CTAs free up, rather than a
// static list (hopper/tile_queue.cuh). -1 picks per launch (tile_queue_pays,
// with the A/B behind it), 1 takes the queue on every launch that has a
// counter, 0 builds without it. TMA loads only: with -DPK_SM90_TMA_LOAD=0 or
// the paired order, -1 builds without it. The default stays 0 until -1 itself
// has run on a GPU: the A/B timed and tested builds with the queue always on
// (knob 1), not the per-launch pick (docs/attention_kernel.md).
#ifndef PK_SM90_DYNAMIC_TILES
#define PK_SM90_DYNAMIC_TILES 0
#endif
// The paired static work order (hopper/work_order.cuh, work_tile_paired):
// query tiles m and Mq-1-m of a head on one CTA, heads in order, no L2
// sections; -DPK_SM90_PAIRED_TILES=1. Off until an A/B says otherwise.
#ifndef PK_SM90_PAIRED_TILES
#define PK_SM90_PAIRED_TILES 0
#endif
// Q buffers of the Hopper forward: 1, or 2 so that the producer may load the
// next work tile's Q before the consumers release this one's
// (-DPK_SM90_Q_STAGES=2). Off until an A/B says otherwise.
#ifndef PK_SM90_Q_STAGES
#define PK_SM90_Q_STAGES 1
#endif
// Chained work tiles in the Hopper forward's consumers: a work tile's last
// P V is issued with the next work tile's first Q K^T, so that this S's
// softmax overlaps the P V, as inside the key-tile loop, instead of running
// alone at every tile's start (-DPK_SM90_CHAINED_TILES=1). Off until it has
// run on a GPU and an A/B says otherwise.
#ifndef PK_SM90_CHAINED_TILES
#define PK_SM90_CHAINED_TILES 0
#endif

namespace pykernels {
namespace attention {

// The tile queue compiled into the Hopper forward (a launch still picks it or
// the static order: flash_fwd_takes_tile_queue), and taken on every launch
// that has a counter. Head dims and row counts share it.
constexpr bool kSm90TileQueueBuilt =
    PK_SM90_DYNAMIC_TILES > 0 || (PK_SM90_DYNAMIC_TILES < 0 && PK_SM90_TMA_LOAD && !PK_SM90_PAIRED_TILES);
constexpr bool kSm90TileQueueAlways = PK_SM90_DYNAMIC_TILES > 0;


template <int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_>
struct FwdTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = 32 * kNWarps;
  // Skip the rescale of O when no row max moved (softmax.cuh). Pays where O is
  // large: +2% causal, +8% causal+ALiBi at d = 128 on an H200; at d = 64 the
  // branch cost more than the 64 multiplies it saves (-4% to -11%).
  static constexpr bool kLazyRescale = kHeadDim >= 96;

  static constexpr int kMFrags = kBlockM / (16 * kNWarps);  // 16-row fragments per warp
  static constexpr int kNTiles = kBlockN / 8;               // 8-wide key tiles of S
  static constexpr int kDTiles = kHeadDim / 8;              // 8-wide column tiles of O
  static constexpr int kKSteps = kHeadDim / 16;             // k16 steps of Q K^T

  static constexpr int kSmemPad = 8;  // halves = 16 bytes, see above
  static constexpr int kSmemRow = kHeadDim + kSmemPad;
  static constexpr int kChunksPerRow = kHeadDim / 8;  // 16-byte cp.async chunks

  // Q, then K, then V, each [rows][kSmemRow] halves, one buffer each: the
  // kernel overlaps V's copy with Q K^T and the next K's copy with P V. (Two
  // buffers each, every copy issued a whole tile ahead, measured no faster at
  // d = 128 and 4-15% slower at d = 64: two CTAs per SM already hide the
  // copies, and the extra shared memory costs occupancy.)
  static constexpr int kSmemQ = kBlockM * kSmemRow;
  static constexpr int kSmemK = kBlockN * kSmemRow;
  static constexpr int kSmemBytes = 2 * (kSmemQ + 2 * kSmemK);

  static_assert(kHeadDim % 16 == 0, "head dim must be a multiple of 16");
  static_assert(kBlockM % (16 * kNWarps) == 0, "kBlockM must split into 16-row warp fragments");
  static_assert(kBlockN % 16 == 0, "kBlockN must be a multiple of 16 (P is the A operand, k = 16)");
};

// Every tile shape below runs 4 warps (the kernel's __launch_bounds__).
constexpr int kFwdThreads = 128;

// The tile shape used for each head dim.
template <int kHeadDim>
struct FwdTileShape;
template <> struct FwdTileShape<32>  { using type = FwdTraits<32, 128, 128, 4>; };
template <> struct FwdTileShape<64>  { using type = FwdTraits<64, 128, 64, 4>; };
template <> struct FwdTileShape<96>  { using type = FwdTraits<96, 128, 64, 4>; };
template <> struct FwdTileShape<128> { using type = FwdTraits<128, 128, 64, 4>; };
template <> struct FwdTileShape<256> { using type = FwdTraits<256, 64, 64, 4>; };

// setmaxnreg moves registers between the warpgroups of one CTA, it does not
// add any: the CTA keeps what it was launched with (65536 / threads, rounded
// down to 8, per thread: 168 at 384 threads), and a warpgroup's
// setmaxnreg.inc waits until the others' .dec have freed enough. A split
// that asks for more than the launch gave hangs the kernel, so the traits
// check it at compile time.
PK_HOST_DEVICE constexpr bool register_split_fits(int producer_threads, int producer_regs, int consumer_threads, int consumer_regs) {
  return producer_threads * producer_regs + consumer_threads * consumer_regs <=
         (65536 / (producer_threads + consumer_threads)) / 8 * 8 * (producer_threads + consumer_threads);
}

// The Hopper forward (flash_fwd_sm90_kernel.cuh), head dims 64 and 128.
//
// * Consumer warpgroups of 64 query rows each (wgmma's M is 64 per
//   warpgroup): 2 for kBlockM = 128, so each K/V tile in shared memory feeds
//   128 rows; at d = 64 also 3 for kBlockM = 192, which the launcher picks
//   where no window narrows the rows (flash_fwd_launch.cuh, with its numbers).
// * kBlockN = 128: S is 64 fp32 registers per thread, O 64 (d = 128) and P
//   32, with S of the next tile computed while P V of the last runs; a wider
//   key tile halves the softmax's per-tile overheads (row-max shuffles, the
//   rescale vote) against 64.
// * One producer warpgroup, of which one thread issues the TMA loads (or,
//   with -DPK_SM90_TMA_LOAD=0, all issue cp.asyncs). ptxas sizes registers per
//   warpgroup (even 9 warps cap at 168 per thread), so the producer gives
//   registers away and the consumers take them (setmaxnreg): 128 x 56 +
//   256 x 224 fits the 64K register file. Measured with ptxas -v at d = 128:
//   56 / 224 leaves 8 spilled bytes in the producer's address arithmetic;
//   40 / 232 spilled 24 (72 at d = 64), 64 / 216 spilled 40 in the consumers.
//   With TMA loads 24 / 240 spills nothing, yet measured slower: causal
//   628 vs 643, window 432 vs 465, sinks 401 vs 424 TFLOP/s (ALiBi 632 vs
//   618; d = 128, 16K, H100 A/B, profiling/results/h100-2026-12-07b/checks/
//   ab_stages_regs.jsonl).
// * kStages: the depth of the K/V ring. d = 128 double-buffers (32 + 4 x
//   32 KB); a third stage fits (224 KB) but measured no faster (window 408
//   vs 415, sinks 369 vs 381 TFLOP/s on an H200; with TMA loads, window 452
//   vs 465 and sinks 413 vs 424 on an H100, same file). d = 64 takes three: its
//   tiles take half the time to consume, so a deeper ring keeps the producer
//   ahead across query-tile boundaries (window 302 vs 281, sinks 267 vs 252,
//   dev runs; the kept configuration: profiling/results/h200-2026-11-22d/
//   checks/fwd_dev_d64_stages3.jsonl).
template <int kHeadDim_, int kBlockM_>
struct FwdSm90Traits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = 128;
  static constexpr int kStages = kHeadDim_ == 64 ? 3 : 2;
  static constexpr int kConsumerWarps = kBlockM / 16;  // 64 rows per warpgroup
  static constexpr int kProducerThreads = 128;  // 1 warpgroup
  // 192 rows: 128 x 24 + 384 x 160 registers (ptxas -v: 140 bytes spilled;
  // 32 / 152 serialises the wgmmas, C7512).
  static constexpr int kProducerRegs = kBlockM == 192 ? 24 : 56;
  static constexpr int kConsumerRegs = kBlockM == 192 ? 160 : 224;
  static constexpr int kNThreads = 32 * kConsumerWarps + kProducerThreads;
  // Q, K and V arrive by TMA (one producer thread) or by the producer
  // warpgroup's cp.asyncs; out leaves through a shared tile and TMA stores or
  // straight from registers (hopper/tma.cuh; -D knobs for scripts/dev/attn_ab.py).
  static constexpr bool kTmaLoad = PK_SM90_TMA_LOAD;
  static constexpr bool kTmaStore = PK_SM90_TMA_STORE != 0;  // compiled in (its out tile reserved)
  static constexpr bool kTmaStoreAlways = PK_SM90_TMA_STORE > 0;
  static constexpr bool kPingPong = PK_SM90_PINGPONG;
  static constexpr int kL2SectionMB = PK_SM90_L2_SECTION_MB;
  static constexpr int kQStages = PK_SM90_Q_STAGES;
  static constexpr bool kPairedTiles = PK_SM90_PAIRED_TILES;
  static constexpr bool kChainedTiles = PK_SM90_CHAINED_TILES;
  static constexpr bool kDynamicTiles = kSm90TileQueueBuilt;  // the tile queue compiled in
  static_assert(!(kPairedTiles && kDynamicTiles), "the queue draws in its own order; pick one of the two");
  // The tile queue's 4 mbarriers and 2 int slots (hopper/tile_queue.cuh, TileQueueSmem).
  static constexpr int kQueueBytes = kDynamicTiles ? 4 * 8 + 2 * 4 : 0;
  static constexpr int kTileBytes = kHeadDim * 2;  // per row; times the rows below
  // Q's and the ring's full and empty barriers, and the tile queue.
  static constexpr int kBarrierBytes = 8 * (2 * kQStages + 4 * kStages) + kQueueBytes;
  // kQStages Q tiles, kStages K and V tiles, the out tile, the barriers, and 1024 bytes to
  // align the swizzled blocks.
  static constexpr int kSmemBytes =
      kTileBytes * (kQStages * kBlockM + 2 * kStages * kBlockN + (kTmaStore ? kBlockM : 0)) + kBarrierBytes + 1024;
  static_assert(kHeadDim == 64 || kHeadDim == 128, "the sm90 forward takes head dims 64 and 128");
  static_assert(kBlockM == 128 || (kBlockM == 192 && kHeadDim == 64), "192-row tiles are d = 64's alone");
  static_assert(!kDynamicTiles || kTmaLoad, "the tile queue has one drawing thread: the TMA producer");
  static_assert(kQStages == 1 || kQStages == 2, "one or two Q buffers");
  static_assert(kSmemBytes <= 227 * 1024, "beyond sm_90's 227 KB of shared memory per block");
  static_assert(register_split_fits(kProducerThreads, kProducerRegs, 32 * kConsumerWarps, kConsumerRegs),
                "setmaxnreg split beyond the launch's registers");
};


// The Hopper backward (flash_bwd_sm90_kernel.cuh), head dims 64 and 128.
//
// * A CTA owns kBlockN = 128 keys, 64 per consumer warpgroup (wgmma's M), so
//   every S^T, dP^T, dV and dK product has this warpgroup's keys as its rows
//   and dK, dV stay in registers for the whole CTA (2 x 64 x d / 128 fp32 per
//   thread: 128 at d = 128, 64 at d = 64).
// * kBlockM query rows per step: S^T and dP^T are 64 x kBlockM per
//   warpgroup, 2 x kBlockM / 2 fp32 per thread. At d = 128 that must stay at
//   64 (dK + dV + S^T + dP^T = 192 of the consumers' 240 registers); at
//   d = 64, dK and dV are half as big, so 128 rows fit, and each K/V byte
//   read feeds twice the work.
// * dQ = dS K is split so that each warpgroup issues one m64n64 product per
//   key step: at d = 128 by columns (warpgroup w takes head-dim columns
//   [64 w, 64 w + 64) of the 64 rows), at d = 64 by rows (rows [64 w, 64 w + 64)).
// * One producer warpgroup of cp.async loads (K and V once, then Q and dO
//   per step into a kStages ring; the consumers stage lse and delta). Registers: 128 x 24 + 256 x 240
//   = 384 x 168, all the launch has (register_split_fits). ptxas -v: 20
//   spilled bytes at d = 128, 48 at d = 64; 32 / 232 spilled 32 and 124.
// * Shared memory: K, V, the Q/dO ring, dS^T twice (so that one
//   warpgroup may write the next dS^T while the other still reads the last
//   one for its dQ), and an fp32 dQ tile, rows padded by 8 floats so that the
//   accumulator stores hit 32 distinct banks per half warp.
template <int kHeadDim_>
struct BwdSm90Traits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockN = 128;
  static constexpr int kBlockM = kHeadDim_ == 64 ? 128 : 64;
  static constexpr int kStages = 2;
  static constexpr int kConsumerWarps = 8;  // 2 warpgroups
  static constexpr int kProducerThreads = 128;  // 1 warpgroup
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;
  static constexpr int kNThreads = 32 * kConsumerWarps + kProducerThreads;
  static constexpr bool kDqByColumns = kBlockM == 64;
  static constexpr int kDqRow = kHeadDim + 8;  // floats per row of the dQ tile
  static constexpr int kKVBytes = kBlockN * kHeadDim * 2;
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kDsBytes = kBlockN * kBlockM * 2;
  static constexpr int kDqBytes = kBlockM * kDqRow * 4;
  static constexpr int kStatBytes = kBlockM * 4;  // one step's lse (or delta)
  static constexpr int kBarrierBytes = 8 * (1 + 2 * kStages);
  // K, V, kStages x (Q, dO), 2 x dS^T, dQ, 2 x (lse, delta), barriers, 1024 to align.
  static constexpr int kSmemBytes =
      2 * kKVBytes + 2 * kStages * kQBytes + 2 * kDsBytes + kDqBytes + 4 * kStatBytes + kBarrierBytes + 1024;
  static_assert(2 * kBlockM <= 32 * kConsumerWarps, "a consumer thread stages one lse or delta value");
  static_assert(kHeadDim == 64 || kHeadDim == 128, "the sm90 backward takes head dims 64 and 128");
  static_assert(register_split_fits(kProducerThreads, kProducerRegs, 32 * kConsumerWarps, kConsumerRegs),
                "setmaxnreg split beyond the launch's registers");
  static_assert(kSmemBytes <= 227 * 1024, "one CTA per SM must fit");
};

}  // namespace attention
}  // namespace pykernels
