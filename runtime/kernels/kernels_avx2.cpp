// AVX2 + FMA + F16C kernels. This file alone is compiled with -mavx2 -mfma -mf16c; kernels.cpp
// picks this table only when the CPU reports all three.
#if defined(__x86_64__) && defined(HEARTH_HAVE_AVX2_KERNELS)

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "runtime/kernels/kernel_tiles.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/softmax_exp.h"
#include "runtime/kernels/summed_q8.h"
#include "runtime/kernels/kquants.h"
#include "runtime/kernels/lut_quants.h"

namespace hearth::runtime {

namespace {

using tiles::dot1;
using tiles::gemm;

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// ---- Register tiles ----
//
// Every kernel below is one template K::run<R, T> computing R rows x T tokens with accumulators
// of its own for each output (kernel_tiles.h drives them). Its 1x1 instance is the table's dot
// kernel, and an output's operations never depend on R, T or its place in the tile: its
// accumulators see the same sequence of loads, integer dot products and float operations
// (explicit FMAs only, so no contraction choice of the compiler can differ between instances).
// That is what makes the result of a token independent of the batch it is computed in.

// Rows are a few KiB long and the hardware prefetcher stops at every 4 KiB page, and several rows
// read at once are too short for it to learn as streams; decode would wait on memory latency.
// A tile therefore asks for the rows that follow it (contiguous in memory, `ahead` =
// tiles::prefetch_distance() past its start) as it goes, kBytesPerStep per step of its loop, so
// that the next tile's bytes are all requested by the time it ends. Prefetches past the end of a
// matrix are harmless (they never fault).
template <int kBytesPerStep>
inline void prefetch_ahead(const uint8_t* ahead, int step) {
  const uint8_t* p = ahead + static_cast<size_t>(step) * kBytesPerStep;
  for (int o = 0; o < kBytesPerStep; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
}

// ---- f32, bf16 weights against f32 activations; f16 weights against f16 activations ----

struct LoadF32 {
  static constexpr int kElementBytes = 4;
  static __m256 load(const uint8_t* row, int i) { return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i); }
  static float at(const uint8_t* row, int i) { return reinterpret_cast<const float*>(row)[i]; }
};
struct LoadF16 {
  static constexpr int kElementBytes = 2;
  static __m256 load(const uint8_t* row, int i) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + i)));
  }
  static float at(const uint8_t* row, int i) { return half_to_float(reinterpret_cast<const uint16_t*>(row)[i]); }
};
struct LoadBF16 {
  static constexpr int kElementBytes = 2;
  static __m256 load(const uint8_t* row, int i) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(row) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static float at(const uint8_t* row, int i) {
    const uint32_t u = static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(row)[i]) << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
  }
};

// L loads the weights, A the activations (LoadF32, or LoadF16 for f16 weights: their dot type).
template <class L, class A = LoadF32>
struct FloatTiles {
  // Each output has kAcc accumulators, vector v (8 elements) of a row going to accumulator
  // v % kAcc, then (a0 + a1) + (a2 + a3) (or a0 + a1), the horizontal sum and a scalar FMA tail.
  // One row alone (decode, the dot kernel) keeps the FMA chains in flight at once and streams its
  // memory in order. A prefill tile instead runs the chains one after another, each over every
  // kAcc-th vector (the same FMAs in the same order, so the same bits), which needs one register
  // per output, not kAcc: 4 rows x 3 tokens = 12 accumulators + 3 activations + 1 weight vector
  // = 16 ymm, 12 FMAs per 7 loads where the 1 x 3 tile of four chains did 3 per 4. Its rows sit in
  // L1 for the passes (kernel_tiles.h keeps a block of rows in L2 while the tokens pass).
  // f16 has two chains, element i in lane i % 16 of a 16-lane sum: the AVX-512 tile then holds an
  // output's chains in one register and runs its rows once, without passes (kernels_avx512.cpp).
  static constexpr int kAcc = std::is_same_v<A, LoadF16> ? 2 : 4;
  // Decode takes rows one at a time: a thread's rows are then one sequential stream from memory.
  // Four f16 rows at once (8 chains in flight) ran 1.25x one row with the weights in L3 (one
  // row's two chains wait on the FMA latency), but from memory, on 2 MiB pages, four streams a
  // thread read 40 GB/s where one read 60 (plain read 66; a stand-alone loop over 1 GB, two
  // threads): TinyLlama f16 decode 22.6-22.9 -> 25.1-25.6 tok/s at the machine's fast moments,
  // 16.4-16.6 -> 16.9 at its slow ones (docs/performance.md, session 36).
  static constexpr int kRows = 4, kTokens = 3, kDecodeRows = 1;
  static constexpr bool kTokensOuter = true;
  // A multiple of kAcc. f16's two passes take blocks of 128 vectors (2 KiB of each row's weights and
  // of each token's activations, 14 KiB for the tile, in L1): fewer accumulators saved and restored between blocks,
  // 1.01-1.04x over 64 in 6 of 6 pairs (TinyLlama pp512); 256 did no better.
  static constexpr int kBlockVectors = kAcc == 2 ? 128 : 64;
  template <int R, int T>
  static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    if constexpr (T == 1 && R <= kDecodeRows) {
      rows<R>(w, ws, x, n, y);
    } else {
      tile<R, T>(w, ws, x, xs, n, y, ldy);
    }
  }

 private:
  static const uint8_t* token(const uint8_t* x, size_t xs, int t) { return x + static_cast<size_t>(t) * xs; }

  // (a0 + a1) + (a2 + a3) (or a0 + a1), the horizontal sum, and the elements past the last full vector.
  static float finish(const __m256 (&acc)[kAcc], const uint8_t* row, const uint8_t* xt, int i, int n) {
    __m256 sum = _mm256_add_ps(acc[0], acc[1]);
    if constexpr (kAcc == 4) sum = _mm256_add_ps(sum, _mm256_add_ps(acc[2], acc[3]));
    float s = hsum(sum);
    for (int j = i; j < n; ++j) s = std::fma(L::at(row, j), A::at(xt, j), s);
    return s;
  }

  // R rows against one token, start to end with all their chains at once (the dot kernel is
  // R = 1), the token's vectors loaded once for the R rows.
  template <int R>
  static void rows(const uint8_t* w, size_t ws, const uint8_t* x, int n, float* y) {
    __m256 acc[R][kAcc];
    for (int r = 0; r < R; ++r)
      for (int a = 0; a < kAcc; ++a) acc[r][a] = _mm256_setzero_ps();
    const uint8_t* ahead = w + tiles::prefetch_distance(R * ws);
    int i = 0;
    for (; i + 8 * kAcc <= n; i += 8 * kAcc) {
      prefetch_ahead<R * 8 * kAcc * L::kElementBytes>(ahead, i / (8 * kAcc));
      for (int a = 0; a < kAcc; ++a) {
        const __m256 xv = A::load(x, i + 8 * a);
        for (int r = 0; r < R; ++r)
          acc[r][a] = _mm256_fmadd_ps(L::load(w + static_cast<size_t>(r) * ws, i + 8 * a), xv, acc[r][a]);
      }
    }
    for (int a = 0; i + 8 <= n; i += 8, ++a) {
      const __m256 xv = A::load(x, i);
      for (int r = 0; r < R; ++r) acc[r][a] = _mm256_fmadd_ps(L::load(w + static_cast<size_t>(r) * ws, i), xv, acc[r][a]);
    }
    for (int r = 0; r < R; ++r) y[r] = finish(acc[r], w + static_cast<size_t>(r) * ws, x, i, n);
  }

  template <int R, int T>
  static void tile(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    const int nv = n / 8;
    __m256 chains[R][T][kAcc];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t)
        for (int a = 0; a < kAcc; ++a) chains[r][t][a] = _mm256_setzero_ps();
    // The passes go over a block of kBlockVectors at a time, whose weights and activations stay
    // in L1 for the kAcc passes (whole rows of 5632 did not).
    for (int v0 = 0; v0 < nv; v0 += kBlockVectors) {
      const int v_end = std::min(nv, v0 + kBlockVectors);
      for (int a = 0; a < kAcc; ++a) {
        __m256 acc[R][T];
        for (int r = 0; r < R; ++r)
          for (int t = 0; t < T; ++t) acc[r][t] = chains[r][t][a];
        for (int v = v0 + a; v < v_end; v += kAcc) {
          __m256 xv[T];
          for (int t = 0; t < T; ++t) xv[t] = A::load(token(x, xs, t), 8 * v);
          for (int r = 0; r < R; ++r) {
            const __m256 wv = L::load(w + static_cast<size_t>(r) * ws, 8 * v);
            for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
          }
        }
        for (int r = 0; r < R; ++r)
          for (int t = 0; t < T; ++t) chains[r][t][a] = acc[r][t];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t)
        y[static_cast<size_t>(t) * ldy + static_cast<size_t>(r)] =
            finish(chains[r][t], w + static_cast<size_t>(r) * ws, token(x, xs, t), 8 * nv, n);
  }
};

// ---- Q8_0, Q5_0, MXFP4, IQ4_NL weights against Q8_0 activations (Q4_0: Q4_0RowGroups) ----
//
// Per block and output, 8 int32 lanes each hold the exact sum of 4 products w * x (lane l:
// elements 4l..4l+3), then acc += (d_w * d_x) * float(lanes). How the lanes are formed differs
// by type but never their values: integers are exact, so any table may form them its own way
// and a VNNI instruction gives the same lanes as maddubs + madd.
//   Q8_0, MXFP4, IQ4_NL: signed weights (MXFP4 and IQ4_NL looked up in their 16-entry table
//         with a byte shuffle). |x| (unsigned) times w with x's sign; maddubs pairs into int16
//         (at most 2 * 127 * 128, never saturated), madd pairs again.
//   Q5_0: the stored unsigned values u = w + offset (0..31) times x, less
//         offset * (sum of x over the lane's 4 elements), computed once per token and block.

