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

// Every work tile in [0, n_work) is taken by exactly one of `ctas` CTAs, and
// a CTA's sequence ends (-1) only after its last tile.
void check_work_order(int n_work, int ctas) {
  using pykernels::attention::sm90::work_tile;
  auto fail_order = [&](const char* what, int w) {
    if (++failures <= 20) std::printf("FAIL work order: %s: n_work=%d ctas=%d tile=%d\n", what, n_work, ctas, w);
  };
  std::vector<int> taken(n_work, 0);
  for (int cta = 0; cta < ctas; ++cta) {
    bool ended = false;
    for (int i = 0; i <= n_work / ctas + 2; ++i) {
      const int w = work_tile(i, cta, ctas, n_work);
      if (w < 0) {
        ended = true;
        continue;
      }
      if (ended || w >= n_work) {
        fail_order("a tile after the end", w);
        continue;
      }
      ++taken[w];
    }
  }
  for (int w = 0; w < n_work; ++w)
    if (taken[w] != 1) fail_order("a tile taken other than once", w);
}

int main() {
  for (int n_work : {1, 2, 7, 131, 132, 133, 264, 1000, 2048})
    for (int ctas : {1, 2, 3, 132})
      if (ctas <= n_work) check_work_order(n_work, ctas);  // the launcher starts min(SMs, work) CTAs
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
  std::printf("%s: %ld mask cases x 3 tile shapes and the sm90 work order, %d failures\n", failures ? "FAILED" : "tile_range_test passed",
              cases, failures);
  return failures ? 1 : 0;
}
