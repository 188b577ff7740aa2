// run_flash_fwd: the head dim and dtype switch. The kernels themselves are
// compiled in instantiations/, one file per (head dim, dtype), in parallel.
#include "attention/flash_fwd.h"
#include "attention/static_switch.h"

namespace pykernels {
namespace attention {

bool flash_fwd_supports_head_dim(int head_dim) {
  return HEADDIM_SWITCH(head_dim, kHeadDim, false, [&] { return kHeadDim > 0; });
}

cudaError_t run_flash_fwd(const FlashFwdParams& params, bool is_bf16, cudaStream_t stream) {
  return HEADDIM_SWITCH(params.head_dim, kHeadDim, cudaErrorInvalidValue, [&] {
    return BOOL_SWITCH(is_bf16, kIsBf16, [&] { return run_flash_fwd_<kHeadDim, kIsBf16>(params, stream); });
  });
}

}  // namespace attention
}  // namespace pykernels
