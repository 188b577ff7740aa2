// Adding a shared-memory row into global fp32 memory with the bulk-copy
// (TMA) unit (cp.reduce.async.bulk, sm_90): the backward's dQ accumulation.
//
// One instruction moves a whole contiguous row (here 64 fp32, 256 bytes) and
// the add happens in L2, so a warp issues 16 requests per 16 x 64 dQ slice
// instead of the 256 16-byte atomics the mma.sync backward issues for it, and
// the threads go on at once. The copy reads shared memory asynchronously: the
// source must not be rewritten until bulk_wait_read() says the reads are
// done, and data written by ordinary stores must be fenced into the async
// proxy first (fence_async_proxy, mbarrier.cuh). Bulk groups are per thread:
// the thread that issued a copy is the one that waits for it.
//
// Addresses and sizes must be multiples of 16 bytes.
#pragma once

#include "attention/hopper/wgmma.cuh"  // PK_SM90A

namespace pykernels {
namespace attention {
namespace sm90 {

__device__ __forceinline__ void bulk_reduce_add_f32(float* gmem, unsigned smem, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(gmem),
               "r"(smem), "r"(bytes)
               : "memory");
#endif
}

// Close this thread's copies so far into one bulk group.
__device__ __forceinline__ void bulk_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}

// Until this thread's bulk groups have finished reading shared memory.
__device__ __forceinline__ void bulk_wait_read() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#endif
}

// Until this thread's bulk groups are complete (their writes done).
__device__ __forceinline__ void bulk_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}

}  // namespace sm90
}  // namespace attention
}  // namespace pykernels