// Where a weight's value comes from: kOffsetShift = log2 of the offset of unsigned values, or 0
// for signed values.

struct DecodeQ8_0 {
  using Block = BlockQ8_0;
  static constexpr int kOffsetShift = 0;
  static constexpr int kDecodeRows = 1;
  static __m256i values(const Block& b) { return load32(b.qs); }
  static uint16_t half_scale(const Block& b) { return b.d; }
};
struct DecodeQ5_0 {
  using Block = BlockQ5_0;
  static constexpr int kOffsetShift = 4;
  static constexpr int kDecodeRows = 4;
  static __m256i values(const Block& b) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    // Byte j of the spread qh is byte j / 8 of qh; bit j % 8 of it is element j's fifth bit.
    const __m256i spread = _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303);
    const __m256i bit_of_byte = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
    const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low4);
    uint32_t qh;
    __builtin_memcpy(&qh, b.qh, 4);
    const __m256i bits = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(qh)), spread), bit_of_byte);
    return _mm256_or_si256(q, _mm256_and_si256(_mm256_cmpeq_epi8(bits, bit_of_byte), _mm256_set1_epi8(16)));
  }
  static uint16_t half_scale(const Block& b) { return b.d; }
};

// 32 nibbles in Q4_0's order (16 bytes: low nibbles are elements 0..15, high 16..31) looked up
// in a table of 16 signed bytes.
inline __m256i table_values(const uint8_t* qs, const int8_t (&table)[16]) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m256i idx = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(0x0f));
  return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table))), idx);
}

struct DecodeMXFP4 {
  using Block = BlockMXFP4;
  static constexpr int kOffsetShift = 0;
  static constexpr int kDecodeRows = 4;
  static __m256i values(const Block& b) { return table_values(b.qs, kMxfp4Values); }
  static float float_scale(const Block& b) { return mxfp4_scale(b.e); }
};
struct DecodeIQ4_NL {
  using Block = BlockIQ4_NL;
  static constexpr int kOffsetShift = 0;
  static constexpr int kDecodeRows = 4;
  static __m256i values(const Block& b) { return table_values(b.qs, kIq4Values); }
  static uint16_t half_scale(const Block& b) { return b.d; }
};

// The scales of up to 4 rows' blocks in the lanes of one register (lanes past R: 0). f16 scales
// are gathered as bits and converted at once.
template <class D, int R>
inline __m128 row_scales(const uint8_t* w, size_t ws, int b) {
  static_assert(R <= 4);
  const auto& block = [&](int r) -> const typename D::Block& {
    return reinterpret_cast<const typename D::Block*>(w + static_cast<size_t>(r) * ws)[b];
  };
  if constexpr (requires { D::half_scale(block(0)); }) {
    uint64_t bits = 0;
    for (int r = 0; r < R; ++r) bits |= static_cast<uint64_t>(D::half_scale(block(r))) << (16 * r);
    return _mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<long long>(bits)));
  } else {
    float f[4] = {};
    for (int r = 0; r < R; ++r) f[r] = D::float_scale(block(r));
    return _mm_loadu_ps(f);
  }
}

// Lane r (of 4) of each 128-bit half, in all 8 lanes when v repeats one 4-lane vector.
inline __m256 broadcast_lane(__m256 v, int r) {
  switch (r) {
    case 0: return _mm256_permute_ps(v, 0x00);
    case 1: return _mm256_permute_ps(v, 0x55);
    case 2: return _mm256_permute_ps(v, 0xaa);
    default: return _mm256_permute_ps(v, 0xff);
  }
}

template <class D>
struct Q8Tiles {
  static constexpr int kRows = 4, kTokens = 2, kDecodeRows = D::kDecodeRows;
  static constexpr bool kTokensOuter = false;
  static constexpr bool kUnsigned = D::kOffsetShift > 0;
  template <int R, int T>
  static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    using Block = typename D::Block;
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256 acc[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
    const int nb = n / kQ8_0Block;
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    for (int b = 0; b < nb; ++b) {
      prefetch_ahead<R * sizeof(Block)>(ahead, b);
      // The scales' products d_w * d_x, each the single float multiply it always was, for 4 rows
      // at once per token, then broadcast per row by a shuffle: a multiply per row and token
      // loaded the multiply ports as much as the integer work's maddubs and madd did.
      const __m128 dw = row_scales<D, std::min(R, 4)>(w, ws, b);
      // Per token: the activations, the scales' products, and either |x| (signed weights) or
      // offset * sums of 4.
      __m256i qx[T], aux[T];
      __m256 dwx[T];
      for (int t = 0; t < T; ++t) {
        const BlockQ8_0& xb = reinterpret_cast<const BlockQ8_0*>(x + static_cast<size_t>(t) * xs)[b];
        qx[t] = load32(xb.qs);
        const __m128 p = _mm_mul_ps(dw, _mm_set1_ps(_cvtsh_ss(xb.d)));
        dwx[t] = _mm256_set_m128(p, p);
        if constexpr (kUnsigned) {
          const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), qx[t]), ones16);
          aux[t] = _mm256_slli_epi32(sums, D::kOffsetShift);
        } else {
          aux[t] = _mm256_sign_epi8(qx[t], qx[t]);
        }
      }
      for (int r = 0; r < R; ++r) {
        const Block& wb = reinterpret_cast<const Block*>(w + static_cast<size_t>(r) * ws)[b];
        const __m256i qw = D::values(wb);
        for (int t = 0; t < T; ++t) {
          __m256i lanes;
          if constexpr (kUnsigned) {
            lanes = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(qw, qx[t]), ones16), aux[t]);
          } else {
            lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(aux[t], _mm256_sign_epi8(qw, qx[t])), ones16);
          }
          acc[r][t] = _mm256_fmadd_ps(broadcast_lane(dwx[t], r), _mm256_cvtepi32_ps(lanes), acc[r][t]);
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) y[static_cast<size_t>(t) * ldy + static_cast<size_t>(r)] = hsum(acc[r][t]);
  }
};

// ---- Q4_0 weights: one exact integer per block and output ----
//
// Per block and output, the exact integer dot product of the block's 32 weights with the
// token's 32 activations, then acc = fma(float(sumi), d_w * d_x, acc), block after block: one
// float chain per output, so an output's bits do not depend on how many outputs share a register
// (the AVX-512 kernels keep 16 per register and give the same bits). It is also the order of
// llama.cpp's repacked Q4_0 kernels.
//
// Eight rows at a time are transposed in registers, so that lane j holds row j: register k of a
// block holds bytes 4k..4k+3 of each row's nibbles (their low nibbles are elements 4k..4k+3, the
// high ones 16+4k..16+4k+3). A token's 4 activations of an element group, broadcast to every
// lane, then multiply all eight rows at once and the products of the block's 8 groups add up in
// place: no horizontal sums, and one conversion and FMA per block for 8 outputs. maddubs pairs
// products into int16 (at most 2 * 15 * 128 = 3840 each, so the 8 groups' sum stays below
// 32768), madd widens once per block, and the packed activations' offset (-8 * their sum)
// removes Q4_0's +8.
// Eight rows of a tile of R rows at one block (block0: that block in row 0), rows first..first+7;
// past the tile's last row, the last again. Rows are addressed from two pointers, one per half
// of the group, and multiples of the stride that x86 addressing forms itself (an array of 8 or
// 16 row pointers spilled and cost more than it saved); `first` and j are constants once the
// loops are unrolled.
template <int R>
struct RowGroup {
  const uint8_t* block0;
  size_t ws;
  int first;
  const uint8_t* half[2];
  static constexpr int row_of(int r) { return r < R ? r : R - 1; }
  RowGroup(const uint8_t* b0, size_t stride, int f)
      : block0(b0),
        ws(stride),
        first(f),
        half{b0 + static_cast<size_t>(row_of(f)) * stride, b0 + static_cast<size_t>(row_of(f + 4)) * stride} {}
  const uint8_t* row(int j) const {
    if (first + 8 <= R) return half[j / 4] + static_cast<size_t>(j % 4) * ws;
    return block0 + static_cast<size_t>(row_of(first + j)) * ws;
  }
  // The 16 bytes at `at` of every row, transposed (transpose8).
  void transposed(size_t at, __m256i* k) const;
  // The f16 at `at` of every row, as 8 floats in row order.
  __m256 halves_at(size_t at) const {
    short d[8];
    for (int j = 0; j < 8; ++j) {
      uint16_t h;
      std::memcpy(&h, row(j) + at, sizeof(h));
      d[j] = static_cast<short>(h);
    }
    return _mm256_cvtph_ps(_mm_setr_epi16(d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]));
  }
  void prefetch() const {
    for (int j = 0; j < 8; ++j)
      if (first + j < R) _mm_prefetch(reinterpret_cast<const char*>(row(j)), _MM_HINT_T0);
  }
  void prefetch_l2() const {
    for (int j = 0; j < 8; ++j)
      if (first + j < R) _mm_prefetch(reinterpret_cast<const char*>(row(j)), _MM_HINT_T1);
  }
  // Every cache line of `bytes` bytes of every row, into L2 (a prefill tile's rows are read
  // slowly enough for L2 to serve them; 16 rows of lines in L1 crowded it).
  void prefetch(int bytes) const {
    for (int o = 0; o < bytes; o += 64) RowGroup(block0 + o, ws, first).prefetch_l2();
  }
};

