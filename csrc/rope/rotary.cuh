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
// Work split. A thread owns one (token, item) pair and a lane among the
// head_lanes lanes of that item: it walks the rows (the q heads, then the k
// heads: one launch serves both) of its token numbered lane, lane +
// head_lanes, ... within its block's row chunk (blockIdx.y). Item g < R/2 /
// VEC rotates VEC consecutive frequencies f0 = g VEC..: two 16-byte loads and
// stores per row (neox: at f0 and R/2 + f0; interleaved: 2 VEC contiguous
// elements). Item g past those, only when the output is a separate tensor,
// copies one vector of the pass-through tail. Items are fastest across
// threads, then head lanes, so a warp covers head_lanes whole consecutive rows
// of one token (32 / items per row of them: 4 rows, 1 KB, for bf16 d = 128)
// and walks on through that token's contiguous rows. (When the items per row
// do not divide 32, a warp's last lanes start the next token.)
//
// Why this shape (H200, q and k of (8, 4096, 32, 128) bf16, 2026-11-22):
// * cos/sin depend on (token, item) only, so a thread fetches or computes
//   them once and reuses them for every head it rotates;
// * a warp's accesses stay on one token's contiguous rows. With a warp spread
//   over 4 tokens instead (one thread per item walking every head) the kernel
//   fell from 72.5% to 56% of the copy bandwidth;
// * a thread loads kRowsPerStep rows before it rotates any. The constants
//   below won scripts/bench_rope_variants.py (profiling/results/
//   h200-2026-11-22b/checks/rope_variants_0a79399.jsonl): 2 rows per step,
//   256 threads, no register cap gave 92.5% of the copy bandwidth; 4 rows
//   took 132 registers (1 block per SM) and 67%, 4 rows capped at 128
//   registers 88%, 8 rows 91%, 128 or 512 threads 90% and 85%, streaming
//   cache hints changed nothing.
// The first split (one item per thread per step, items numbered token-major)
// re-read the table once per item and measured 72.5%.
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

#if defined(__CUDACC__)  // nvcc and NVRTC; the host emulation (g++) has no PTX
#include "common/half_pairs.cuh"
#endif

