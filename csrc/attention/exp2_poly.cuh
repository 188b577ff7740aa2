// 2^x for the softmax's p = exp2(x - m), x - m <= 0, on the FMA pipes
// instead of the special-function unit (MUFU).
//
// Why: per score, the tensor cores do 4 d FLOPs (Q K^T and P V) and MUFU one
// ex2. An H100 SM does 4096 dense bf16 FLOPs but only 16 ex2 per clock, so at
// d = 64 the two take the same time per tile (256 FLOPs / 4096 = 1 / 16) and
// any softmax the other warpgroups cannot hide stalls the tensor cores. The
// FMA pipes (128 lanes per clock) have room: computing a share of the
// exponentials with a polynomial moves that share off MUFU. This is
// FlashAttention-4's trick on Blackwell (Dao et al. 2025), where the tensor
// cores outran MUFU at every head dim.
//
// Method (Cody-Waite range reduction): x = j + f with j = round(x), f in
// [-1/2, 1/2]; 2^f by a degree-3 polynomial (relative minimax fit, max
// relative error 7.5e-5, well under the 2^-9 of the bf16 / fp16 P it feeds);
// j is added to the result's exponent field. Adding 1.5 * 2^23 rounds x to an
// integer held in the sum's low mantissa bits, so neither a float-to-int
// conversion (MUFU-rate too) nor a floor is needed, and the shift-add puts
// those bits straight into the exponent. 7 FMA-pipe instructions for one ex2.
//
// Inputs are clamped at -126, so a masked score (-inf) gives about 2^-126,
// not 0: harmless in P V and in a row sum that is at least 1 once any key is
// visible, and OnlineSoftmax::finalize treats sums below 1/2 as empty rows.
#pragma once

namespace pykernels {
namespace attention {

__device__ __forceinline__ float exp2_poly(float x) {
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23
  x = fmaxf(x, -126.f);
  const float t = __fadd_rn(x, kRound);  // _rn: kept apart from the FMAs (no contraction)
  const float f = __fsub_rn(x, __fsub_rn(t, kRound));
  const float p = fmaf(fmaf(fmaf(0.05517168f, f, 0.24261117f), f, 0.69326097f), f, 0.99992806f);
  // t's low mantissa bits hold j in two's complement; << 23 moves them (and
  // nothing else of t) into the exponent field.
  return __int_as_float(__float_as_int(p) + (__float_as_int(t) << 23));
}

}  // namespace attention
}  // namespace pykernels
