// Turns between the consumer warpgroups of the sm90 forward: at most one
// warpgroup at a time issues its wgmmas, in a fixed rotation (FlashAttention-3's
// inter-warpgroup "ping-pong" schedule, Shah et al. 2024, section 3.1).
//
// Why: without turns the warpgroups drift on their own and often issue their
// GEMMs together, then run their softmaxes together while the tensor cores
// idle. With turns, warpgroup w's exp2s and row sums run while warpgroup
// w + 1's GEMMs occupy the tensor cores.
//
// Warpgroup w waits on named barrier kFirstId + w before issuing and, once its
// GEMMs are issued (not finished), signals barrier kFirstId + (w + 1) % n. The
// token starts with warpgroup 0: the last warpgroup signals its barrier once
// up front. Every warpgroup takes the same number of turns per work tile (one
// per key tile, plus the last P V), so the rotation never stalls; the last
// warpgroup's final signal is left unmatched, which ends with the CTA.
#pragma once

#include "attention/hopper/mbarrier.cuh"

namespace pykernels {
namespace attention {
namespace sm90 {

template <int kWarpgroups, bool kEnabled>
struct WarpgroupTurns {
  static constexpr int kFirstId = 1;  // 0 is __syncthreads
  static constexpr int kThreads = 2 * 128;  // the waiting warpgroup and the signalling one
  int wg;

  __device__ __forceinline__ explicit WarpgroupTurns(int warpgroup) : wg(warpgroup) {
    if (kEnabled && kWarpgroups > 1 && wg == kWarpgroups - 1) named_barrier_arrive(kFirstId, kThreads);
  }
  __device__ __forceinline__ void wait() const {
    if (kEnabled && kWarpgroups > 1) named_barrier_sync(kFirstId + wg, kThreads);
  }
  __device__ __forceinline__ void pass() const {
    if (kEnabled && kWarpgroups > 1) named_barrier_arrive(kFirstId + (wg + 1) % kWarpgroups, kThreads);
  }
};

}  // namespace sm90
}  // namespace attention
}  // namespace pykernels
