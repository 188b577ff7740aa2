// The attention backward kernels (FlashAttention-2's backward on mma.sync).
//
// Nothing of size Sq x Sk is stored: P is recomputed from the saved lse. Per
// query row i, with scores x_ij in log2 units (ALiBi included, masked = -inf):
//
//     P_ij   = exp2(x_ij - lse_i * log2(e))            (lse = -inf row: P = 0)
//     delta_i = rowsum(dO_i * O_i) - dlse_i            (preprocess kernel)
//     dV_j  += sum_i P_ij dO_i
//     dP_ij  = <dO_i, V_j>
//     dS_ij  = P_ij (dP_ij - delta_i)
//     dQ_i  += scale * sum_j dS_ij K_j
//     dK_j  += scale * sum_i dS_ij Q_i
//
// (dlse enters through delta because d lse_i / d x_ij = P_ij.) The learned
// sink logit is a key with value 0: it changes only lse, and its gradient is
//
//     dsink = -sum_i exp(sink - lse_i) (sum_j P_ij dP_ij - dlse_i)
//
// The dK/dV kernel sums the first part over its keys into dsink_partial (one
// slot per warp; the caller reduces the slots and adds the dlse part). Its
// sum_j P_ij dP_ij equals rowsum(dO_i * O_i) in exact arithmetic, but never
// reads the 16-bit O: delta built from the rounded O put dsink at 2.5-3.1x
// PyTorch's own bf16 error (H200, d8d9560), this stays in fp32 throughout.
//
// Three kernels:
// * flash_bwd_preprocess_kernel: delta and lse in log2 units, one warp per row,
//   padded to kBwdRowPad rows with values that make padded rows inert.
// * flash_bwd_dkdv_kernel: one CTA per (batch, KV head, key tile). K and V
//   stay in shared memory; the CTA walks every query head of its group and,
//   for each, only the query tiles that can see its keys (block_info.cuh,
//   QueryTileRange). It works on transposed tiles S^T = K Q^T so that a warp
//   owns whole key rows of dK and dV (fp32 registers, written once at the end:
//   the GQA reduction happens in registers, in a fixed order). dQ either goes
//   out by fp32 atomics from here (dS^T goes through shared memory) or, when
//   params.dq_accum is null, comes from
// * flash_bwd_dq_kernel: one CTA per (batch, query head, query tile) walking
//   key tiles exactly as the forward does; no atomics, so bitwise
//   reproducible, at the cost of recomputing S and dP a second time.
//
// On Hopper (sm_90a, head dims 64 and 128) flash_bwd_sm90_kernel.cuh's wgmma
// kernel takes the dK/dV kernel's place: same grid, scratch, dsink slots and
// outputs. The other three kernels here run on every GPU.
//
// Compiled by nvcc through instantiations/flash_bwd_*.cu; device code only.
#pragma once

#include "attention/alibi.cuh"
#include "attention/block_info.cuh"
#include "attention/copy.cuh"
#include "attention/flash_bwd.h"
#include "attention/flash_fwd_kernel.cuh"  // load_rows, elem_t
#include "attention/kernel_traits.cuh"
#include "attention/mask.cuh"
#include "attention/mma.cuh"
#include "attention/query_tile.cuh"
#include "attention/softmax.cuh"  // LOG2E, neg_inf

namespace pykernels {
namespace attention {

// Tile shapes of the dK/dV kernel. A CTA owns kBlockN keys and steps through
// query tiles of kBlockM rows; warp w owns keys [16 kNFrags w, 16 kNFrags (w + 1)).
//
// Why these numbers: a warp holds dK and dV for its 16 keys (2 x 16 x d / 32
// floats per thread: 128 at d = 128) plus S^T and dP^T for one query tile
// (2 x 16 x kBlockM / 32: 64 at kBlockM = 64); that is most of the 255
// registers at d = 128, so kBlockM stays at 64 and warps own one 16-key
// fragment. The key tile is what sets the dQ atomics: every (key tile, query
// tile) pair adds a kBlockM x d fp32 tile into dq_accum, so at d = 64 and 128
// the CTA takes 128 keys with 8 warps (one CTA per SM, ~120 KB of shared
// memory), halving the atomic traffic of 64-key tiles, which measured 0.68x
// SDPA's flash backward (H200, causal 16K). d = 32 and 96 keep 64 keys and
// 4 warps (at d = 96, 8 warps would split dQ into 48-column slices).
// d = 256 would need dK and dV split across warps (256 accumulators per
// thread otherwise): not done.
template <int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_>
struct BwdTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = 32 * kNWarps;

  static constexpr int kNFrags = kBlockN / (16 * kNWarps);  // 16-key fragments per warp
  static constexpr int kMTiles = kBlockM / 8;               // 8-wide query tiles of S^T
  static constexpr int kDTiles = kHeadDim / 8;
  static constexpr int kKSteps = kHeadDim / 16;

  static constexpr int kSmemPad = 8;  // 16 bytes per row against bank conflicts (kernel_traits.cuh)
  static constexpr int kSmemRow = kHeadDim + kSmemPad;
  static constexpr int kChunksPerRow = kHeadDim / 8;
  static constexpr int kDsRow = kBlockM + kSmemPad;  // dS^T tile [key][query], padded likewise

  // dQ = dS K for one query tile is split over warps: kQFrags 16-row
  // fragments times kColWarps column slices, done in kDqChunk-column chunks so
  // that its accumulators (kDqChunk / 2 per thread) fit beside dK and dV.
  static constexpr int kQFrags = kBlockM / 16;
  static constexpr int kColWarps = kNWarps / kQFrags;
  static constexpr int kDqCols = kHeadDim / kColWarps;
  static constexpr int kDqChunk = (kDqCols % 64 == 0) ? 64 : 32;

