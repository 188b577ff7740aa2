// Rotary position embedding (RoPE) of q and k in one launch.
//
// For position p and frequency i (0 <= i < R/2, R = rotary dim), the pair
// (x1, x2) turns by theta = p * inv_freq[i]:
//
//     x1' = x1 cos(theta) - x2 sin(theta)
//     x2' = x2 cos(theta) + x1 sin(theta)          (conjugate: theta -> -theta)
//
// Pair i is (x[i], x[i + R/2]) in the GPT-NeoX layout and (x[2i], x[2i+1]) in
// the GPT-J (interleaved) layout. Features R..D-1 pass through untouched.
//
// Work split. Rows are the (token, head) rows of q followed by those of k, so
// one launch serves both. A row has R/2 / VEC rotation items, each VEC
// consecutive frequencies: two 16-byte loads and stores of x (neox: one at
// f0, one at R/2 + f0; interleaved: 2*VEC contiguous elements), plus, when
// the output is a separate tensor, (D - R) / VEC tail items that copy one
// vector. Items are numbered token-major, then row, then item, and a block of
// kThreads threads strides through the items of tokens_per_block tokens;
// consecutive threads touch consecutive 16-byte chunks of a row, so loads
// coalesce in every layout whose last dimension is contiguous. A thread keeps
// its cos/sin in registers while its (token, item) stays the same, which it
// does across all heads whenever the items per row divide kThreads: the table
// is read once per token, not once per head.
//
// cos/sin come either from a float32 table (cache_len, R/2) indexed by
// position (the default: precomputed in float64, any scaling, any attention
// factor) or, with FREQS_IN_KERNEL, from inv_freq and sincos in the kernel
// (scripts/bench_rope_dev.py measures both). A position outside the table
// reads nothing and writes NaN to the rotated features of its row.
//
// No torch and no host code: nvcc builds it through rotary_launch.cu and the
// CuPy backend compiles it with NVRTC.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace pykernels {
namespace rope {

// NVRTC has no <cstdint>; a long long is 64 bits on every CUDA target.
using index_t = long long;

// A block aims at kThreads * kItemsPerThread items: enough per thread to
// amortise the index math, and few enough blocks' worth of tokens that every
// SM gets many blocks. Launchers size tokens_per_block from these.
constexpr int kThreads = 256;
constexpr int kItemsPerThread = 4;

// Range reduction for the in-kernel sincos: theta in float64, reduced to
// [-pi, pi], so the fast sincos is accurate at any position.
constexpr double kTwoPi = 6.283185307179586476925286766559;
constexpr double kInvTwoPi = 0.15915494309189533576888376337251;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// N elements moved as one access: 16 bytes when N * sizeof(T) == 16.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ void load_vec(const T* p, float (&out)[N]) {
  const Vec<T, N> raw = *reinterpret_cast<const Vec<T, N>*>(p);
#pragma unroll
  for (int j = 0; j < N; ++j) out[j] = to_float(raw.v[j]);
}

template <typename T, int N>
__device__ __forceinline__ void store_vec(T* p, const float (&in)[N]) {
  Vec<T, N> raw;
#pragma unroll
  for (int j = 0; j < N; ++j) raw.v[j] = from_float<T>(in[j]);
  *reinterpret_cast<Vec<T, N>*>(p) = raw;
}

// N float32 table entries, as 16-byte loads when N is a multiple of 4 (the
// launcher then guarantees 16-byte alignment), else one by one.
template <int N>
__device__ __forceinline__ void load_floats(const float* p, float (&out)[N]) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int j = 0; j < N; j += 4) {
      const Vec<float, 4> f = *reinterpret_cast<const Vec<float, 4>*>(p + j);
#pragma unroll
      for (int e = 0; e < 4; ++e) out[j + e] = f.v[e];
    }
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = p[j];
  }
}

