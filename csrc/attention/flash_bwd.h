// The attention backward: its parameter block and host entry point.
//
// The parameter block extends the forward's (same q, k, v, out, lse, mask
// and ALiBi fields, read instead of written) with dO, the gradients and the
// fp32 scratch the caller allocates. The struct part is device-safe (the CuPy
// backend compiles it with NVRTC); the host declarations are not.
#pragma once

#include "attention/params.h"
#include "common/host_device.h"

namespace pykernels {
namespace attention {

// Query rows are padded to this many in the lse/delta scratch, a multiple of
// every backward kBlockM, so a query tile copies them with whole 16-byte
// chunks and never reads past the end.
constexpr int kBwdRowPad = 128;

// Keys per CTA of the dK/dV kernel for each head dim, 16 per warp (why these:
// flash_bwd_kernel.cuh, BwdTraits). Here because the host sizes scratch by them.
// The Hopper dK/dV kernel (BwdSm90Traits) keeps 128 keys and 8 consumer warps
// of 16 keys at d = 64 and 128, so the dsink slots are the same.
PK_HOST_DEVICE constexpr int bwd_block_n(int head_dim) { return (head_dim == 64 || head_dim == 128) ? 128 : 64; }
PK_HOST_DEVICE constexpr int bwd_warps(int head_dim) { return bwd_block_n(head_dim) / 16; }
PK_HOST_DEVICE constexpr int bwd_threads(int head_dim) { return 32 * bwd_warps(head_dim); }

struct FlashBwdParams : FlashFwdParams {
  const void* dout;        // (B, Sq, Hq, D), strides below
  const float* dlse;       // (B, Hq, Sq) contiguous, or nullptr (no gradient into lse)
  float* lse_log2;         // scratch (B, Hq, seqlen_q_pad): lse * log2(e); +inf where lse = -inf or past Sq
  float* delta;            // scratch (B, Hq, seqlen_q_pad): rowsum(dO * O) - dlse; 0 past Sq
  float* dq_accum;         // (B, Sq, Hq, D) fp32 contiguous, zeroed; nullptr = deterministic dq kernel
  void* dq;                // (B, Sq, Hq, D)
  void* dk;                // (B, Sk, Hkv, D)
  void* dv;                // (B, Sk, Hkv, D)
  // The sink-logit gradient's key part, sum_i exp(sink - lse_i) sum_j P_ij dP_ij,
  // one slot per (batch, query head, key tile, warp) of the dK/dV kernel
  // (flash_bwd_dsink_slots), zeroed by the caller; nullptr without sink logits.
  // sink_logits (the forward's field) must then be set.
  float* dsink_partial;

  index_t do_batch_stride, do_row_stride, do_head_stride;
  index_t dq_batch_stride, dq_row_stride, dq_head_stride;
  index_t dk_batch_stride, dk_row_stride, dk_head_stride;
  index_t dv_batch_stride, dv_row_stride, dv_head_stride;

  int seqlen_q_pad;  // Sq rounded up to kBwdRowPad
};

}  // namespace attention
}  // namespace pykernels

#ifndef __CUDACC_RTC__
#include <cuda_runtime.h>

namespace pykernels {
namespace attention {

// True when the backward kernels have a tile shape for this head dim.
bool flash_bwd_supports_head_dim(int head_dim);

// Slots of dsink_partial per (batch, query head): key tiles times warps of
// the dK/dV kernel at this head dim and key length (0 if unsupported).
long long flash_bwd_dsink_slots(int head_dim, long long seqlen_k);

// Launch the whole backward on `stream`: delta and lse in log2 units, dK/dV
// (with dQ by fp32 atomics when dq_accum is set, else a separate dQ kernel),
// then dQ's conversion. Returns cudaErrorInvalidValue for an unsupported head
// dim, else the first launch error.
cudaError_t run_flash_bwd(const FlashBwdParams& params, bool is_bf16, cudaStream_t stream);

// One (head dim, dtype); defined in flash_bwd_launch.cuh, instantiated by
// instantiations/flash_bwd_*.cu.
template <int kHeadDim, bool kIsBf16>
cudaError_t run_flash_bwd_(const FlashBwdParams& params, cudaStream_t stream);

}  // namespace attention
}  // namespace pykernels
#endif  // __CUDACC_RTC__
