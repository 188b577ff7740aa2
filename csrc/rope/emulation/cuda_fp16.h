// Host stand-ins for the CUDA names rotary.cuh uses, so that g++ can compile
// the kernel and run it one thread at a time (tests/test_rope.py checks its
// index math on CPU; a GPU runs the real thing). Not part of any build.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#define __global__
#define __host__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct EmulatedDim3 {
  unsigned x = 0, y = 0, z = 0;
};
inline EmulatedDim3 threadIdx, blockIdx;

// IEEE half through the compiler's _Float16 (GCC >= 12 on x86-64), whose
// conversions round to nearest even like __float2half_rn.
struct alignas(2) __half {
  uint16_t bits;
};

inline float __half2float(__half h) {
  _Float16 f;
  std::memcpy(&f, &h.bits, sizeof f);
  return static_cast<float>(f);
}

inline __half __float2half_rn(float x) {
  const _Float16 f = static_cast<_Float16>(x);
  __half h;
  std::memcpy(&h.bits, &f, sizeof f);
  return h;
}

inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
inline void __sincosf(float x, float* s, float* c) {
  *s = std::sin(x);
  *c = std::cos(x);
}
using std::rint;
