// Tensor-core building blocks of the attention kernels: ldmatrix and mma.sync
// m16n8k16 (packing float pairs into 16-bit pairs: common/half_pairs.cuh).
//
// Why hand-written PTX instead of CuTe atoms. The CuPy backend compiles these
// same headers with NVRTC, and the whole kernel needs only the four
// instructions below, so a dozen lines of PTX keep every header self-contained
// (no include but common/half_pairs.cuh, itself PTX) and identical under nvcc
// and NVRTC. What CuTe would cost, measured (scripts/dev/cute_header_cost.py,
// profiling/results/cpu-2026-12-08/cute_header_cost.json; nvcc 13.0,
// nvidia-cutlass 4.2, sm_90a, 2 cores):
// * nvcc: including cute/swizzle.hpp alone adds 2.3 s to a translation unit,
//   cute/tensor.hpp or the sm90 atom set 5.1-5.2 s, where our whole d = 128
//   forward unit (mma.sync and wgmma kernels) takes 2.8 s: about 3x per unit.
// * NVRTC 13.0 takes cute/tensor.hpp only with the CUDA toolkit's CCCL
//   headers on its include path and -default-device (which makes every
//   unannotated function a device function); with our options alone it
//   stops at <cuda/std/cassert>.
// * The GPU machines' image has no CUTLASS headers; every build there would
//   carry the wheel.
// These are costs, not a speed verdict: no CuTe formulation of a kernel has
// been timed against ours. CuTe is our oracle instead: on the host, CI checks
// the Hopper kernels' swizzled layouts and wgmma descriptors against CuTe's
// (csrc/tests/smem_layout_test.cu).
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"), for lane
// l with g = l / 4 and t = l % 4:
//   A (16x16, row-major), 4 regs:  a0 (g, 2t..2t+1)  a1 (g+8, 2t..)  a2 (g, 2t+8..)  a3 (g+8, 2t+8..)
//   B (16x8, "col"),       2 regs:  b0 (k=2t..2t+1, n=g)  b1 (k=2t+8.., n=g)
//   C (16x8, fp32),        4 floats: c0,c1 (g, 2t..2t+1)  c2,c3 (g+8, 2t..2t+1)
// ldmatrix.x4 loads four 8x8 tiles: lanes 8i..8i+7 give the row addresses of
// tile i, and every lane receives (row g, cols 2t..2t+1) of each tile.
#pragma once

#include "common/half_pairs.cuh"

namespace pykernels {
namespace attention {

// Shared-memory address of a generic pointer, as ldmatrix and cp.async want it.
// (PTX rather than __cvta_generic_to_shared so that NVRTC needs no header.)
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  unsigned long long a;
  asm("cvta.to.shared.u64 %0, %1;\n" : "=l"(a) : "l"(p));
  return static_cast<unsigned>(a);
}

// Four 8x8 tiles of 16-bit elements, rows as stored.
__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Four 8x8 tiles, each transposed on the way (V is stored [key][d] but is the
// B operand with k = key).
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a * b on one 16x8x16 tile, fp32 accumulators; kIsBf16 picks the input type.
template <bool kIsBf16>
__device__ __forceinline__ void mma_16816(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  if constexpr (kIsBf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

}  // namespace attention
}  // namespace pykernels
