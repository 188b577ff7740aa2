// rotary_kernel run on the host, block by block and thread by thread (the
// kernel has no barriers, so any order is a valid schedule). Arguments are
// the kernel's own, in its order, plus the grid size; tests/test_rope.py fills
// them with the CuPy backend's launch plan. float32 (dtype 0), bfloat16
// (dtype 1) and float16 (dtype 2), each at its 16-byte and one-element
// vector width.
#include "rope/rotary.cuh"

namespace {

using pykernels::rope::index_t;
using pykernels::rope::kThreads;

#define PK_ARGS                                                                                                     \
  const void *q, void *q_out, index_t q_sb, index_t q_ss, index_t q_sh, index_t qo_sb, index_t qo_ss, index_t qo_sh, \
      int q_heads, const void *k, void *k_out, index_t k_sb, index_t k_ss, index_t k_sh, index_t ko_sb,             \
      index_t ko_ss, index_t ko_sh, int k_heads, const float *table, const float *sin_table, index_t table_stride,  \
      index_t cache_len, float freq_scale, const index_t *ids, index_t ids_sb, index_t ids_ss, int seq_step,        \
      index_t offset, index_t n_tokens, int seqlen, int rot_half, int tail_vecs, int conjugate, int tokens_per_block, \
      int rows_per_chunk
#define PK_PASS(T)                                                                                                 \
  static_cast<const T*>(q), static_cast<T*>(q_out), q_sb, q_ss, q_sh, qo_sb, qo_ss, qo_sh, q_heads,                \
      static_cast<const T*>(k), static_cast<T*>(k_out), k_sb, k_ss, k_sh, ko_sb, ko_ss, ko_sh, k_heads, table,     \
      sin_table, table_stride, cache_len, freq_scale, ids, ids_sb, ids_ss, seq_step, offset, n_tokens, seqlen,     \
      rot_half, tail_vecs, conjugate, tokens_per_block, rows_per_chunk

template <typename T, int VEC, bool INTERLEAVED, bool FREQS>
void run(int blocks_x, int blocks_y, PK_ARGS) {
  for (int by = 0; by < blocks_y; ++by) {
    blockIdx.y = by;
    for (int bx = 0; bx < blocks_x; ++bx) {
      blockIdx.x = bx;
      for (int t = 0; t < kThreads; ++t) {
        threadIdx.x = t;
        pykernels::rope::rotary_kernel<T, VEC, INTERLEAVED, FREQS>(PK_PASS(T));
      }
    }
  }
}

template <typename T, int VEC>
void run_flags(bool interleaved, bool freqs, int blocks_x, int blocks_y, PK_ARGS) {
  if (interleaved) {
    freqs ? run<T, VEC, true, true>(blocks_x, blocks_y, PK_PASS(T)) : run<T, VEC, true, false>(blocks_x, blocks_y, PK_PASS(T));
  } else {
    freqs ? run<T, VEC, false, true>(blocks_x, blocks_y, PK_PASS(T)) : run<T, VEC, false, false>(blocks_x, blocks_y, PK_PASS(T));
  }
}

}  // namespace

// rotary.cuh's launch constants, for the test's copy of the launch plan.
extern "C" void pk_rotary_geometry(int* out) {
  out[0] = pykernels::rope::kThreads;
  out[1] = pykernels::rope::kTargetBlocks;
  out[2] = pykernels::rope::kMinRowsPerChunk;
}

// Returns 0, or 1 for a (dtype, vec) pair that has no instantiation here.
extern "C" int pk_rotary_host(int dtype, int vec, int interleaved, int freqs, int blocks_x, int blocks_y, PK_ARGS) {
  if (dtype == 0 && vec == 4) {
    run_flags<float, 4>(interleaved, freqs, blocks_x, blocks_y, PK_PASS(float));
  } else if (dtype == 0 && vec == 1) {
    run_flags<float, 1>(interleaved, freqs, blocks_x, blocks_y, PK_PASS(float));
  } else if (dtype == 1 && vec == 8) {
    run_flags<__nv_bfloat16, 8>(interleaved, freqs, blocks_x, blocks_y, PK_PASS(__nv_bfloat16));
  } else if (dtype == 1 && vec == 1) {
    run_flags<__nv_bfloat16, 1>(interleaved, freqs, blocks_x, blocks_y, PK_PASS(__nv_bfloat16));
  } else if (dtype == 2 && vec == 8) {
    run_flags<__half, 8>(interleaved, freqs, blocks_x, blocks_y, PK_PASS(__half));
  } else if (dtype == 2 && vec == 1) {
    run_flags<__half, 1>(interleaved, freqs, blocks_x, blocks_y, PK_PASS(__half));
  } else {
    return 1;
  }
  return 0;
}