  // K, V, Q, dO (16-bit, padded rows), dS^T, then lse and delta (fp32).
  static constexpr int kSmemK = kBlockN * kSmemRow;
  static constexpr int kSmemQ = kBlockM * kSmemRow;
  static constexpr int kSmemDs = kBlockN * kDsRow;
  static constexpr int kOffStats = 2 * (2 * kSmemK + 2 * kSmemQ + kSmemDs);  // bytes
  static constexpr int kSmemBytes = kOffStats + 2 * kBlockM * 4;

  static_assert(kBlockN % (16 * kNWarps) == 0, "warps must own whole 16-key fragments");
  static_assert(kBlockM % 16 == 0 && kBwdRowPad % kBlockM == 0, "query tiles must tile the padded rows");
  static_assert(kNWarps % kQFrags == 0 && kHeadDim % kColWarps == 0 && kDqCols % kDqChunk == 0,
                "dQ must split evenly over warps");
};

// Keys per CTA for each head dim (reasons above; bwd_block_n is in
// flash_bwd.h): every warp owns 16 of them.
template <int kHeadDim>
struct BwdTileShape {
  using type = BwdTraits<kHeadDim, 64, bwd_block_n(kHeadDim), bwd_warps(kHeadDim)>;
};

// The deterministic dQ kernel is the forward's loop with one more product:
// the forward's tile shape with 16 query rows per warp (dQ, S and dP in
// registers: 64 + 32 + 32 floats at d = 128).
constexpr int kDqThreads = 128;
template <int kHeadDim>
struct DqTileShape {
  using type = FwdTraits<kHeadDim, 64, 64, kDqThreads / 32>;
};

// Dynamic shared memory of the dQ kernel: Q, dO, K and V tiles, 16-bit, one
// buffer each (flash_bwd_dq_block lays them out in that order).
template <int kHeadDim>
__host__ __device__ constexpr int dq_smem_bytes() {
  using Tr = typename DqTileShape<kHeadDim>::type;
  return 2 * 2 * (Tr::kSmemQ + Tr::kSmemK);
}

// Threads per CTA of flash_bwd_convert_dq_kernel (one element pair each).
constexpr int kConvertDqThreads = 256;

// ---------------------------------------------------------------------------
// Small helpers.

__device__ __forceinline__ void st_shared_u32(unsigned addr, unsigned v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v));
}

__device__ __forceinline__ void st_shared_f32(unsigned addr, float x) {
  asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(addr), "f"(x) : "memory");
}

__device__ __forceinline__ void st_shared_f32x2(unsigned addr, float x, float y) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(x), "f"(y));
}

__device__ __forceinline__ float ld_shared_f32(unsigned addr) {
  float v;
  asm volatile("ld.shared.f32 %0, [%1];\n" : "=f"(v) : "r"(addr));
  return v;
}

// Add one 8-wide accumulator column tile c (rows g and g + 8, columns 2t and
// 2t + 1, the C layout of mma.cuh) into fp32 memory: row_g and row_g8 point at
// column 0 of the two rows (nullptr: row past the end). On sm_90 the two
// lanes t and t ^ 1 swap halves first, so that each holds four consecutive
// columns of one row and issues one 16-byte vector atomic instead of two
// 8-byte ones: half the atomic requests, which bound the dQ path.
__device__ __forceinline__ void atomic_add_tile(float* row_g, float* row_g8, const float (&c)[4], int t) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const bool even = (t & 1) == 0;
  // Even lanes keep row g and receive the partner's row-g pair; odd lanes keep row g + 8.
  const float send0 = even ? c[2] : c[0], send1 = even ? c[3] : c[1];
  const float recv0 = __shfl_xor_sync(0xffffffffu, send0, 1);
  const float recv1 = __shfl_xor_sync(0xffffffffu, send1, 1);
  float* row = even ? row_g : row_g8;
  if (row != nullptr) {
    const int col = 2 * (t & ~1);  // 4 t' for the pair's first lane t'
    const float4 v = even ? make_float4(c[0], c[1], recv0, recv1) : make_float4(recv0, recv1, c[2], c[3]);
    atomicAdd(reinterpret_cast<float4*>(row + col), v);
  }
#else
  if (row_g != nullptr) {
    atomicAdd(row_g + 2 * t, c[0]);
    atomicAdd(row_g + 2 * t + 1, c[1]);
  }
  if (row_g8 != nullptr) {
    atomicAdd(row_g8 + 2 * t, c[2]);
    atomicAdd(row_g8 + 2 * t + 1, c[3]);
  }
#endif
}

