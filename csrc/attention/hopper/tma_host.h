// Host side of tma.cuh: tensor maps of (B, S, H, D) 16-bit tensors, encoded
// through the driver's cuTensorMapEncodeTiled. nvcc only, never NVRTC.
//
// The driver function is looked up through the runtime
// (cudaGetDriverEntryPointByVersion) rather than linked, so neither the
// torch extension nor the CMake library needs -lcuda.
#pragma once

#ifndef __CUDACC_RTC__
#include <cuda.h>
#include <cuda_runtime.h>

#include "attention/hopper/tma.cuh"
#include "attention/params.h"

namespace pykernels {
namespace attention {
namespace sm90 {

static_assert(sizeof(TmaMap) == sizeof(CUtensorMap) && alignof(TmaMap) >= alignof(CUtensorMap),
              "TmaMap mirrors the driver's CUtensorMap");

using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                   const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

inline EncodeTiledFn encode_tiled_fn() {
  static EncodeTiledFn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t err = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &p, cudaEnableDefault, &found);
#endif
    return (err == cudaSuccess && found == cudaDriverEntryPointSuccess) ? reinterpret_cast<EncodeTiledFn>(p) : nullptr;
  }();
  return fn;
}

// The map of a (batch, seqlen, heads, head_dim) tensor of 16-bit elements
// with the given element strides (the last dimension contiguous), moving
// boxes of 64 columns by box_rows rows of one head, 128B-swizzled (tma.cuh).
// A dimension of size 1 is never stepped over, so its stride, which the
// Python side leaves arbitrary, is replaced by the one a contiguous tensor
// would have.
inline cudaError_t encode_head_map(TmaMap* map, const void* base, int batch, int seqlen, int heads, int head_dim,
                                   index_t batch_stride, index_t row_stride, index_t head_stride, int box_rows) {
  const EncodeTiledFn encode = encode_tiled_fn();
  if (encode == nullptr) return cudaErrorNotSupported;
  auto bytes = [](int size, index_t stride, index_t contiguous) {
    return static_cast<cuuint64_t>(2 * (size == 1 ? contiguous : stride));
  };
  const index_t d = head_dim;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(head_dim), static_cast<cuuint64_t>(seqlen),
                              static_cast<cuuint64_t>(heads), static_cast<cuuint64_t>(batch)};
  const cuuint64_t strides[3] = {bytes(seqlen, row_stride, heads * d), bytes(heads, head_stride, d),
                                 bytes(batch, batch_stride, static_cast<index_t>(seqlen) * heads * d)};
  const cuuint32_t box[4] = {64, static_cast<cuuint32_t>(box_rows), 1, 1};
  const cuuint32_t steps[4] = {1, 1, 1, 1};
  const CUresult r = encode(reinterpret_cast<CUtensorMap*>(map), CU_TENSOR_MAP_DATA_TYPE_UINT16, 4,
                            const_cast<void*>(base), dims, strides, box, steps, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

}  // namespace sm90
}  // namespace attention
}  // namespace pykernels
#endif  // __CUDACC_RTC__
