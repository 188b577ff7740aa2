// 128B-swizzled shared-memory tiles for wgmma operands, filled by cp.async
// or by the tensor memory accelerator (tma.cuh), which writes the same layout.
//
// A tile of kRows x kHeadDim 16-bit elements is stored as kHeadDim / 64
// column blocks; block b holds columns [64 b, 64 b + 64) of every row, 128
// bytes per row, rows consecutive. Inside a block, the 16-byte chunk c of row
// r is stored at chunk c ^ (r % 8). That is the layout the wgmma descriptor's
// 128-byte swizzle mode reads (wgmma.cuh), and it also spreads the 8 rows of
// every 8-row group over all 32 banks, so the cp.async writes never conflict.
#pragma once

#include "attention/copy.cuh"
#include "attention/hopper/mbarrier.cuh"
#include "attention/hopper/tma.cuh"
#include "attention/hopper/wgmma.cuh"
#include "attention/params.h"
#include "common/host_device.h"

namespace pykernels {
namespace attention {
namespace sm90 {

// The first 1024-byte boundary at or after a dynamic shared-memory buffer:
// a 128B-swizzled block must start on one (the swizzle pattern repeats every
// 8 rows of 128 bytes, and wgmma descriptors assume it starts aligned), while
// dynamic shared memory is only guaranteed 16-byte alignment. Kernels size
// their buffer with 1024 bytes of slack for this.
__device__ __forceinline__ unsigned swizzle_aligned(const void* smem) { return (smem_addr(smem) + 1023u) & ~1023u; }

template <int kRows, int kHeadDim>
struct SwizzledTile {
  static_assert(kHeadDim % 64 == 0, "swizzled tiles hold whole 64-column blocks");
  static_assert(kRows % 8 == 0, "the swizzle repeats every 8 rows");
  static constexpr int kBlocks = kHeadDim / 64;
  static constexpr int kBlockBytes = kRows * 128;  // one 64-column block; a multiple of 1024
  static constexpr int kBytes = kBlocks * kBlockBytes;
  static constexpr int kChunksPerRow = kHeadDim / 8;

  static constexpr unsigned kGroupBytes = 8 * 128;  // 8 rows: one period of the swizzle

  // Byte offset of 16-byte chunk c (columns 8c..8c+7) of row r.
  PK_HOST_DEVICE static constexpr unsigned chunk_offset(int r, int c) {
    return (c >> 3) * kBlockBytes + r * 128 + (((c & 7) ^ (r & 7)) << 4);
  }

  // wgmma descriptors (wgmma.cuh) of k16 step ks of the tile at shared byte
  // address `tile` (or of its rows from a multiple of 8 on: `tile` + 128 per
  // row). csrc/tests/smem_layout_test.cu checks both against CuTe's
  // make_gmma_desc on CuTe's canonical layouts of the same bytes.
  // K-major: k runs along the rows (Q and K as operands of Q K^T): columns
  // 16 ks..16 ks+15, 32 bytes into a row, in column block ks / 4.
  PK_HOST_DEVICE static constexpr unsigned long long k_major_desc(unsigned tile, int ks) {
    return smem_desc(tile + (ks / 4) * kBlockBytes + (ks % 4) * 32, 16, kGroupBytes);
  }
  // MN-major: k runs down the rows (V as B of P V: rows 16 ks..16 ks+15),
  // M or N along them from column block `block` on, LBO stepping blocks.
  PK_HOST_DEVICE static constexpr unsigned long long mn_major_desc(unsigned tile, int ks, int block = 0) {
    return smem_desc(tile + block * kBlockBytes + ks * 16 * 128, kBlockBytes, kGroupBytes);
  }

  // Copy rows [row0, row0 + kRows) of one head (row stride in elements) into
  // the tile at shared byte address `smem`, rows at or past n_rows zero-filled
  // (copy.cuh says why). The kThreads threads calling it (lane = 0..kThreads-1)
  // each move chunks lane, lane + kThreads, ...: with kThreads a multiple of
  // the chunks per row, a thread keeps one column and steps down the rows.
  template <int kThreads, class Elem>
  __device__ __forceinline__ static void load(unsigned smem, const Elem* gmem, index_t row_stride, int row0, int n_rows,
                                              int lane) {
    static_assert(kThreads % kChunksPerRow == 0, "a thread keeps one column of chunks");
    constexpr int kRowStep = kThreads / kChunksPerRow;
    static_assert(kRows % kRowStep == 0, "whole passes over the rows");
    const int c = lane % kChunksPerRow;
    const int r0 = lane / kChunksPerRow;
    const int rows_left = n_rows - row0 - r0;
    const Elem* src = gmem + static_cast<index_t>(row0 + r0) * row_stride + c * 8;
#pragma unroll 8
    for (int i = 0; i < kRows / kRowStep; ++i) {
      const bool valid = i * kRowStep < rows_left;
      cp_async_16(smem + chunk_offset(r0 + i * kRowStep, c), valid ? src : gmem, valid);
      src += kRowStep * row_stride;
    }
  }

  // The same rows [row0, row0 + kRows) of head (head, batch) by TMA, one
  // box per column block, all counted on `bar` (tma.cuh); one thread calls
  // it. `map`'s box must be 64 columns by kRows rows.
  __device__ __forceinline__ static void load_tma(unsigned smem, const TmaMap* map, unsigned bar, int row0, int head,
                                                  int batch) {
    mbarrier_arrive_expect_tx(bar, kBytes);
#pragma unroll
    for (int b = 0; b < kBlocks; ++b) tma_load(smem + b * kBlockBytes, map, bar, 64 * b, row0, head, batch);
  }

  // The reverse: the tile to rows [row0, row0 + kRows) of head (head, batch)
  // by TMA, in one bulk group of the calling thread (rows past S dropped).
  __device__ __forceinline__ static void store_tma(const TmaMap* map, unsigned smem, int row0, int head, int batch) {
#pragma unroll
    for (int b = 0; b < kBlocks; ++b) tma_store(map, smem + b * kBlockBytes, 64 * b, row0, head, batch);
    bulk_commit();
  }
};

}  // namespace sm90
}  // namespace attention
}  // namespace pykernels