// The A operand of a k16 step from two adjacent 8-wide accumulator tiles
// (the C layout of mma.cuh is the A layout, so the values never leave registers).
template <bool kIsBf16>
__device__ __forceinline__ void acc_to_a(unsigned (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack_float2<kIsBf16>(c0[0], c0[1]);
  a[1] = pack_float2<kIsBf16>(c0[2], c0[3]);
  a[2] = pack_float2<kIsBf16>(c1[0], c1[1]);
  a[3] = pack_float2<kIsBf16>(c1[2], c1[3]);
}

// The sink gradient's key part, sum_i exp(sink - lse_i) sum_j P_ij dP_ij, over
// one warp's keys of a transposed tile (P^T and dP^T: keys on the rows, query
// 8 j + 2t and + 1 in the columns, lse_log2 of query q at s_lse + 4 q), summed
// over the warp. Both dK/dV kernels call it with their own fragments.
template <int kNFrags, int kMTiles>
__device__ __forceinline__ float sink_grad_part(const float (&P)[kNFrags][kMTiles][4],
                                                const float (&dP)[kNFrags][kMTiles][4], float sink_log2,
                                                unsigned s_lse, int t) {
  float part = 0.f;
#pragma unroll
  for (int j = 0; j < kMTiles; ++j) {
    const float w0 = exp2f(sink_log2 - ld_shared_f32(s_lse + (8 * j + 2 * t) * 4));
    const float w1 = exp2f(sink_log2 - ld_shared_f32(s_lse + (8 * j + 2 * t + 1) * 4));
    float r0 = 0.f, r1 = 0.f;
#pragma unroll
    for (int nf = 0; nf < kNFrags; ++nf) {
      r0 = fmaf(P[nf][j][0], dP[nf][j][0], fmaf(P[nf][j][2], dP[nf][j][2], r0));
      r1 = fmaf(P[nf][j][1], dP[nf][j][1], fmaf(P[nf][j][3], dP[nf][j][3], r1));
    }
    part = fmaf(w0, r0, fmaf(w1, r1, part));
  }
#pragma unroll
  for (int sh = 16; sh > 0; sh >>= 1) part += __shfl_xor_sync(0xffffffffu, part, sh);
  return part;
}

// ---------------------------------------------------------------------------
// Preprocess: one warp per padded query row.

constexpr int kPreprocessWarps = 4;

template <bool kIsBf16>
__global__ void __launch_bounds__(32 * kPreprocessWarps) flash_bwd_preprocess_kernel(const FlashBwdParams params) {
  const int lane = threadIdx.x & 31;
  const long long row_id = static_cast<long long>(blockIdx.x) * kPreprocessWarps + (threadIdx.x >> 5);
  const long long rows_per_batch = static_cast<long long>(params.heads_q) * params.seqlen_q_pad;
  if (row_id >= rows_per_batch * params.batch) return;
  const int b = static_cast<int>(row_id / rows_per_batch);
  const int h = static_cast<int>((row_id % rows_per_batch) / params.seqlen_q_pad);
  const int i = static_cast<int>(row_id % params.seqlen_q_pad);

  // Padded rows (i >= Sq) get lse = +inf, so that P = exp2(x - inf) = 0, and
  // delta = 0: they contribute nothing to dK and dV.
  float lse_log2 = __int_as_float(0x7f800000), delta = 0.f;
  if (i < params.seqlen_q) {
    const elem_t* o_row = static_cast<const elem_t*>(params.out) + b * params.o_batch_stride +
                          i * params.o_row_stride + h * params.o_head_stride;
    const elem_t* do_row = static_cast<const elem_t*>(params.dout) + b * params.do_batch_stride +
                           i * params.do_row_stride + h * params.do_head_stride;
    float dot = 0.f;
    for (int c = lane; c < params.head_dim / 8; c += 32) {  // 16-byte chunks
      const uint4 o = *reinterpret_cast<const uint4*>(o_row + 8 * c);
      const uint4 d = *reinterpret_cast<const uint4*>(do_row + 8 * c);
      const unsigned ow[4] = {o.x, o.y, o.z, o.w}, dw[4] = {d.x, d.y, d.z, d.w};
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        float o0, o1, d0, d1;
        unpack_float2<kIsBf16>(ow[w], o0, o1);
        unpack_float2<kIsBf16>(dw[w], d0, d1);
        dot = fmaf(o0, d0, fmaf(o1, d1, dot));
      }
    }
#pragma unroll
    for (int s = 16; s > 0; s >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, s);
    const long long stat = (static_cast<long long>(b) * params.heads_q + h) * params.seqlen_q + i;
    delta = dot - (params.dlse != nullptr ? params.dlse[stat] : 0.f);
    const float lse = params.lse[stat];
    lse_log2 = (lse == neg_inf()) ? __int_as_float(0x7f800000) : lse * LOG2E;
  }
  if (lane == 0) {
    params.lse_log2[row_id] = lse_log2;
    params.delta[row_id] = delta;
  }
}

// dQ = dq_accum * scale in the input dtype, two elements per thread.
template <bool kIsBf16>
__global__ void __launch_bounds__(kConvertDqThreads) flash_bwd_convert_dq_kernel(const FlashBwdParams params) {
  const long long pair = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int half_d = params.head_dim / 2;
  const long long n_rows = static_cast<long long>(params.batch) * params.seqlen_q * params.heads_q;
  if (pair >= n_rows * half_d) return;
  const long long row = pair / half_d;  // (b, i, h), h fastest
  const int col = 2 * static_cast<int>(pair % half_d);
  const int h = static_cast<int>(row % params.heads_q);
  const long long bi = row / params.heads_q;
  const int i = static_cast<int>(bi % params.seqlen_q), b = static_cast<int>(bi / params.seqlen_q);
  const float2 acc = *reinterpret_cast<const float2*>(params.dq_accum + 2 * pair);
  elem_t* dst = static_cast<elem_t*>(params.dq) + b * params.dq_batch_stride + i * params.dq_row_stride +
                h * params.dq_head_stride + col;
  *reinterpret_cast<unsigned*>(dst) =
      pack_float2<kIsBf16>(acc.x * params.softmax_scale, acc.y * params.softmax_scale);
}

// ---------------------------------------------------------------------------
// What a dK/dV CTA works on, and how it writes its result (both dK/dV kernels:
// this file's and flash_bwd_sm90_kernel.cuh's).

