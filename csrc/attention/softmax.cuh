// Online softmax (Milakov & Gimelshein 2018; FlashAttention-2) in log2 units.
//
// Per query row, over key tiles K_1 .. K_n, with x the tile's scores already
// in log2 units (x = s * softmax_scale_log2, ALiBi included):
//
//     m_0 = sink * LOG2E (or -inf),   l_0 = 1 (or 0),   o_0 = 0
//     m_t = max(m_{t-1}, max_j x_tj)
//     p_tj = exp2(x_tj - m_t)                      (masked: x = -inf, p = 0)
//     l_t = l_{t-1} exp2(m_{t-1} - m_t) + sum_j p_tj
//     o_t = o_{t-1} exp2(m_{t-1} - m_t) + P_t V_t
//     out = o_n / l_n,    lse = (m_n + log2 l_n) / LOG2E
//
// A learned sink logit (gpt-oss) is a key of logit `sink` and value 0, so it
// only seeds m and l. A row that has seen no visible key yet has m = -inf; it
// shifts by 0 instead so that exp2(-inf - -inf) never makes a NaN, and it ends
// with l = 0: zeros out, lse = -inf.
//
// Layout: a thread holds two rows per 16-row fragment (g and g + 8, mma.cuh)
// and, for each, 2 columns of every 8-wide key tile; the other three threads
// of its quad hold the rest of the row. Row maxima are reduced across the quad
// with two shuffles every tile; row sums stay per thread (alpha is the same for
// the whole quad) and are reduced once at the end.
#pragma once

#include "attention/alibi.cuh"

namespace pykernels {
namespace attention {

constexpr float LN2 = 0.6931471805599453f;  // ln(2): lse = log2-lse * LN2

__device__ __forceinline__ float neg_inf() { return -__int_as_float(0x7f800000); }

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

template <int kMFrags>
struct OnlineSoftmax {
  static constexpr int kRows = 2 * kMFrags;  // rows this thread holds: (mf, half) -> 2 mf + half
  float m[kRows];                            // running max, log2 units
  float l[kRows];                            // running sum, this thread's columns only

  // sink_log2: the sink logit times LOG2E, or -inf when there is none.
  // `leader` is the one thread of the quad that owns the sink's 1 in l.
  __device__ __forceinline__ void init(float sink_log2, bool leader) {
    const bool has_sink = sink_log2 != neg_inf();
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      m[r] = sink_log2;
      l[r] = (has_sink && leader) ? 1.f : 0.f;
    }
  }

  // Adds d[r] to row r's running max: the scores of row r are then taken as
  // shifted by d[r] (ALiBi's row term, apply_alibi_log2_at_or_before). +d
  // after init shifts the sink logit into that frame; -d before finalize
  // shifts the lse back (l and the output are unchanged by a row shift).
  __device__ __forceinline__ void shift(const float (&d)[kRows]) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) m[r] += d[r];
  }

  // One key tile: S holds raw scores times `scale` gives log2 units (scale =
  // softmax_scale_log2, folded into the exp2's FFMA; or 1 when ALiBi already
  // converted S). Overwrites S with p and returns, per row, the factor
  // alpha = exp2(m_old - m_new) by which the caller rescales its output rows.
  template <int kNTiles>
  __device__ __forceinline__ void update(float (&S)[kMFrags][kNTiles][4], float scale, float (&alpha)[kRows]) {
#pragma unroll
    for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = 2 * mf + h;
        float mx = neg_inf();
#pragma unroll
        for (int j = 0; j < kNTiles; ++j) mx = fmaxf(mx, fmaxf(S[mf][j][2 * h], S[mf][j][2 * h + 1]));
        // scale > 0 (the launcher routes other scales through the ALiBi path,
        // where scale is 1), so max(s) * scale = max(s * scale).
        const float m_new = fmaxf(m[r], quad_max(mx) * scale);
        const float m_use = (m_new == neg_inf()) ? 0.f : m_new;
        alpha[r] = exp2f(m[r] - m_use);
        m[r] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < kNTiles; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = exp2f(fmaf(S[mf][j][2 * h + e], scale, -m_use));
            S[mf][j][2 * h + e] = p;
            sum += p;
          }
        l[r] = l[r] * alpha[r] + sum;
      }
  }

  // After the last tile: the full row sums, 1 / l for the output (0 for a row
  // that saw nothing), and the natural-log lse.
  __device__ __forceinline__ void finalize(float (&inv_l)[kRows], float (&lse)[kRows]) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float sum = quad_sum(l[r]);
      inv_l[r] = (sum > 0.f) ? 1.f / sum : 0.f;
      lse[r] = (sum > 0.f) ? (m[r] + log2f(sum)) * LN2 : neg_inf();
    }
  }
};

}  // namespace attention
}  // namespace pykernels
