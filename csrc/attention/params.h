// The plain parameter block of the attention forward kernel.
//
// No torch and no CUDA headers: the torch bindings, the CMake library and the
// CuPy backend (NVRTC) all fill this same struct. The CuPy backend mirrors it
// field for field with a NumPy structured dtype (pykernels/backends/cupy/
// attention.py, _PARAMS_FIELDS), so keep the two in the same order: pointers,
// then 64-bit strides, then 32-bit ints and floats.
#pragma once

namespace pykernels {
namespace attention {

// NVRTC has no <cstdint>; a long long is 64 bits on every CUDA target.
using index_t = long long;

struct FlashFwdParams {
  // q (B, Sq, Hq, D), k and v (B, Sk, Hkv, D): last dim contiguous, 16-byte
  // aligned rows; other strides (in elements) are arbitrary.
  const void* q;
  const void* k;
  const void* v;
  void* out;                  // (B, Sq, Hq, D), strides below
  float* lse;                 // (B, Hq, Sq) contiguous, natural log
  const float* sink_logits;   // (Hq,) or nullptr
  const float* alibi_slopes;  // (Hq,) or (B, Hq) or nullptr

  index_t q_batch_stride, q_row_stride, q_head_stride;
  index_t k_batch_stride, k_row_stride, k_head_stride;
  index_t v_batch_stride, v_row_stride, v_head_stride;
  index_t o_batch_stride, o_row_stride, o_head_stride;
  index_t alibi_batch_stride;  // 0 for (Hq,) slopes, Hq for (B, Hq)

  int batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim;

  // The mask, exactly as pykernels.masks.MaskSpec reads it. window_right is
  // passed as given; the kernel caps it at 0 when causal.
  int q_offset;      // query row i sits at position i + q_offset
  int window_left;   // -1 = unbounded
  int window_right;  // -1 = unbounded
  int sink_tokens;
  int causal;

  float softmax_scale;
  float softmax_scale_log2;  // softmax_scale * log2(e): scores go straight into exp2

  // One int of scratch on the launch's device, or nullptr: the Hopper
  // forward's tile-queue counter (hopper/tile_queue.cuh), which its launcher
  // zeroes on the stream. Without it that kernel takes the static order.
  int* tile_counter;
};

}  // namespace attention
}  // namespace pykernels