// 16 bytes of each of 8 rows -> k[i] lane j = bytes 4i..4i+3 of row j.
inline void transpose8(const __m128i (&v)[8], __m256i* k) {
  const auto two = [&](int j) { return _mm256_inserti128_si256(_mm256_castsi128_si256(v[j]), v[j + 4], 1); };
  const __m256i a = two(0), c = two(1), e = two(2), f = two(3);
  const __m256i t0 = _mm256_unpacklo_epi32(a, c), t1 = _mm256_unpackhi_epi32(a, c);
  const __m256i t2 = _mm256_unpacklo_epi32(e, f), t3 = _mm256_unpackhi_epi32(e, f);
  k[0] = _mm256_unpacklo_epi64(t0, t2);
  k[1] = _mm256_unpackhi_epi64(t0, t2);
  k[2] = _mm256_unpacklo_epi64(t1, t3);
  k[3] = _mm256_unpackhi_epi64(t1, t3);
}

// v[i]'s 8 lanes summed into lane i (exact: integers).
inline __m256i reduce8(const __m256i (&v)[8]) {
  const __m256i g0 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
  const __m256i g1 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
  // g0 = [v0..v3 over lanes 0-3 | v0..v3 over lanes 4-7], g1 likewise for v4..v7.
  return _mm256_add_epi32(_mm256_permute2x128_si256(g0, g1, 0x20), _mm256_permute2x128_si256(g0, g1, 0x31));
}

template <int R>
void RowGroup<R>::transposed(size_t at, __m256i* k) const {
  __m128i v[8];
  for (int j = 0; j < 8; ++j) v[j] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row(j) + at));
  transpose8(v, k);
}

// Decode reads 16 rows at once, a few bytes from each per block. Prefetching the next tile's
// bytes in memory order (as the other kernels do) reaches its last rows only at the end of this
// tile, too late; and 16 rows of it crowd L1. So each row is prefetched kRowAheadBytes ahead of its
// use (at least every 64 bytes, so that no cache line is skipped), and the rows after the tile
// only into L2. Without this, Q4_0 decode was 10-18% slower than with the 8-lane kernels.
inline constexpr int kRowAheadBytes = 288;
// A prefill tile's rows of super-blocks of 256 (144 bytes and more): 4 super-blocks ahead.
inline constexpr int kSuperBlocksAhead = 4;

// Stores groups of 8 outputs (rows 8g..8g+7 of each token) to y, the last group cut to the tile.
template <int R, int T, int G>
void store_groups(const __m256 (&acc)[G][T], float* y, size_t ldy) {
  for (int g = 0; g < G; ++g) {
    const int rows_here = std::min(8, R - 8 * g);
    for (int t = 0; t < T; ++t) {
      float* yt = y + static_cast<size_t>(t) * ldy + static_cast<size_t>(8 * g);
      if (rows_here == 8) {
        _mm256_storeu_ps(yt, acc[g][t]);
      } else {
        alignas(32) float out[8];
        _mm256_store_ps(out, acc[g][t]);
        std::copy(out, out + rows_here, yt);
      }
    }
  }
}

struct Q4_0RowGroups {
  static constexpr int kRows = 8, kTokens = 8, kDecodeRows = 16;
  static constexpr bool kTokensOuter = false;

  // A prefill tile is 8 rows x 8 tokens (+10% over 4 tokens), decode 16 rows (+8% over 8).
  template <int R, int T>
  static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    constexpr int G = (R + 7) / 8;  // groups of 8 rows
    constexpr int kAheadBlocks = kRowAheadBytes / static_cast<int>(sizeof(BlockQ4_0));
    const SummedQ8Block* xt[T];
    for (int t = 0; t < T; ++t) xt[t] = reinterpret_cast<const SummedQ8Block*>(x + static_cast<size_t>(t) * xs);
    __m256 acc[G][T];
    for (int g = 0; g < G; ++g)
      for (int t = 0; t < T; ++t) acc[g][t] = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0f), ones16 = _mm256_set1_epi16(1);
    const int nb = n / kQ4_0Block;
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    constexpr int kAheadPerBlock = R * static_cast<int>(sizeof(BlockQ4_0));
    for (int b = 0; b < kAheadBlocks; b += 2)
      for (int g = 0; g < G; ++g) RowGroup<R>(w + static_cast<size_t>(b) * sizeof(BlockQ4_0), ws, 8 * g).prefetch();
    for (int b = 0; b < nb; ++b) {
      const uint8_t* pf = ahead + static_cast<size_t>(b) * kAheadPerBlock;
      for (int o = 0; o < kAheadPerBlock; o += 64) _mm_prefetch(reinterpret_cast<const char*>(pf + o), _MM_HINT_T1);
      const uint8_t* block0 = w + static_cast<size_t>(b) * sizeof(BlockQ4_0);
      if ((b & 1) == 0)
        for (int g = 0; g < G; ++g) RowGroup<R>(block0 + kAheadBlocks * sizeof(BlockQ4_0), ws, 8 * g).prefetch();
      for (int g = 0; g < G; ++g) {
        const RowGroup<R> rg(block0, ws, 8 * g);
        __m256i k[4];
        rg.transposed(offsetof(BlockQ4_0, qs), k);
        const __m256 dw = rg.halves_at(offsetof(BlockQ4_0, d));
        __m256i u[8];  // u[i]: the stored values of elements 4i..4i+3 (i < 4), 16+4(i-4).. (i >= 4)
        for (int i = 0; i < 4; ++i) {
          u[i] = _mm256_and_si256(k[i], low4);
          u[i + 4] = _mm256_and_si256(_mm256_srli_epi16(k[i], 4), low4);
        }
        for (int t = 0; t < T; ++t) {
          const SummedQ8Block& xb = xt[t][b];
          int32_t q4[8];
          std::memcpy(q4, xb.q, sizeof(q4));
          __m256i s16 = _mm256_maddubs_epi16(u[0], _mm256_set1_epi32(q4[0]));
          for (int i = 1; i < 8; ++i) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(u[i], _mm256_set1_epi32(q4[i])));
          const __m256i sumi = _mm256_add_epi32(_mm256_madd_epi16(s16, ones16), _mm256_set1_epi32(xb.offset));
          acc[g][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_mul_ps(dw, _mm256_set1_ps(xb.d)), acc[g][t]);
        }
      }
    }
    store_groups<R, T>(acc, y, ldy);
  }
};

void quantize_q8_0(const float* x, BlockQ8_0* y, int n) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  for (int b = 0; b < n / kQ8_0Block; ++b) {
    const float* xb = x + b * kQ8_0Block;
    __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
    __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
    __m256 m = _mm256_max_ps(_mm256_andnot_ps(sign_bit, v0), _mm256_andnot_ps(sign_bit, v1));
    m = _mm256_max_ps(m, _mm256_max_ps(_mm256_andnot_ps(sign_bit, v2), _mm256_andnot_ps(sign_bit, v3)));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    y[b].d = _cvtss_sh(amax / 127.f, _MM_FROUND_TO_NEAREST_INT);
    const __m256 id = _mm256_set1_ps(amax != 0.f ? 127.f / amax : 0.f);
    const auto q = [&](__m256 v) {
      return _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v, id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    };
    __m256i i0 = q(v0), i1 = q(v1), i2 = q(v2), i3 = q(v3);
    // Pack 32 int32 -> 32 int8; packs interleave 128-bit lanes, so fix the order afterwards.
    i0 = _mm256_packs_epi32(i0, i1);
    i2 = _mm256_packs_epi32(i2, i3);
    i0 = _mm256_packs_epi16(i0, i2);
    i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[b].qs), i0);
  }
}

// ---- K-quants against Q8_K activations (Q4_K: Q4_KRowGroups, below) ----
//
// A prefill tile is one row against 16 tokens: unpacking a row's super-block (values, scales)
// costs about as much as its integer work with one token, so it is done once for 16 of them
// (the 4 x 2 tiles before unpacked once per 2 tokens). TinyLlama pp512 on this table, 4 x 2 ->
// 1 x 16: Q6_K 55 -> 95 tok/s, Q5_K 67 -> 94, IQ4_XS 63 -> 83 (1 x 8: Q6_K 84, 1 x 32: 98).
//
// Per super-block and output, the integer sum of scale * (q . x) over sub-blocks is built in 8
// int32 lanes: maddubs multiplies the unsigned weight values (0..63) by the signed activations
// and adds pairs into int16 (at most 2 * 63 * 127, no saturation), madd then multiplies by the
// sub-block scale and adds pairs into int32. Then acc += (d * d_x) * lanes, and the mins (Q4_K,
// Q5_K) leave through the activations' bsums: acc -= (dmin * d_x) * (m_j * sum of x over j).
// Q6_K's offset of 32 leaves in integers the same way. A row's values are unpacked once per
// super-block for all tokens of the tile.

// The 8 scales (bytes 0..7) and 8 mins (bytes 8..15) of a Q4_K/Q5_K super-block, as
// unpack_scale_min gives them, with 32-bit operations instead of a loop.
inline __m128i scales_and_mins(const uint8_t* packed) {
  constexpr uint32_t kLow6 = 0x3f3f3f3f, kLow4 = 0x0f0f0f0f, kLow2 = 0x03030303;
  uint32_t u[4];
  __builtin_memcpy(u, packed, 12);
  u[3] = ((u[2] >> 4) & kLow4) | (((u[1] >> 6) & kLow2) << 4);
  const uint32_t mins_low = u[1] & kLow6;
  u[1] = (u[2] & kLow4) | (((u[0] >> 6) & kLow2) << 4);
  u[2] = mins_low;
  u[0] &= kLow6;
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(u));
}

