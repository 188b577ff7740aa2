// pykernels._C.attention_fwd / attention_bwd: torch tensors -> FlashFwdParams
// (FlashBwdParams extends it) -> the kernels.
//
// Python (pykernels/backends/cuda/attention.py) has already validated the
// call, normalised the mask numbers and allocated out and lse (so that
// PYKERNELS_POISON_OUTPUTS can poison them); the checks here guard the kernel's
// own assumptions so that a direct call can never read out of bounds.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "attention/flash_bwd.h"
#include "attention/flash_fwd.h"
#include "bindings/bindings.h"

namespace pykernels {
namespace {

void check_qkv(const at::Tensor& t, const char* name, const at::Tensor& q) {
  TORCH_CHECK(t.is_cuda(), name, ": expected a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == q.device(), name, ": expected a tensor on ", q.device(), ", got one on ", t.device());
  TORCH_CHECK(t.dim() == 4, name, ": expected a 4-d (B, S, H, D) tensor, got ", t.dim(), "-d");
  TORCH_CHECK(t.scalar_type() == q.scalar_type(), name, ": expected dtype ", q.scalar_type(), ", got ",
              t.scalar_type());
  TORCH_CHECK(t.stride(3) == 1, name, ": expected a contiguous last dimension, got stride ", t.stride(3));
  // cp.async moves 16-byte chunks and a TMA tensor map steps in multiples of
  // 16 bytes: every row must start 16-byte aligned, and no dimension may be
  // a broadcast (stride 0).
  TORCH_CHECK(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, name, ": expected a 16-byte aligned pointer");
  for (int d = 0; d < 3; ++d) {
    TORCH_CHECK(t.size(d) == 1 || (t.stride(d) % 8 == 0 && t.stride(d) > 0), name,
                ": expected positive strides that are multiples of 8 elements, got ", t.strides());
  }
}

void check_param(const c10::optional<at::Tensor>& t, const char* name, const at::Tensor& q) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->is_cuda() && t->device() == q.device(), name, ": expected a tensor on ", q.device());
  TORCH_CHECK(t->scalar_type() == at::kFloat, name, ": expected float32, got ", t->scalar_type());
  TORCH_CHECK(t->is_contiguous(), name, ": expected a contiguous tensor");
}

void check_f32(const at::Tensor& t, const char* name, const at::Tensor& q, at::IntArrayRef shape) {
  TORCH_CHECK(t.is_cuda() && t.device() == q.device(), name, ": expected a tensor on ", q.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous(), name, ": expected a contiguous float32 tensor");
  TORCH_CHECK(t.sizes() == shape, name, ": expected shape ", shape, ", got ", t.sizes());
}

using OptTensor = c10::optional<at::Tensor>;

// The checks both directions share: q, k, v and out (the output, or the
// saved output in the backward), lse, and the per-head parameters. The head
// dim and the 32-bit limits differ by direction and stay with the caller.
void check_common(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                  const at::Tensor& lse, const OptTensor& sink_logits, const OptTensor& alibi_slopes) {
  TORCH_CHECK(q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16,
              "q: expected float16 or bfloat16, got ", q.scalar_type());
  check_qkv(q, "q", q);
  check_qkv(k, "k", q);
  check_qkv(v, "v", q);
  check_qkv(out, "out", q);
  const int64_t batch = q.size(0), seqlen_q = q.size(1), heads_q = q.size(2), head_dim = q.size(3);
  const int64_t heads_kv = k.size(2);
  TORCH_CHECK(k.size(0) == batch && k.size(3) == head_dim && v.sizes() == k.sizes(),
              "k, v: expected shape (", batch, ", Sk, Hkv, ", head_dim, "), got ", k.sizes(), " and ", v.sizes());
  TORCH_CHECK(heads_kv > 0 && heads_q % heads_kv == 0, "k: expected Hq % Hkv == 0, got Hq=", heads_q,
              " Hkv=", heads_kv);
  TORCH_CHECK(out.sizes() == q.sizes(), "out: expected shape ", q.sizes(), ", got ", out.sizes());
  check_f32(lse, "lse", q, {batch, heads_q, seqlen_q});
  check_param(sink_logits, "sink_logits", q);
  check_param(alibi_slopes, "alibi_slopes", q);
  if (sink_logits) TORCH_CHECK(sink_logits->numel() == heads_q, "sink_logits: expected shape (", heads_q, ",)");
  if (alibi_slopes) {
    TORCH_CHECK(alibi_slopes->numel() == heads_q || alibi_slopes->numel() == batch * heads_q,
                "alibi_slopes: expected shape (Hq,) or (B, Hq), got ", alibi_slopes->sizes());
  }
}

// The forward's fields, which the backward's parameter block extends.
void fill_forward_params(attention::FlashFwdParams& p, const at::Tensor& q, const at::Tensor& k,
                         const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                         const OptTensor& sink_logits, const OptTensor& alibi_slopes, double softmax_scale,
                         bool causal, int64_t window_left, int64_t window_right, int64_t sink_tokens,
                         int64_t q_offset) {
  const int64_t batch = q.size(0), heads_q = q.size(2);
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.out = out.data_ptr();  // written by the forward, read by the backward
  p.lse = lse.data_ptr<float>();
  p.sink_logits = sink_logits ? sink_logits->data_ptr<float>() : nullptr;
  p.alibi_slopes = alibi_slopes ? alibi_slopes->data_ptr<float>() : nullptr;
  p.q_batch_stride = q.stride(0), p.q_row_stride = q.stride(1), p.q_head_stride = q.stride(2);
  p.k_batch_stride = k.stride(0), p.k_row_stride = k.stride(1), p.k_head_stride = k.stride(2);
  p.v_batch_stride = v.stride(0), p.v_row_stride = v.stride(1), p.v_head_stride = v.stride(2);
  p.o_batch_stride = out.stride(0), p.o_row_stride = out.stride(1), p.o_head_stride = out.stride(2);
  p.alibi_batch_stride = (alibi_slopes && alibi_slopes->numel() == batch * heads_q) ? heads_q : 0;
  p.batch = static_cast<int>(batch);
  p.seqlen_q = static_cast<int>(q.size(1));
  p.seqlen_k = static_cast<int>(k.size(1));
  p.heads_q = static_cast<int>(heads_q);
  p.heads_kv = static_cast<int>(k.size(2));
  p.head_dim = static_cast<int>(q.size(3));
  p.q_offset = static_cast<int>(q_offset);
  p.window_left = static_cast<int>(window_left);
  p.window_right = static_cast<int>(window_right);
  p.sink_tokens = static_cast<int>(sink_tokens);
  p.causal = causal ? 1 : 0;
  p.softmax_scale = static_cast<float>(softmax_scale);
  p.softmax_scale_log2 = static_cast<float>(softmax_scale * 1.4426950408889634);  // times log2(e)
}

constexpr int64_t kIntMax = 2147483647;

std::tuple<at::Tensor, at::Tensor> attention_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 at::Tensor out, at::Tensor lse, const OptTensor& sink_logits,
                                                 const OptTensor& alibi_slopes, double softmax_scale, bool causal,
                                                 int64_t window_left, int64_t window_right, int64_t sink_tokens,
                                                 int64_t q_offset) {
  check_common(q, k, v, out, lse, sink_logits, alibi_slopes);
  const int64_t batch = q.size(0), seqlen_q = q.size(1), heads_q = q.size(2), head_dim = q.size(3);
  TORCH_CHECK(attention::flash_fwd_supports_head_dim(static_cast<int>(head_dim)),
              "head_dim: expected one of 32, 64, 96, 128, 256, got ", head_dim);
  TORCH_CHECK(seqlen_q < kIntMax && k.size(1) < kIntMax && batch * heads_q < kIntMax,
              "sequence lengths and B * Hq must fit in 32 bits");

  attention::FlashFwdParams p{};
  fill_forward_params(p, q, k, v, out, lse, sink_logits, alibi_slopes, softmax_scale, causal, window_left,
                      window_right, sink_tokens, q_offset);

  if (seqlen_q == 0 || batch == 0 || heads_q == 0) return {out, lse};
  const c10::cuda::CUDAGuard guard(q.device());
  // torch's current stream (what at::cuda::getCurrentCUDAStream returns), so the
  // kernel orders with the caller's work and with CUDA graphs.
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  // The Hopper forward's tile-queue counter, only for launches that take the
  // queue, from torch's caching allocator (stream-ordered, and a plain
  // allocation under CUDA graph capture); the launcher zeroes it.
  at::Tensor tile_counter;
  if (attention::flash_fwd_takes_tile_queue(p)) {
    tile_counter = at::empty({1}, q.options().dtype(at::kInt));
    p.tile_counter = tile_counter.data_ptr<int>();
  }
  const cudaError_t err = attention::run_flash_fwd(p, q.scalar_type() == at::kBFloat16, stream);
  TORCH_CHECK(err == cudaSuccess, "pykernels attention_fwd: launch failed: ", cudaGetErrorString(err));
  return {out, lse};
}

