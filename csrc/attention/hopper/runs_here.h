// Host side: whether an sm90 (wgmma) kernel can run on the current device.
// nvcc only, never NVRTC.
#pragma once

#ifndef __CUDACC_RTC__
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

namespace pykernels {
namespace attention {

// True when `kernel` has sm_90a code for the current device (a build for
// "80" only, or a GPU other than Hopper, does not) and the environment
// variable `force_env` (PYKERNELS_FWD_KERNEL, PYKERNELS_BWD_KERNEL) is not
// "sm80", which forces the mma.sync kernels for A/B benchmarks and for tests
// of both paths.
template <class Kernel>
bool sm90_kernel_runs_here(Kernel kernel, const char* force_env) {
  const char* force = std::getenv(force_env);
  if (force != nullptr && std::strcmp(force, "sm80") == 0) return false;
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess || major != 9) {
    return false;
  }
  cudaFuncAttributes attr;
  return cudaFuncGetAttributes(&attr, kernel) == cudaSuccess && attr.binaryVersion == 90;
}

}  // namespace attention
}  // namespace pykernels
#endif  // __CUDACC_RTC__