// Q4_K and Q5_K: 8 sub-blocks of 32 unsigned values, a 6-bit scale and min each.
template <bool kFifthBit>
struct ScaleMinTiles {
  static constexpr int kRows = 1, kTokens = 16, kDecodeRows = 1;
  static constexpr bool kTokensOuter = false;
  using Block = std::conditional_t<kFifthBit, BlockQ5_K, BlockQ4_K>;
  template <int R, int T>
  static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 acc[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
    const int nb = n / kQK;
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    for (int b = 0; b < nb; ++b) {
      prefetch_ahead<R * sizeof(Block)>(ahead, b);
      for (int r = 0; r < R; ++r) {
        const Block& wb = reinterpret_cast<const Block*>(w + static_cast<size_t>(r) * ws)[b];
        const __m128i sm = scales_and_mins(wb.scales);
        alignas(16) int16_t sc[8];
        _mm_store_si128(reinterpret_cast<__m128i*>(sc), _mm_cvtepu8_epi16(sm));
        // Each min twice, to meet the bsums of the two halves (16 each) of its sub-block.
        const __m128i m16 = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
        const __m256i mins = _mm256_set_m128i(_mm_unpackhi_epi16(m16, m16), _mm_unpacklo_epi16(m16, m16));
        __m256i q[8];
        for (int c = 0; c < 4; ++c) {
          const __m256i packed = load32(wb.qs + 32 * c);
          q[2 * c] = _mm256_and_si256(packed, low4);
          q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
        }
        if constexpr (kFifthBit) {
          // Bit j of qh[l] is the fifth bit of element l of sub-block j.
          const __m256i qh = load32(wb.qh);
          const __m256i bit4 = _mm256_set1_epi8(16);
          q[0] = _mm256_or_si256(q[0], _mm256_and_si256(_mm256_slli_epi16(qh, 4), bit4));
          q[1] = _mm256_or_si256(q[1], _mm256_and_si256(_mm256_slli_epi16(qh, 3), bit4));
          q[2] = _mm256_or_si256(q[2], _mm256_and_si256(_mm256_slli_epi16(qh, 2), bit4));
          q[3] = _mm256_or_si256(q[3], _mm256_and_si256(_mm256_slli_epi16(qh, 1), bit4));
          q[4] = _mm256_or_si256(q[4], _mm256_and_si256(qh, bit4));
          q[5] = _mm256_or_si256(q[5], _mm256_and_si256(_mm256_srli_epi16(qh, 1), bit4));
          q[6] = _mm256_or_si256(q[6], _mm256_and_si256(_mm256_srli_epi16(qh, 2), bit4));
          q[7] = _mm256_or_si256(q[7], _mm256_and_si256(_mm256_srli_epi16(qh, 3), bit4));
        }
        const float d = half_to_float(wb.d), dmin = half_to_float(wb.dmin);
        for (int t = 0; t < T; ++t) {
          const BlockQ8_K& xb = reinterpret_cast<const BlockQ8_K*>(x + static_cast<size_t>(t) * xs)[b];
          __m256i sumi = _mm256_setzero_si256();
          for (int j = 0; j < 8; ++j) {
            const __m256i p16 = _mm256_maddubs_epi16(q[j], load32(xb.qs + 32 * j));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, _mm256_set1_epi16(sc[j])));
          }
          const __m256i summ = _mm256_madd_epi16(load32(xb.bsums), mins);
          acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(sumi), acc[r][t]);
          acc[r][t] = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * xb.d), _mm256_cvtepi32_ps(summ), acc[r][t]);
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) y[static_cast<size_t>(t) * ldy + static_cast<size_t>(r)] = hsum(acc[r][t]);
  }
};

// Q4_K, eight rows at a time (the row groups of Q4_0RowGroups): per super-block and output two
// exact integers, A = sum_j scale_j * (q_j . x_j) and B = sum_j min_j * (sum of x over j), then
// acc = fma(float(A), d * d_x, acc) and acc = fnma(float(B), dmin * d_x, acc): one chain per
// output, the bits of the AVX-512 kernel's 16. A row group's values are transposed and unpacked
// once per super-block into u (64 registers' worth, kept in L1) for all the tile's tokens; its
// scales and mins are transposed the same way, so that lane j holds row j's. maddubs pairs
// products into int16 (the 8 groups of a sub-block sum to at most 16 * 15 * 128 = 30720), madd
// with the lane's scale widens and scales at once.
struct Q4_KRowGroups {
  // 16 tokens per unpacked super-block: at 8, unpacking took a fifth of an AVX2 prefill. The
  // tokens' accumulators no longer all fit in registers, but each is touched twice per token and
  // super-block, beside ~180 instructions of products.
  static constexpr int kRows = 8, kTokens = 16, kDecodeRows = 4;
  static constexpr bool kTokensOuter = false;

  // A row group's super-block, unpacked: u[j][i] lane r = the stored values of elements 4i..4i+3
  // of sub-block j of row r; scale[j] and min[j] lane r = row r's as a pair of int16 (madd's
  // other operand); d and dmin lane r = row r's.
  struct Unpacked {
    __m256i u[8][8];
    __m256i scale[8], min[8];
    __m256 d, dmin;
  };

  template <int R>
  static void unpack(const RowGroup<R>& rg, Unpacked& out) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    for (int c = 0; c < 4; ++c) {
      // Bytes 32c..32c+31: low nibbles are sub-block 2c, high nibbles 2c + 1.
      __m256i k[8];
      rg.transposed(offsetof(BlockQ4_K, qs) + 32 * c, k);
      rg.transposed(offsetof(BlockQ4_K, qs) + 32 * c + 16, k + 4);
      for (int i = 0; i < 8; ++i) {
        out.u[2 * c][i] = _mm256_and_si256(k[i], low4);
        out.u[2 * c + 1][i] = _mm256_and_si256(_mm256_srli_epi16(k[i], 4), low4);
      }
    }
    __m128i v[8];
    for (int j = 0; j < 8; ++j) v[j] = scales_and_mins(reinterpret_cast<const BlockQ4_K*>(rg.row(j))->scales);
    __m256i sm[4];  // lane r: row r's scales 0-3, scales 4-7, mins 0-3, mins 4-7 (bytes)
    transpose8(v, sm);
    for (int j = 0; j < 8; ++j) {
      out.scale[j] = pair_lanes(sm[j / 4], j);
      out.min[j] = pair_lanes(sm[2 + j / 4], j);
    }
    out.d = rg.halves_at(offsetof(BlockQ4_K, d));
    out.dmin = rg.halves_at(offsetof(BlockQ4_K, dmin));
  }

  // Byte j % 4 of each 32-bit lane of `bytes`, zero-extended into both 16-bit halves of the
  // lane: a sub-block's scale or min as madd's operand.
  static __m256i pair_lanes(__m256i bytes, int j) {
    const char b = static_cast<char>(j % 4);
    const __m256i pick = _mm256_setr_epi8(b, -1, b, -1, b + 4, -1, b + 4, -1, b + 8, -1, b + 8, -1, b + 12, -1, b + 12, -1, b, -1,
                                          b, -1, b + 4, -1, b + 4, -1, b + 8, -1, b + 8, -1, b + 12, -1, b + 12, -1);
    return _mm256_shuffle_epi8(bytes, pick);
  }

  // One token's two FMAs into acc (lane r: row r of the group) from an unpacked super-block.
  static void accumulate(const Unpacked& un, const BlockQ8_K& xb, __m256& acc) {
    __m256i a = _mm256_setzero_si256(), m = _mm256_setzero_si256();
    for (int j = 0; j < 8; ++j) {
      int32_t q4[8];
      std::memcpy(q4, xb.qs + 32 * j, sizeof(q4));
      __m256i s16 = _mm256_maddubs_epi16(un.u[j][0], _mm256_set1_epi32(q4[0]));
      for (int i = 1; i < 8; ++i) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(un.u[j][i], _mm256_set1_epi32(q4[i])));
      a = _mm256_add_epi32(a, _mm256_madd_epi16(s16, un.scale[j]));
      int32_t bs;
      std::memcpy(&bs, xb.bsums + 2 * j, sizeof(bs));
      m = _mm256_add_epi32(m, _mm256_madd_epi16(un.min[j], _mm256_set1_epi32(bs)));
    }
    const __m256 dx = _mm256_set1_ps(xb.d);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), _mm256_mul_ps(un.d, dx), acc);
    acc = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m), _mm256_mul_ps(un.dmin, dx), acc);
  }

  // The first super-blocks of the tile's rows, which no earlier step prefetched.
  template <int R>
  static void prefetch_start(const uint8_t* w, size_t ws) {
    for (int b = 0; b < kSuperBlocksAhead; ++b)
      for (int g = 0; g < (R + 7) / 8; ++g)
        RowGroup<R>(w + static_cast<size_t>(b) * sizeof(BlockQ4_K), ws, 8 * g).prefetch(sizeof(BlockQ4_K));
  }

  // One row's A and B of one super-block, each as 8 lanes that sum to it.
  static void row_sums(const BlockQ4_K& wb, const BlockQ8_K& xb, __m256i& a, __m256i& m) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const __m128i sm = scales_and_mins(wb.scales);
    alignas(16) int16_t sc[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(sc), _mm_cvtepu8_epi16(sm));
    // Each min twice, to meet the bsums of the two halves (16 each) of its sub-block.
    const __m128i m16 = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
    m = _mm256_madd_epi16(load32(xb.bsums), _mm256_set_m128i(_mm_unpackhi_epi16(m16, m16), _mm_unpacklo_epi16(m16, m16)));
    a = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i packed = load32(wb.qs + 32 * c);
      const __m256i lo = _mm256_and_si256(packed, low4), hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
      a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load32(xb.qs + 64 * c)), _mm256_set1_epi16(sc[2 * c])));
      a = _mm256_add_epi32(
          a, _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load32(xb.qs + 64 * c + 32)), _mm256_set1_epi16(sc[2 * c + 1])));
    }
  }

  // Decode: a token's products need no transposing, and 8 or 16 rows read at once from memory
  // were 20-60% slower than a few rows taken one after another (the prefetches did not keep up).
  // So rows in fours, as they lie in memory: each row's A and B as 8 partial lanes, the 4 rows'
  // summed into one register ([A0..A3 | B0..B3]: integers, the tiles' A and B), then the same
  // two FMAs per output.
  template <int R>
  static void decode(const uint8_t* w, size_t ws, const BlockQ8_K* x, int nb, float* y) {
    constexpr int Q = (R + 3) / 4;  // groups of 4 rows (past the last row, the last again)
    __m128 acc[Q];
    for (int q = 0; q < Q; ++q) acc[q] = _mm_setzero_ps();
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    for (int b = 0; b < nb; ++b) {
      prefetch_ahead<R* static_cast<int>(sizeof(BlockQ4_K))>(ahead, b);
      const __m128 dx = _mm_set1_ps(x[b].d);
      for (int q = 0; q < Q; ++q) {
        const BlockQ4_K* rows[4];
        for (int j = 0; j < 4; ++j)
          rows[j] = reinterpret_cast<const BlockQ4_K*>(w + static_cast<size_t>(std::min(4 * q + j, R - 1)) * ws) + b;
        __m256i v[8];  // A of rows 0-3, then B of rows 0-3
        for (int j = 0; j < 4; ++j) row_sums(*rows[j], x[b], v[j], v[4 + j]);
        const __m256 am = _mm256_cvtepi32_ps(reduce8(v));
        // d and dmin are adjacent: [d0 dmin0 d1 dmin1 ..] as f16, then d's and dmin's apart.
        static_assert(offsetof(BlockQ4_K, dmin) == offsetof(BlockQ4_K, d) + 2);
        int32_t dd4[4];
        for (int j = 0; j < 4; ++j) std::memcpy(&dd4[j], reinterpret_cast<const uint8_t*>(rows[j]) + offsetof(BlockQ4_K, d), 4);
        const __m256 dd = _mm256_permutevar8x32_ps(_mm256_cvtph_ps(_mm_setr_epi32(dd4[0], dd4[1], dd4[2], dd4[3])),
                                                   _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
        const __m128 d = _mm256_castps256_ps128(dd), dmin = _mm256_extractf128_ps(dd, 1);
        acc[q] = _mm_fmadd_ps(_mm256_castps256_ps128(am), _mm_mul_ps(d, dx), acc[q]);
        acc[q] = _mm_fnmadd_ps(_mm256_extractf128_ps(am, 1), _mm_mul_ps(dmin, dx), acc[q]);
      }
    }
    for (int q = 0; q < Q; ++q) {
      alignas(16) float out[4];
      _mm_store_ps(out, acc[q]);
      for (int j = 0; j < 4 && 4 * q + j < R; ++j) y[4 * q + j] = out[j];
    }
  }

  template <int R, int T>
  static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    constexpr int G = (R + 7) / 8;  // groups of 8 rows
    const BlockQ8_K* xt[T];
    for (int t = 0; t < T; ++t) xt[t] = reinterpret_cast<const BlockQ8_K*>(x + static_cast<size_t>(t) * xs);
    __m256 acc[G][T];
    for (int g = 0; g < G; ++g)
      for (int t = 0; t < T; ++t) acc[g][t] = _mm256_setzero_ps();
    const int nb = n / kQK;
    if constexpr (T == 1) {
      decode<R>(w, ws, xt[0], nb, y);
      return;
    }
    prefetch_start<R>(w, ws);
    Unpacked un;
    for (int b = 0; b < nb; ++b) {
      const uint8_t* block0 = w + static_cast<size_t>(b) * sizeof(BlockQ4_K);
      for (int g = 0; g < G; ++g) {
        const RowGroup<R> rg(block0, ws, 8 * g);
        RowGroup<R>(block0 + kSuperBlocksAhead * sizeof(BlockQ4_K), ws, 8 * g).prefetch(sizeof(BlockQ4_K));
        unpack(rg, un);
        for (int t = 0; t < T; ++t) accumulate(un, xt[t][b], acc[g][t]);
      }
    }
    store_groups<R, T>(acc, y, ldy);
  }
};

