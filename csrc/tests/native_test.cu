// Native test of the standalone kernel library (no torch, no Python).
//
// Runs the attention forward and the rotary kernel through their raw-pointer
// launchers on small awkward shapes and compares them with a double-precision
// host computation of the same semantics (API.md). Built by CMakeLists.txt;
// CI compiles it, the GPU script runs it.
//
//   ./build/cmake/native_test      -> prints one line per case, exits 1 on any failure
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "attention/flash_fwd.h"
#include "rope/rotary_launch.h"

namespace {

#define CUDA_OK(expr)                                                                      \
  do {                                                                                     \
    cudaError_t err_ = (expr);                                                             \
    if (err_ != cudaSuccess) {                                                             \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr,                   \
                   cudaGetErrorString(err_));                                              \
      std::exit(2);                                                                        \
    }                                                                                      \
  } while (0)

using pykernels::attention::FlashFwdParams;

struct AttnCase {
  int batch, seqlen_q, seqlen_k, heads_q, heads_kv, head_dim;
  bool causal;
  int left, right, sinks;
  bool alibi, sink_logits;
};

// bf16 values the kernel will actually see, kept as floats for the host side.
std::vector<float> random_bf16(size_t n, std::mt19937& rng, std::vector<__nv_bfloat16>& dev) {
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> host(n);
  dev.resize(n);
  for (size_t i = 0; i < n; ++i) {
    dev[i] = __float2bfloat16(dist(rng));
    host[i] = __bfloat162float(dev[i]);
  }
  return host;
}

