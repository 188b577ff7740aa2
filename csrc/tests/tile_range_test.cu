// Host-only test of the tile ranges in attention/block_info.cuh against brute force.
//
// Needs no GPU: the range code is __host__ __device__, so CI runs this too.
// For every small (Sq, Sk, window, sinks, causal, q_offset) and a few tile
// shapes it checks, for each query tile, that
//   * every visible key lies in a visited key tile (nothing skipped),
//   * no key tile is visited twice (its keys would count twice in the softmax),
//   * a tile called full (no element mask) really is fully visible,
// and, for each key tile, that every query row seeing one of its keys lies in
// the query tiles the backward visits. It also checks the persistent sm90
// forward's work order (hopper/work_order.cuh): every work tile goes to
// exactly one CTA, for any number of CTAs.
#include <cstdio>
#include <vector>

#include "attention/block_info.cuh"
#include "attention/hopper/work_order.cuh"

namespace {

using pykernels::attention::key_tile_is_full;
using pykernels::attention::KeyTileRange;
using pykernels::attention::kUnbounded;
using pykernels::attention::Mask;
using pykernels::attention::QueryTileRange;

int failures = 0;

void fail(const char* what, int sq, int sk, int left, int right, int sink, bool causal, int offset, int tile) {
  if (++failures <= 20)
    std::printf("FAIL %s: Sq=%d Sk=%d window=(%d,%d) sink=%d causal=%d q_offset=%d tile=%d\n", what, sq, sk, left,
                right, sink, causal, offset, tile);
}

template <int kBlockM, int kBlockN>
void check(int sq, int sk, int left, int right, int sink, bool causal, int offset) {
  const Mask m = Mask::make(left, right, sink, offset, sk, causal);
  for (int row_lo = 0; row_lo < sq; row_lo += kBlockM) {
    const int row_hi = row_lo + kBlockM < sq ? row_lo + kBlockM : sq;
    const KeyTileRange<kBlockN> r = KeyTileRange<kBlockN>::make(m, row_lo, row_hi);
    std::vector<int> visits((sk + kBlockN - 1) / kBlockN + 1, 0);
    for (int i = 0; i < r.count(); ++i) {
      const int t = r.tile(i);
      if (t < 0 || t >= int(visits.size()) - 1) {
        fail("tile out of range", sq, sk, left, right, sink, causal, offset, t);
        continue;
      }
      if (++visits[t] > 1) fail("tile visited twice", sq, sk, left, right, sink, causal, offset, t);
      if (key_tile_is_full<kBlockN>(m, row_lo, row_hi, t * kBlockN))
        for (int i2 = row_lo; i2 < row_hi; ++i2)
          for (int j = t * kBlockN; j < (t + 1) * kBlockN; ++j)
            if (!m.visible(i2, j)) fail("full tile has a masked key", sq, sk, left, right, sink, causal, offset, t);
    }
    for (int i2 = row_lo; i2 < row_hi; ++i2)
      for (int j = 0; j < sk; ++j)
        if (m.visible(i2, j) && visits[j / kBlockN] == 0)
          fail("visible key in a skipped tile", sq, sk, left, right, sink, causal, offset, j / kBlockN);
  }
  for (int col_lo = 0; col_lo < sk; col_lo += kBlockN) {
    const QueryTileRange<kBlockM> q = QueryTileRange<kBlockM>::make(m, col_lo, col_lo + kBlockN, sq);
    for (int i2 = 0; i2 < sq; ++i2)
      for (int j = col_lo; j < col_lo + kBlockN && j < sk; ++j)
        if (m.visible(i2, j) && (i2 / kBlockM < q.lo || i2 / kBlockM >= q.hi))
          fail("row seeing a key tile is skipped by the backward", sq, sk, left, right, sink, causal, offset,
               col_lo / kBlockN);
  }
}

}  // namespace

// One CTA's tile sequence next(i) for i = 0..max_i: visit(i, w) for each
// tile; a tile after the sequence's first -1, or at or past n_work, fails.
template <class Next, class Visit, class Fail>
void walk_cta_tiles(int n_work, int max_i, Next next, Visit visit, Fail fail) {
  bool ended = false;
  for (int i = 0; i <= max_i; ++i) {
    const int w = next(i);
    if (w < 0) {
      ended = true;
      continue;
    }
    if (ended || w >= n_work) {
      fail("a tile after the end", w);
      continue;
    }
    visit(i, w);
  }
}