// Q4_0 rows interleaved by eights (interleaved_rows.h): Q4_0RowGroups's integers and float
// operations, with a group's rows in lanes in memory instead of transposed per block.
struct Q4_0Interleaved {
  static constexpr int kTokens = 8, kBlock = kQ4_0Block;
  // Prefill prefetches its stream this far ahead into L2 (decode leaves its stream to the
  // hardware prefetchers, as Q4_KInterleaved's does).
  static constexpr size_t kAheadBytes = 2048;

  // u[i], i < 4: the stored values of elements 4i..4i+3 of each row (lane r); i >= 4: of
  // elements 16 + 4(i - 4)...; and the rows' scales.
  static void unpack(const uint8_t* block, __m256i (&u)[8], __m256& d) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    for (int i = 0; i < 4; ++i) {
      const __m256i k = load32(block + 16 + 32 * i);
      u[i] = _mm256_and_si256(k, low4);
      u[i + 4] = _mm256_and_si256(_mm256_srli_epi16(k, 4), low4);
    }
    d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
  }
  // One token's block into acc (lane r: row r of the group), as Q4_0RowGroups computes it.
  static void accumulate(const __m256i (&u)[8], __m256 d, const SummedQ8Block& xb, __m256& acc) {
    const __m256i ones16 = _mm256_set1_epi16(1);
    int32_t q4[8];
    std::memcpy(q4, xb.q, sizeof(q4));
    __m256i s16 = _mm256_maddubs_epi16(u[0], _mm256_set1_epi32(q4[0]));
    for (int i = 1; i < 8; ++i) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(u[i], _mm256_set1_epi32(q4[i])));
    const __m256i sumi = _mm256_add_epi32(_mm256_madd_epi16(s16, ones16), _mm256_set1_epi32(xb.offset));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_mul_ps(d, _mm256_set1_ps(xb.d)), acc);
  }

  static void decode(const uint8_t* group, const uint8_t* activations, int nb, float* y) {
    const auto* x = reinterpret_cast<const SummedQ8Block*>(activations);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
      const uint8_t* block = group + static_cast<size_t>(b) * kQ4_0InterleavedBlockBytes;
      __m256i u[8];
      __m256 d;
      unpack(block, u, d);
      accumulate(u, d, x[b], acc);
    }
    _mm256_storeu_ps(y, acc);
  }

  template <int T>
  static void run(const uint8_t* group, const uint8_t* x, size_t xs, int nb, float* y, size_t ldy) {
    __m256 acc[1][T];
    for (int t = 0; t < T; ++t) acc[0][t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
      const uint8_t* block = group + static_cast<size_t>(b) * kQ4_0InterleavedBlockBytes;
      if ((b & 3) == 0)
        for (size_t o = 0; o < 4 * kQ4_0InterleavedBlockBytes; o += 64)
          _mm_prefetch(reinterpret_cast<const char*>(block + kAheadBytes + o), _MM_HINT_T1);
      __m256i u[8];
      __m256 d;
      unpack(block, u, d);
      for (int t = 0; t < T; ++t)
        accumulate(u, d, reinterpret_cast<const SummedQ8Block*>(x + static_cast<size_t>(t) * xs)[b], acc[0][t]);
    }
    store_groups<8, T>(acc, y, ldy);
  }

  template <int... I>
  static constexpr std::array<void (*)(const uint8_t*, const uint8_t*, size_t, int, float*, size_t), sizeof...(I)> tiles(
      std::integer_sequence<int, I...>) {
    return {&run<I + 1>...};
  }
};

// Q4_K rows interleaved by eights (interleaved_rows.h): Q4_KRowGroups's integers and float
// operations, with a group's rows already in lanes in memory. Decode takes each 4-byte group of
// values once from memory for its one token; prefill unpacks a super-block once for 16 tokens.
struct Q4_KInterleaved {
  static constexpr int kTokens = 16, kBlock = kQK;
  using Unpacked = Q4_KRowGroups::Unpacked;
  // Decode reads a group as one stream, and the groups of a task one after another: one
  // sequential stream per thread, which the hardware prefetchers follow. Prefetching every line
  // 2048 bytes ahead as well (session 33, on 4 KiB pages) took the core's miss buffers the
  // hardware's prefetches would use: a stand-alone loop of this kernel over 580 MB on 2 MiB
  // pages read 54.8 GB/s with it and 58.9 without (the plain read 62.9), in TinyLlama 75.4 and
  // 82.4 tok/s, level when the machine's memory is slower (docs/performance.md, session 36).

