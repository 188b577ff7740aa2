// Asynchronous global -> shared copies (cp.async, sm_80+).
//
// Each call moves 16 bytes (8 halves), the widest cp.async, so a warp moves
// 512 contiguous bytes per instruction. Rows past the end of a sequence are
// zero-filled rather than skipped: a K row of garbage could hold NaN or inf,
// and 0 * inf in P.V would poison a whole output row.
#pragma once

#include "attention/mma.cuh"

namespace pykernels {
namespace attention {

// Copy 16 bytes, or write 16 zero bytes when !valid (src is then not read but
// must still be a mapped address).
// smem_dst is a shared-space byte address (smem_addr).
__device__ __forceinline__ void cp_async_16(unsigned smem_dst, const void* gmem_src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  // .cg: cache in L2 only; K and V are re-read by other CTAs, not by this one.
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_dst), "l"(gmem_src), "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Wait until at most kPending committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace attention
}  // namespace pykernels
