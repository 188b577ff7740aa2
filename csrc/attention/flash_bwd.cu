// run_flash_bwd: the head dim and dtype switch. The kernels are compiled in
// instantiations/flash_bwd_*.cu, one file per (head dim, dtype), in parallel.
#include "attention/flash_bwd.h"
#include "attention/static_switch.h"

namespace pykernels {
namespace attention {

// d = 256 is left out: dK and dV alone would take 256 fp32 registers per
// thread with a warp owning 16 whole key rows (flash_bwd_kernel.cuh).
bool flash_bwd_supports_head_dim(int head_dim) {
  return head_dim != 256 && HEADDIM_SWITCH(head_dim, kHeadDim, false, [&] { return kHeadDim > 0; });
}

long long flash_bwd_dsink_slots(int head_dim, long long seqlen_k) {
  if (!flash_bwd_supports_head_dim(head_dim)) return 0;
  const int block_n = bwd_block_n(head_dim);
  return (seqlen_k + block_n - 1) / block_n * bwd_warps(head_dim);
}

cudaError_t run_flash_bwd(const FlashBwdParams& params, bool is_bf16, cudaStream_t stream) {
  if (!flash_bwd_supports_head_dim(params.head_dim)) return cudaErrorInvalidValue;
  return HEADDIM_SWITCH(params.head_dim, kHeadDim, cudaErrorInvalidValue, [&] {
    if constexpr (kHeadDim == 256) {
      return cudaErrorInvalidValue;
    } else {
      return BOOL_SWITCH(is_bf16, kIsBf16, [&] { return run_flash_bwd_<kHeadDim, kIsBf16>(params, stream); });
    }
  });
}

}  // namespace attention
}  // namespace pykernels
