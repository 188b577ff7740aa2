// Hopper warpgroup MMA (wgmma.mma_async, sm_90a): shared-memory descriptors
// and the two instruction shapes the sm90 kernels use.
//
// A warpgroup (4 consecutive warps, the first a multiple of 4) issues one
// m64nNk16 together: D (64 x N, fp32, in registers) += A (64 x 16) B (16 x N).
// B always comes from shared memory through a 64-bit descriptor; A comes from
// shared memory too (Q K^T) or from registers (P V, where P was just computed).
// The instructions are asynchronous: fence() before the first one that reads
// registers other code wrote, commit() to close a group, wait<N>() until at
// most N groups are still running. D's registers must not be touched between
// issue and wait.
//
// Register layouts (PTX ISA, "wgmma 64NxK16 register fragments"): warp w of
// the warpgroup owns rows 16w..16w+15 of D and of a register A; within the
// warp they are exactly the mma.sync m16n8k16 fragments of mma.cuh, one
// 8-column C tile per d[j][0..3] and the A layout a0..a3 for each k16 step.
// So the softmax, mask and ALiBi code written for mma.sync tiles runs on
// wgmma accumulators unchanged (kMFrags = 1).
//
// Shared memory (PTX ISA, "Matrix descriptor"; the layouts are CuTe's
// canonical GMMA layouts): every operand tile here is stored as column blocks
// of 64 16-bit elements (128 bytes per row), rows consecutive, with the
// 128-byte swizzle: 16-byte chunk c of row r sits at chunk c ^ (r % 8)
// (smem_tile.cuh). A descriptor holds the start address, the swizzle mode and
// two strides, in 16-byte units:
//   * K-major operand (Q, K: the k16 slice lies along a row): SBO = the
//     distance between 8-row groups (8 x 128 = 1024 bytes); LBO is unused
//     (1). A k16 step moves the start address by 32 bytes inside the 128-byte
//     row (the hardware applies the swizzle to the final address), and a new
//     64-column block every 4 steps.
//   * MN-major operand (V as B of P V: N = head dim runs along a row, K = key
//     down the rows; in the backward also dO and Q as B of dV and dK, K as B
//     of dQ, and dS^T as the transposed A of dQ): LBO = the distance between
//     64-column blocks, SBO = between 8-row groups along K (1024 bytes); a
//     k16 step moves 16 rows (2048 bytes).
// Every 64-column block must start on a 1024-byte boundary.
// SwizzledTile::k_major_desc and mn_major_desc (smem_tile.cuh) build these
// descriptors; csrc/tests/smem_layout_test.cu checks them, and the layout,
// against CuTe's make_gmma_desc and canonical layouts.
//
// Hand-written PTX for the reason mma.cuh gives (NVRTC compiles these headers
// too). Everything below needs sm_90a: callers guard with PK_SM90A.
#pragma once

#include "common/host_device.h"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define PK_SM90A 1
#else
#define PK_SM90A 0
#endif

