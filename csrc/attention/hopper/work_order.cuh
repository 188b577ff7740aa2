// The order in which the persistent sm90 forward's CTAs take work tiles.
//
// A work tile is one query tile of one (batch, head): work tile w is query
// tile (Mq - 1 - w / BH) of (batch, head) w % BH, so the longest causal rows
// come first and the heads sharing a KV head sit side by side. With G CTAs,
// CTA c takes w = c, 2G - 1 - c, 2G + c, 4G - 1 - c, ...: a snake, so that
// under causal, where tile costs fall with w, every CTA gets long and short
// tiles alike. Every work tile goes to exactly one CTA; __host__ so that
// csrc/tests/tile_range_test.cu checks that on a machine with no GPU.
#pragma once

namespace pykernels {
namespace attention {
namespace sm90 {

// The i-th work tile of CTA `cta` out of `ctas`, or -1 past the end.
__host__ __device__ __forceinline__ int work_tile(int i, int cta, int ctas, int n_work) {
  const int pos = (i & 1) ? ctas - 1 - cta : cta;
  const long long w = static_cast<long long>(i) * ctas + pos;
  return w < n_work ? static_cast<int>(w) : -1;
}

}  // namespace sm90
}  // namespace attention
}  // namespace pykernels
