// Launching the forward kernel for one (head dim, dtype): which kernel (the
// Hopper wgmma one where it applies), grid, shared memory and the one
// compile-time flag (ALiBi). Host code: nvcc only, never NVRTC.
#pragma once

#ifndef __CUDACC_RTC__
#include <cuda_runtime.h>

#include "attention/flash_fwd.h"
#include "attention/flash_fwd_kernel.cuh"
#include "attention/flash_fwd_sm90_kernel.cuh"
#include "attention/hopper/runs_here.h"
#include "attention/hopper/tma_host.h"
#include "attention/static_switch.h"

namespace pykernels {
namespace attention {

// Query rows per work tile of the Hopper forward. At d = 64, 192 (three
// consumer warpgroups, FA3's shape) make every K/V tile feed 1.5x the rows:
// causal 489 vs 441, causal + ALiBi 444 vs 413 TFLOP/s. A 1024-wide window
// loses with them (308 vs 329, 4 sinks + window 280 vs 288): a taller tile
// spans a wider band of keys, so more of its key tiles are part masked (H100,
// 16K, profiling/results/h100-2026-12-07c/checks/ab_d64_pingpong.jsonl).
// Queries that fit one 128-row tile gain nothing from 192 either.
inline bool sm90_d64_wide_rows(const FlashFwdParams& params) {
  return params.window_left < 0 && params.seqlen_q > 128;
}

// Out through TMA stores, with -DPK_SM90_TMA_STORE=-1 (kernel_traits.cuh):
// up to 2K keys, where the static order measured +6% at 1K and +4% to +6%
// at 2K on every variant (H100, profiling/results/h100-2026-12-08/
// ab_tma_store.jsonl); at 16K it lost 4% on the window
// (h200-2026-12-07/checks/ab_tma.jsonl). Not yet timed with the tile queue.
inline bool sm90_tma_store_pays(const FlashFwdParams& params) { return params.seqlen_k <= 2048; }

template <int kHeadDim, int kBlockM, bool kIsBf16, bool kHasAlibi>
cudaError_t launch_flash_fwd_sm90(const FlashFwdParams& params, cudaStream_t stream) {
  using Tr = FwdSm90Traits<kHeadDim, kBlockM>;
  auto kernel = flash_fwd_sm90_kernel<kHeadDim, kBlockM, kIsBf16, kHasAlibi>;
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tr::kSmemBytes);
  if (err != cudaSuccess) return err;
  // Persistent: one CTA per SM (at most one per work tile), each walking its
  // share of the work tiles (flash_fwd_sm90_kernel.cuh).
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
    return cudaGetLastError();
  }
  const long long work = static_cast<long long>(params.batch) * params.heads_q *
                         ((params.seqlen_q + Tr::kBlockM - 1) / Tr::kBlockM);
  if (work >= (1ll << 31)) return cudaErrorInvalidValue;
  const unsigned grid = static_cast<unsigned>(work < sms ? work : sms);
  // The Python side hands over 16-byte aligned rows and strides in multiples
  // of 8 elements (pykernels/backends/cuda/attention.py), all a tensor map
  // needs; out is freshly allocated.
  sm90::Sm90FwdMaps maps{};
  const auto& p = params;
  cudaError_t map_err = cudaSuccess;
  auto encode = [&](sm90::TmaMap* m, const void* base, int s, int h, index_t bs, index_t rs, index_t hs, int rows) {
    if (map_err == cudaSuccess) map_err = sm90::encode_head_map(m, base, p.batch, s, h, kHeadDim, bs, rs, hs, rows);
  };
  if constexpr (Tr::kTmaLoad) {
    encode(&maps.q, p.q, p.seqlen_q, p.heads_q, p.q_batch_stride, p.q_row_stride, p.q_head_stride, Tr::kBlockM);
  }
  if (Tr::kTmaLoad && p.seqlen_k > 0) {  // no key: no tile is loaded, and a map has no empty dimension
    encode(&maps.k, p.k, p.seqlen_k, p.heads_kv, p.k_batch_stride, p.k_row_stride, p.k_head_stride, Tr::kBlockN);
    encode(&maps.v, p.v, p.seqlen_k, p.heads_kv, p.v_batch_stride, p.v_row_stride, p.v_head_stride, Tr::kBlockN);
  }
  const bool store_o = Tr::kTmaStore && (Tr::kTmaStoreAlways || sm90_tma_store_pays(p));
  if (store_o) encode(&maps.o, p.out, p.seqlen_q, p.heads_q, p.o_batch_stride, p.o_row_stride, p.o_head_stride, 16);
  if (map_err != cudaSuccess) return map_err;
  // The tile queue (hopper/tile_queue.cuh) where it pays, with the caller's
  // counter (FlashFwdParams::tile_counter) zeroed on the launch's stream; a
  // null counter passed to the kernel means the static order.
  int* tile_counter = nullptr;
  if (p.tile_counter != nullptr && flash_fwd_takes_tile_queue(p)) {
    tile_counter = p.tile_counter;
    const cudaError_t e = cudaMemsetAsync(tile_counter, 0, sizeof(int), stream);
    if (e != cudaSuccess) return e;
  }
  kernel<<<grid, Tr::kNThreads, Tr::kSmemBytes, stream>>>(params, maps, tile_counter, store_o ? 1 : 0);
  return cudaGetLastError();
}

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
    if (params.seqlen_q == 0 || params.batch == 0 || params.heads_q == 0) return cudaSuccess;
    if constexpr (kHeadDim == 64 || kHeadDim == 128) {
      // Both row counts are built for the same architectures, so one answers for the other.
      if (sm90_kernel_runs_here(flash_fwd_sm90_kernel<kHeadDim, 128, kIsBf16, kHasAlibi>, "PYKERNELS_FWD_KERNEL")) {
        if constexpr (kHeadDim == 64 && PK_SM90_D64_WIDE) {
          if (sm90_d64_wide_rows(params)) return launch_flash_fwd_sm90<kHeadDim, 192, kIsBf16, kHasAlibi>(params, stream);
        }
        return launch_flash_fwd_sm90<kHeadDim, 128, kIsBf16, kHasAlibi>(params, stream);
      }
    }
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
