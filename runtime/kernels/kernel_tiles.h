// The driver shared by the SIMD kernel tables (kernels_avx2.cpp, kernels_avx512.cpp): a gemm over
// register tiles. Only those files include it.
//
// A kernel K provides one template K::run<R, T>(w, ws, x, xs, n, y, ldy) computing R rows x T
// tokens, with one accumulator per output whose operations never depend on R, T or the output's
// place in the tile. Its 1x1 instance is the table's dot kernel, so every output of gemm<K>
// equals the dot kernel's, bit for bit (batch invariance, see kernels.h).
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>

namespace hearth::runtime::tiles {

using TileFn = void (*)(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy);

template <class K, int R, int T>
void tile(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
  K::template run<R, T>(w, ws, x, xs, n, y, ldy);
}

// How far ahead of a tile of `tile_bytes` (R rows, contiguous) it prefetches the rows that follow:
// at least the next tile, and enough bytes to cover the memory latency at full speed even when
// rows are short (decode takes one row at a time) or other cores load the memory bus.
#ifndef HEARTH_PREFETCH_BYTES
#define HEARTH_PREFETCH_BYTES 8192
#endif
inline size_t prefetch_distance(size_t tile_bytes) { return std::max<size_t>(tile_bytes, HEARTH_PREFETCH_BYTES); }

// Bytes of weight rows a tokens-outer gemm keeps in L2 while its token groups pass over them.
#ifndef HEARTH_FLOAT_ROW_BLOCK_BYTES
#define HEARTH_FLOAT_ROW_BLOCK_BYTES (128 * 1024)
#endif
inline constexpr size_t kFloatRowBlockBytes = HEARTH_FLOAT_ROW_BLOCK_BYTES;

// The instances a gemm runs: for each token count T up to kTokens, a tile of kRows rows and one of
// a single row; decode, kDecodeRows rows and one. Only full-height tiles and single rows, not every
// height: the heights between bought nothing (a matrix's last rows are recomputed instead, see
// rows()) and their instances, up to 16 x 8 per kernel, cost most of the compile time of the
// kernel tables, four times over in the sanitizer builds.
template <class K, int... I>
constexpr std::array<TileFn, sizeof...(I)> tall_tiles(std::integer_sequence<int, I...>) {
  return {&tile<K, K::kRows, I + 1>...};
}
template <class K, int... I>
constexpr std::array<TileFn, sizeof...(I)> row_tiles(std::integer_sequence<int, I...>) {
  return {&tile<K, 1, I + 1>...};
}

// Calls f(r, tall) for the tiles covering rows [r0, r_end): tiles of `height` rows (tall), and
// when rows remain past the last whole tile, one more whole tile ending at r_end, which computes
// some rows again, to the same bits (an output never depends on its place in a tile) and in the
// same thread (r0..r_end is within one task's share); only when fewer than `height` rows are there
// at all, single rows.
template <class F>
void for_row_tiles(int height, int r0, int r_end, F f) {
  if (r_end - r0 < height) {
    for (int r = r0; r < r_end; ++r) f(r, false);
    return;
  }
  int r = r0;
  for (; r + height <= r_end; r += height) f(r, true);
  if (r < r_end) f(r_end - height, true);
}

// Rows in groups, the outer loop: a group's weights stay in L1 while every token passes over
// them. Kernels with K::kTokensOuter (f32 or f16 activations, larger than quantized ones)
// take tokens as the outer loop instead, so that a tile's activations stay in L1 while rows pass.
template <class K>
void gemm(const void* w, size_t ws, int n_rows, const void* x, size_t xs, int n_tokens, int n, float* y, size_t ldy) {
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* xb = static_cast<const uint8_t*>(x);
  auto run = [&](TileFn f, int r, int t) {
    f(wb + static_cast<size_t>(r) * ws, ws, xb + static_cast<size_t>(t) * xs, xs, n, y + static_cast<size_t>(t) * ldy + r, ldy);
  };
  if (n_tokens == 1) {
    for_row_tiles(K::kDecodeRows, 0, n_rows,
                  [&](int r, bool tall) { run(tall ? &tile<K, K::kDecodeRows, 1> : &tile<K, 1, 1>, r, 0); });
    return;
  }
  static constexpr auto tall = tall_tiles<K>(std::make_integer_sequence<int, K::kTokens>{});
  static constexpr auto one = row_tiles<K>(std::make_integer_sequence<int, K::kTokens>{});
  auto token_group = [&](int r, bool is_tall, int t) {
    const auto nt = static_cast<size_t>(std::min(K::kTokens, n_tokens - t));
    run(is_tall ? tall[nt - 1] : one[nt - 1], r, t);
  };
  if constexpr (K::kTokensOuter) {
    // Rows in blocks that stay in L2 while every token group passes over them: without the
    // blocks each group of kTokens tokens streamed all the rows from memory again.
    const int block = std::max(K::kRows, static_cast<int>(kFloatRowBlockBytes / std::max<size_t>(ws, 1)) / K::kRows * K::kRows);
    for (int r0 = 0; r0 < n_rows; r0 += block) {
      const int r_end = std::min(n_rows, r0 + block);
      // A last block shorter than a tile starts earlier, into the block before (same thread).
      const int start = std::max(0, std::min(r0, r_end - K::kRows));
      for (int t = 0; t < n_tokens; t += K::kTokens)
        for_row_tiles(K::kRows, start, r_end, [&](int r, bool is_tall) { token_group(r, is_tall, t); });
    }
    return;
  }
  for_row_tiles(K::kRows, 0, n_rows, [&](int r, bool is_tall) {
    for (int t = 0; t < n_tokens; t += K::kTokens) token_group(r, is_tall, t);
  });
}

// The dot kernel of a table: the 1x1 tile.
template <class K, class W, class X>
float dot1(const W* w, const X* x, int n) {
  float y;
  K::template run<1, 1>(reinterpret_cast<const uint8_t*>(w), 0, reinterpret_cast<const uint8_t*>(x), 0, n, &y, 0);
  return y;
}

// How far ahead of the key (or value) being read attention prefetches a cached row. At a
// conversation's depth the cache comes from memory, a head's 128-256 bytes a row, rows 0.5-4 KiB
// apart: the hardware prefetchers lose such a stream at every page, and attention waited on
// memory for most of its time (docs/performance.md, session 35: 8-24 rows all gave the same).
inline constexpr int kKeysAhead = 16;

// Prefetches rows [first, last) of n elements, `stride` elements apart, into L1.
template <class Elem>
inline __attribute__((always_inline)) void prefetch_rows(const Elem* rows, size_t stride, int first, int last, int n) {
  for (int j = first; j < last; ++j)
    for (size_t b = 0; b < static_cast<size_t>(n) * sizeof(Elem); b += 64)
      __builtin_prefetch(reinterpret_cast<const char*>(rows + static_cast<size_t>(j) * stride) + b);
}

// Attention's scores (KernelTable::attention_scores) over tiles of kRows query rows x kKeys keys,
// keys taken kKeyBlock at a time so that a block stays in L1 while every group of rows passes.
// tile(q_rows, keys, n, s, s_stride, rows, n_keys) computes one tile: a row or key past the last
// points at the last again, and it stores only the first `rows` x `n_keys` scores.
// Keys are floats or halves (an f16 cache read where it lies), k_stride in elements.
// Always inlined: in its caller's target (AVX-512) the tile can be inlined in turn.
template <int kRows, int kKeys, int kKeyBlock, class Key, class Tile>
inline __attribute__((always_inline)) void score_tiles(const Key* k, size_t k_stride, int n_keys, const float* q, size_t q_stride,
                                                       int n_q, int n, float* s, size_t s_stride, Tile tile) {
  for (int j1 = 0; j1 < n_keys; j1 += kKeyBlock) {
    const int j_end = std::min(n_keys, j1 + kKeyBlock);
    for (int r0 = 0; r0 < n_q; r0 += kRows) {
      const float* qr[kRows];
      for (int r = 0; r < kRows; ++r) qr[r] = q + static_cast<size_t>(std::min(r0 + r, n_q - 1)) * q_stride;
      for (int j0 = j1; j0 < j_end; j0 += kKeys) {
        if (r0 == 0) prefetch_rows(k, k_stride, j0 + kKeysAhead, std::min(j0 + kKeysAhead + kKeys, n_keys), n);
        const Key* kj[kKeys];
        for (int m = 0; m < kKeys; ++m) kj[m] = k + static_cast<size_t>(std::min(j0 + m, n_keys - 1)) * k_stride;
        tile(qr, kj, n, s + static_cast<size_t>(r0) * s_stride + static_cast<size_t>(j0), s_stride, std::min(kRows, n_q - r0),
             std::min(kKeys, j_end - j0));
      }
    }
  }
}

}  // namespace hearth::runtime::tiles
