// Host entry point of the rotary kernel: raw pointers and strides, no torch.
//
// The torch binding (csrc/bindings/rope.cpp) and the standalone CMake library
// fill RotaryArgs and call rotary_launch; the CuPy backend makes the same
// choices in Python (pykernels/backends/cupy/rope.py: vector width and
// tokens per block follow the rules in rotary_launch.cu).
#pragma once

#include <cuda_runtime.h>

namespace pykernels {
namespace rope {

enum class ScalarType { kHalf, kBFloat16, kFloat };

// One (B, S, H, D) view: `in` is read, `out` written (out == in: in place).
// Strides are in elements for the batch, sequence and head dims.
struct RotaryTensor {
  const void* in = nullptr;
  void* out = nullptr;
  long long in_stride[3] = {0, 0, 0};
  long long out_stride[3] = {0, 0, 0};
  int heads = 0;  // 0: the tensor is absent (k optional)
};

struct RotaryArgs {
  RotaryTensor q, k;
  int batch = 0, seqlen = 0, head_dim = 0, rot_dim = 0;

  // Table mode: cos and sin (cache_len, rot_dim / 2) float32, row stride
  // table_stride. cos == nullptr selects the in-kernel mode: inv_freq
  // (rot_dim / 2,) float32 and cos/sin scaled by freq_scale.
  const float* cos = nullptr;
  const float* sin = nullptr;
  long long table_stride = 0;
  long long cache_len = 0;
  const float* inv_freq = nullptr;
  float freq_scale = 1.f;

  // Positions: offset + s, plus ids[b] (ids_per_token false: per-batch
  // offsets, shape (B,)) or ids[b, s] alone (ids_per_token true: position
  // ids, shape (B, S)). ids == nullptr: offset + s. int64.
  const long long* ids = nullptr;
  long long ids_stride[2] = {0, 0};
  bool ids_per_token = false;
  long long offset = 0;

  bool interleaved = false;
  bool conjugate = false;
};

// Launches on `stream` (nothing to do for an empty tensor). Returns
// cudaErrorInvalidValue for arguments the kernel cannot serve (odd or
// too-large rot_dim, q in place but k not, a negative size, no cos/sin
// source, more than 2^31 - 1 tokens), else the launch's error.
cudaError_t rotary_launch(const RotaryArgs& args, ScalarType dtype, cudaStream_t stream);

// The 16-byte vector width in elements that rotary_launch uses for these
// arguments, or 1 when some pointer, stride or size rules it out.
int rotary_vector_width(const RotaryArgs& args, ScalarType dtype);

}  // namespace rope
}  // namespace pykernels