  // Lane r of the result: row r's scales 0-3, scales 4-7, mins 0-3 and mins 4-7 (bytes), from the
  // three vectors of scale bytes (unpack_scale_min's arithmetic on 8 rows at once).
  static void scales_and_mins(const uint8_t* block, __m256i (&sm)[4]) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), low6 = _mm256_set1_epi8(0x3f), high2 = _mm256_set1_epi8(0x30);
    const __m256i s0 = load32(block + 32), s1 = load32(block + 64), s2 = load32(block + 96);
    // Bits 6-7 of each byte of s0 (s1) are bits 4-5 of scales (mins) 4-7: a 16-bit shift by 2
    // brings them there, and the mask drops what came in from the byte above.
    sm[0] = _mm256_and_si256(s0, low6);
    sm[1] = _mm256_or_si256(_mm256_and_si256(s2, low4), _mm256_and_si256(_mm256_srli_epi16(s0, 2), high2));
    sm[2] = _mm256_and_si256(s1, low6);
    sm[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(s2, 4), low4), _mm256_and_si256(_mm256_srli_epi16(s1, 2), high2));
  }
  static __m256 halves(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static const uint8_t* values(const uint8_t* block, int c, int i) { return block + 128 + 32 * (8 * c + i); }

  static void unpack(const uint8_t* block, Unpacked& out) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < 8; ++i) {
        const __m256i k = load32(values(block, c, i));
        out.u[2 * c][i] = _mm256_and_si256(k, low4);
        out.u[2 * c + 1][i] = _mm256_and_si256(_mm256_srli_epi16(k, 4), low4);
      }
    __m256i sm[4];
    scales_and_mins(block, sm);
    for (int j = 0; j < 8; ++j) {
      out.scale[j] = Q4_KRowGroups::pair_lanes(sm[j / 4], j);
      out.min[j] = Q4_KRowGroups::pair_lanes(sm[2 + j / 4], j);
    }
    out.d = halves(block);
    out.dmin = halves(block + 16);
  }

  // The 8 outputs of one group for one token.
  static void decode(const uint8_t* group, const uint8_t* activations, int nb, float* y) {
    const auto* x = reinterpret_cast<const BlockQ8_K*>(activations);
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
      const uint8_t* block = group + static_cast<size_t>(b) * kQ4_KInterleavedBlockBytes;
      const BlockQ8_K& xb = x[b];
      __m256i sm[4];
      scales_and_mins(block, sm);
      __m256i a = _mm256_setzero_si256(), m = _mm256_setzero_si256();
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j) {
        int32_t bs;
        std::memcpy(&bs, xb.bsums + 2 * j, sizeof(bs));
        m = _mm256_add_epi32(m, _mm256_madd_epi16(Q4_KRowGroups::pair_lanes(sm[2 + j / 4], j), _mm256_set1_epi32(bs)));
      }
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        // Sub-blocks 2c (low nibbles) and 2c + 1 (high), 4 values of each row per step; int16
        // sums stay below 8 * 2 * 15 * 128 = 30720.
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
          const __m256i k = load32(values(block, c, i));
          int32_t xl, xh;
          std::memcpy(&xl, xb.qs + 64 * c + 4 * i, sizeof(xl));
          std::memcpy(&xh, xb.qs + 64 * c + 32 + 4 * i, sizeof(xh));
          lo = _mm256_add_epi16(lo, _mm256_maddubs_epi16(_mm256_and_si256(k, low4), _mm256_set1_epi32(xl)));
          hi = _mm256_add_epi16(hi, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(k, 4), low4), _mm256_set1_epi32(xh)));
        }
        a = _mm256_add_epi32(a, _mm256_madd_epi16(lo, Q4_KRowGroups::pair_lanes(sm[c / 2], 2 * c)));
        a = _mm256_add_epi32(a, _mm256_madd_epi16(hi, Q4_KRowGroups::pair_lanes(sm[c / 2], 2 * c + 1)));
      }
      const __m256 dx = _mm256_set1_ps(xb.d);
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), _mm256_mul_ps(halves(block), dx), acc);
      acc = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(m), _mm256_mul_ps(halves(block + 16), dx), acc);
    }
    _mm256_storeu_ps(y, acc);
  }

  // One group of 8 rows against T tokens.
  template <int T>
  static void run(const uint8_t* group, const uint8_t* x, size_t xs, int nb, float* y, size_t ldy) {
    __m256 acc[1][T];
    for (int t = 0; t < T; ++t) acc[0][t] = _mm256_setzero_ps();
    Unpacked un;
    for (int b = 0; b < nb; ++b) {
      const uint8_t* block = group + static_cast<size_t>(b) * kQ4_KInterleavedBlockBytes;
      for (size_t o = 0; o < kQ4_KInterleavedBlockBytes; o += 64)
        _mm_prefetch(reinterpret_cast<const char*>(block + kSuperBlocksAhead * kQ4_KInterleavedBlockBytes + o), _MM_HINT_T1);
      unpack(block, un);
      for (int t = 0; t < T; ++t)
        Q4_KRowGroups::accumulate(un, reinterpret_cast<const BlockQ8_K*>(x + static_cast<size_t>(t) * xs)[b], acc[0][t]);
    }
    store_groups<8, T>(acc, y, ldy);
  }

  template <int... I>
  static constexpr std::array<void (*)(const uint8_t*, const uint8_t*, size_t, int, float*, size_t), sizeof...(I)> tiles(
      std::integer_sequence<int, I...>) {
    return {&run<I + 1>...};
  }
};

// The gemm of a kernel K over interleaved rows: groups of 8 rows one after another, each against
// one token (K::decode) or tiles of up to K::kTokens (K::run). Blocks of K::kBlock elements.
template <class K>
void gemm_interleaved(const void* w, size_t ws, int n_rows, const void* x, size_t xs, int n_tokens, int n, float* y, size_t ldy) {
  static constexpr auto tiles = K::tiles(std::make_integer_sequence<int, K::kTokens>{});
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* xb = static_cast<const uint8_t*>(x);
  const int nb = n / K::kBlock;
  for (int r = 0; r < n_rows; r += kInterleavedRows) {
    const uint8_t* group = wb + static_cast<size_t>(r) * ws;
    if (n_tokens == 1) {
      K::decode(group, xb, nb, y + r);
      continue;
    }
    for (int t = 0; t < n_tokens; t += K::kTokens) {
      const int nt = std::min(K::kTokens, n_tokens - t);
      tiles[static_cast<size_t>(nt - 1)](group, xb + static_cast<size_t>(t) * xs, xs, nb, y + static_cast<size_t>(t) * ldy + r,
                                         ldy);
    }
  }
}

// Byte shuffles giving, in every int16 of the low 128-bit lane, word 2k of the lane, and in the
// high lane word 2k + 1 (k = 0..3): sub-blocks 2k and 2k + 1's scales.
alignas(32) constexpr uint8_t kQ6ScalePairs[4][32] = {
    {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3},
    {4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7},
    {8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11},
    {12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13,
     14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15}};

// Q6_K: 16 sub-blocks of 16 values stored as q + 32 (0..63, what maddubs needs unsigned) with a
// signed 8-bit scale each; the 32 comes back out through the sums of x per sub-block.
struct Q6KTiles {
  static constexpr int kRows = 1, kTokens = 16, kDecodeRows = 1;
  static constexpr bool kTokensOuter = false;
  template <int R, int T>
  static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const __m256i low2 = _mm256_set1_epi8(0x03);
    __m256 acc[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
    const int nb = n / kQK;
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    for (int b = 0; b < nb; ++b) {
      prefetch_ahead<R * sizeof(BlockQ6_K)>(ahead, b);
      for (int r = 0; r < R; ++r) {
        const BlockQ6_K& wb = reinterpret_cast<const BlockQ6_K*>(w + static_cast<size_t>(r) * ws)[b];
        const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wb.scales));
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);  // for the offset, against the 16 bsums
        // Group k of half h (32 elements) spans sub-blocks j, j + 1 (j = 8h + 2k): one per
        // 128-bit lane, as maddubs and madd keep lanes apart.
        __m256i scale[8], q[8];
        // Scales 0-7 (then 8-15) as int16 in both 128-bit lanes, each group's pair picked by a
        // byte shuffle: two broadcasts from scalars and an insert per group were a third of a
        // decode step's instructions.
        const __m256i first = _mm256_permute4x64_epi64(sc16, 0x44), second = _mm256_permute4x64_epi64(sc16, 0xee);
        for (int g = 0; g < 8; ++g) scale[g] = _mm256_shuffle_epi8(g < 4 ? first : second, load32(kQ6ScalePairs[g % 4]));
        for (int h = 0; h < 2; ++h) {
          const __m256i ql0 = load32(wb.ql + 64 * h), ql1 = load32(wb.ql + 64 * h + 32);
          const __m256i qh = load32(wb.qh + 32 * h);
          const auto high_bits = [&](int shift) {
            return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, shift), low2), 4);
          };
          q[4 * h] = _mm256_or_si256(_mm256_and_si256(ql0, low4), high_bits(0));
          q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(ql1, low4), high_bits(2));
          q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), high_bits(4));
          q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4), high_bits(6));
        }
        const float d = half_to_float(wb.d);
        for (int t = 0; t < T; ++t) {
          const BlockQ8_K& xb = reinterpret_cast<const BlockQ8_K*>(x + static_cast<size_t>(t) * xs)[b];
          __m256i sumi = _mm256_setzero_si256();
          for (int g = 0; g < 8; ++g) {
            const __m256i p16 = _mm256_maddubs_epi16(q[g], load32(xb.qs + 32 * g));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, scale[g]));
          }
          const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(load32(xb.bsums), sc16), 5);
          sumi = _mm256_sub_epi32(sumi, offset);
          acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(sumi), acc[r][t]);
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) y[static_cast<size_t>(t) * ldy + static_cast<size_t>(r)] = hsum(acc[r][t]);
  }
};

