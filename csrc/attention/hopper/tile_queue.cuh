// Who decides which work tile a persistent sm90 forward CTA takes next.
//
// The static list (work_tile in hopper/work_order.cuh: CTA c takes c,
// 2G - 1 - c, 2G + c, ...) balances causal only while tile costs fall
// steadily with w; in L2 sections (WorkGrid) costs rise again at each
// section's start, and the A/B of 2026-12-07 lost 31-37% on causal from 4K
// on (work_order.cuh). With the queue a CTA instead takes the next untaken
// tile when it is ready for one: its first is w = blockIdx.x, each later one
// G + atomicAdd(counter, 1) on a counter the launcher zeroes per launch (the
// dynamic, longest-first scheduling of FlashAttention-3's persistent
// kernels, Shah et al. 2024). Tiles still come in order of w, longest first
// within a section, so the last to run are the short ones. With
// -DPK_SM90_DYNAMIC_TILES=-1 the launcher takes it where the A/B of
// 2026-12-08 found it faster (tile_queue_pays in work_order.cuh: +25% to +43%
// at 1K-2K, d = 128); 1 takes it on every launch; 0, still the default until
// -1 has run on a GPU, builds without it.
//
// Only the producer thread (TMA loads) draws; it passes w to the consumer
// warps through a 2-slot ring in shared memory: slot i % 2 holds the i-th
// tile, full_w(slot) completes when the producer wrote it, empty_w(slot)
// when every consumer warp has read it. The barriers make any depth correct;
// two slots seldom stall the producer: with one Q buffer it draws tile i + 2
// only after loading tile i + 1's Q, which waits for the consumers to release
// tile i's Q, long after they read slot i. (A tile with no key tile loads no
// Q, and with -DPK_SM90_Q_STAGES=2 Q no longer holds it back; then the
// producer may wait on empty_w instead.)
#pragma once

#include "attention/hopper/mbarrier.cuh"

namespace pykernels {
namespace attention {
namespace sm90 {

struct TileQueueSmem {
  unsigned bars;   // 4 mbarriers: full_w(0), full_w(1), empty_w(0), empty_w(1)
  unsigned slots;  // 2 ints, after them
  static constexpr int kBytes = 4 * 8 + 2 * 4;  // FwdSm90Traits::kQueueBytes reserves it
  __device__ __forceinline__ static TileQueueSmem at(unsigned base) { return {base, base + 4 * 8}; }
  __device__ __forceinline__ unsigned full_w(int s) const { return bars + 8 * s; }
  __device__ __forceinline__ unsigned empty_w(int s) const { return bars + 8 * (2 + s); }
  __device__ __forceinline__ unsigned slot(int s) const { return slots + 4 * s; }
  __device__ __forceinline__ void init(unsigned consumer_warps) const {
    for (int s = 0; s < 2; ++s) {
      mbarrier_init(full_w(s), 1);
      mbarrier_init(empty_w(s), consumer_warps);
    }
  }
};

// The slot of a CTA's i-th tile, and the parity of that slot's use: derived
// from i, which both sides count anyway (ring_stage / ring_phase; a RingSlot's
// own counters cost the consumers two more registers, which at d = 128 tipped
// ptxas into spilling the hoisted Q descriptors inside the key-tile loop).
__device__ __forceinline__ int queue_stage(int i) { return ring_stage<2>(i); }
__device__ __forceinline__ int queue_phase(int i) { return ring_phase<2>(i); }

// The producer's side: draw the i-th tile of this CTA (or -1 past the end)
// and publish it to the consumers.
__device__ __forceinline__ int draw_tile(const TileQueueSmem& q, int i, int* counter, int n_work) {
  // In 64 bits: G + the counter passes n_work by up to G - 1 before every CTA has stopped.
  const long long next = i == 0 ? blockIdx.x : static_cast<long long>(gridDim.x) + atomicAdd(counter, 1);
  const int w = next < n_work ? static_cast<int>(next) : -1;
  mbarrier_wait(q.empty_w(queue_stage(i)), queue_phase(i) ^ 1);  // fresh slots read as empty (mbarrier.cuh)
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(q.slot(queue_stage(i))), "r"(w) : "memory");
  mbarrier_arrive(q.full_w(queue_stage(i)));  // release: the store above is seen by whoever waits on it
  return w;
}

// A consumer warp's side: the i-th tile the producer drew.
__device__ __forceinline__ int take_tile(const TileQueueSmem& q, int i, int lane) {
  mbarrier_wait(q.full_w(queue_stage(i)), queue_phase(i));
  int w;
  asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(w) : "r"(q.slot(queue_stage(i))) : "memory");
  release(q.empty_w(queue_stage(i)), lane);
  return w;
}

}  // namespace sm90
}  // namespace attention
}  // namespace pykernels