// One CTA per (batch, KV head, key tile): its keys, and the (query head,
// query tile) steps that can see them (QueryTileRange), heads outermost, a
// fixed order. Key tiles go from the first: under causal they see the most
// query rows, so the longest CTAs start first.
template <int kBlockM, int kBlockN>
struct KeyTileWork {
  int b, h_kv, group, col_lo, m_lo, n_m, n_steps;
  Mask mask;

  __device__ __forceinline__ static KeyTileWork make(const FlashBwdParams& params) {
    KeyTileWork w;
    w.b = blockIdx.x / params.heads_kv;
    w.h_kv = blockIdx.x % params.heads_kv;
    w.group = params.heads_q / params.heads_kv;
    w.col_lo = blockIdx.y * kBlockN;
    w.mask = Mask::make(params.window_left, params.window_right, params.sink_tokens, params.q_offset,
                        params.seqlen_k, params.causal != 0);
    const QueryTileRange<kBlockM> qt = QueryTileRange<kBlockM>::make(w.mask, w.col_lo, w.col_lo + kBlockN,
                                                                     params.seqlen_q);
    w.m_lo = qt.lo;
    w.n_m = max(0, qt.hi - qt.lo);
    w.n_steps = w.n_m * w.group;
    return w;
  }
  __device__ __forceinline__ int head(int step) const { return h_kv * group + step / n_m; }
  __device__ __forceinline__ int row_lo(int step) const { return (m_lo + step % n_m) * kBlockM; }
};

// dK (times the softmax scale) and dV in the input dtype, from a warp's
// kNFrags 16-key accumulator fragments (this thread: keys key0 + 16 nf and
// + 8, columns 2t + 8 d). Every key row below Sk is written, zeros where no
// query sees it.
template <bool kIsBf16, int kNFrags, int kDTiles>
__device__ __forceinline__ void store_dk_dv(const FlashBwdParams& params, int b, int h_kv, int key0,
                                            const float (&dK)[kNFrags][kDTiles][4],
                                            const float (&dV)[kNFrags][kDTiles][4], int t) {
  elem_t* dk_head = head_rows<elem_t>(params.dk, b, h_kv, params.dk_batch_stride, params.dk_head_stride);
  elem_t* dv_head = head_rows<elem_t>(params.dv, b, h_kv, params.dv_batch_stride, params.dv_head_stride);
#pragma unroll
  for (int nf = 0; nf < kNFrags; ++nf)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int key = key0 + 16 * nf + 8 * half;
      if (key < params.seqlen_k) {
        elem_t* dk_row = dk_head + static_cast<index_t>(key) * params.dk_row_stride + 2 * t;
        elem_t* dv_row = dv_head + static_cast<index_t>(key) * params.dv_row_stride + 2 * t;
#pragma unroll
        for (int d = 0; d < kDTiles; ++d) {
          *reinterpret_cast<unsigned*>(dk_row + 8 * d) = pack_float2<kIsBf16>(
              dK[nf][d][2 * half] * params.softmax_scale, dK[nf][d][2 * half + 1] * params.softmax_scale);
          *reinterpret_cast<unsigned*>(dv_row + 8 * d) =
              pack_float2<kIsBf16>(dV[nf][d][2 * half], dV[nf][d][2 * half + 1]);
        }
      }
    }
}

// ---------------------------------------------------------------------------
// dK and dV (and dQ by atomics): one CTA per (batch, KV head, key tile).

