// Launching the backward for one (head dim, dtype): preprocess, dK/dV (with
// dQ atomics or the deterministic dQ kernel), dQ conversion. Host code: nvcc
// only. Causal, windows, sinks and ALiBi are runtime values here (ALiBi is a
// warp-uniform branch), so each (head dim, dtype) is three or four kernels.
#pragma once

#ifndef __CUDACC_RTC__
#include <cuda_runtime.h>

#include "attention/flash_bwd.h"
#include "attention/flash_bwd_kernel.cuh"
#include "attention/flash_bwd_sm90_kernel.cuh"
#include "attention/hopper/runs_here.h"

namespace pykernels {
namespace attention {

template <class Kernel>
cudaError_t allow_smem(Kernel kernel, int bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

template <int kHeadDim, bool kIsBf16>
cudaError_t run_flash_bwd_(const FlashBwdParams& params, cudaStream_t stream) {
  using Tr = typename BwdTileShape<kHeadDim>::type;
  using TrDq = typename DqTileShape<kHeadDim>::type;
  if (params.batch == 0 || params.heads_q == 0) return cudaSuccess;
  cudaError_t err = cudaSuccess;

  // With Sq = 0 only dK/dV run (and write zeros); with Sk = 0 only dQ (zeros).
  const long long stat_rows = static_cast<long long>(params.batch) * params.heads_q * params.seqlen_q_pad;
  if (stat_rows > 0) {
    const unsigned pre_blocks = static_cast<unsigned>((stat_rows + kPreprocessWarps - 1) / kPreprocessWarps);
    flash_bwd_preprocess_kernel<kIsBf16><<<pre_blocks, 32 * kPreprocessWarps, 0, stream>>>(params);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }

  const int n_blocks = (params.seqlen_k + Tr::kBlockN - 1) / Tr::kBlockN;
  bool dkdv_done = false;
  if constexpr (kHeadDim == 64 || kHeadDim == 128) {
    // On Hopper, the wgmma dK/dV kernel: same grid (128-key tiles, so the
    // same dsink slots), same scratch and outputs (flash_bwd_sm90_kernel.cuh).
    static_assert(BwdSm90Traits<kHeadDim>::kBlockN == Tr::kBlockN, "both dK/dV kernels share the grid");
    auto kernel = flash_bwd_sm90_kernel<kHeadDim, kIsBf16>;
    if (n_blocks > 0 && sm90_kernel_runs_here(kernel, "PYKERNELS_BWD_KERNEL")) {
      constexpr int kSmem = BwdSm90Traits<kHeadDim>::kSmemBytes;
      if ((err = allow_smem(kernel, kSmem)) != cudaSuccess) return err;
      const dim3 grid(static_cast<unsigned>(params.batch) * params.heads_kv, n_blocks);
      kernel<<<grid, BwdSm90Traits<kHeadDim>::kNThreads, kSmem, stream>>>(params);
      if ((err = cudaGetLastError()) != cudaSuccess) return err;
      dkdv_done = true;
    }
  }
  if (n_blocks > 0 && !dkdv_done) {
    auto kernel = flash_bwd_dkdv_kernel<kHeadDim, kIsBf16>;
    if ((err = allow_smem(kernel, Tr::kSmemBytes)) != cudaSuccess) return err;
    const dim3 grid(static_cast<unsigned>(params.batch) * params.heads_kv, n_blocks);
    kernel<<<grid, Tr::kNThreads, Tr::kSmemBytes, stream>>>(params);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }

  if (params.dq_accum != nullptr) {
    const long long pairs = static_cast<long long>(params.batch) * params.seqlen_q * params.heads_q * (kHeadDim / 2);
    if (pairs == 0) return cudaSuccess;
    const unsigned blocks = static_cast<unsigned>((pairs + kConvertDqThreads - 1) / kConvertDqThreads);
    flash_bwd_convert_dq_kernel<kIsBf16><<<blocks, kConvertDqThreads, 0, stream>>>(params);
    return cudaGetLastError();
  }
  constexpr int kDqSmem = dq_smem_bytes<kHeadDim>();
  auto kernel = flash_bwd_dq_kernel<kHeadDim, kIsBf16>;
  if ((err = allow_smem(kernel, kDqSmem)) != cudaSuccess) return err;
  const int m_blocks = (params.seqlen_q + TrDq::kBlockM - 1) / TrDq::kBlockM;
  if (m_blocks == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(params.batch) * params.heads_q, m_blocks);
  kernel<<<grid, TrDq::kNThreads, kDqSmem, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace attention
}  // namespace pykernels
#endif  // __CUDACC_RTC__