// Gradients into preallocated dq, dk, dv; lse_log2 and delta are scratch of
// (B, Hq, Sq rounded up to kBwdRowPad). With sink logits, dsink_partial is a
// zeroed (B, Hq, attention_bwd_dsink_slots) that receives the key part of the
// sink-logit gradient (flash_bwd_kernel.cuh); the caller reduces it. dq_accum:
// a zeroed fp32 (B, Sq, Hq, D) for the atomic dQ path, or None for the
// deterministic dQ kernel.
void attention_bwd(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& out, const at::Tensor& lse, const OptTensor& dlse, at::Tensor dq,
                   at::Tensor dk, at::Tensor dv, const OptTensor& dq_accum, at::Tensor lse_log2, at::Tensor delta,
                   const OptTensor& sink_logits, const OptTensor& dsink_partial, const OptTensor& alibi_slopes,
                   double softmax_scale, bool causal, int64_t window_left, int64_t window_right,
                   int64_t sink_tokens, int64_t q_offset) {
  check_common(q, k, v, out, lse, sink_logits, alibi_slopes);
  check_qkv(dout, "dout", q);
  check_qkv(dq, "dq", q);
  check_qkv(dk, "dk", q);
  check_qkv(dv, "dv", q);
  const int64_t batch = q.size(0), seqlen_q = q.size(1), heads_q = q.size(2), head_dim = q.size(3);
  const int64_t seqlen_k = k.size(1);
  TORCH_CHECK(attention::flash_bwd_supports_head_dim(static_cast<int>(head_dim)),
              "head_dim: expected one of 32, 64, 96, 128, got ", head_dim);
  TORCH_CHECK(dout.sizes() == q.sizes() && dq.sizes() == q.sizes(), "dout, dq: expected shape ", q.sizes());
  TORCH_CHECK(dk.sizes() == k.sizes() && dv.sizes() == k.sizes(), "dk, dv: expected shape ", k.sizes());
  if (dlse) check_f32(*dlse, "dlse", q, {batch, heads_q, seqlen_q});
  const int64_t pad = attention::kBwdRowPad;
  const int64_t seqlen_q_pad = (seqlen_q + pad - 1) / pad * pad;
  check_f32(lse_log2, "lse_log2", q, {batch, heads_q, seqlen_q_pad});
  check_f32(delta, "delta", q, {batch, heads_q, seqlen_q_pad});
  if (dq_accum) check_f32(*dq_accum, "dq_accum", q, q.sizes());
  TORCH_CHECK(sink_logits.has_value() == dsink_partial.has_value(),
              "sink_logits and dsink_partial: expected both or neither");
  if (dsink_partial) {
    check_f32(*dsink_partial, "dsink_partial", q,
              {batch, heads_q, attention::flash_bwd_dsink_slots(static_cast<int>(head_dim), seqlen_k)});
  }
  TORCH_CHECK(seqlen_q_pad < kIntMax && seqlen_k < kIntMax && batch * heads_q < kIntMax,
              "sequence lengths and B * Hq must fit in 32 bits");

  attention::FlashBwdParams p{};
  fill_forward_params(p, q, k, v, out, lse, sink_logits, alibi_slopes, softmax_scale, causal, window_left,
                      window_right, sink_tokens, q_offset);
  p.dout = dout.data_ptr();
  p.dlse = dlse ? dlse->data_ptr<float>() : nullptr;
  p.lse_log2 = lse_log2.data_ptr<float>();
  p.delta = delta.data_ptr<float>();
  p.dq_accum = dq_accum ? dq_accum->data_ptr<float>() : nullptr;
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  p.dsink_partial = dsink_partial ? dsink_partial->data_ptr<float>() : nullptr;
  p.do_batch_stride = dout.stride(0), p.do_row_stride = dout.stride(1), p.do_head_stride = dout.stride(2);
  p.dq_batch_stride = dq.stride(0), p.dq_row_stride = dq.stride(1), p.dq_head_stride = dq.stride(2);
  p.dk_batch_stride = dk.stride(0), p.dk_row_stride = dk.stride(1), p.dk_head_stride = dk.stride(2);
  p.dv_batch_stride = dv.stride(0), p.dv_row_stride = dv.stride(1), p.dv_head_stride = dv.stride(2);
  p.seqlen_q_pad = static_cast<int>(seqlen_q_pad);

  if (batch == 0 || heads_q == 0 || (seqlen_q == 0 && seqlen_k == 0)) return;
  const c10::cuda::CUDAGuard guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const cudaError_t err = attention::run_flash_bwd(p, q.scalar_type() == at::kBFloat16, stream);
  TORCH_CHECK(err == cudaSuccess, "pykernels attention_bwd: launch failed: ", cudaGetErrorString(err));
}

}  // namespace