template <int kHeadDim, bool kIsBf16>
__device__ __forceinline__ void flash_bwd_dkdv_block(const FlashBwdParams& params) {
  using Tr = typename BwdTileShape<kHeadDim>::type;
  constexpr int kBlockM = Tr::kBlockM, kBlockN = Tr::kBlockN, kNFrags = Tr::kNFrags, kMTiles = Tr::kMTiles;
  constexpr int kDTiles = Tr::kDTiles, kRowBytes = Tr::kSmemRow * 2, kDsRowBytes = Tr::kDsRow * 2;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  const unsigned sK = smem_addr(smem_raw);
  const unsigned sV = sK + Tr::kSmemK * 2;
  const unsigned sQ = sV + Tr::kSmemK * 2;
  const unsigned sdO = sQ + Tr::kSmemQ * 2;
  const unsigned sdS = sdO + Tr::kSmemQ * 2;
  const unsigned sLse = sK + Tr::kOffStats;  // kBlockM floats: lse * log2(e)
  const unsigned sDelta = sLse + kBlockM * 4;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;

  const KeyTileWork<kBlockM, kBlockN> work = KeyTileWork<kBlockM, kBlockN>::make(params);
  const int b = work.b, h_kv = work.h_kv, col_lo = work.col_lo, n_iters = work.n_steps;
  const Mask& mask = work.mask;

  const elem_t* k_head = head_rows<const elem_t>(params.k, b, h_kv, params.k_batch_stride, params.k_head_stride);
  const elem_t* v_head = head_rows<const elem_t>(params.v, b, h_kv, params.v_batch_stride, params.v_head_stride);
  const bool dq_atomics = params.dq_accum != nullptr;
  const bool has_alibi = params.alibi_slopes != nullptr;
  const bool sink_grad = params.dsink_partial != nullptr;

  const int warp_key = warp * 16 * kNFrags;  // this warp's first key within the tile
  const int key0 = col_lo + warp_key + g;    // this thread's first key (then + 16 nf + 8 half)

  // Per-lane ldmatrix addresses (patterns of mma.cuh / flash_fwd_kernel.cuh):
  //   A from row-major [row][k]: row (lane & 15), column 8 (lane / 16);
  //   B from [n][k] (two 8-wide n tiles): row (lane & 7) + 8 (lane / 16), column 8 ((lane / 8) & 1);
  //   B from [k][n] with .trans: row (lane & 7) + 8 ((lane / 8) & 1), column 8 (lane / 16);
  //   A from [k][m] with .trans (dS^T as dS): row (lane & 7) + 8 (lane / 16), column 8 ((lane / 8) & 1).
  const unsigned a_off = (warp_key + (lane & 15)) * kRowBytes + (lane >> 4) * 16;
  const unsigned b_off = ((lane & 7) + (lane >> 4) * 8) * kRowBytes + ((lane >> 3) & 1) * 16;
  const unsigned bt_off = ((lane & 7) + ((lane >> 3) & 1) * 8) * kRowBytes + (lane >> 4) * 16;
  const int q_frag = warp % Tr::kQFrags, col_warp = warp / Tr::kQFrags;  // this warp's share of dQ
  const unsigned ds_a_addr =
      sdS + ((lane & 7) + (lane >> 4) * 8) * kDsRowBytes + (q_frag * 16 + ((lane >> 3) & 1) * 8) * 2;

  // Q, dO, lse and delta of iteration `it` (one commit group with the caller's commit).
  auto load_query_tile = [&](int it) {
    const int hh = work.head(it), row_lo = work.row_lo(it);
    const elem_t* q_head = head_rows<const elem_t>(params.q, b, hh, params.q_batch_stride, params.q_head_stride);
    const elem_t* do_head =
        head_rows<const elem_t>(params.dout, b, hh, params.do_batch_stride, params.do_head_stride);
    load_rows<Tr, kBlockM>(sQ, q_head, params.q_row_stride, row_lo, params.seqlen_q, tid);
    load_rows<Tr, kBlockM>(sdO, do_head, params.do_row_stride, row_lo, params.seqlen_q, tid);
    constexpr int kStatChunks = kBlockM / 4;  // 16-byte chunks of one row of floats
    const long long stat = (static_cast<long long>(b) * params.heads_q + hh) * params.seqlen_q_pad + row_lo;
    if (tid < kStatChunks) {
      cp_async_16(sLse + tid * 16, params.lse_log2 + stat + 4 * tid, true);
    } else if (tid < 2 * kStatChunks) {
      cp_async_16(sDelta + (tid - kStatChunks) * 16, params.delta + stat + 4 * (tid - kStatChunks), true);
    }
  };

  float dK[kNFrags][kDTiles][4], dV[kNFrags][kDTiles][4];
#pragma unroll
  for (int nf = 0; nf < kNFrags; ++nf)
#pragma unroll
    for (int d = 0; d < kDTiles; ++d)
#pragma unroll
      for (int e = 0; e < 4; ++e) dK[nf][d][e] = dV[nf][d][e] = 0.f;

  if (n_iters > 0) {
    load_rows<Tr, kBlockN>(sK, k_head, params.k_row_stride, col_lo, params.seqlen_k, tid);
    load_rows<Tr, kBlockN>(sV, v_head, params.v_row_stride, col_lo, params.seqlen_k, tid);
    load_query_tile(0);
    cp_async_commit();
  }

  for (int it = 0; it < n_iters; ++it) {
    const int hh = work.head(it), row_lo = work.row_lo(it);
    cp_async_wait<0>();
    __syncthreads();  // this tile's Q, dO, lse, delta are in; every warp is done with the last dS^T

    // S^T = K Q^T and dP^T = V dO^T for this warp's keys and the whole query tile.
    float S[kNFrags][kMTiles][4], dP[kNFrags][kMTiles][4];
#pragma unroll
    for (int nf = 0; nf < kNFrags; ++nf)
#pragma unroll
      for (int j = 0; j < kMTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) S[nf][j][e] = dP[nf][j][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < Tr::kKSteps; ++ks) {
      unsigned ak[kNFrags][4], av[kNFrags][4];
#pragma unroll
      for (int nf = 0; nf < kNFrags; ++nf) {
        ldmatrix_x4(ak[nf], sK + a_off + nf * 16 * kRowBytes + ks * 32);
        ldmatrix_x4(av[nf], sV + a_off + nf * 16 * kRowBytes + ks * 32);
      }
#pragma unroll
      for (int jp = 0; jp < kMTiles / 2; ++jp) {
        unsigned bq[4], bdo[4];
        ldmatrix_x4(bq, sQ + b_off + jp * 16 * kRowBytes + ks * 32);
        ldmatrix_x4(bdo, sdO + b_off + jp * 16 * kRowBytes + ks * 32);
#pragma unroll
        for (int nf = 0; nf < kNFrags; ++nf) {
          mma_16816<kIsBf16>(S[nf][2 * jp], ak[nf], bq[0], bq[1]);
          mma_16816<kIsBf16>(S[nf][2 * jp + 1], ak[nf], bq[2], bq[3]);
          mma_16816<kIsBf16>(dP[nf][2 * jp], av[nf], bdo[0], bdo[1]);
          mma_16816<kIsBf16>(dP[nf][2 * jp + 1], av[nf], bdo[2], bdo[3]);
        }
      }
    }

    // Scores in log2 units (masked after scaling, so any sign of the scale
    // works), then P^T = exp2(x - lse_log2); lse_log2 = +inf makes a row inert.
    if (has_alibi) {
      apply_alibi_log2_transposed(S, params.softmax_scale_log2, alibi_slope_log2(params, b, hh), key0,
                                  row_lo + 2 * t, params.q_offset);
    } else {
      scale_log2(S, params.softmax_scale_log2);
    }
    const int row_hi = min(row_lo + kBlockM, params.seqlen_q);
    if (!key_tile_is_full<16 * kNFrags>(mask, row_lo, row_hi, col_lo + warp_key)) {
      apply_mask_transposed(S, mask, key0, row_lo + 2 * t);
    }
#pragma unroll
    for (int j = 0; j < kMTiles; ++j) {
      const float l0 = ld_shared_f32(sLse + (8 * j + 2 * t) * 4);
      const float l1 = ld_shared_f32(sLse + (8 * j + 2 * t + 1) * 4);
#pragma unroll
      for (int nf = 0; nf < kNFrags; ++nf) {
        S[nf][j][0] = exp2f(S[nf][j][0] - l0);
        S[nf][j][1] = exp2f(S[nf][j][1] - l1);
        S[nf][j][2] = exp2f(S[nf][j][2] - l0);
        S[nf][j][3] = exp2f(S[nf][j][3] - l1);
      }
    }

    // dV += P^T dO (k = query).
#pragma unroll
    for (int ks = 0; ks < kBlockM / 16; ++ks) {
      unsigned ap[kNFrags][4];
#pragma unroll
      for (int nf = 0; nf < kNFrags; ++nf) acc_to_a<kIsBf16>(ap[nf], S[nf][2 * ks], S[nf][2 * ks + 1]);
#pragma unroll
      for (int dp = 0; dp < kDTiles / 2; ++dp) {
        unsigned bdo[4];
        ldmatrix_x4_trans(bdo, sdO + bt_off + ks * 16 * kRowBytes + dp * 32);
#pragma unroll
        for (int nf = 0; nf < kNFrags; ++nf) {
          mma_16816<kIsBf16>(dV[nf][2 * dp], ap[nf], bdo[0], bdo[1]);
          mma_16816<kIsBf16>(dV[nf][2 * dp + 1], ap[nf], bdo[2], bdo[3]);
        }
      }
    }

    // The sink gradient's sum_i exp(sink - lse_i) sum_j P_ij dP_ij over this
    // warp's keys (see the top of the file), before dP becomes dS. Padded and
    // fully masked rows have lse_log2 = +inf, so their weight is 0.
    if (sink_grad) {
      const float part = sink_grad_part(S, dP, params.sink_logits[hh] * LOG2E, sLse, t);
      // Only this warp touches its slot, in program order: a plain add, deterministic.
      if (lane == 0) {
        params.dsink_partial[((static_cast<long long>(b) * params.heads_q + hh) * gridDim.y + blockIdx.y) *
                                 Tr::kNWarps + warp] += part;
      }
    }

    // dS^T = P^T (dP^T - delta), kept in dP.
#pragma unroll
    for (int j = 0; j < kMTiles; ++j) {
      const float d0 = ld_shared_f32(sDelta + (8 * j + 2 * t) * 4);
      const float d1 = ld_shared_f32(sDelta + (8 * j + 2 * t + 1) * 4);
#pragma unroll
      for (int nf = 0; nf < kNFrags; ++nf) {
        dP[nf][j][0] = S[nf][j][0] * (dP[nf][j][0] - d0);
        dP[nf][j][1] = S[nf][j][1] * (dP[nf][j][1] - d1);
        dP[nf][j][2] = S[nf][j][2] * (dP[nf][j][2] - d0);
        dP[nf][j][3] = S[nf][j][3] * (dP[nf][j][3] - d1);
      }
    }

    // dK += dS^T Q (scaled once at the end); dS^T also goes to shared memory for dQ.
#pragma unroll
    for (int ks = 0; ks < kBlockM / 16; ++ks) {
      unsigned ads[kNFrags][4];
#pragma unroll
      for (int nf = 0; nf < kNFrags; ++nf) {
        acc_to_a<kIsBf16>(ads[nf], dP[nf][2 * ks], dP[nf][2 * ks + 1]);
        if (dq_atomics) {
          // a0..a3: (key g, query 2t), (key g + 8, 2t), (g, 2t + 8), (g + 8, 2t + 8) of this k16 step.
          const unsigned at = sdS + ((warp_key + 16 * nf + g) * Tr::kDsRow + ks * 16 + 2 * t) * 2;
          st_shared_u32(at, ads[nf][0]);
          st_shared_u32(at + 8 * kDsRowBytes, ads[nf][1]);
          st_shared_u32(at + 16, ads[nf][2]);
          st_shared_u32(at + 8 * kDsRowBytes + 16, ads[nf][3]);
        }
      }
#pragma unroll
      for (int dp = 0; dp < kDTiles / 2; ++dp) {
        unsigned bq[4];
        ldmatrix_x4_trans(bq, sQ + bt_off + ks * 16 * kRowBytes + dp * 32);
#pragma unroll
        for (int nf = 0; nf < kNFrags; ++nf) {
          mma_16816<kIsBf16>(dK[nf][2 * dp], ads[nf], bq[0], bq[1]);
          mma_16816<kIsBf16>(dK[nf][2 * dp + 1], ads[nf], bq[2], bq[3]);
        }
      }
    }

    __syncthreads();  // dS^T is complete; every warp is done with Q, dO, lse, delta
    if (it + 1 < n_iters) {
      load_query_tile(it + 1);  // overlaps the dQ products and atomics below
      cp_async_commit();
    }

    if (dq_atomics) {
      // dQ_i += sum_j dS_ij K_j for this warp's 16 rows and column slice;
      // the softmax scale is applied once, in the conversion kernel.
      float* dq_head = params.dq_accum + (static_cast<index_t>(b) * params.seqlen_q * params.heads_q + hh) *
                                             params.head_dim;
      const index_t dq_row_stride = static_cast<index_t>(params.heads_q) * params.head_dim;
      const int r0 = row_lo + q_frag * 16 + g;
#pragma unroll
      for (int c = 0; c < Tr::kDqCols / Tr::kDqChunk; ++c) {
        const int col0 = col_warp * Tr::kDqCols + c * Tr::kDqChunk;
        float acc[Tr::kDqChunk / 8][4];
#pragma unroll
        for (int d = 0; d < Tr::kDqChunk / 8; ++d)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[d][e] = 0.f;
#pragma unroll
        for (int ks = 0; ks < kBlockN / 16; ++ks) {
          unsigned a[4];
          ldmatrix_x4_trans(a, ds_a_addr + ks * 16 * kDsRowBytes);
#pragma unroll
          for (int dp = 0; dp < Tr::kDqChunk / 16; ++dp) {
            unsigned bk[4];
            ldmatrix_x4_trans(bk, sK + bt_off + ks * 16 * kRowBytes + (col0 + dp * 16) * 2);
            mma_16816<kIsBf16>(acc[2 * dp], a, bk[0], bk[1]);
            mma_16816<kIsBf16>(acc[2 * dp + 1], a, bk[2], bk[3]);
          }
        }
        float* row_g = r0 < params.seqlen_q ? dq_head + r0 * dq_row_stride + col0 : nullptr;
        float* row_g8 = r0 + 8 < params.seqlen_q ? dq_head + (r0 + 8) * dq_row_stride + col0 : nullptr;
#pragma unroll
        for (int d = 0; d < Tr::kDqChunk / 8; ++d) {
          atomic_add_tile(row_g ? row_g + 8 * d : nullptr, row_g8 ? row_g8 + 8 * d : nullptr, acc[d], t);
        }
      }
    }
  }

  store_dk_dv<kIsBf16>(params, b, h_kv, key0, dK, dV, t);
}