// IQ4_XS: 8 sub-blocks of 32 signed table values with a signed 6-bit scale each, against Q8_K:
// per super-block the sub-blocks' lanes (|x| times w with x's sign, as Q8_0's) times their scale
// in integers, then acc += (d * d_x) * float(lanes). A row's values are looked up once per
// super-block for all tokens of the tile.
struct IQ4XSTiles {
  static constexpr int kRows = 1, kTokens = 16, kDecodeRows = 2;
  static constexpr bool kTokensOuter = false;
  template <int R, int T>
  static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    __m256 acc[R][T];
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
    const int nb = n / kQK;
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    for (int b = 0; b < nb; ++b) {
      prefetch_ahead<R * sizeof(BlockIQ4_XS)>(ahead, b);
      for (int r = 0; r < R; ++r) {
        const BlockIQ4_XS& wb = reinterpret_cast<const BlockIQ4_XS*>(w + static_cast<size_t>(r) * ws)[b];
        __m256i q[8], scale[8];
        for (int j = 0; j < 8; ++j) {
          q[j] = table_values(wb.qs + 16 * j, kIq4Values);
          scale[j] = _mm256_set1_epi16(static_cast<short>(iq4_xs_scale(wb, j)));
        }
        const float d = half_to_float(wb.d);
        for (int t = 0; t < T; ++t) {
          const BlockQ8_K& xb = reinterpret_cast<const BlockQ8_K*>(x + static_cast<size_t>(t) * xs)[b];
          __m256i sumi = _mm256_setzero_si256();
          for (int j = 0; j < 8; ++j) {
            const __m256i qx = load32(xb.qs + 32 * j);
            const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(q[j], qx));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, scale[j]));
          }
          acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(sumi), acc[r][t]);
        }
      }
    }
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) y[static_cast<size_t>(t) * ldy + static_cast<size_t>(r)] = hsum(acc[r][t]);
  }
};

float dot_f32(const float* w, const float* x, int n) { return dot1<FloatTiles<LoadF32>>(w, x, n); }
float dot_f16(const uint16_t* w, const uint16_t* x, int n) { return dot1<FloatTiles<LoadF16, LoadF16>>(w, x, n); }
float dot_bf16(const uint16_t* w, const float* x, int n) { return dot1<FloatTiles<LoadBF16>>(w, x, n); }
float dot_q8_0(const BlockQ8_0* w, const BlockQ8_0* x, int nb) { return dot1<Q8Tiles<DecodeQ8_0>>(w, x, nb * kQ8_0Block); }
// Q4_0's kernels read packed activations (summed_q8.h): its dot kernel packs them first, in a
// buffer of the thread's that grows to the longest row seen (it serves tests and one-off
// products; matmul packs once per token).
float dot_q4_0(const BlockQ4_0* w, const BlockQ8_0* x, int nb) {
  thread_local std::vector<SummedQ8Block> packed;
  packed.resize(std::max(packed.size(), static_cast<size_t>(nb)));
  pack_summed_q8(x, packed.data(), nb);
  return dot1<Q4_0RowGroups>(w, packed.data(), nb * kQ4_0Block);
}
float dot_q5_0(const BlockQ5_0* w, const BlockQ8_0* x, int nb) { return dot1<Q8Tiles<DecodeQ5_0>>(w, x, nb * kQ5_0Block); }
float dot_q4_k(const BlockQ4_K* w, const BlockQ8_K* x, int nb) { return dot1<Q4_KRowGroups>(w, x, nb * kQK); }
float dot_q5_k(const BlockQ5_K* w, const BlockQ8_K* x, int nb) { return dot1<ScaleMinTiles<true>>(w, x, nb * kQK); }
float dot_q6_k(const BlockQ6_K* w, const BlockQ8_K* x, int nb) { return dot1<Q6KTiles>(w, x, nb * kQK); }
float dot_mxfp4(const BlockMXFP4* w, const BlockQ8_0* x, int nb) { return dot1<Q8Tiles<DecodeMXFP4>>(w, x, nb * kMxfp4Block); }
float dot_iq4_nl(const BlockIQ4_NL* w, const BlockQ8_0* x, int nb) { return dot1<Q8Tiles<DecodeIQ4_NL>>(w, x, nb * kIq4NlBlock); }
float dot_iq4_xs(const BlockIQ4_XS* w, const BlockQ8_K* x, int nb) { return dot1<IQ4XSTiles>(w, x, nb * kQK); }

// Q4_0 reads its activations packed; the other kernels read the Q8_0 and Q8_K blocks as they are.
size_t packed_bytes(TensorType weight, int n) {
  return weight == TensorType::Q4_0 ? static_cast<size_t>(n / kQ8_0Block) * sizeof(SummedQ8Block) : 0;
}
void pack(TensorType weight, const void* blocks, void* out, int n) {
  if (weight == TensorType::Q4_0)
    pack_summed_q8(static_cast<const BlockQ8_0*>(blocks), static_cast<SummedQ8Block*>(out), n / kQ8_0Block);
}

void axpy(float a, const float* x, float* y, int n) {
  const __m256 va = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] = std::fma(a, x[i], y[i]);
}

void f32_to_f16(const float* x, uint16_t* y, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) y[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

void f16_to_f32(const uint16_t* x, float* y, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  for (; i < n; ++i) y[i] = half_to_float(x[i]);
}

using namespace softmax_exp;

// softmax_exp::exp_nonpositive (softmax_exp.h) on 8 lanes.
inline __m256 exp_nonpositive(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(kMin));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kPoly[0]);
  for (int i = 1; i < 7; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kPoly[i]));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

// The same arithmetic on one float (the elements after the last full vector).
double exp_sum(float* s, int n, float max) {
  const __m256 m = _mm256_set1_ps(max);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + j), m));
    _mm256_storeu_ps(s + j, e);
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  alignas(32) double l[8];
  _mm256_store_pd(l, lo);
  _mm256_store_pd(l + 4, hi);
  double sum = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
  for (; j < n; ++j) {
    s[j] = softmax_exp::exp_nonpositive(s[j] - max);
    sum += s[j];
  }
  return sum;
}

// A KV cache's rows as attention's kernels load them, 8 elements at a time: floats, or halves
// converted (exactly). load_tail() reads the count < 8 elements left and zero-fills the rest.
struct CacheF32 {
  static float at(const float* x) { return *x; }
  static __m256 load(const float* k) { return _mm256_loadu_ps(k); }
  static __m256 load_tail(const float* k, int count) {
    alignas(32) static constexpr int32_t kLanes[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    return _mm256_maskload_ps(
        k, _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_load_si256(reinterpret_cast<const __m256i*>(kLanes))));
  }
};
struct CacheF16 {
  static float at(const uint16_t* x) { return half_to_float(*x); }
  static __m256 load(const uint16_t* k) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(k))); }
  static __m256 load_tail(const uint16_t* k, int count) {
    alignas(16) uint16_t h[8] = {};  // 0x0000 is +0.0, as maskload's zeros
    std::memcpy(h, k, static_cast<size_t>(count) * sizeof(uint16_t));
    return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h)));
  }
};

// Heads in pairs, 8 x kVecs columns at a time held in registers across all keys: every element
// gets axpy's fused multiply-adds in axpy's order (its tail elements too, by std::fma).
template <int kVecs, class Cache, class V>
void weighted_columns(const float* p, size_t p_stride, const float* inv, int n_q, const V* v, size_t v_stride, int n_keys, int n,
                      float* out, int col) {
  int h = 0;
  for (; h + 2 <= n_q; h += 2) {
    float* o0 = out + static_cast<size_t>(h) * static_cast<size_t>(n) + col;
    float* o1 = o0 + n;
    const float* p0 = p + static_cast<size_t>(h) * p_stride;
    const float* p1 = p0 + p_stride;
    __m256 a0[kVecs], a1[kVecs];
    for (int k = 0; k < kVecs; ++k) a0[k] = _mm256_loadu_ps(o0 + 8 * k), a1[k] = _mm256_loadu_ps(o1 + 8 * k);
    for (int j = 0; j < n_keys; ++j) {
      const V* vj = v + static_cast<size_t>(j) * v_stride + col;
      // The first heads' pass brings the rows the others read.
      if (h == 0 && j + tiles::kKeysAhead < n_keys)
        tiles::prefetch_rows(vj, v_stride, tiles::kKeysAhead, tiles::kKeysAhead + 1, 8 * kVecs);
      const __m256 w0 = _mm256_set1_ps(p0[j] * inv[h]), w1 = _mm256_set1_ps(p1[j] * inv[h + 1]);
      for (int k = 0; k < kVecs; ++k) {
        const __m256 x = Cache::load(vj + 8 * k);
        a0[k] = _mm256_fmadd_ps(w0, x, a0[k]);
        a1[k] = _mm256_fmadd_ps(w1, x, a1[k]);
      }
    }
    for (int k = 0; k < kVecs; ++k) _mm256_storeu_ps(o0 + 8 * k, a0[k]), _mm256_storeu_ps(o1 + 8 * k, a1[k]);
  }
  for (; h < n_q; ++h) {
    float* o = out + static_cast<size_t>(h) * static_cast<size_t>(n) + col;
    const float* ph = p + static_cast<size_t>(h) * p_stride;
    __m256 a[kVecs];
    for (int k = 0; k < kVecs; ++k) a[k] = _mm256_loadu_ps(o + 8 * k);
    for (int j = 0; j < n_keys; ++j) {
      const V* vj = v + static_cast<size_t>(j) * v_stride + col;
      if (h == 0 && j + tiles::kKeysAhead < n_keys)
        tiles::prefetch_rows(vj, v_stride, tiles::kKeysAhead, tiles::kKeysAhead + 1, 8 * kVecs);
      const __m256 w = _mm256_set1_ps(ph[j] * inv[h]);
      for (int k = 0; k < kVecs; ++k) a[k] = _mm256_fmadd_ps(w, Cache::load(vj + 8 * k), a[k]);
    }
    for (int k = 0; k < kVecs; ++k) _mm256_storeu_ps(o + 8 * k, a[k]);
  }
}

