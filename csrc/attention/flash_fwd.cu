// run_flash_fwd: the head dim and dtype switch. The kernels themselves are
// compiled in instantiations/, one file per (head dim, dtype), in parallel.
#include "attention/flash_fwd.h"
#include "attention/hopper/work_order.cuh"
#include "attention/kernel_traits.cuh"
#include "attention/static_switch.h"

namespace pykernels {
namespace attention {

bool flash_fwd_supports_head_dim(int head_dim) {
  return HEADDIM_SWITCH(head_dim, kHeadDim, false, [&] { return kHeadDim > 0; });
}

bool flash_fwd_takes_tile_queue(const FlashFwdParams& p) {
  if (!kSm90TileQueueBuilt || (p.head_dim != 64 && p.head_dim != 128)) return false;
  return kSm90TileQueueAlways ||
         sm90::tile_queue_pays(p.seqlen_k, p.window_left, p.window_right, p.causal != 0, p.head_dim);
}

cudaError_t run_flash_fwd(const FlashFwdParams& params, bool is_bf16, cudaStream_t stream) {
  return HEADDIM_SWITCH(params.head_dim, kHeadDim, cudaErrorInvalidValue, [&] {
    return BOOL_SWITCH(is_bf16, kIsBf16, [&] { return run_flash_fwd_<kHeadDim, kIsBf16>(params, stream); });
  });
}

}  // namespace attention
}  // namespace pykernels