namespace pykernels {
namespace attention {
namespace sm90 {

// 128-byte swizzle in the descriptor's 2-bit layout field (bits 62-63).
constexpr unsigned long long kDescSwizzle128 = 1ull << 62;

// Descriptor of a 128B-swizzled tile at shared-space byte address `addr`.
// (Host-callable so that csrc/tests/smem_layout_test.cu can check the
// descriptors of smem_tile.cuh against CuTe's make_gmma_desc.)
PK_HOST_DEVICE constexpr unsigned long long smem_desc(unsigned addr, unsigned lbo_bytes, unsigned sbo_bytes) {
  return static_cast<unsigned long long>((addr & 0x3FFFF) >> 4) |
         (static_cast<unsigned long long>((lbo_bytes >> 4) & 0x3FFF) << 16) |
         (static_cast<unsigned long long>((sbo_bytes >> 4) & 0x3FFF) << 32) | kDescSwizzle128;
}

__device__ __forceinline__ void fence() {
#if PK_SM90A
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void commit() {
#if PK_SM90A
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

template <int kPending>
__device__ __forceinline__ void wait() {
#if PK_SM90A
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}

// Keeps the compiler from moving accumulator reads or writes across an async
// wgmma: an empty asm that "uses and redefines" every register of the tile.
template <int kTiles>
__device__ __forceinline__ void fence_operand(float (&d)[kTiles][4]) {
#pragma unroll
  for (int j = 0; j < kTiles; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[j][e])::"memory");
}

// Operand lists: wgmma names every accumulator register.
#define PK_WGMMA_REGS32                                                              \
  "{"                                                                                \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "           \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define PK_WGMMA_REGS64                                                              \
  "{"                                                                                \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "           \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define PK_D4(j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define PK_D32() PK_D4(0), PK_D4(1), PK_D4(2), PK_D4(3), PK_D4(4), PK_D4(5), PK_D4(6), PK_D4(7)
#define PK_D64() PK_D32(), PK_D4(8), PK_D4(9), PK_D4(10), PK_D4(11), PK_D4(12), PK_D4(13), PK_D4(14), PK_D4(15)

// One instruction, A and B from shared memory. `acc` = 0 overwrites d.
// The operand numbers after the accumulators: A, B, acc, transpose-B, then
// transpose-A (an MN-major A: the backward's dQ = dS K reads dS from its
// key-major dS^T tile).
// (On targets other than sm_90a both instructions are empty: the kernels
// that call them are compiled there but never launched, flash_fwd_launch.cuh.)
#if PK_SM90A
#define PK_WGMMA_SS(N, TY, REGS, OPS, IA, IB, IACC, ITB, ITA)                                          \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" IACC ", 0;\n"                                     \
               "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " " REGS ", %" IA ", %" IB \
               ", p, 1, 1, %" ITA ", %" ITB ";\n}\n"                                                   \
               : OPS()                                                                                \
               : "l"(desc_a), "l"(desc_b), "r"(acc), "n"(kTransB), "n"(kTransA))

// One instruction, A from registers (four 16-bit pairs per thread, the
// mma.sync A layout), B from shared memory.
#define PK_WGMMA_RS(N, TY, REGS, OPS, IA0, IA1, IA2, IA3, IB, IACC, ITB)                                      \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" IACC ", 0;\n"                                              \
               "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " " REGS ", {%" IA0 ", %" IA1 ", %" IA2 \
               ", %" IA3 "}, %" IB ", p, 1, 1, %" ITB ";\n}\n"                                                 \
               : OPS()                                                                                         \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(acc), "n"(kTransB))
#else
#define PK_WGMMA_SS(...)
#define PK_WGMMA_RS(...)
#endif

template <int N, bool kIsBf16>
struct Wgmma;

// One specialisation per N: the accumulator operand list and the numbers of
// the operands after it (A or its four registers, B, acc, transpose-B;
// SS's transpose-A follows its transpose-B).
#define PK_WGMMA_SHAPE(N, REGS, OPS, I0, I1, I2, I3, I4, I5, I6)                                          \
  template <bool kIsBf16>                                                                                 \
  struct Wgmma<N, kIsBf16> {                                                                              \
    template <int kTransB, int kTransA = 0>                                                               \
    __device__ __forceinline__ static void ss(float (&d)[N / 8][4], unsigned long long desc_a,            \
                                              unsigned long long desc_b, int acc) {                       \
      if constexpr (kIsBf16) {                                                                            \
        PK_WGMMA_SS(N, "bf16", REGS, OPS, I0, I1, I2, I3, I4);                                            \
      } else {                                                                                            \
        PK_WGMMA_SS(N, "f16", REGS, OPS, I0, I1, I2, I3, I4);                                             \
      }                                                                                                   \
    }                                                                                                     \
    template <int kTransB>                                                                                \
    __device__ __forceinline__ static void rs(float (&d)[N / 8][4], const unsigned (&a)[4],               \
                                              unsigned long long desc_b, int acc) {                       \
      if constexpr (kIsBf16) {                                                                            \
        PK_WGMMA_RS(N, "bf16", REGS, OPS, I0, I1, I2, I3, I4, I5, I6);                                    \
      } else {                                                                                            \
        PK_WGMMA_RS(N, "f16", REGS, OPS, I0, I1, I2, I3, I4, I5, I6);                                     \
      }                                                                                                   \
    }                                                                                                     \
  };

PK_WGMMA_SHAPE(64, PK_WGMMA_REGS32, PK_D32, "32", "33", "34", "35", "36", "37", "38")
PK_WGMMA_SHAPE(128, PK_WGMMA_REGS64, PK_D64, "64", "65", "66", "67", "68", "69", "70")

#undef PK_WGMMA_SHAPE
#undef PK_WGMMA_SS
#undef PK_WGMMA_RS
#undef PK_D64
#undef PK_D32
#undef PK_D4
#undef PK_WGMMA_REGS64
#undef PK_WGMMA_REGS32

}  // namespace sm90
}  // namespace attention
}  // namespace pykernels
