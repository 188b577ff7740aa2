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

// Which (batch, head) bh and query tile m work tile w is.
//
// The (batch, head)s are cut into sections whose K and V fit in n MB, and
// the order above runs within one section before the next. Why: in the plain
// order the CTAs that run at the same time work on up to G different heads.
// At S = 1K (B = 16, H = 16: 256 heads, 8 query tiles each) each of a head's
// 8 query tiles then reads its K and V again, mostly from HBM (by estimate
// about 590 MB of reads for 134 MB of K and V). Within a section, the query
// tiles of one head run side by side and share its K and V in L2. The
// section's size is rounded down to whole heads; query heads that share a KV
// head count once, and the last section may be smaller; one section covering
// every head is the plain order.
//
// By default (-DPK_SM90_L2_SECTION_MB=-1) a launch takes kAutoSectionMB
// sections on the tile queue (hopper/tile_queue.cuh) at any length, and in
// the static snake only for seqlen_k <= kAutoSectionMaxSeqlenK, else one
// section (-DPK_SM90_L2_SECTION_MB=n forces n; 0 forces the plain order).
// Measured in the snake (H100, d = 128, B * S = 16K, 16 MB sections against
// the plain order, profiling/results/h100-2026-12-07e/): S = 1K +8 to +13%
// on every variant, 2K window +27%, sinks +21%, causal +4%, ALiBi -3%; but
// 4K causal -31% and 16K causal -37%: the sections break the snake's
// balance, since costs rise again at each section's start, so the long and
// short causal tiles no longer pair up across CTAs. The queue, which hands
// each CTA the next tile when it is free, has no such balance to break:
// with it, 16 MB sections against the plain order measured +11% causal at
// 4K, +5% at 8K, +3% at 16K (2026-12-08, profiling/results/h100-2026-12-08/).
constexpr int kAutoSectionMB = 16;
constexpr int kAutoSectionMaxSeqlenK = 2048;

__host__ __device__ __forceinline__ int section_mb_for(int seqlen_k, int knob_mb, bool tile_queue) {
  if (knob_mb >= 0) return knob_mb;
  return tile_queue || seqlen_k <= kAutoSectionMaxSeqlenK ? kAutoSectionMB : 0;
}

// Whether a launch takes the tile queue or the static snake, in a build with
// -DPK_SM90_DYNAMIC_TILES=-1 (to become the default once it has run on a GPU). From the A/B of 2026-12-08 (H100, B * S =
// 16K, profiling/results/h100-2026-12-08/, queue with 16 MB sections against
// the default before it), d = 128:
// - up to 4K keys it wins on every variant (causal / window 1024 / 4 sinks
//   + window / ALiBi): 1K +28% / +29% / +29% / +25%, 2K +43% / +15% / +21% /
//   +41%, 4K +13% / +5% / +8% / +7%;
// - past 4K it wins where rows see every earlier key (causal +5% at 8K, +3%
//   at 16K; ALiBi +2%, 0%) and loses under the window (-4% and -5%; sinks
//   -2%), whose tiles cost nearly the same: there the snake's fixed shares
//   are balanced already, and the queue's sections only cost L2 reuse.
// d = 64: +1% at 1K, 0 to -3% at 16K (untimed between), so up to 2K keys.
// "Every earlier key": no left window, and a right bound (causal or a right
// window), so that rows' costs differ; with neither bound every tile costs
// the same, as under the window (not timed).
__host__ __device__ __forceinline__ bool tile_queue_pays(int seqlen_k, int window_left, int window_right, bool causal,
                                                         int head_dim) {
  if (head_dim <= 64) return seqlen_k <= 2048;
  return seqlen_k <= 4096 || (window_left < 0 && (causal || window_right >= 0));
}

struct WorkGrid {
  int bh_count, m_blocks;
  int section;  // (batch, head)s per section; bh_count: a single section, the plain order

