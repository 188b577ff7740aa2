// Two floats <-> one 32-bit register holding two 16-bit values (bf16 or
// fp16), lo in the low half, which is element order in memory.
//
// Shared by the attention kernels (MMA operands and epilogues) and the rotary
// kernel (16-byte vectors handled as four words). Plain PTX: identical under
// nvcc and NVRTC, and no includes.
#pragma once

namespace pykernels {

// cvt packs its first source into the high half.
template <bool kIsBf16>
__device__ __forceinline__ unsigned pack_float2(float lo, float hi) {
  unsigned r;
  if constexpr (kIsBf16) {
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  } else {
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  }
  return r;
}

// A bf16 is the top half of a float32, so unpacking it is a shift or a mask.
template <bool kIsBf16>
__device__ __forceinline__ void unpack_float2(unsigned r, float& lo, float& hi) {
  if constexpr (kIsBf16) {
    lo = __uint_as_float(r << 16);
    hi = __uint_as_float(r & 0xffff0000u);
  } else {
    asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.f32.f16 %0, l;\n cvt.f32.f16 %1, h;\n}\n"
        : "=f"(lo), "=f"(hi)
        : "r"(r));
  }
}

}  // namespace pykernels
