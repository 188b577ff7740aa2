// The tensor memory accelerator (TMA, sm_90): bulk tensor copies between
// global memory and 128B-swizzled shared tiles, driven by one thread.
//
// A copy is described by a tensor map (tma_host.h builds them on the host,
// one per tensor, and the kernel takes them as __grid_constant__ parameters):
// the tensor's shape and strides, the box one copy moves, and the swizzle.
// Every map here views a (B, S, H, D) tensor as the 4-d box grid
// (D, S, H, B), innermost first, with a box of 64 columns (128 bytes: one
// swizzle block of smem_tile.cuh) by some rows of one head; the hardware
// writes the box with the same 128-byte swizzle as SwizzledTile, so wgmma
// reads it through the same descriptors. Rows past S read as zeros (the
// cp.async path zero-fills them for the reason copy.cuh gives), and a store
// drops them, so neither needs a bounds check.
//
// Loads complete on an mbarrier by byte count (complete_tx): the issuing
// thread arrives once with the bytes to expect (arrive_expect_tx), and the
// phase completes when they have all landed, so a whole K tile costs one
// thread a handful of instructions instead of a warpgroup's cp.asyncs. TMA
// writes through the async proxy, which wgmma reads, so no proxy fence is
// needed between them. Stores are bulk-async groups, as bulk_reduce.cuh's
// adds are: the thread that issued them waits (bulk_wait_read) before the
// shared tile is written again.
#pragma once

#include "attention/hopper/bulk_reduce.cuh"  // bulk_commit, bulk_wait_read, bulk_wait_all

namespace pykernels {
namespace attention {
namespace sm90 {

// The driver's CUtensorMap, opaque: 128 bytes, 64-byte aligned (CUDA 13
// declares 128; so do we). Device code
// never looks inside, so it need not include cuda.h (NVRTC builds these
// headers with no CUDA headers at all).
struct alignas(128) TmaMap {
  unsigned long long opaque[16];
};

// Arrive once on `bar` and add `bytes` to the transactions its phase waits for.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

// Box (col, row, head, batch) of `map` into shared byte address `smem`,
// counted on mbarrier `bar`.
__device__ __forceinline__ void tma_load(unsigned smem, const TmaMap* map, unsigned bar, int col, int row, int head,
                                         int batch) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(smem),
      "l"(map), "r"(col), "r"(row), "r"(head), "r"(batch), "r"(bar)
      : "memory");
}

// Shared tile at `smem` to box (col, row, head, batch) of `map`, in the
// current bulk-async group.
__device__ __forceinline__ void tma_store(const TmaMap* map, unsigned smem, int col, int row, int head, int batch) {
  asm volatile(
      "cp.async.bulk.tensor.4d.global.shared::cta.tile.bulk_group"
      " [%0, {%1, %2, %3, %4}], [%5];\n" ::"l"(map),
      "r"(col), "r"(row), "r"(head), "r"(batch), "r"(smem)
      : "memory");
}

// Fetch a map into the TMA unit's descriptor cache ahead of its first use.
__device__ __forceinline__ void tma_prefetch_map(const TmaMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(map) : "memory");
}

// Store four 8x8 16-bit matrices from the mma C layout (one 32-bit register
// per matrix: row lane / 4, columns 2 (lane % 4) and + 1); lane l gives the
// shared address of row l % 8 of matrix l / 8.
__device__ __forceinline__ void stmatrix_x4(unsigned smem, unsigned r0, unsigned r1, unsigned r2, unsigned r3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(smem), "r"(r0), "r"(r1),
               "r"(r2), "r"(r3)
               : "memory");
}

}  // namespace sm90
}  // namespace attention
}  // namespace pykernels