  __host__ __device__ __forceinline__ static WorkGrid make(int batch, int heads_q, int heads_kv, int seqlen_k,
                                                           int m_blocks, int head_dim, int section_mb) {
    WorkGrid g{batch * heads_q, m_blocks, batch * heads_q};
    if (section_mb > 0) {
      // K and V of one KV head: seqlen_k rows of head_dim 16-bit values, twice.
      const long long kv_bytes = 4ll * head_dim * (seqlen_k > 0 ? seqlen_k : 1);
      const long long heads = (static_cast<long long>(section_mb) << 20) / kv_bytes * (heads_q / heads_kv);
      g.section = static_cast<int>(heads < 1 ? 1 : (heads < g.bh_count ? heads : g.bh_count));
    }
    return g;
  }

  // kSections = false takes the plain order without a section's divisions
  // (-DPK_SM90_L2_SECTION_MB=0: a build that never sections pays nothing).
  // kPaired takes the paired order instead (work_tile_paired, below).
  template <bool kSections, bool kPaired = false>
  __host__ __device__ __forceinline__ void at(int w, int& bh, int& m) const {
    if (kPaired) {  // head-major; within a head the query tiles Mq-1, 0, Mq-2, 1, ...
      bh = w / m_blocks;
      const int r = w - bh * m_blocks;
      m = (r & 1) ? r >> 1 : m_blocks - 1 - (r >> 1);
      return;
    }
    if (!kSections) {
      bh = w % bh_count;
      m = m_blocks - 1 - w / bh_count;
      return;
    }
    const int per_section = section * m_blocks;  // < 2^31: at most the launcher's n_work
    const int sec = w / per_section, r = w - sec * per_section;
    const int first = sec * section;
    const int heads = section < bh_count - first ? section : bh_count - first;
    m = m_blocks - 1 - r / heads;
    bh = first + r % heads;
  }
};

// The i-th work tile of CTA `cta` out of `ctas`, or -1 past the end.
__host__ __device__ __forceinline__ int work_tile(int i, int cta, int ctas, int n_work) {
  const int pos = (i & 1) ? ctas - 1 - cta : cta;
  const long long w = static_cast<long long>(i) * ctas + pos;
  return w < n_work ? static_cast<int>(w) : -1;
}

// The paired order (-DPK_SM90_PAIRED_TILES=1), a static alternative to the
// snake and the sections together. Under causal, query tiles m and Mq-1-m
// of one head visit Mq+1 key tiles between them, whatever m is (the pairing
// by which causal context parallelism balances its ranks, chunks i and
// 2N-1-i on rank i: "zigzag" ring attention). So CTA c takes pair u = c, G + c, 2G + c, ... and both of its tiles,
// the longer first: each round of G pairs costs the same on every CTA, with
// no snake needed. And round r's pairs are consecutive, 2G query tiles of
// about 2G / Mq neighbouring heads, so the K and V the CTAs read at the same
// time take about 2G * 128 * 4 d bytes whatever S is (17 MB at d = 128, 132
// SMs): L2-sized without sections, which broke the snake's balance from 4K
// up (above). w indexes WorkGrid::at<..., true>'s head-major order, where
// tiles 2u and 2u + 1 are one pair. With Mq odd, a head's middle tile pairs
// with the next head's longest, and in that next head the pairs shift to
// (0, Mq-2), (1, Mq-3), ..., shorter first and Mq key tiles each: every tile
// is still taken once, only the balance is a little worse. With fewer than 2G
// tiles, CTAs past the pairs' count get none (the snake would use them all).
// Timed on 2026-12-08 (profiling/results/h100-2026-12-08/): within 2-3% of
// the tile queue on causal, best on ALiBi from 4K up, behind it on windows.
__host__ __device__ __forceinline__ int work_tile_paired(int i, int cta, int ctas, int n_work) {
  const long long w = 2 * (static_cast<long long>(i >> 1) * ctas + cta) + (i & 1);
  return w < n_work ? static_cast<int>(w) : -1;
}

}  // namespace sm90
}  // namespace attention
}  // namespace pykernels
