// Picks the rotary kernel's template arguments and grid (see rotary.cuh).
//
// Vector width: 16 bytes per access (8 half/bfloat16 or 4 float) when every
// row start, every stride and both halves of the rotary dim allow it, else
// one element per access (odd shapes stay correct, just slower).
// Grid: rotary_grid (rotary.cuh): tokens across x, row chunks across y.
#include <type_traits>

#include "rope/rotary.cuh"
#include "rope/rotary_launch.h"

namespace pykernels {
namespace rope {
namespace {

constexpr int kVectorBytes = 16;
constexpr long long kMaxBlocks = 2147483647LL;

template <typename F>
void bool_switch(bool flag, F&& f) {
  if (flag) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

int element_size(ScalarType dtype) { return dtype == ScalarType::kFloat ? 4 : 2; }

bool aligned(const void* p, int bytes) { return reinterpret_cast<unsigned long long>(p) % bytes == 0; }

// A stride matters only when its dim has more than one index.
bool stride_ok(long long stride, int size, int vec) { return size == 1 || stride % vec == 0; }

bool tensor_ok(const RotaryTensor& t, const RotaryArgs& a, int vec, int bytes) {
  if (t.heads == 0) return true;
  const int sizes[3] = {a.batch, a.seqlen, t.heads};
  for (int d = 0; d < 3; ++d) {
    if (!stride_ok(t.in_stride[d], sizes[d], vec) || !stride_ok(t.out_stride[d], sizes[d], vec)) return false;
  }
  return aligned(t.in, bytes) && aligned(t.out, bytes);
}

template <typename T, int VEC, bool INTERLEAVED, bool FREQS_IN_KERNEL>
cudaError_t launch(const RotaryArgs& a, cudaStream_t stream) {
  const bool in_place = a.q.in == a.q.out;
  const int rot_half = a.rot_dim / 2;
  const int tail_vecs = in_place ? 0 : (a.head_dim - a.rot_dim) / VEC;
  const int items_per_row = rot_half / VEC + tail_vecs;
  const long long n_tokens = static_cast<long long>(a.batch) * a.seqlen;
  const RotaryGrid grid = rotary_grid(items_per_row, a.q.heads + a.k.heads, n_tokens);
  if (grid.blocks_x > kMaxBlocks || grid.blocks_y > 65535) return cudaErrorInvalidValue;

  const long long ids_sb = a.ids_stride[0];
  const long long ids_ss = a.ids_per_token ? a.ids_stride[1] : 0;
  const int seq_step = a.ids_per_token ? 0 : 1;
  const float* table = FREQS_IN_KERNEL ? a.inv_freq : a.cos;
  // An absent k gets q's pointers and no heads: nothing reads them.
  const RotaryTensor& k = a.k.heads > 0 ? a.k : a.q;

  const dim3 blocks(static_cast<unsigned>(grid.blocks_x), static_cast<unsigned>(grid.blocks_y));
  rotary_kernel<T, VEC, INTERLEAVED, FREQS_IN_KERNEL><<<blocks, kThreads, 0, stream>>>(
      static_cast<const T*>(a.q.in), static_cast<T*>(a.q.out), a.q.in_stride[0], a.q.in_stride[1], a.q.in_stride[2],
      a.q.out_stride[0], a.q.out_stride[1], a.q.out_stride[2], a.q.heads,  //
      static_cast<const T*>(k.in), static_cast<T*>(k.out), k.in_stride[0], k.in_stride[1], k.in_stride[2],
      k.out_stride[0], k.out_stride[1], k.out_stride[2], a.k.heads,  //
      table, a.sin, a.table_stride, a.cache_len, a.freq_scale,     //
      a.ids, ids_sb, ids_ss, seq_step, a.offset,                    //
      n_tokens, a.seqlen, rot_half, tail_vecs, a.conjugate ? 1 : 0, grid.tokens_per_block, grid.rows_per_chunk);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_typed(const RotaryArgs& a, int vec, cudaStream_t stream) {
  constexpr int kVec = kVectorBytes / sizeof(T);
  cudaError_t err = cudaSuccess;
  bool_switch(vec == kVec, [&](auto wide) {
    bool_switch(a.interleaved, [&](auto interleaved) {
      bool_switch(a.cos == nullptr, [&](auto freqs_in_kernel) {
        constexpr int VEC = decltype(wide)::value ? kVec : 1;
        err = launch<T, VEC, decltype(interleaved)::value, decltype(freqs_in_kernel)::value>(a, stream);
      });
    });
  });
  return err;
}

}  // namespace

int rotary_vector_width(const RotaryArgs& a, ScalarType dtype) {
  const int vec = kVectorBytes / element_size(dtype);
  const int rot_half = a.rot_dim / 2;
  bool ok = rot_half % vec == 0 && a.head_dim % vec == 0 && tensor_ok(a.q, a, vec, kVectorBytes) &&
            tensor_ok(a.k, a, vec, kVectorBytes);
  // The table is read as float4 when vec >= 4 (always, for 16-byte vectors).
  if (a.cos != nullptr) {
    ok = ok && aligned(a.cos, kVectorBytes) && aligned(a.sin, kVectorBytes) && a.table_stride % 4 == 0;
  } else {
    ok = ok && aligned(a.inv_freq, kVectorBytes);
  }
  return ok ? vec : 1;
}

cudaError_t rotary_launch(const RotaryArgs& a, ScalarType dtype, cudaStream_t stream) {
  if (a.rot_dim <= 0 || a.rot_dim % 2 != 0 || a.rot_dim > a.head_dim || a.q.heads < 0 || a.k.heads < 0 ||
      a.batch < 0 || a.seqlen < 0) {
    return cudaErrorInvalidValue;
  }
  if (a.k.heads > 0 && (a.k.in == a.k.out) != (a.q.in == a.q.out)) return cudaErrorInvalidValue;
  if (a.cos == nullptr ? a.inv_freq == nullptr : a.sin == nullptr) return cudaErrorInvalidValue;
  if (static_cast<long long>(a.batch) * a.seqlen == 0 || a.q.heads + a.k.heads == 0) return cudaSuccess;
  // One block per token at worst: the grid's x dimension holds 2^31 - 1.
  if (static_cast<long long>(a.batch) * a.seqlen > kMaxBlocks) return cudaErrorInvalidValue;
  const int vec = rotary_vector_width(a, dtype);
  switch (dtype) {
    case ScalarType::kHalf:
      return launch_typed<__half>(a, vec, stream);
    case ScalarType::kBFloat16:
      return launch_typed<__nv_bfloat16>(a, vec, stream);
    case ScalarType::kFloat:
      return launch_typed<float>(a, vec, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace rope
}  // namespace pykernels
