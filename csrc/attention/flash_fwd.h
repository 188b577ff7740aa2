// Host entry point of the attention forward kernel: raw pointers in a
// FlashFwdParams, no torch. Used by csrc/bindings/attention.cpp and by any
// standalone (CMake) caller.
#pragma once

#include <cuda_runtime.h>

#include "attention/params.h"

namespace pykernels {
namespace attention {

// True when the forward kernel has a tile shape for this head dim.
bool flash_fwd_supports_head_dim(int head_dim);

// Whether run_flash_fwd would take the Hopper forward's tile queue for these
// parameters (the knob, the head dim, tile_queue_pays in hopper/
// work_order.cuh), and so needs params.tile_counter: one int of device
// scratch, which it zeroes on the stream. Without one it takes the static
// order. (It does not ask the device: off Hopper the counter goes unused.)
bool flash_fwd_takes_tile_queue(const FlashFwdParams& params);

// Launch on `stream`. Returns cudaErrorInvalidValue for an unsupported head
// dim, else the launch's error (cudaSuccess when it was queued).
cudaError_t run_flash_fwd(const FlashFwdParams& params, bool is_bf16, cudaStream_t stream);

// One (head dim, dtype) of the above; defined in flash_fwd_launch.cuh and
// instantiated once per pair by instantiations/*.cu.
template <int kHeadDim, bool kIsBf16>
cudaError_t run_flash_fwd_(const FlashFwdParams& params, cudaStream_t stream);

}  // namespace attention
}  // namespace pykernels
