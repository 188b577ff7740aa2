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

namespace pykernels {
namespace attention {

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

// The Hopper forward (flash_fwd_sm90_kernel.cuh), head dims 64 and 128.
//
// * 2 consumer warpgroups of 64 query rows (wgmma's M is 64 per warpgroup):
//   kBlockM = 128, so each K/V tile in shared memory feeds 128 rows.
// * kBlockN = 128: S is 64 fp32 registers per thread, O 64 (d = 128) and P
//   32, with S of the next tile computed while P V of the last runs; a wider
//   key tile halves the softmax's per-tile overheads (row-max shuffles, the
//   rescale vote) against 64.
// * One producer warpgroup of cp.async loads. ptxas sizes registers per
//   warpgroup (even 9 warps cap at 168 per thread), so the producer gives
//   registers away and the consumers take them (setmaxnreg): 128 x 56 +
//   256 x 224 fits the 64K register file. Measured with ptxas -v at d = 128:
//   56 / 224 leaves 8 spilled bytes in the producer's address arithmetic;
//   40 / 232 spilled 24 (72 at d = 64), 64 / 216 spilled 40 in the consumers.
// * kStages: the depth of the K/V ring. d = 128 double-buffers (32 + 4 x
//   32 KB); a third stage fits (224 KB) but measured no faster (window 408
//   vs 415, sinks 369 vs 381 TFLOP/s on an H200). d = 64 takes three: its
//   tiles take half the time to consume, so a deeper ring keeps the producer
//   ahead across query-tile boundaries (window 302 vs 281, sinks 267 vs 252,
//   dev runs; the kept configuration: profiling/results/h200-2026-11-22d/
//   checks/fwd_dev_d64_stages3.jsonl).
template <int kHeadDim_>
struct FwdSm90Traits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 128;
  static constexpr int kBlockN = 128;
  static constexpr int kStages = kHeadDim_ == 64 ? 3 : 2;
  static constexpr int kConsumerWarps = 8;  // 2 warpgroups
  static constexpr int kProducerThreads = 128;  // 1 warpgroup
  static constexpr int kProducerRegs = 56;
  static constexpr int kConsumerRegs = 224;
  static constexpr int kNThreads = 32 * kConsumerWarps + kProducerThreads;
  static constexpr int kTileBytes = kHeadDim * 2;  // per row; times the rows below
  static constexpr int kBarrierBytes = 8 * (1 + 4 * kStages);
  // Q, kStages K and V tiles, the barriers, and 1024 bytes to align the swizzled blocks.
  static constexpr int kSmemBytes = kTileBytes * (kBlockM + 2 * kStages * kBlockN) + kBarrierBytes + 1024;
  static_assert(kHeadDim == 64 || kHeadDim == 128, "the sm90 forward takes head dims 64 and 128");
};

}  // namespace attention
}  // namespace pykernels