// cos/sin of VEC consecutive frequencies f0.. at position pos, sin negated
// for the conjugate rotation.
template <int VEC, bool FREQS_IN_KERNEL>
__device__ __forceinline__ void cos_sin_at(const float* cos_or_inv_freq, const float* sin_table, index_t table_stride,
                                           index_t cache_len, float freq_scale, index_t pos, int f0, float sign,
                                           float (&c)[VEC], float (&s)[VEC]) {
  if constexpr (FREQS_IN_KERNEL) {
    float inv_freq[VEC];
    load_floats<VEC>(cos_or_inv_freq + f0, inv_freq);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const double theta = static_cast<double>(pos) * static_cast<double>(inv_freq[j]);
      const float reduced = static_cast<float>(theta - rint(theta * kInvTwoPi) * kTwoPi);
      float sj, cj;
      __sincosf(reduced, &sj, &cj);
      c[j] = cj * freq_scale;
      s[j] = sj * freq_scale * sign;
    }
  } else {
    if (pos < 0 || pos >= cache_len) {
      const float nan = __int_as_float(0x7fc00000);
#pragma unroll
      for (int j = 0; j < VEC; ++j) c[j] = s[j] = nan;
      return;
    }
    load_floats<VEC>(cos_or_inv_freq + pos * table_stride + f0, c);
    load_floats<VEC>(sin_table + pos * table_stride + f0, s);
#pragma unroll
    for (int j = 0; j < VEC; ++j) s[j] *= sign;
  }
}

// The two vectors holding frequencies f0 .. f0+VEC-1 of a row: x[f0..] and
// x[R/2 + f0..] (neox), or the 2*VEC contiguous elements x[2 f0..] (interleaved).
template <bool INTERLEAVED, int VEC>
__device__ __forceinline__ int second_vector(int rot_half, int f0) {
  return INTERLEAVED ? 2 * f0 + VEC : rot_half + f0;
}
template <bool INTERLEAVED>
__device__ __forceinline__ int first_vector(int f0) {
  return INTERLEAVED ? 2 * f0 : f0;
}

// Turns the pairs held in (a, b) by their angles.
template <int VEC, bool INTERLEAVED>
__device__ __forceinline__ void rotate_pairs(float (&a)[VEC], float (&b)[VEC], const float (&c)[VEC],
                                             const float (&s)[VEC]) {
  if constexpr (INTERLEAVED) {
    // e = a ++ b; pair j is (e[2j], e[2j+1]) at frequency f0 + j.
    float e[2 * VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      e[j] = a[j];
      e[VEC + j] = b[j];
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float x1 = e[2 * j], x2 = e[2 * j + 1];
      e[2 * j] = x1 * c[j] - x2 * s[j];
      e[2 * j + 1] = x2 * c[j] + x1 * s[j];
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      a[j] = e[j];
      b[j] = e[VEC + j];
    }
  } else {
    // pair j is (a[j], b[j]) at frequency f0 + j.
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float x1 = a[j], x2 = b[j];
      a[j] = x1 * c[j] - x2 * s[j];
      b[j] = x2 * c[j] + x1 * s[j];
    }
  }
}

