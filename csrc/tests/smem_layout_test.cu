// Host-only: the Hopper kernels' shared-memory layout and wgmma descriptors
// (attention/hopper/smem_tile.cuh) against CuTe's, on every tile shape the
// sm90 kernels use. Needs the CUTLASS/CuTe headers (CMake's
// CUTLASS_INCLUDE_DIR); CI builds and runs it.
//
// Why a test and not CuTe in the kernels: mma.cuh gives the measured costs
// (compile time, NVRTC). What CuTe is good at is exactly this index math, so
// it serves as the oracle of ours:
//   1. every element (r, c) of a SwizzledTile<R, C> lies at the byte CuTe's
//      canonical 128B-swizzled K-major layout puts it, and every (n, k) of the
//      same bytes read MN-major (V: k = row) at the byte CuTe's MN-major
//      layout puts it;
//   2. for every k16 step and every slice a kernel hands to wgmma (64-row
//      warpgroup slices and whole tiles, K-major; whole widths and single
//      64-column blocks, MN-major), k_major_desc / mn_major_desc equal CuTe's
//      make_gmma_desc of the same slice.
//
//   cmake --build build/cmake --target smem_layout_test && ./build/cmake/smem_layout_test
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>

#include "attention/hopper/smem_tile.cuh"

namespace {

using pykernels::attention::sm90::SwizzledTile;
namespace gmma = cute::SM90::GMMA;

int g_failures = 0;

void expect(bool ok, const char* what, int rows, int cols, int a, int b, unsigned long long got,
            unsigned long long want) {
  if (ok) return;
  if (++g_failures <= 20)
    std::printf("FAIL %s, tile %dx%d at (%d, %d): ours 0x%llx, CuTe 0x%llx\n", what, rows, cols, a, b, got, want);
}

// CuTe's make_gmma_desc reads the start address through
// cast_smem_ptr_to_uint, which on the host prints an error and returns 0: the
// start is taken from the slice's pointer instead (check_desc), and the
// message is kept off the test's output.
template <gmma::Major kMajor, class SliceT>
uint64_t cute_desc(const SliceT& slice) {
  std::fflush(stdout);
  const int saved = dup(1), null_fd = open("/dev/null", O_WRONLY);
  dup2(null_fd, 1);
  const uint64_t d = gmma::make_gmma_desc<kMajor>(slice).desc_;
  std::fflush(stdout);
  dup2(saved, 1);
  close(null_fd);
  close(saved);
  return d;
}

constexpr uint64_t kStartMask = 0x3FFFull;  // descriptor bits [0, 14): start address / 16

// One slice: CuTe's descriptor, with the start field set from the slice's
// first element (byte offset from the tile, whose base is 1024-aligned), and
// ours for the tile placed at shared address 0. With `lbo_unused`, the slice
// spans one 64-column block, so neither side's LBO is read by the hardware
// and only the other fields are compared.
template <gmma::Major kMajor, class SliceT>
void check_desc(const char* what, const SliceT& slice, const void* base, uint64_t ours, bool lbo_unused, int rows,
                int cols, int a, int b) {
  const auto first = reinterpret_cast<const char*>(cute::raw_pointer_cast(slice.data()));
  const uint64_t start = static_cast<uint64_t>(first - static_cast<const char*>(base)) >> 4;
  uint64_t want = (cute_desc<kMajor>(slice) & ~kStartMask) | start;
  if (lbo_unused) {
    constexpr uint64_t kLboMask = 0x3FFFull << 16;
    want &= ~kLboMask;
    ours &= ~kLboMask;
  }
  expect(ours == want, what, rows, cols, a, b, ours, want);
}

template <int R, int C>
void check_tile() {
  using namespace cute;
  using Tile = SwizzledTile<R, C>;
  alignas(1024) static half_t buf[R * C];
  const int failures_before = g_failures;
  const char* base = reinterpret_cast<const char*>(buf);

  // The same bytes seen two ways: (row, column) K-major, as Q K^T reads Q and
  // K; (column, row) MN-major, as P V reads V (CuTe's atoms stacked down the
  // rows first: our column blocks are the outer dimension).
  auto k_major = make_tensor(make_smem_ptr(buf), tile_to_shape(gmma::Layout_K_SW128_Atom<half_t>{},
                                                               make_shape(Int<R>{}, Int<C>{})));
  auto mn_major = make_tensor(make_smem_ptr(buf), tile_to_shape(gmma::Layout_MN_SW128_Atom<half_t>{},
                                                                make_shape(Int<C>{}, Int<R>{}), Step<_2, _1>{}));

  // 1. Element placement.
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      const unsigned ours = Tile::chunk_offset(r, c / 8) + (c % 8) * 2;
      const auto at = [&](auto p) {
        return static_cast<unsigned long long>(reinterpret_cast<const char*>(raw_pointer_cast(p)) - base);
      };
      expect(at(&k_major(r, c)) == ours, "K-major element", R, C, r, c, ours, at(&k_major(r, c)));
      expect(at(&mn_major(c, r)) == ours, "MN-major element", R, C, r, c, ours, at(&mn_major(c, r)));
    }

  // 2. Descriptors of every slice a kernel passes to wgmma.
  for (int ks = 0; ks < C / 16; ++ks) {  // K-major: k along the row
    check_desc<gmma::Major::K>("K-major whole tile", local_tile(k_major, make_shape(Int<R>{}, _16{}), make_coord(0, ks)),
                               base, Tile::k_major_desc(0, ks), false, R, C, 0, ks);
    for (int w = 0; w < R / 64; ++w)
      check_desc<gmma::Major::K>("K-major 64-row slice",
                                 local_tile(k_major, make_shape(_64{}, _16{}), make_coord(w, ks)), base,
                                 Tile::k_major_desc(64 * w * 128, ks), false, R, C, w, ks);
  }
  for (int ks = 0; ks < R / 16; ++ks) {  // MN-major: k down the rows
    check_desc<gmma::Major::MN>("MN-major whole width",
                                local_tile(mn_major, make_shape(Int<C>{}, _16{}), make_coord(0, ks)), base,
                                Tile::mn_major_desc(0, ks), C == 64, R, C, 0, ks);
    for (int b = 0; b < C / 64; ++b)
      check_desc<gmma::Major::MN>("MN-major 64-column block",
                                  local_tile(mn_major, make_shape(_64{}, _16{}), make_coord(b, ks)), base,
                                  Tile::mn_major_desc(0, ks, b), true, R, C, b, ks);
  }
  const int failures = g_failures - failures_before;
  if (failures)
    std::printf("SwizzledTile<%d, %d>: %d mismatches\n", R, C, failures);
  else
    std::printf("SwizzledTile<%d, %d>: matches CuTe\n", R, C);
}

}  // namespace

int main() {
  // Forward: Q (128 or 192 rows), K and V (128); backward: Q and dO (64 or
  // 128 rows), K and V (128), dS^T (128 x 64 or 128 x 128). Head dims 64, 128.
  check_tile<64, 64>();
  check_tile<64, 128>();
  check_tile<128, 64>();
  check_tile<128, 128>();
  check_tile<192, 64>();
  check_tile<192, 128>();
  if (g_failures) {
    std::printf("smem_layout_test: %d mismatches\n", g_failures);
    return 1;
  }
  std::printf("smem_layout_test: every layout and descriptor matches CuTe\n");
  return 0;
}