namespace pykernels {
namespace rope {

// NVRTC has no <cstdint>; a long long is 64 bits on every CUDA target.
using index_t = long long;

// Threads per block; rows loaded together by one thread; and the grid the
// launchers aim for: with few tokens, the rows are split into chunks of at
// least kMinRowsPerChunk until about kTargetBlocks blocks exist (rotary_grid).
// PK_ROPE_* override them for scripts/bench_rope_variants.py, which compiles
// variants through NVRTC to pick these values; builds use the defaults.
#ifndef PK_ROPE_THREADS
#define PK_ROPE_THREADS 256
#endif
#ifndef PK_ROPE_ROWS_PER_STEP
#define PK_ROPE_ROWS_PER_STEP 2
#endif
#ifndef PK_ROPE_MIN_BLOCKS
#define PK_ROPE_MIN_BLOCKS 1
#endif
#ifndef PK_ROPE_STREAM  // 1: streaming cache hints (.cs) on the 16-bit vector path
#define PK_ROPE_STREAM 0
#endif
constexpr int kThreads = PK_ROPE_THREADS;
constexpr int kRowsPerStep = PK_ROPE_ROWS_PER_STEP;
constexpr int kTargetBlocks = 2048;
constexpr int kMinRowsPerChunk = 16;

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
__device__ __forceinline__ void unpack_vec(const Vec<T, N>& raw, float (&out)[N]) {
#pragma unroll
  for (int j = 0; j < N; ++j) out[j] = to_float(raw.v[j]);
}

template <typename T, int N>
__device__ __forceinline__ void pack_vec(const float (&in)[N], Vec<T, N>& raw) {
#pragma unroll
  for (int j = 0; j < N; ++j) raw.v[j] = from_float<T>(in[j]);
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

// The 16-bit vector path on the device (WordIO below) works on whole 32-bit
// words: a uint4 load, two elements per word unpacked with bit operations and
// packed back by one cvt.rn.{bf16,f16}x2 (common/half_pairs.cuh). Element by
// element through Vec<__nv_bfloat16, 8>, the kernel took 128-154 registers
// (bf16) against 104 for fp16, which capped it at 2 blocks per SM.
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ uint4 load_words(const void* p) {
#if PK_ROPE_STREAM
  uint4 r;
  asm volatile("ld.global.cs.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
#else
  return *static_cast<const uint4*>(p);
#endif
}

__device__ __forceinline__ void store_words(void* p, uint4 v) {
#if PK_ROPE_STREAM
  asm volatile("st.global.cs.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w));
#else
  *static_cast<uint4*>(p) = v;
#endif
}

template <bool kBf16>
__device__ __forceinline__ void unpack_words(uint4 v, float (&out)[8]) {
  unpack_float2<kBf16>(v.x, out[0], out[1]);
  unpack_float2<kBf16>(v.y, out[2], out[3]);
  unpack_float2<kBf16>(v.z, out[4], out[5]);
  unpack_float2<kBf16>(v.w, out[6], out[7]);
}

template <bool kBf16>
__device__ __forceinline__ uint4 pack_words(const float (&in)[8]) {
  return make_uint4(pack_float2<kBf16>(in[0], in[1]), pack_float2<kBf16>(in[2], in[3]),
                    pack_float2<kBf16>(in[4], in[5]), pack_float2<kBf16>(in[6], in[7]));
}

// How one row's VEC elements travel: one vector load, unpacked to floats,
// packed and stored back (the two paths pack in the order each was tuned with). RowIO picks the word path for 16-bit 8-vectors on
// the device and ElementIO for the rest (float, one-element vectors, the host
// emulation).
template <typename T, bool kBf16>
struct WordIO {
  using Storage = uint4;
  __device__ __forceinline__ static Storage load(const T* p) { return load_words(p); }
  __device__ __forceinline__ static void unpack(const Storage& v, float (&x)[8]) { unpack_words<kBf16>(v, x); }
  __device__ __forceinline__ static void pack_store(T* p, const float (&x)[8], Storage&) {
    store_words(p, pack_words<kBf16>(x));
  }
};
#endif  // __CUDA_ARCH__

template <typename T, int VEC>
struct ElementIO {
  using Storage = Vec<T, VEC>;
  __device__ __forceinline__ static Storage load(const T* p) { return *reinterpret_cast<const Storage*>(p); }
  __device__ __forceinline__ static void unpack(const Storage& v, float (&x)[VEC]) { unpack_vec<T, VEC>(v, x); }
  // Packs into `scratch` (the row's loaded vector, no longer needed) and stores it.
  __device__ __forceinline__ static void pack_store(T* p, const float (&x)[VEC], Storage& scratch) {
    pack_vec<T, VEC>(x, scratch);
    *reinterpret_cast<Storage*>(p) = scratch;
  }
};

template <typename T, int VEC>
struct RowIO {
  using type = ElementIO<T, VEC>;
};
#if defined(__CUDA_ARCH__)
template <>
struct RowIO<__half, 8> {
  using type = WordIO<__half, false>;
};
template <>
struct RowIO<__nv_bfloat16, 8> {
  using type = WordIO<__nv_bfloat16, true>;
};
#endif

// Rows src + m * src_step, m < n (and dst likewise): every load of a step of
// kRowsPerStep rows is issued before the first is used.
template <typename T, int VEC, bool INTERLEAVED>
__device__ __forceinline__ void rotate_rows(const T* src, T* dst, index_t src_step, index_t dst_step, int n, int e1,
                                            int e2, const float (&c)[VEC], const float (&s)[VEC]) {
  using IO = typename RowIO<T, VEC>::type;
#pragma unroll 1  // one step's loads in flight at a time: unrolling only adds registers
  for (int m0 = 0; m0 < n; m0 += kRowsPerStep) {
    typename IO::Storage a[kRowsPerStep], b[kRowsPerStep];
#pragma unroll
    for (int u = 0; u < kRowsPerStep; ++u) {
      if (m0 + u < n) {
        const T* row = src + (m0 + u) * src_step;
        a[u] = IO::load(row + e1);
        b[u] = IO::load(row + e2);
      }
    }
#pragma unroll
    for (int u = 0; u < kRowsPerStep; ++u) {
      if (m0 + u < n) {
        float x1[VEC], x2[VEC];
        IO::unpack(a[u], x1);
        IO::unpack(b[u], x2);
        rotate_pairs<VEC, INTERLEAVED>(x1, x2, c, s);
        T* row = dst + (m0 + u) * dst_step;
        IO::pack_store(row + e1, x1, a[u]);
        IO::pack_store(row + e2, x2, b[u]);
      }
    }
  }
}

// The pass-through tail of a separate output: one vector per row.
template <typename T, int VEC>
__device__ __forceinline__ void copy_rows(const T* src, T* dst, index_t src_step, index_t dst_step, int n) {
  using V = Vec<T, VEC>;
#pragma unroll 1
  for (int m0 = 0; m0 < n; m0 += kRowsPerStep) {
    V v[kRowsPerStep];
#pragma unroll
    for (int u = 0; u < kRowsPerStep; ++u)
      if (m0 + u < n) v[u] = *reinterpret_cast<const V*>(src + (m0 + u) * src_step);
#pragma unroll
    for (int u = 0; u < kRowsPerStep; ++u)
      if (m0 + u < n) *reinterpret_cast<V*>(dst + (m0 + u) * dst_step) = v[u];
  }
}

// The launch geometry, shared by the kernel and its launchers (rotary_launch.cu;
// the CuPy backend repeats it in Python). head_lanes threads share an item
// (enough of them that a token's lanes fill a warp); token_lanes threads serve
// one token (capped at a block, in which case threads loop over items).
__host__ __device__ inline int rotary_head_lanes(int items_per_row) {
  return items_per_row >= 32 ? 1 : 32 / items_per_row;
}
__host__ __device__ inline int rotary_token_lanes(int items_per_row) {
  const int lanes = items_per_row * rotary_head_lanes(items_per_row);
  return lanes < kThreads ? lanes : kThreads;
}

// A block holds tokens_per_block tokens; blockIdx.y picks a chunk of
// rows_per_chunk rows, when there are too few tokens to fill the GPU.
struct RotaryGrid {
  int tokens_per_block, rows_per_chunk, blocks_y;
  long long blocks_x;
};

#ifndef __CUDACC_RTC__
inline RotaryGrid rotary_grid(int items_per_row, int rows, long long n_tokens) {
  RotaryGrid g{};
  g.tokens_per_block = kThreads / rotary_token_lanes(items_per_row);
  g.blocks_x = (n_tokens + g.tokens_per_block - 1) / g.tokens_per_block;
  const long long wanted = (kTargetBlocks + g.blocks_x - 1) / g.blocks_x;
  const long long most = rows / kMinRowsPerChunk > 1 ? rows / kMinRowsPerChunk : 1;
  const int chunks = static_cast<int>(wanted < most ? wanted : most);
  g.rows_per_chunk = (rows + chunks - 1) / chunks;
  g.blocks_y = (rows + g.rows_per_chunk - 1) / g.rows_per_chunk;
  return g;
}
#endif

// One launch for q (q_heads rows per token) and k (k_heads rows, 0 for none).
// Strides are in elements, for the (batch, seq, head) dims of the (B, S, H, D)
// view; the last dim is contiguous. Position of token (b, s):
//
//     p = offset + s * seq_step + (ids ? ids[b * ids_sb + s * ids_ss] : 0)
//
// (per-batch offsets: ids (B,) with ids_ss = 0 and seq_step = 1; position ids
// (B, S): seq_step = 0). tail_vecs is (D - R) / VEC for a separate output, 0
// in place. In FREQS_IN_KERNEL mode cos_or_inv_freq is inv_freq (R/2,) and
// sin_table, table_stride and cache_len are unused. The grid is rotary_grid's.
template <typename T, int VEC, bool INTERLEAVED, bool FREQS_IN_KERNEL>
__global__ void __launch_bounds__(kThreads, PK_ROPE_MIN_BLOCKS)
    rotary_kernel(const T* q, T* q_out, index_t q_sb, index_t q_ss, index_t q_sh, index_t qo_sb, index_t qo_ss,
                  index_t qo_sh, int q_heads,                                                    //
                  const T* k, T* k_out, index_t k_sb, index_t k_ss, index_t k_sh, index_t ko_sb, index_t ko_ss,
                  index_t ko_sh, int k_heads,                                                    //
                  const float* __restrict__ cos_or_inv_freq, const float* __restrict__ sin_table,
                  index_t table_stride, index_t cache_len, float freq_scale,                   //
                  const index_t* __restrict__ ids, index_t ids_sb, index_t ids_ss, int seq_step, index_t offset,  //
                  index_t n_tokens, int seqlen, int rot_half, int tail_vecs, int conjugate, int tokens_per_block,
                  int rows_per_chunk) {
  const int groups = rot_half / VEC;
  const int items_per_row = groups + tail_vecs;
  const int head_lanes = rotary_head_lanes(items_per_row);
  const int token_lanes = rotary_token_lanes(items_per_row);
  const int item_lanes = token_lanes / head_lanes;  // items_per_row, or kThreads when a row has more
  const int local = static_cast<int>(threadIdx.x) / token_lanes;
  if (local >= tokens_per_block) return;  // the block's spare threads (kThreads % token_lanes)
  const int within = static_cast<int>(threadIdx.x) - local * token_lanes;
  const int lane = within / item_lanes;  // this thread's rows: row_lo + lane + head_lanes m
  const index_t token = static_cast<index_t>(blockIdx.x) * tokens_per_block + local;
  if (token >= n_tokens) return;
  const index_t b = token / seqlen;
  const index_t sq = token - b * seqlen;
  const int row_lo = static_cast<int>(blockIdx.y) * rows_per_chunk;
  const int rows = q_heads + k_heads;
  const int row_hi = row_lo + rows_per_chunk < rows ? row_lo + rows_per_chunk : rows;

  // This thread's rows are row_lo + lane + head_lanes m, below row_hi: first
  // n_q of them in q (head = row), then n_k in k (head = row - q_heads).
  auto count = [&](int first, int end) { return first < end ? (end - first + head_lanes - 1) / head_lanes : 0; };
  const int first = row_lo + lane;
  const int n_q = count(first, row_hi < q_heads ? row_hi : q_heads);
  const int first_k = first + head_lanes * count(first, q_heads);
  const int n_k = count(first_k, row_hi);
  const T* q_src = q + b * q_sb + sq * q_ss + first * q_sh;
  T* q_dst = q_out + b * qo_sb + sq * qo_ss + first * qo_sh;
  const T* k_src = k + b * k_sb + sq * k_ss + (first_k - q_heads) * k_sh;
  T* k_dst = k_out + b * ko_sb + sq * ko_ss + (first_k - q_heads) * ko_sh;

  for (int g = within - lane * item_lanes; g < items_per_row; g += item_lanes) {
    if (g >= groups) {  // pass-through tail of a separate output: copy one vector per row
      const int e = 2 * rot_half + (g - groups) * VEC;
      copy_rows<T, VEC>(q_src + e, q_dst + e, head_lanes * q_sh, head_lanes * qo_sh, n_q);
      copy_rows<T, VEC>(k_src + e, k_dst + e, head_lanes * k_sh, head_lanes * ko_sh, n_k);
      continue;
    }
    // cos/sin once per (token, item), for every row.
    const int f0 = g * VEC;
    const index_t pos = offset + sq * seq_step + (ids != nullptr ? ids[b * ids_sb + sq * ids_ss] : 0);
    float c[VEC], s[VEC];
    cos_sin_at<VEC, FREQS_IN_KERNEL>(cos_or_inv_freq, sin_table, table_stride, cache_len, freq_scale, pos, f0,
                                     conjugate ? -1.f : 1.f, c, s);
    const int e1 = first_vector<INTERLEAVED>(f0), e2 = second_vector<INTERLEAVED, VEC>(rot_half, f0);
    rotate_rows<T, VEC, INTERLEAVED>(q_src, q_dst, head_lanes * q_sh, head_lanes * qo_sh, n_q, e1, e2, c, s);
    rotate_rows<T, VEC, INTERLEAVED>(k_src, k_dst, head_lanes * k_sh, head_lanes * ko_sh, n_k, e1, e2, c, s);
  }
}

}  // namespace rope
}  // namespace pykernels