// Every work tile in [0, n_work) is taken by exactly one of `ctas` CTAs, and
// a CTA's sequence ends (-1) only after its last tile.
void check_work_order(int n_work, int ctas) {
  using pykernels::attention::sm90::work_tile;
  auto fail_order = [&](const char* what, int w) {
    if (++failures <= 20) std::printf("FAIL work order: %s: n_work=%d ctas=%d tile=%d\n", what, n_work, ctas, w);
  };
  std::vector<int> taken(n_work, 0);
  for (int cta = 0; cta < ctas; ++cta)
    walk_cta_tiles(
        n_work, n_work / ctas + 2, [&](int i) { return work_tile(i, cta, ctas, n_work); },
        [&](int, int w) { ++taken[w]; }, fail_order);
  for (int w = 0; w < n_work; ++w)
    if (taken[w] != 1) fail_order("a tile taken other than once", w);
}

// The paired order (-DPK_SM90_PAIRED_TILES=1): every (batch, head, query
// tile) taken by exactly one CTA, each CTA's tiles in pairs of one head whose
// causal costs (m + 1 key tiles) add up to Mq + 1 when Mq is even, the longer
// first, and round r's pairs on the 2G tiles from 2rG on.
void check_paired_order(int bh_count, int m_blocks, int ctas) {
  using pykernels::attention::sm90::work_tile_paired;
  using pykernels::attention::sm90::WorkGrid;
  const WorkGrid g = WorkGrid::make(bh_count, 1, 1, 1024, m_blocks, 128, 0);
  const int n_work = bh_count * m_blocks;
  auto fail_pair = [&](const char* what, int w) {
    if (++failures <= 20)
      std::printf("FAIL paired order: %s: BH=%d Mq=%d ctas=%d w=%d\n", what, bh_count, m_blocks, ctas, w);
  };
  std::vector<int> taken(n_work, 0);
  for (int cta = 0; cta < ctas; ++cta) {
    int first_bh = -1, first_m = -1;
    auto visit = [&](int i, int w) {
      if (w / (2 * ctas) != i / 2) fail_pair("a pair outside its round", w);
      int bh = -1, m = -1;
      g.at<false, true>(w, bh, m);
      if (bh < 0 || bh >= bh_count || m < 0 || m >= m_blocks) {
        fail_pair("outside the grid", w);
        return;
      }
      ++taken[bh * m_blocks + m];
      if (i % 2 == 0) {
        first_bh = bh, first_m = m;
      } else if (m_blocks % 2 == 0 && (bh != first_bh || first_m + m != m_blocks - 1 || first_m < m)) {
        fail_pair("not a head's tiles m and Mq-1-m, the longer first", w);
      }
    };
    walk_cta_tiles(
        n_work, 2 * (n_work / (2 * ctas) + 2), [&](int i) { return work_tile_paired(i, cta, ctas, n_work); }, visit,
        fail_pair);
  }
  for (int t = 0; t < n_work; ++t)
    if (taken[t] != 1) fail_pair("a tile taken other than once", t);
}

// WorkGrid (-DPK_SM90_L2_SECTION_MB): every (batch, head, query tile) is one
// work tile exactly; section_mb = 0 is the default order; a section's heads
// stay within one section.
void check_work_grid(int batch, int heads_q, int heads_kv, int seqlen_k, int m_blocks, int section_mb) {
  using pykernels::attention::sm90::WorkGrid;
  const WorkGrid g = WorkGrid::make(batch, heads_q, heads_kv, seqlen_k, m_blocks, 128, section_mb);
  auto fail_grid = [&](const char* what, int w) {
    if (++failures <= 20)
      std::printf("FAIL work grid: %s: B=%d Hq=%d Hkv=%d Sk=%d Mq=%d MB=%d section=%d w=%d\n", what, batch, heads_q,
                  heads_kv, seqlen_k, m_blocks, section_mb, g.section, w);
  };
  const int bh_count = batch * heads_q, n_work = bh_count * m_blocks;
  if (g.section < 1 || g.section > bh_count) fail_grid("section size out of range", -1);
  if (section_mb == 0 && g.section != bh_count) fail_grid("no section size, yet more than one section", -1);
  std::vector<int> taken(n_work, 0);
  for (int w = 0; w < n_work; ++w) {
    int bh = -1, m = -1, bh0 = -1, m0 = -1;
    g.at<true>(w, bh, m);
    g.at<false>(w, bh0, m0);  // the default order, as the default build takes it
    if (bh < 0 || bh >= bh_count || m < 0 || m >= m_blocks) {
      fail_grid("outside the grid", w);
      continue;
    }
    ++taken[bh * m_blocks + m];
    if (bh / g.section != w / (g.section * m_blocks)) fail_grid("a head outside its section", w);
    if (bh0 != w % bh_count || m0 != m_blocks - 1 - w / bh_count) fail_grid("not the default order", w);
    if (section_mb == 0 && (bh != bh0 || m != m0)) fail_grid("a single section, yet not the default order", w);
  }
  for (int i = 0; i < n_work; ++i)
    if (taken[i] != 1) fail_grid("a tile taken other than once", i);
}