void register_attention(pybind11::module_& m) {
  m.def("attention_fwd", &attention_fwd,
        "Flash attention forward into preallocated out (B, Sq, Hq, D) and lse (B, Hq, Sq); returns (out, lse)",
        pybind11::arg("q"), pybind11::arg("k"), pybind11::arg("v"), pybind11::arg("out"), pybind11::arg("lse"),
        pybind11::arg("sink_logits"), pybind11::arg("alibi_slopes"), pybind11::arg("softmax_scale"),
        pybind11::arg("causal"), pybind11::arg("window_left"), pybind11::arg("window_right"),
        pybind11::arg("sink_tokens"), pybind11::arg("q_offset"));
  m.def("attention_bwd", &attention_bwd,
        "Flash attention backward into preallocated dq, dk, dv; fills the lse_log2 and delta scratch",
        pybind11::arg("dout"), pybind11::arg("q"), pybind11::arg("k"), pybind11::arg("v"), pybind11::arg("out"),
        pybind11::arg("lse"), pybind11::arg("dlse"), pybind11::arg("dq"), pybind11::arg("dk"), pybind11::arg("dv"),
        pybind11::arg("dq_accum"), pybind11::arg("lse_log2"), pybind11::arg("delta"),
        pybind11::arg("sink_logits"), pybind11::arg("dsink_partial"), pybind11::arg("alibi_slopes"), pybind11::arg("softmax_scale"), pybind11::arg("causal"),
        pybind11::arg("window_left"), pybind11::arg("window_right"), pybind11::arg("sink_tokens"),
        pybind11::arg("q_offset"));
  m.def("attention_bwd_dsink_slots", &attention::flash_bwd_dsink_slots,
        "Slots of the backward's dsink_partial scratch per (batch, query head)", pybind11::arg("head_dim"),
        pybind11::arg("seqlen_k"));
  m.def("attention_bwd_supports_head_dim", &attention::flash_bwd_supports_head_dim,
        "Whether the CUDA backward kernels have a tile shape for this head dim");
  m.def("attention_fwd_supports_head_dim", &attention::flash_fwd_supports_head_dim,
        "Whether the CUDA forward kernel has a tile shape for this head dim");
}

}  // namespace pykernels