template <int kHeadDim, bool kIsBf16>
__global__ void __launch_bounds__(bwd_threads(kHeadDim)) flash_bwd_dkdv_kernel(const FlashBwdParams params) {
  flash_bwd_dkdv_block<kHeadDim, kIsBf16>(params);
}

// ---------------------------------------------------------------------------
// Deterministic dQ: one CTA per (batch, query head, query tile), no atomics.

template <int kHeadDim, bool kIsBf16>
__device__ __forceinline__ void flash_bwd_dq_block(const FlashBwdParams& params) {
  using Tr = typename DqTileShape<kHeadDim>::type;
  constexpr int kBlockM = Tr::kBlockM, kBlockN = Tr::kBlockN, kMFrags = Tr::kMFrags;
  constexpr int kNTiles = Tr::kNTiles, kDTiles = Tr::kDTiles, kRowBytes = Tr::kSmemRow * 2;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  const unsigned sQ = smem_addr(smem_raw);
  const unsigned sdO = sQ + Tr::kSmemQ * 2;
  const unsigned sK = sdO + Tr::kSmemQ * 2;
  const unsigned sV = sK + Tr::kSmemK * 2;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const QueryTileWork<kBlockM, kBlockN> work = QueryTileWork<kBlockM, kBlockN>::make(params);
  const int b = work.b, h = work.h, h_kv = work.h_kv, row_lo = work.row_lo, row_hi = work.row_hi;
  const Mask& mask = work.mask;
  const KeyTileRange<kBlockN>& tiles = work.tiles;
  const int n_tiles = tiles.count();
  const bool has_alibi = params.alibi_slopes != nullptr;
  const float slope_log2 = has_alibi ? alibi_slope_log2(params, b, h) : 0.f;

  const elem_t* q_head = head_rows<const elem_t>(params.q, b, h, params.q_batch_stride, params.q_head_stride);
  const elem_t* do_head = head_rows<const elem_t>(params.dout, b, h, params.do_batch_stride, params.do_head_stride);
  const elem_t* k_head = head_rows<const elem_t>(params.k, b, h_kv, params.k_batch_stride, params.k_head_stride);
  const elem_t* v_head = head_rows<const elem_t>(params.v, b, h_kv, params.v_batch_stride, params.v_head_stride);

  const int warp_row = warp * 16 * kMFrags;
  const int row0 = row_lo + warp_row + g;
  const int warp_row_lo = row_lo + warp_row, warp_row_hi = min(warp_row_lo + 16 * kMFrags, row_hi);

  // This thread's rows: lse in log2 units and delta (padded rows are inert).
  float lse_l2[2 * kMFrags], delta[2 * kMFrags];
  const long long stat = (static_cast<long long>(b) * params.heads_q + h) * params.seqlen_q_pad;
#pragma unroll
  for (int r = 0; r < 2 * kMFrags; ++r) {
    lse_l2[r] = params.lse_log2[stat + row0 + 8 * r];
    delta[r] = params.delta[stat + row0 + 8 * r];
  }

  const unsigned a_off = (warp_row + (lane & 15)) * kRowBytes + (lane >> 4) * 16;
  const unsigned b_off = ((lane & 7) + (lane >> 4) * 8) * kRowBytes + ((lane >> 3) & 1) * 16;
  const unsigned bt_off = ((lane & 7) + ((lane >> 3) & 1) * 8) * kRowBytes + (lane >> 4) * 16;

  float dQ[kMFrags][kDTiles][4];
#pragma unroll
  for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
    for (int d = 0; d < kDTiles; ++d)
#pragma unroll
      for (int e = 0; e < 4; ++e) dQ[mf][d][e] = 0.f;

  if (n_tiles > 0) {
    load_rows<Tr, kBlockM>(sQ, q_head, params.q_row_stride, row_lo, params.seqlen_q, tid);
    load_rows<Tr, kBlockM>(sdO, do_head, params.do_row_stride, row_lo, params.seqlen_q, tid);
    load_rows<Tr, kBlockN>(sK, k_head, params.k_row_stride, tiles.tile(0) * kBlockN, params.seqlen_k, tid);
    load_rows<Tr, kBlockN>(sV, v_head, params.v_row_stride, tiles.tile(0) * kBlockN, params.seqlen_k, tid);
    cp_async_commit();
  }

  for (int it = 0; it < n_tiles; ++it) {
    const int col_lo = tiles.tile(it) * kBlockN;
    cp_async_wait<0>();
    __syncthreads();  // K_t and V_t are in

    float S[kMFrags][kNTiles][4], dP[kMFrags][kNTiles][4];
#pragma unroll
    for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
      for (int j = 0; j < kNTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) S[mf][j][e] = dP[mf][j][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < Tr::kKSteps; ++ks) {
      unsigned aq[kMFrags][4], ado[kMFrags][4];
#pragma unroll
      for (int mf = 0; mf < kMFrags; ++mf) {
        ldmatrix_x4(aq[mf], sQ + a_off + mf * 16 * kRowBytes + ks * 32);
        ldmatrix_x4(ado[mf], sdO + a_off + mf * 16 * kRowBytes + ks * 32);
      }
#pragma unroll
      for (int jp = 0; jp < kNTiles / 2; ++jp) {
        unsigned bk[4], bv[4];
        ldmatrix_x4(bk, sK + b_off + jp * 16 * kRowBytes + ks * 32);
        ldmatrix_x4(bv, sV + b_off + jp * 16 * kRowBytes + ks * 32);
#pragma unroll
        for (int mf = 0; mf < kMFrags; ++mf) {
          mma_16816<kIsBf16>(S[mf][2 * jp], aq[mf], bk[0], bk[1]);
          mma_16816<kIsBf16>(S[mf][2 * jp + 1], aq[mf], bk[2], bk[3]);
          mma_16816<kIsBf16>(dP[mf][2 * jp], ado[mf], bv[0], bv[1]);
          mma_16816<kIsBf16>(dP[mf][2 * jp + 1], ado[mf], bv[2], bv[3]);
        }
      }
    }

    // x in log2 units, the mask, then dS = P (dP - delta), kept in dP.
    if (has_alibi) {
      apply_alibi_log2(S, params.softmax_scale_log2, slope_log2, row0, params.q_offset, col_lo + 2 * t);
    } else {
      scale_log2(S, params.softmax_scale_log2);
    }
    if (warp_row_lo < warp_row_hi && !key_tile_is_full<kBlockN>(mask, warp_row_lo, warp_row_hi, col_lo)) {
      apply_mask(S, mask, row0, col_lo + 2 * t);
    }
#pragma unroll
    for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
      for (int j = 0; j < kNTiles; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = 2 * mf + (e >> 1);
          dP[mf][j][e] = exp2f(S[mf][j][e] - lse_l2[r]) * (dP[mf][j][e] - delta[r]);
        }

    // dQ += dS K (k = key; K is [key][d], the .trans B operand).
#pragma unroll
    for (int ks = 0; ks < kBlockN / 16; ++ks) {
      unsigned ads[kMFrags][4];
#pragma unroll
      for (int mf = 0; mf < kMFrags; ++mf) acc_to_a<kIsBf16>(ads[mf], dP[mf][2 * ks], dP[mf][2 * ks + 1]);
#pragma unroll
      for (int dp = 0; dp < kDTiles / 2; ++dp) {
        unsigned bk[4];
        ldmatrix_x4_trans(bk, sK + bt_off + ks * 16 * kRowBytes + dp * 32);
#pragma unroll
        for (int mf = 0; mf < kMFrags; ++mf) {
          mma_16816<kIsBf16>(dQ[mf][2 * dp], ads[mf], bk[0], bk[1]);
          mma_16816<kIsBf16>(dQ[mf][2 * dp + 1], ads[mf], bk[2], bk[3]);
        }
      }
    }

    __syncthreads();  // every warp is done with K_t and V_t
    if (it + 1 < n_tiles) {
      const int next = tiles.tile(it + 1) * kBlockN;
      load_rows<Tr, kBlockN>(sK, k_head, params.k_row_stride, next, params.seqlen_k, tid);
      load_rows<Tr, kBlockN>(sV, v_head, params.v_row_stride, next, params.seqlen_k, tid);
      cp_async_commit();
    }
  }

  elem_t* dq_head = head_rows<elem_t>(params.dq, b, h, params.dq_batch_stride, params.dq_head_stride);
#pragma unroll
  for (int mf = 0; mf < kMFrags; ++mf)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = row0 + 16 * mf + 8 * half;
      if (row < params.seqlen_q) {
        elem_t* dq_row = dq_head + static_cast<index_t>(row) * params.dq_row_stride + 2 * t;
#pragma unroll
        for (int d = 0; d < kDTiles; ++d) {
          *reinterpret_cast<unsigned*>(dq_row + 8 * d) = pack_float2<kIsBf16>(
              dQ[mf][d][2 * half] * params.softmax_scale, dQ[mf][d][2 * half + 1] * params.softmax_scale);
        }
      }
    }
}

template <int kHeadDim, bool kIsBf16>
__global__ void __launch_bounds__(kDqThreads) flash_bwd_dq_kernel(const FlashBwdParams params) {
  flash_bwd_dq_block<kHeadDim, kIsBf16>(params);
}

}  // namespace attention
}  // namespace pykernels
