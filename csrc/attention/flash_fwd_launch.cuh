// Launching the forward kernel for one (head dim, dtype): grid, shared memory
// and the one compile-time flag (ALiBi). Host code: nvcc only, never NVRTC.
#pragma once

#ifndef __CUDACC_RTC__
#include <cuda_runtime.h>

#include "attention/flash_fwd.h"
#include "attention/flash_fwd_kernel.cuh"
#include "attention/static_switch.h"

namespace pykernels {
namespace attention {

template <int kHeadDim, bool kIsBf16>
cudaError_t run_flash_fwd_(const FlashFwdParams& params, cudaStream_t stream) {
  using Tr = typename FwdTileShape<kHeadDim>::type;
  // ALiBi is compile-time: it adds work to every score. Windows, sinks and
  // causal are runtime values: they only change which tiles are visited and
  // the element mask on boundary tiles, a branch uniform over the CTA.
  // A non-positive softmax_scale also takes the ALiBi path (with slope 0),
  // which scales scores before the row max instead of inside exp2.
  const bool scale_first = params.alibi_slopes != nullptr || !(params.softmax_scale > 0.f);
  return BOOL_SWITCH(scale_first, kHasAlibi, [&] {
    auto kernel = flash_fwd_kernel<kHeadDim, kIsBf16, kHasAlibi>;
    if (Tr::kSmemBytes > 48 * 1024) {
      const cudaError_t err =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes);
      if (err != cudaSuccess) return err;
    }
    const int m_blocks = (params.seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM;
    if (m_blocks == 0 || params.batch == 0 || params.heads_q == 0) return cudaSuccess;
    const dim3 grid(static_cast<unsigned>(params.batch) * params.heads_q, m_blocks);
    kernel<<<grid, Tr::kNThreads, Tr::kSmemBytes, stream>>>(params);
    return cudaGetLastError();
  });
}

}  // namespace attention
}  // namespace pykernels
#endif  // __CUDACC_RTC__
