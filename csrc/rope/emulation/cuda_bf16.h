// Host bfloat16 for the emulated kernel (see cuda_fp16.h here): the bits of
// torch.bfloat16, rounded to nearest even like __float2bfloat16_rn.
#pragma once

#include <cstdint>
#include <cstring>

struct alignas(2) __nv_bfloat16 {
  uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t u = uint32_t(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  constexpr uint32_t kAbsMask = 0x7fffffffu, kInf = 0x7f800000u, kQuietBit = 0x40u;
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & kAbsMask) > kInf) return {uint16_t((u >> 16) | kQuietBit)};  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                      // round half to even
  return {uint16_t(u >> 16)};
}