// One launch for q (q_heads rows per token) and k (k_heads rows, 0 for none).
// Strides are in elements, for the (batch, seq, head) dims of the (B, S, H, D)
// view; the last dim is contiguous. Position of token (b, s):
//
//     p = offset + s * seq_step + (ids ? ids[b * ids_sb + s * ids_ss] : 0)
//
// (per-batch offsets: ids (B,) with ids_ss = 0 and seq_step = 1; position ids
// (B, S): seq_step = 0). tail_vecs is (D - R) / VEC for a separate output, 0
// in place. In FREQS_IN_KERNEL mode cos_or_inv_freq is inv_freq (R/2,) and
// sin_table, table_stride and cache_len are unused.
template <typename T, int VEC, bool INTERLEAVED, bool FREQS_IN_KERNEL>
__global__ void __launch_bounds__(kThreads)
    rotary_kernel(const T* q, T* q_out, index_t q_sb, index_t q_ss, index_t q_sh, index_t qo_sb, index_t qo_ss,
                  index_t qo_sh, int q_heads,                                                    //
                  const T* k, T* k_out, index_t k_sb, index_t k_ss, index_t k_sh, index_t ko_sb, index_t ko_ss,
                  index_t ko_sh, int k_heads,                                                    //
                  const float* __restrict__ cos_or_inv_freq, const float* __restrict__ sin_table,
                  index_t table_stride, index_t cache_len, float freq_scale,                   //
                  const index_t* __restrict__ ids, index_t ids_sb, index_t ids_ss, int seq_step, index_t offset,  //
                  index_t n_tokens, int seqlen, int rot_half, int tail_vecs, int conjugate, int tokens_per_block) {
  const int groups = rot_half / VEC;
  const int items_per_row = groups + tail_vecs;
  const int items_per_token = (q_heads + k_heads) * items_per_row;
  const index_t token0 = static_cast<index_t>(blockIdx.x) * tokens_per_block;
  const index_t tokens_left = n_tokens - token0;
  const int ntok = tokens_left < tokens_per_block ? static_cast<int>(tokens_left) : tokens_per_block;
  const int n_items = ntok * items_per_token;
  const float sign = conjugate ? -1.f : 1.f;

  float c[VEC], s[VEC];
  int cached = -1;  // (local token, item) whose cos/sin are in c, s
  int cur_t = -1;   // local token whose (b, s) are in b, sq
  index_t b = 0, sq = 0;
  for (int i = threadIdx.x; i < n_items; i += kThreads) {
    const int t = i / items_per_token;
    const int rem = i - t * items_per_token;
    const int row = rem / items_per_row;
    const int g = rem - row * items_per_row;
    if (t != cur_t) {  // 64-bit division only when the token changes
      cur_t = t;
      const index_t token = token0 + t;
      b = token / seqlen;
      sq = token - b * seqlen;
    }

    const bool is_q = row < q_heads;
    const index_t h = is_q ? row : row - q_heads;
    const T* src = is_q ? q + b * q_sb + sq * q_ss + h * q_sh : k + b * k_sb + sq * k_ss + h * k_sh;
    T* dst = is_q ? q_out + b * qo_sb + sq * qo_ss + h * qo_sh : k_out + b * ko_sb + sq * ko_ss + h * ko_sh;

    if (g >= groups) {  // pass-through tail of a separate output
      const int e = 2 * rot_half + (g - groups) * VEC;
      *reinterpret_cast<Vec<T, VEC>*>(dst + e) = *reinterpret_cast<const Vec<T, VEC>*>(src + e);
      continue;
    }
    // x first, then the table: the DRAM latency of x overlaps the table's (an L1/L2 hit).
    const int f0 = g * VEC;
    const int e1 = first_vector<INTERLEAVED>(f0), e2 = second_vector<INTERLEAVED, VEC>(rot_half, f0);
    float x1[VEC], x2[VEC];
    load_vec<T, VEC>(src + e1, x1);
    load_vec<T, VEC>(src + e2, x2);
    const int key = t * groups + g;
    if (key != cached) {
      cached = key;
      const index_t pos = offset + sq * seq_step + (ids != nullptr ? ids[b * ids_sb + sq * ids_ss] : 0);
      cos_sin_at<VEC, FREQS_IN_KERNEL>(cos_or_inv_freq, sin_table, table_stride, cache_len, freq_scale, pos, f0,
                                       sign, c, s);
    }
    rotate_pairs<VEC, INTERLEAVED>(x1, x2, c, s);
    store_vec<T, VEC>(dst + e1, x1);
    store_vec<T, VEC>(dst + e2, x2);
  }
}

}  // namespace rope
}  // namespace pykernels
