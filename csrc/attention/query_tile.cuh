// The work of one query-tile CTA, for the forward and the backward's dQ
// kernel alike: which (batch, head), which query rows, which key tiles.
//
// blockIdx.x walks (batch, head) fastest so that the heads sharing a KV head
// run side by side (L2 reuse); blockIdx.y walks query tiles from the last,
// which under causal see the most keys: the longest CTAs start first.
#pragma once

#include "attention/block_info.cuh"
#include "attention/params.h"

namespace pykernels {
namespace attention {

// Row 0 of head h of batch b in a (B, S, H, D) tensor (rows then step by its row stride).
template <class T, class Ptr>
__device__ __forceinline__ T* head_rows(Ptr base, int b, int h, index_t batch_stride, index_t head_stride) {
  return static_cast<T*>(base) + b * batch_stride + h * head_stride;
}

template <int kBlockM, int kBlockN>
struct QueryTileWork {
  int b, h, h_kv;      // batch, query head, the KV head it reads
  int row_lo, row_hi;  // query rows [row_lo, row_hi)
  Mask mask;
  KeyTileRange<kBlockN> tiles;  // the key tiles those rows can see (block_info.cuh)

  __device__ __forceinline__ static QueryTileWork make(const FlashFwdParams& p) {
    return at(p, blockIdx.x, gridDim.y - 1 - blockIdx.y);
  }

  // Query tile m_block of (batch, head) number bh = b * Hq + h.
  __device__ __forceinline__ static QueryTileWork at(const FlashFwdParams& p, int bh, int m_block) {
    QueryTileWork w;
    w.b = bh / p.heads_q;
    w.h = bh % p.heads_q;
    w.h_kv = w.h / (p.heads_q / p.heads_kv);
    w.row_lo = m_block * kBlockM;
    w.row_hi = min(w.row_lo + kBlockM, p.seqlen_q);
    w.mask = Mask::make(p.window_left, p.window_right, p.sink_tokens, p.q_offset, p.seqlen_k, p.causal != 0);
    w.tiles = KeyTileRange<kBlockN>::make(w.mask, w.row_lo, w.row_hi);
    return w;
  }
};

}  // namespace attention
}  // namespace pykernels