int main() {
  {  // K + V of one head at 1K, d = 128: 512 KB, so 64 heads per 32 MB (8 query heads per KV head: all 256)
    using pykernels::attention::sm90::WorkGrid;
    if (WorkGrid::make(16, 16, 16, 1024, 8, 128, 32).section != 64 ||
        WorkGrid::make(16, 16, 2, 1024, 8, 128, 32).section != 256 ||
        WorkGrid::make(1, 16, 16, 16384, 128, 128, 32).section != 4) {
      ++failures;
      std::printf("FAIL work grid: section sizes\n");
    }
    // The default build's pick (-1): 16 MB sections with the tile queue, and in
    // the static order up to 2K keys, the plain order past them.
    using pykernels::attention::sm90::section_mb_for;
    if (section_mb_for(1024, -1, false) != 16 || section_mb_for(2048, -1, false) != 16 ||
        section_mb_for(2049, -1, false) != 0 || section_mb_for(16384, -1, false) != 0 ||
        section_mb_for(16384, -1, true) != 16 || section_mb_for(16384, 32, true) != 32 ||
        section_mb_for(1024, 0, true) != 0 ||
        WorkGrid::make(16, 16, 16, 1024, 8, 128, section_mb_for(1024, -1, false)).section != 32 ||
        WorkGrid::make(1, 16, 16, 16384, 128, 128, section_mb_for(16384, -1, false)).section != 16) {
      ++failures;
      std::printf("FAIL work grid: the default section pick\n");
    }
    // The default build's queue pick: d = 128 up to 4K keys, and past them without a left
    // window; d = 64 up to 2K keys.
    using pykernels::attention::sm90::tile_queue_pays;
    if (!tile_queue_pays(1024, 1023, 0, true, 128) || !tile_queue_pays(4096, 1023, 0, true, 128) ||
        tile_queue_pays(4097, 1023, 0, true, 128) || !tile_queue_pays(16384, -1, 0, true, 128) ||
        !tile_queue_pays(16384, -1, 5, false, 128) || tile_queue_pays(16384, -1, -1, false, 128) ||
        !tile_queue_pays(4096, -1, -1, false, 128) || !tile_queue_pays(2048, -1, 0, true, 64) ||
        tile_queue_pays(2049, -1, 0, true, 64) || tile_queue_pays(16384, 1023, 0, true, 128)) {
      ++failures;
      std::printf("FAIL the tile queue's per-launch pick\n");
    }
  }
  for (int section_mb : {0, 1, 16, 32})
    for (int sk : {1, 1024, 16384, 1 << 20})
      for (int hq_hkv : {1, 4, 8}) {
        check_work_grid(16, 16, 16 / hq_hkv, sk, 8, section_mb);
        check_work_grid(3, 8, 8 / hq_hkv, sk, 5, section_mb);
        check_work_grid(1, 8, 8 / hq_hkv, sk, 1, section_mb);
      }
  for (int n_work : {1, 2, 7, 131, 132, 133, 264, 1000, 2048})
    for (int ctas : {1, 2, 3, 132})
      if (ctas <= n_work) check_work_order(n_work, ctas);  // the launcher starts min(SMs, work) CTAs
  for (int bh_count : {1, 3, 16, 256})
    for (int m_blocks : {1, 2, 5, 8, 128})
      for (int ctas : {1, 2, 3, 132})
        if (ctas <= bh_count * m_blocks) check_paired_order(bh_count, m_blocks, ctas);
  const int lengths[] = {1, 3, 8, 13, 29};
  const int sides[] = {kUnbounded, 0, 2, 7};
  const int sinks[] = {0, 1, 5, 20};
  long cases = 0;
  for (int sq : lengths)
    for (int sk : lengths)
      for (int left : sides)
        for (int right : sides)
          for (int sink : sinks)
            for (int causal = 0; causal < 2; ++causal)
              for (int offset : {sk - sq, 0, 3}) {
                check<4, 4>(sq, sk, left, right, sink, causal, offset);
                check<8, 4>(sq, sk, left, right, sink, causal, offset);
                check<4, 8>(sq, sk, left, right, sink, causal, offset);
                ++cases;
              }
  std::printf("%s: %ld mask cases x 3 tile shapes, the sm90 work orders and work grid, %d failures\n", failures ? "FAILED" : "tile_range_test passed",
              cases, failures);
  return failures ? 1 : 0;
}
