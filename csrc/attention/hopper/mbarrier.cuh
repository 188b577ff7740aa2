// Shared-memory barriers (mbarrier, sm_90) between the producer warpgroup and
// the consumer warpgroups of the sm90 kernels (forward and backward), and the
// ring-buffer bookkeeping both build on them.
//
// An mbarrier counts arrivals; when the expected number has arrived its
// phase completes and flips parity (0, 1, 0, ...). A waiter names the parity
// of the phase it needs: a ring-buffer stage used for the n-th time waits for
// parity n & 1. cp.async can arrive on its own once this thread's earlier
// copies have landed (arrive_on_copies), so the producer never blocks on its
// loads.
//
// Data that cp.async wrote is generic-proxy data; wgmma reads shared memory
// through the async proxy, so a consumer fences the two proxies after its wait
// (fence_async_proxy) before handing the tile to wgmma.
#pragma once

namespace pykernels {
namespace attention {
namespace sm90 {

__device__ __forceinline__ void mbarrier_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(unsigned bar) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(bar) : "memory");
}

// Arrive once every cp.async this thread issued so far has completed. The
// barrier's count must include this arrival (.noinc).
__device__ __forceinline__ void arrive_on_copies(unsigned bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}

// Block until the phase with this parity has completed.
__device__ __forceinline__ void mbarrier_wait(unsigned bar, int parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

__device__ __forceinline__ void fence_async_proxy() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Synchronise the `threads` threads (a multiple of 32) that use barrier `id`
// (1..15; 0 is __syncthreads).
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Count this warp's threads towards barrier `id` without waiting for it: the
// signalling half of a bar.sync elsewhere (`threads` counts both halves).
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// A ring slot: which of the kStages buffers, and the parity of its current use.
template <int kStages>
struct RingSlot {
  int stage = 0, phase = 0;
  __device__ __forceinline__ void advance() {
    if (++stage == kStages) {
      stage = 0;
      phase ^= 1;
    }
  }
};

// The same ring, for a side that counts its uses anyway (n, from 0): use n
// takes buffer n % kStages with parity (n / kStages) & 1, as RingSlot's n-th
// advance would, without RingSlot's two registers.
// (Unsigned: for a power of two the division is a shift, n never negative.)
template <int kStages>
__device__ __forceinline__ int ring_stage(int n) { return static_cast<int>(static_cast<unsigned>(n) % kStages); }
template <int kStages>
__device__ __forceinline__ int ring_phase(int n) { return static_cast<int>(static_cast<unsigned>(n) / kStages & 1u); }

// Consumers: a warp's lane 0 tells the producer the warp is done with a buffer.
__device__ __forceinline__ void release(unsigned bar, int lane) {
  __syncwarp();
  if (lane == 0) mbarrier_arrive(bar);
}

// Wait for a buffer the producer filled, then make it visible to wgmma.
__device__ __forceinline__ void acquire(unsigned bar, int phase) {
  mbarrier_wait(bar, phase);
  fence_async_proxy();
}

// Hand registers between warpgroups (sm_90a). ptxas sizes a kernel for its
// whole block; after these, the producer warpgroup keeps kRegs and the
// consumers may grow to kRegs. Every thread of the warpgroup executes it.
template <int kRegs>
__device__ __forceinline__ void shrink_registers() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void grow_registers() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

}  // namespace sm90
}  // namespace attention
}  // namespace pykernels