template <typename T>
T* to_device(const std::vector<T>& host) {
  T* ptr = nullptr;
  CUDA_OK(cudaMalloc(&ptr, host.size() * sizeof(T)));
  CUDA_OK(cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return ptr;
}

// The mask predicate of pykernels/masks.py, written once more for the host.
bool visible(const AttnCase& c, int i, int j) {
  const long p = i + (c.seqlen_k - c.seqlen_q);
  const int right = c.causal ? 0 : c.right;  // no test case uses a right window with causal
  bool ok = (c.left < 0 || j >= p - c.left) && (right < 0 || j <= p + right);
  ok = ok || j < c.sinks;
  return ok && (!c.causal || j <= p);
}

bool run_attention_case(const AttnCase& c, std::mt19937& rng) {
  const int B = c.batch, Sq = c.seqlen_q, Sk = c.seqlen_k, Hq = c.heads_q, Hkv = c.heads_kv, D = c.head_dim;
  std::vector<__nv_bfloat16> dq, dk, dv;
  auto q = random_bf16(size_t(B) * Sq * Hq * D, rng, dq);
  auto k = random_bf16(size_t(B) * Sk * Hkv * D, rng, dk);
  auto v = random_bf16(size_t(B) * Sk * Hkv * D, rng, dv);
  std::vector<float> slopes(Hq), sinks(Hq);
  for (int h = 0; h < Hq; ++h) {
    slopes[h] = std::pow(2.f, -8.f * (h + 1) / Hq);
    sinks[h] = 0.25f * h - 0.5f;
  }

  FlashFwdParams p{};
  p.q = to_device(dq);
  p.k = to_device(dk);
  p.v = to_device(dv);
  __nv_bfloat16* out = nullptr;
  float* lse = nullptr;
  CUDA_OK(cudaMalloc(&out, dq.size() * sizeof(__nv_bfloat16)));
  CUDA_OK(cudaMalloc(&lse, size_t(B) * Hq * Sq * sizeof(float)));
  CUDA_OK(cudaMemset(out, 0xff, dq.size() * sizeof(__nv_bfloat16)));  // NaN poison
  p.out = out;
  p.lse = lse;
  p.sink_logits = c.sink_logits ? to_device(sinks) : nullptr;
  p.alibi_slopes = c.alibi ? to_device(slopes) : nullptr;
  p.q_batch_stride = long(Sq) * Hq * D, p.q_row_stride = long(Hq) * D, p.q_head_stride = D;
  p.k_batch_stride = long(Sk) * Hkv * D, p.k_row_stride = long(Hkv) * D, p.k_head_stride = D;
  p.v_batch_stride = p.k_batch_stride, p.v_row_stride = p.k_row_stride, p.v_head_stride = D;
  p.o_batch_stride = p.q_batch_stride, p.o_row_stride = p.q_row_stride, p.o_head_stride = D;
  p.alibi_batch_stride = 0;
  p.batch = B, p.seqlen_q = Sq, p.seqlen_k = Sk, p.heads_q = Hq, p.heads_kv = Hkv, p.head_dim = D;
  p.q_offset = Sk - Sq;
  p.window_left = c.left, p.window_right = c.right, p.sink_tokens = c.sinks, p.causal = c.causal;
  p.softmax_scale = 1.f / std::sqrt(float(D));
  p.softmax_scale_log2 = p.softmax_scale * 1.4426950408889634f;  // log2(e)
  CUDA_OK(pykernels::attention::run_flash_fwd(p, /*is_bf16=*/true, nullptr));
  CUDA_OK(cudaDeviceSynchronize());

  std::vector<__nv_bfloat16> got(dq.size());
  std::vector<float> got_lse(size_t(B) * Hq * Sq);
  CUDA_OK(cudaMemcpy(got.data(), out, got.size() * sizeof(__nv_bfloat16), cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(got_lse.data(), lse, got_lse.size() * sizeof(float), cudaMemcpyDeviceToHost));

  double max_err = 0, max_lse_err = 0;
  std::vector<double> s(Sk);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hq; ++h)
      for (int i = 0; i < Sq; ++i) {
        const int hk = h / (Hq / Hkv);
        const long p_i = i + (Sk - Sq);
        double m = c.sink_logits ? sinks[h] : -INFINITY;
        for (int j = 0; j < Sk; ++j) {
          if (!visible(c, i, j)) { s[j] = -INFINITY; continue; }
          double dot = 0;
          for (int d = 0; d < D; ++d)
            dot += double(q[((size_t(b) * Sq + i) * Hq + h) * D + d]) * k[((size_t(b) * Sk + j) * Hkv + hk) * D + d];
          s[j] = dot * p.softmax_scale - (c.alibi ? slopes[h] * std::fabs(double(p_i - j)) : 0.0);
          m = std::max(m, s[j]);
        }
        double l = c.sink_logits ? std::exp(sinks[h] - m) : 0.0;
        for (int j = 0; j < Sk; ++j) l += std::isinf(s[j]) ? 0.0 : std::exp(s[j] - m);
        const double ref_lse = l > 0 ? m + std::log(l) : -INFINITY;
        const float g_lse = got_lse[(size_t(b) * Hq + h) * Sq + i];
        if (std::isinf(ref_lse) != std::isinf(g_lse)) max_lse_err = INFINITY;
        else if (!std::isinf(ref_lse)) max_lse_err = std::max(max_lse_err, std::fabs(g_lse - ref_lse));
        for (int d = 0; d < D; ++d) {
          double o = 0;
          for (int j = 0; j < Sk; ++j)
            if (!std::isinf(s[j])) o += std::exp(s[j] - ref_lse) * v[((size_t(b) * Sk + j) * Hkv + hk) * D + d];
          const float g = __bfloat162float(got[((size_t(b) * Sq + i) * Hq + h) * D + d]);
          const double e = std::isnan(g) ? INFINITY : std::fabs(g - o);
          max_err = std::max(max_err, e);
        }
      }
  // bf16 output rounding is 2^-8 relative; outputs here are O(1).
  const bool ok = max_err < 2e-2 && max_lse_err < 1e-3;
  std::printf("%s attention B=%d Sq=%d Sk=%d Hq=%d Hkv=%d D=%d causal=%d window=(%d,%d) sinks=%d alibi=%d "
              "sink_logits=%d: max err %.2e, lse err %.2e\n",
              ok ? "PASS" : "FAIL", B, Sq, Sk, Hq, Hkv, D, c.causal, c.left, c.right, c.sinks, c.alibi,
              c.sink_logits, max_err, max_lse_err);
  cudaFree((void*)p.q), cudaFree((void*)p.k), cudaFree((void*)p.v), cudaFree(out), cudaFree(lse);
  if (p.sink_logits) cudaFree((void*)p.sink_logits);
  if (p.alibi_slopes) cudaFree((void*)p.alibi_slopes);
  return ok;
}

bool run_rotary_case(int B, int S, int H, int D, int rot, bool interleaved, std::mt19937& rng) {
  std::vector<__nv_bfloat16> dx;
  auto x = random_bf16(size_t(B) * S * H * D, rng, dx);
  std::vector<float> cos_t(size_t(S) * rot / 2), sin_t(cos_t.size());
  for (int s = 0; s < S; ++s)
    for (int i = 0; i < rot / 2; ++i) {
      const double theta = s * std::pow(10000.0, -2.0 * i / rot);
      cos_t[s * (rot / 2) + i] = float(std::cos(theta));
      sin_t[s * (rot / 2) + i] = float(std::sin(theta));
    }
  pykernels::rope::RotaryArgs a;
  __nv_bfloat16* in = to_device(dx);
  __nv_bfloat16* out = nullptr;
  CUDA_OK(cudaMalloc(&out, dx.size() * sizeof(__nv_bfloat16)));
  float* dcos = to_device(cos_t);
  float* dsin = to_device(sin_t);
  a.q.in = in, a.q.out = out, a.q.heads = H;
  a.q.in_stride[0] = a.q.out_stride[0] = long(S) * H * D;
  a.q.in_stride[1] = a.q.out_stride[1] = long(H) * D;
  a.q.in_stride[2] = a.q.out_stride[2] = D;
  a.batch = B, a.seqlen = S, a.head_dim = D, a.rot_dim = rot;
  a.cos = dcos, a.sin = dsin, a.table_stride = rot / 2, a.cache_len = S;
  a.interleaved = interleaved;
  CUDA_OK(pykernels::rope::rotary_launch(a, pykernels::rope::ScalarType::kBFloat16, nullptr));
  CUDA_OK(cudaDeviceSynchronize());
  std::vector<__nv_bfloat16> got(dx.size());
  CUDA_OK(cudaMemcpy(got.data(), out, got.size() * sizeof(__nv_bfloat16), cudaMemcpyDeviceToHost));
  double max_err = 0;
  for (int b = 0; b < B; ++b)
    for (int s = 0; s < S; ++s)
      for (int h = 0; h < H; ++h) {
        const float* row = &x[((size_t(b) * S + s) * H + h) * D];
        for (int d = 0; d < D; ++d) {
          double want = row[d];
          if (d < rot) {
            const int i = interleaved ? d / 2 : d % (rot / 2);
            const int partner = interleaved ? (d ^ 1) : (d < rot / 2 ? d + rot / 2 : d - rot / 2);
            const bool first = interleaved ? (d % 2 == 0) : (d < rot / 2);
            const double c = cos_t[s * (rot / 2) + i], sn = sin_t[s * (rot / 2) + i];
            want = first ? row[d] * c - row[partner] * sn : row[d] * c + row[partner] * sn;
          }
          const float g = __bfloat162float(got[((size_t(b) * S + s) * H + h) * D + d]);
          max_err = std::max(max_err, std::isnan(g) ? INFINITY : std::fabs(g - want));
        }
      }
  const bool ok = max_err < 3e-2;
  std::printf("%s rotary B=%d S=%d H=%d D=%d rot=%d interleaved=%d: max err %.2e\n", ok ? "PASS" : "FAIL", B, S,
              H, D, rot, interleaved, max_err);
  cudaFree(in), cudaFree(out), cudaFree(dcos), cudaFree(dsin);
  return ok;
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: nothing to run\n");
    return 1;
  }
  std::mt19937 rng(1234);
  const AttnCase cases[] = {
      {1, 37, 53, 4, 2, 64, false, -1, -1, 0, false, false},
      {2, 53, 37, 4, 1, 128, true, -1, -1, 0, false, false},  // Sq > Sk: fully-masked rows
      {1, 97, 97, 2, 2, 128, true, 16, -1, 3, true, true},
      {1, 17, 130, 8, 1, 64, false, 20, 5, 2, false, true},
  };
  bool ok = true;
  for (const auto& c : cases) ok = run_attention_case(c, rng) && ok;
  ok = run_rotary_case(2, 33, 4, 64, 64, false, rng) && ok;
  ok = run_rotary_case(1, 17, 3, 128, 64, true, rng) && ok;
  std::printf("%s\n", ok ? "native_test: all passed" : "native_test: FAILED");
  return ok ? 0 : 1;
}