template <class Cache, class V>
void weighted_sum_of(const float* p, size_t p_stride, const float* inv, int n_q, const V* v, size_t v_stride, int n_keys, int n,
                     float* out) {
  int col = 0;
  for (; col + 32 <= n; col += 32) weighted_columns<4, Cache>(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out, col);
  for (; col + 8 <= n; col += 8) weighted_columns<1, Cache>(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out, col);
  for (; col < n; ++col) softmax_exp::weighted_sum_column(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out, col, Cache::at);
}

void weighted_sum(const float* p, size_t p_stride, const float* inv, int n_q, const float* v, size_t v_stride, int n_keys, int n,
                  float* out) {
  weighted_sum_of<CacheF32>(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out);
}

void weighted_sum_f16(const float* p, size_t p_stride, const float* inv, int n_q, const uint16_t* v, size_t v_stride, int n_keys,
                      int n, float* out) {
  weighted_sum_of<CacheF16>(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out);
}

// ---- attention's scores ----
//
// A score's n elements go to 8 lanes (element i to lane i % 8, one FMA chain per lane from 0,
// the last partial vector zero-filled), then the lanes of 8 scores are added at once by
// sum_lanes8; so a score's bits do not depend on the other scores computed with it.

// Lane 4a + b of the result: the sum of v[4a + b]'s lanes (a fixed tree: pairs within 128-bit
// halves, then the halves).
inline __m256 sum_lanes8(const __m256 v[8]) {
  __m256 t[4];
#pragma GCC unroll 16
  for (int i = 0; i < 4; ++i) t[i] = _mm256_add_ps(_mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  __m256 u[2];
#pragma GCC unroll 16
  for (int i = 0; i < 2; ++i) {
    const __m256d a = _mm256_castps_pd(t[2 * i]), b = _mm256_castps_pd(t[2 * i + 1]);
    u[i] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(a, b)), _mm256_castpd_ps(_mm256_unpackhi_pd(a, b)));
  }
  return _mm256_add_ps(_mm256_permute2f128_ps(u[0], u[1], 0x20), _mm256_permute2f128_ps(u[0], u[1], 0x31));
}

// Scores of kRows query rows x kKeys keys (accumulator kKeys * r + m: row r, key m, 8 of them);
// rows and keys past the last repeat it, and only real ones are stored.
template <class Keys, int kRows, int kKeys, class Key>
void scores_tile(const float* const q[kRows], const Key* const k[kKeys], int n, float* s, size_t s_stride, int rows, int keys) {
  static_assert(kRows * kKeys == 8);
  __m256 acc[8];
#pragma GCC unroll 16
  for (__m256& a : acc) a = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 kv[kKeys];
#pragma GCC unroll 16
    for (int m = 0; m < kKeys; ++m) kv[m] = Keys::load(k[m] + i);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      const __m256 qv = _mm256_loadu_ps(q[r] + i);
#pragma GCC unroll 16
      for (int m = 0; m < kKeys; ++m) acc[kKeys * r + m] = _mm256_fmadd_ps(qv, kv[m], acc[kKeys * r + m]);
    }
  }
  if (i < n) {
    __m256 kv[kKeys];
#pragma GCC unroll 16
    for (int m = 0; m < kKeys; ++m) kv[m] = Keys::load_tail(k[m] + i, n - i);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      const __m256 qv = CacheF32::load_tail(q[r] + i, n - i);
#pragma GCC unroll 16
      for (int m = 0; m < kKeys; ++m) acc[kKeys * r + m] = _mm256_fmadd_ps(qv, kv[m], acc[kKeys * r + m]);
    }
  }
  const __m256 sum = sum_lanes8(acc);
  if (kKeys == 4 && keys == 4) {
    _mm_storeu_ps(s, _mm256_castps256_ps128(sum));
    if (rows > 1) _mm_storeu_ps(s + s_stride, _mm256_extractf128_ps(sum, 1));
    return;
  }
  alignas(32) float out[8];
  _mm256_store_ps(out, sum);
#pragma GCC unroll 16
  for (int r = 0; r < rows; ++r)
#pragma GCC unroll 16
    for (int m = 0; m < keys; ++m) s[static_cast<size_t>(r) * s_stride + static_cast<size_t>(m)] = out[kKeys * r + m];
}

void attention_scores(const float* k, size_t k_stride, int n_keys, const float* q, size_t q_stride, int n_q, int n, float* s,
                      size_t s_stride) {
  tiles::score_tiles<2, 4, 64>(k, k_stride, n_keys, q, q_stride, n_q, n, s, s_stride, scores_tile<CacheF32, 2, 4, float>);
}

// Halves cost a conversion per load: 4 rows x 2 keys converts half as many as 2 x 4.
void attention_scores_f16(const uint16_t* k, size_t k_stride, int n_keys, const float* q, size_t q_stride, int n_q, int n,
                          float* s, size_t s_stride) {
  tiles::score_tiles<4, 2, 64>(k, k_stride, n_keys, q, q_stride, n_q, n, s, s_stride, scores_tile<CacheF16, 4, 2, uint16_t>);
}

// Bit-identical to quantize_q8_k_scalar: the same float products, rounded to nearest even.
void quantize_q8_k(const float* x, BlockQ8_K* y, int n) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  for (int i = 0; i < n / kQK; ++i, x += kQK) {
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < kQK; j += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign_bit, _mm256_loadu_ps(x + j)));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    if (amax == 0.f) {
      __builtin_memset(&y[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    // The sign comes from the first element of largest magnitude, as in the scalar scan.
    int first = 0;
    while (std::fabs(x[first]) != amax) ++first;
    const float iscale = -127.f / x[first];
    const __m256 id = _mm256_set1_ps(iscale);
    for (int j = 0; j < kQK; j += 32) {
      const auto q = [&](int k) {
        const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j + k), id);
        return _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      };
      // Saturating packs clip at 127 like the scalar min(127, v); values never go below -127.
      __m256i a = _mm256_packs_epi32(q(0), q(8));
      __m256i b = _mm256_packs_epi32(q(16), q(24));
      a = _mm256_packs_epi16(a, b);
      a = _mm256_permutevar8x32_epi32(a, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y[i].qs + j), a);
      // Sums of each 16: maddubs with ones adds byte pairs, madd adds those pairs again.
      const __m256i s32 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), a), _mm256_set1_epi16(1));
      // s32 lanes hold sums of 4 bytes; lanes 0-3 are bytes 0..15, lanes 4-7 bytes 16..31.
      const __m128i lo = _mm256_castsi256_si128(s32), hi = _mm256_extracti128_si256(s32, 1);
      const __m128i pair = _mm_hadd_epi32(lo, hi);  // [l0+l1, l2+l3, h0+h1, h2+h3]
      const __m128i quad = _mm_hadd_epi32(pair, pair);
      y[i].bsums[j / 16] = static_cast<int16_t>(_mm_extract_epi32(quad, 0));
      y[i].bsums[j / 16 + 1] = static_cast<int16_t>(_mm_extract_epi32(quad, 1));
    }
    y[i].d = 1.f / iscale;
  }
}

}  // namespace

const KernelTable& avx2_kernels() {
  static constexpr KernelTable table{.name = "avx2",
                                     .dot_f32 = dot_f32,
                                     .dot_f16 = dot_f16,
                                     .dot_bf16 = dot_bf16,
                                     .dot_q8_0 = dot_q8_0,
                                     .dot_q4_0 = dot_q4_0,
                                     .dot_q5_0 = dot_q5_0,
                                     .dot_q4_k = dot_q4_k,
                                     .dot_q5_k = dot_q5_k,
                                     .dot_q6_k = dot_q6_k,
                                     .dot_mxfp4 = dot_mxfp4,
                                     .dot_iq4_nl = dot_iq4_nl,
                                     .dot_iq4_xs = dot_iq4_xs,
                                     .f32_to_f16 = f32_to_f16,
                                     .quantize_q8_0 = quantize_q8_0,
                                     .quantize_q8_k = quantize_q8_k,
                                     .gemm_f32 = gemm<FloatTiles<LoadF32>>,
                                     .gemm_f16 = gemm<FloatTiles<LoadF16, LoadF16>>,
                                     .gemm_bf16 = gemm<FloatTiles<LoadBF16>>,
                                     .gemm_q8_0 = gemm<Q8Tiles<DecodeQ8_0>>,
                                     .gemm_q4_0 = gemm<Q4_0RowGroups>,
                                     .gemm_q5_0 = gemm<Q8Tiles<DecodeQ5_0>>,
                                     .gemm_q4_k = gemm<Q4_KRowGroups>,
                                     .gemm_q5_k = gemm<ScaleMinTiles<true>>,
                                     .gemm_q6_k = gemm<Q6KTiles>,
                                     .gemm_mxfp4 = gemm<Q8Tiles<DecodeMXFP4>>,
                                     .gemm_iq4_nl = gemm<Q8Tiles<DecodeIQ4_NL>>,
                                     .gemm_iq4_xs = gemm<IQ4XSTiles>,
                                     .gemm_q4_0_x8 = gemm_interleaved<Q4_0Interleaved>,
                                     .gemm_q4_k_x8 = gemm_interleaved<Q4_KInterleaved>,
                                     .packed_bytes = packed_bytes,
                                     .pack = pack,
                                     .attention_scores = attention_scores,
                                     .axpy = axpy,
                                     .weighted_sum = weighted_sum,
                                     .exp_sum = exp_sum,
                                     .f16_to_f32 = f16_to_f32,
                                     .attention_scores_f16 = attention_scores_f16,
                                     .weighted_sum_f16 = weighted_sum_f16};
  return table;
}

}  // namespace hearth::runtime

#endif
