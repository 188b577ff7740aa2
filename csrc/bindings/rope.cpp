// Torch binding of the rotary kernel (csrc/rope/): pykernels._C.rope_rotary
// and rope_rotary_freqs.
//
// The Python op (pykernels/ops/rope.py) validates and normalises arguments
// and allocates the outputs; these checks are the last guard against a call
// that would read or write out of bounds, so they stay even though Python
// has already checked the same things.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <optional>

#include "bindings/bindings.h"
#include "rope/rotary_launch.h"

namespace pykernels {
namespace {

using OptTensor = std::optional<at::Tensor>;

rope::ScalarType scalar_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kHalf:
      return rope::ScalarType::kHalf;
    case at::kBFloat16:
      return rope::ScalarType::kBFloat16;
    case at::kFloat:
      return rope::ScalarType::kFloat;
    default:
      TORCH_CHECK(false, "rope: expected float16, bfloat16 or float32 q/k, got ", t.scalar_type());
  }
}

void check_rows(const at::Tensor& t, const at::Tensor& q, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.device() == q.device(), "rope: ", name, " must be a CUDA tensor on ", q.device());
  TORCH_CHECK(t.dim() == 4, "rope: ", name, " must be (B, S, H, D), got ", t.dim(), "-d");
  TORCH_CHECK(t.scalar_type() == q.scalar_type(), "rope: ", name, " must have q's dtype");
  TORCH_CHECK(t.size(0) == q.size(0) && t.size(1) == q.size(1) && t.size(3) == q.size(3), "rope: ", name,
              " must share q's batch, sequence and head dims");
  TORCH_CHECK(t.size(3) == 1 || t.stride(3) == 1, "rope: ", name, " must have a contiguous last dim");
}

rope::RotaryTensor describe(const at::Tensor& in, const at::Tensor& out) {
  TORCH_CHECK(out.sizes() == in.sizes(), "rope: an output must have its input's shape");
  rope::RotaryTensor r;
  r.in = in.data_ptr();
  r.out = out.data_ptr();
  for (int d = 0; d < 3; ++d) {
    r.in_stride[d] = in.stride(d);
    r.out_stride[d] = out.stride(d);
  }
  r.heads = static_cast<int>(in.size(2));
  return r;
}

void check_float_vector(const at::Tensor& t, const at::Tensor& q, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.device() == q.device(), "rope: ", name, " must be on ", q.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, "rope: ", name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.size(-1) == 1 || t.stride(-1) == 1, "rope: ", name, " must have a contiguous last dim");
}

// Everything but the cos/sin source: tensors, sizes and positions.
rope::RotaryArgs common_args(const at::Tensor& q, const OptTensor& k, int64_t rot_half, const OptTensor& positions,
                             int64_t offset, const at::Tensor& q_out, const OptTensor& k_out, bool interleaved,
                             bool conjugate) {
  check_rows(q, q, "q");
  check_rows(q_out, q, "q_out");
  rope::RotaryArgs a;
  a.q = describe(q, q_out);
  if (k.has_value()) {
    TORCH_CHECK(k_out.has_value(), "rope: k_out is required with k");
    check_rows(*k, q, "k");
    check_rows(*k_out, q, "k_out");
    a.k = describe(*k, *k_out);
  }
  a.batch = static_cast<int>(q.size(0));
  a.seqlen = static_cast<int>(q.size(1));
  a.head_dim = static_cast<int>(q.size(3));
  a.rot_dim = static_cast<int>(2 * rot_half);
  TORCH_CHECK(rot_half > 0 && a.rot_dim <= a.head_dim, "rope: rotary dim ", a.rot_dim, " must be in [2, head dim ",
              a.head_dim, "]");
  if (positions.has_value()) {
    const at::Tensor& p = *positions;
    TORCH_CHECK(p.is_cuda() && p.device() == q.device(), "rope: positions must be on ", q.device());
    TORCH_CHECK(p.scalar_type() == at::kLong, "rope: positions must be int64, got ", p.scalar_type());
    TORCH_CHECK((p.dim() == 1 && p.size(0) == q.size(0)) ||
                    (p.dim() == 2 && p.size(0) == q.size(0) && p.size(1) == q.size(1)),
                "rope: positions must be (B,) offsets or (B, S) ids");
    // int64_t is long on Linux; the kernel spells the same 64 bits long long.
    a.ids = reinterpret_cast<const long long*>(p.data_ptr<int64_t>());
    a.ids_per_token = p.dim() == 2;
    a.ids_stride[0] = p.stride(0);
    a.ids_stride[1] = p.dim() == 2 ? p.stride(1) : 0;
  }
  a.offset = offset;
  a.interleaved = interleaved;
  a.conjugate = conjugate;
  return a;
}

void launch(const rope::RotaryArgs& a, const at::Tensor& q) {
  const c10::cuda::CUDAGuard guard(q.device());
  const cudaError_t err = rope::rotary_launch(a, scalar_type(q), at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "rope: kernel launch failed: ", cudaGetErrorString(err));
}

// cos/sin (cache_len, R/2) float32 tables indexed by position.
void rotary(const at::Tensor& q, const OptTensor& k, const at::Tensor& cos, const at::Tensor& sin,
            const OptTensor& positions, int64_t offset, const at::Tensor& q_out, const OptTensor& k_out,
            bool interleaved, bool conjugate) {
  check_float_vector(cos, q, "cos");
  check_float_vector(sin, q, "sin");
  TORCH_CHECK(cos.dim() == 2 && cos.sizes() == sin.sizes() && cos.strides() == sin.strides(),
              "rope: cos and sin must be (cache_len, R/2) tables of one shape and layout");
  rope::RotaryArgs a = common_args(q, k, cos.size(1), positions, offset, q_out, k_out, interleaved, conjugate);
  a.cos = cos.data_ptr<float>();
  a.sin = sin.data_ptr<float>();
  a.table_stride = cos.stride(0);
  a.cache_len = cos.size(0);
  launch(a, q);
}

// cos/sin computed in the kernel from inv_freq (R/2,), scaled by `scale`.
void rotary_freqs(const at::Tensor& q, const OptTensor& k, const at::Tensor& inv_freq, double scale,
                  const OptTensor& positions, int64_t offset, const at::Tensor& q_out, const OptTensor& k_out,
                  bool interleaved, bool conjugate) {
  check_float_vector(inv_freq, q, "inv_freq");
  TORCH_CHECK(inv_freq.dim() == 1, "rope: inv_freq must be 1-d (R/2,)");
  rope::RotaryArgs a = common_args(q, k, inv_freq.size(0), positions, offset, q_out, k_out, interleaved, conjugate);
  a.inv_freq = inv_freq.data_ptr<float>();
  a.freq_scale = static_cast<float>(scale);
  launch(a, q);
}

}  // namespace

void register_rope(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("rope_rotary", &rotary,
        "Rotate q (and k) by cos/sin tables indexed by position, into q_out (and k_out); in place when out is in.",
        py::arg("q"), py::arg("k"), py::arg("cos"), py::arg("sin"), py::arg("positions"), py::arg("offset"),
        py::arg("q_out"), py::arg("k_out"), py::arg("interleaved"), py::arg("conjugate"));
  m.def("rope_rotary_freqs", &rotary_freqs,
        "Like rope_rotary, with cos/sin computed in the kernel from inv_freq and scaled by scale.", py::arg("q"),
        py::arg("k"), py::arg("inv_freq"), py::arg("scale"), py::arg("positions"), py::arg("offset"),
        py::arg("q_out"), py::arg("k_out"), py::arg("interleaved"), py::arg("conjugate"));
}

}  // namespace pykernels
