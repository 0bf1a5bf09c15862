// AVX-512 kernels (F, BW, VL, VNNI and VBMI: AMD Zen 4 and later, Intel Ice Lake and later) for
// the kernels that are instruction-bound in AVX2 at two threads: Q4_0, Q8_0, MXFP4, IQ4_NL, Q4_K, Q5_K, Q6_K and IQ4_XS decode
// (about 12 instructions per Q8_0 block and row in AVX2, about 7 here: two rows per 512-bit
// register, VNNI byte dot products, a VBMI permute to unpack, and the activations' share done
// once per token by pack()), Q4_0 (16 rows per register), and f32/f16/bf16 prefill (twice the multiply-adds per instruction).
// Every kernel gives the AVX2 kernel's results bit for bit, so a device with AVX-512 and one
// without produce the same tokens; the rest of the table is the AVX2 table. Q4_0 reads its
// activations packed as summed_q8.h says (the AVX2 table too); Q8_0, MXFP4 and IQ4_NL as
// PackedBlock below.
//
// The file is compiled with the baseline flags; each function carries its target attribute, and
// kernels.cpp picks this table only when the CPU reports every feature.
#if defined(__x86_64__) && defined(HEARTH_HAVE_AVX2_KERNELS)

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports the deliberately undefined upper lanes inside its own AVX-512 intrinsics
// (_mm512_undefined_*) as maybe uninitialized when they are inlined into target("...")
// functions. Before the include, as the warning points into the header.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "runtime/kernels/interleaved_rows.h"
#include "runtime/kernels/kernel_tiles.h"
#include "runtime/kernels/kernels.h"
#include "runtime/kernels/lut_quants.h"
#include "runtime/kernels/summed_q8.h"

#define HEARTH_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")))
// A kernel piece that must be inlined into its loop (a call per block would cost more than the block).
#define HEARTH_AVX512_INLINE HEARTH_AVX512 static inline __attribute__((always_inline))
#define HEARTH_AVX512_MEMBER HEARTH_AVX512 inline __attribute__((always_inline))

namespace hearth::runtime {

const KernelTable& avx2_kernels();  // kernels_avx2.cpp

namespace {

// ---- Q8_0, MXFP4 and IQ4_NL weights against packed Q8_0 activations ----
//
// These kernels compute exactly what the AVX2 kernels compute, bit for bit: per block and
// output, 8 int32 lanes (lane l: the exact sum of the products of elements 4l..4l+3), then
// acc = fma(d_w * d_x, float(lanes), acc) block after block in one 8-lane accumulator, then the
// AVX2 kernels' horizontal sum. (It is also the float order of llama.cpp's AVX2 kernels, which
// the reference tests rely on: an activation that rounds the other way in a later layer moves
// the logits by 1e-2.) A 512-bit register simply holds two outputs: rows r and r + 1, each in
// its own 256-bit half, so a table with AVX-512 and one without give the same tokens.
//
// The lanes come from VNNI, which multiplies unsigned by signed bytes: the weights enter as
// u = w + offset (Q8_0: w ^ 0x80, offset 128; the tables' values likewise) and the lanes
// start from -offset * (the sum of the lane's 4 activations), which pack() computes once per
// token together with the activations' scale as a float.

// One token's activations for one block, as the kernels read them (broadcast to both halves).
struct PackedBlock {
  int8_t q[32];
  int32_t offset[8];  // -128 * sums of 4
  float d;
};
static_assert(sizeof(PackedBlock) == 68);

template <int kOffsetShift>
HEARTH_AVX512 void pack_blocks(const BlockQ8_0* x, PackedBlock* out, int nb) {
  const __m256i ones = _mm256_set1_epi8(1);
  for (int b = 0; b < nb; ++b) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
    const __m256i sums = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].q), q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].offset),
                        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sums, kOffsetShift)));
    out[b].d = _cvtsh_ss(x[b].d);
  }
}

// The 32 nibbles of two blocks in Q4_0's order (16 bytes each: low nibbles are elements 0..15,
// high 16..31) as bytes 0..15: [row a | row b], 32 elements each.
HEARTH_AVX512_INLINE __m512i pair_nibbles(const uint8_t* a, const uint8_t* b) {
  // [qs_a | qs_b] in the low 32 bytes, then each 16 twice: [qs_a, qs_a, qs_b, qs_b], the
  // second copies shifted to their high nibbles.
  alignas(64) static constexpr uint8_t kSpread[64] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                                      0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                                      16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
                                                      16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
                                               _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1);
  __m512i q = _mm512_permutexvar_epi8(_mm512_load_si512(kSpread), _mm512_castsi256_si512(both));
  q = _mm512_mask_srli_epi16(q, 0xff00ff00u, q, 4);
  return _mm512_and_si512(q, _mm512_set1_epi8(0x0f));
}

// Two f16 scales as [d_a x8 | d_b x8].
HEARTH_AVX512_INLINE __m512 pair_halves(uint16_t a, uint16_t b) {
  return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(static_cast<short>(a))),
                                                 _mm_set1_epi16(static_cast<short>(b)), 1));
}

// MXFP4 and IQ4_NL: the nibbles index a table of signed values, which VNNI takes unsigned as
// value + 128 (the offset of Q8_0's u = w ^ 0x80): a byte shuffle of the table so shifted.
HEARTH_AVX512_INLINE __m512i pair_table_values(const uint8_t* a, const uint8_t* b, const int8_t (&table)[16]) {
  const __m128i shifted = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table)), _mm_set1_epi8(static_cast<char>(0x80)));
  return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(shifted), pair_nibbles(a, b));
}

struct WeightsMXFP4 {
  using Block = BlockMXFP4;
  static constexpr int kOffsetShift = 7;
  HEARTH_AVX512_INLINE void load(const Block& a, const Block& b, __m512i& u, __m512& d) {
    u = pair_table_values(a.qs, b.qs, kMxfp4Values);
    d = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(mxfp4_scale(a.e))),
                                            _mm256_castps_pd(_mm256_set1_ps(mxfp4_scale(b.e))), 1));
  }
};

struct WeightsIQ4_NL {
  using Block = BlockIQ4_NL;
  static constexpr int kOffsetShift = 7;
  HEARTH_AVX512_INLINE void load(const Block& a, const Block& b, __m512i& u, __m512& d) {
    u = pair_table_values(a.qs, b.qs, kIq4Values);
    d = pair_halves(a.d, b.d);
  }
};

struct WeightsQ8_0 {
  using Block = BlockQ8_0;
  static constexpr int kOffsetShift = 7;
  HEARTH_AVX512_INLINE void load(const Block& a, const Block& b, __m512i& u, __m512& d) {
    const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qs))),
                                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)), 1);
    u = _mm512_xor_si512(q, _mm512_set1_epi8(static_cast<char>(0x80)));
    d = pair_halves(a.d, b.d);
  }
};

// The AVX2 kernels' horizontal sum of 8 lanes, for one half of a register.
HEARTH_AVX512 inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// The loop every pair kernel shares: rows r and r + 1 in the two halves of a register (an odd
// last row paired with itself), blocks in order with the prefetch ahead of them, then the AVX2
// kernels' horizontal sum per output. K says what one block is: K::Tokens<T> reads a tile's
// activations for a block once for all its row pairs, K::add_block() adds a row pair's block
// into the pair's accumulator for each token. K sets the tile: Q8_0-like blocks take 4 row
// pairs, so a block's activations (loaded, broadcast) serve 8 rows (8-11% faster prefill than 2
// pairs); Q5_K and Q6_K one pair against 16 tokens, so that a pair's super-block is unpacked once
// for 16 tokens, not 2 (TinyLlama pp512: Q6_K 85-90 -> 127-130 tok/s, Q5_K 91-93 -> 130-134;
// IQ4_XS ran slower that way, 75 -> 59, and keeps 4 pairs x 2 tokens).
template <class K>
struct PairRows {
  static constexpr int kRows = K::kRows, kTokens = K::kTokens, kDecodeRows = K::kDecodeRows;
  static constexpr bool kTokensOuter = false;
  using Block = typename K::Block;

  template <int R, int T>
  HEARTH_AVX512 static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    constexpr int P = (R + 1) / 2;  // registers of row pairs
    __m512 acc[P][T];
    for (int p = 0; p < P; ++p)
      for (int t = 0; t < T; ++t) acc[p][t] = _mm512_setzero_ps();
    const int nb = n / K::kBlockElements;
    const Block* rows[2 * P];
    for (int r = 0; r < 2 * P; ++r) rows[r] = reinterpret_cast<const Block*>(w + static_cast<size_t>(std::min(r, R - 1)) * ws);
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    constexpr int kAheadPerBlock = R * static_cast<int>(sizeof(Block));
    for (int b = 0; b < nb; ++b) {
      const uint8_t* pf = ahead + static_cast<size_t>(b) * kAheadPerBlock;
      for (int o = 0; o < kAheadPerBlock; o += 64) _mm_prefetch(reinterpret_cast<const char*>(pf + o), _MM_HINT_T0);
      const typename K::template Tokens<T> tokens(x, xs, b);
      for (int p = 0; p < P; ++p) K::add_block(rows[2 * p][b], rows[2 * p + 1][b], tokens, acc[p]);
    }
    for (int p = 0; p < P; ++p)
      for (int t = 0; t < T; ++t) {
        float* yt = y + static_cast<size_t>(t) * ldy;
        yt[2 * p] = hsum8(_mm512_castps512_ps256(acc[p][t]));
        if (2 * p + 1 < R) yt[2 * p + 1] = hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[p][t]), 1)));
      }
  }
};

// Q8_0, MXFP4 and IQ4_NL blocks against packed activations.
template <class W>
struct PackedBlocks {
  using Block = typename W::Block;
  static constexpr int kRows = 8, kTokens = 4, kDecodeRows = 2, kBlockElements = kQ8_0Block;
  template <int T>
  struct Tokens {
    __m512i q[T], offset[T];
    __m512 d[T];
    HEARTH_AVX512 Tokens(const uint8_t* x, size_t xs, int b) {
      for (int t = 0; t < T; ++t) {
        const PackedBlock& xb = reinterpret_cast<const PackedBlock*>(x + static_cast<size_t>(t) * xs)[b];
        q[t] = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.q)));
        offset[t] = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.offset)));
        d[t] = _mm512_set1_ps(xb.d);
      }
    }
  };
  template <int T>
  HEARTH_AVX512_INLINE void add_block(const Block& a, const Block& b, const Tokens<T>& x, __m512 (&acc)[T]) {
    __m512i u;
    __m512 dw;
    W::load(a, b, u, dw);
    for (int t = 0; t < T; ++t) {
      const __m512i lanes = _mm512_dpbusd_epi32(x.offset[t], u, x.q[t]);
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, x.d[t]), _mm512_cvtepi32_ps(lanes), acc[t]);
    }
  }
};

// ---- Q4_0 weights: sixteen rows at a time, one exact integer per block and output ----
//
// The AVX2 kernels' computation (Q4_0RowGroups in kernels_avx2.cpp), bit for bit: per block and
// output the exact integer dot product, then acc = fma(float(sumi), d_w * d_x, acc), one chain
// per output, whatever the register holding it. Here 16 rows are transposed into the lanes of a
// register, and VNNI adds each 4-element group's products of all 16 rows into place (unsigned
// stored values times signed activations, starting from the packed activations' -8 * sum).
// A prefill tile is 16 rows x 12 tokens (+15% from 4 to 8 tokens, +6% from 8 to 12 in 256-token
// prefill, each tile size costing ~10 s of the sanitizer builds' compile time of this file; Q4_K
// gained 2% from 12 and keeps 8), decode 16 rows (32 were slower).
// Sixteen rows of a tile of R rows at one block (block0: that block in row 0), rows
// first..first+15; past the tile's last row, the last again. Rows are addressed from four
// pointers, one per quarter of the group, and multiples of the stride that x86 addressing forms
// itself (an array of 16 row pointers spilled and cost more than it saved); `first` and j are
// constants once the loops are unrolled.
HEARTH_AVX512_INLINE __m128i load16(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

template <int R>
struct RowGroup {
  const uint8_t* block0;
  size_t ws;
  int first;
  const uint8_t* quarter[4];
  static constexpr int row_of(int r) { return r < R ? r : R - 1; }
  HEARTH_AVX512 RowGroup(const uint8_t* b0, size_t stride, int f)
      : block0(b0),
        ws(stride),
        first(f),
        quarter{b0 + static_cast<size_t>(row_of(f)) * stride, b0 + static_cast<size_t>(row_of(f + 4)) * stride,
                b0 + static_cast<size_t>(row_of(f + 8)) * stride, b0 + static_cast<size_t>(row_of(f + 12)) * stride} {}
  HEARTH_AVX512_MEMBER const uint8_t* row(int j) const {
    if (first + 16 <= R) return quarter[j / 4] + static_cast<size_t>(j % 4) * ws;
    return block0 + static_cast<size_t>(row_of(first + j)) * ws;
  }
  // 16 bytes at `at` of rows c, c + 4, c + 8 and c + 12, one per 128-bit lane.
  HEARTH_AVX512_MEMBER __m512i four_rows(size_t at, int c) const {
    __m512i v = _mm512_castsi128_si512(load16(row(c) + at));
    v = _mm512_inserti32x4(v, load16(row(c + 4) + at), 1);
    v = _mm512_inserti32x4(v, load16(row(c + 8) + at), 2);
    return _mm512_inserti32x4(v, load16(row(c + 12) + at), 3);
  }
  // The f16 at `at` of every row, as 16 floats in row order.
  HEARTH_AVX512_MEMBER __m512 halves_at(size_t at) const {
    short d[16];
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) {
      uint16_t h;
      __builtin_memcpy(&h, row(j) + at, sizeof(h));
      d[j] = static_cast<short>(h);
    }
    return _mm512_cvtph_ps(
        _mm256_setr_epi16(d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]));
  }
  HEARTH_AVX512_MEMBER void prefetch() const {
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j)
      if (first + j < R) _mm_prefetch(reinterpret_cast<const char*>(row(j)), _MM_HINT_T0);
  }
  HEARTH_AVX512_MEMBER void prefetch_l2() const {
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j)
      if (first + j < R) _mm_prefetch(reinterpret_cast<const char*>(row(j)), _MM_HINT_T1);
  }
  // Every cache line of `bytes` bytes of every row, into L2 (a prefill tile's rows are read
  // slowly enough for L2 to serve them; 16 rows of lines in L1 crowded it).
  HEARTH_AVX512_MEMBER void prefetch(int bytes) const {
    for (int o = 0; o < bytes; o += 64) RowGroup(block0 + o, ws, first).prefetch_l2();
  }
};

// Rows as four_rows gives them (a: rows 0, 4, 8, 12; c: 1, 5, 9, 13; e: 2, ...; f: 3, ...),
// transposed: k[i] lane j = bytes 4i..4i+3 of row j.
HEARTH_AVX512_INLINE void transpose16(__m512i a, __m512i c, __m512i e, __m512i f, __m512i* k) {
  const __m512i t0 = _mm512_unpacklo_epi32(a, c), t1 = _mm512_unpackhi_epi32(a, c);
  const __m512i t2 = _mm512_unpacklo_epi32(e, f), t3 = _mm512_unpackhi_epi32(e, f);
  k[0] = _mm512_unpacklo_epi64(t0, t2);
  k[1] = _mm512_unpackhi_epi64(t0, t2);
  k[2] = _mm512_unpacklo_epi64(t1, t3);
  k[3] = _mm512_unpackhi_epi64(t1, t3);
}

// The 16 bytes at `at` of each of a group's rows, transposed.
template <int R>
HEARTH_AVX512_INLINE void transposed(const RowGroup<R>& g, size_t at, __m512i* k) {
  transpose16(g.four_rows(at, 0), g.four_rows(at, 1), g.four_rows(at, 2), g.four_rows(at, 3), k);
}

// Each row is prefetched kRowAheadBytes ahead of its use, the rows after the tile only into L2
// (kernels_avx2.cpp says why).
inline constexpr int kRowAheadBytes = 288;
inline constexpr int kSuperBlocksAhead = 4;  // prefill, super-blocks of 256, as in kernels_avx2.cpp

struct Q4_0RowGroups {
  static constexpr int kRows = 16, kTokens = 12, kDecodeRows = 16;
  static constexpr bool kTokensOuter = false;

  // One token's block into acc (lane r: row r of the 16), u[i] the stored values of elements
  // 4i..4i+3 of each row (i < 4), of 16 + 4(i - 4).. (i >= 4), dw the rows' scales.
  HEARTH_AVX512_INLINE void accumulate(const __m512i (&u)[8], __m512 dw, const SummedQ8Block& xb, __m512& acc) {
    int32_t q4[8];
    __builtin_memcpy(q4, xb.q, sizeof(q4));
    // Two chains of dependent VNNI steps instead of one, for decode's sake.
    __m512i s0 = _mm512_dpbusd_epi32(_mm512_set1_epi32(xb.offset), u[0], _mm512_set1_epi32(q4[0]));
    __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[4], _mm512_set1_epi32(q4[4]));
    for (int i = 1; i < 4; ++i) {
      s0 = _mm512_dpbusd_epi32(s0, u[i], _mm512_set1_epi32(q4[i]));
      s1 = _mm512_dpbusd_epi32(s1, u[i + 4], _mm512_set1_epi32(q4[i + 4]));
    }
    const __m512i sumi = _mm512_add_epi32(s0, s1);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_mul_ps(dw, _mm512_set1_ps(xb.d)), acc);
  }

  template <int R, int T>
  HEARTH_AVX512 static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    constexpr int G = (R + 15) / 16;  // groups of 16 rows
    const SummedQ8Block* xt[T];
    for (int t = 0; t < T; ++t) xt[t] = reinterpret_cast<const SummedQ8Block*>(x + static_cast<size_t>(t) * xs);
    __m512 acc[G][T];
    for (int g = 0; g < G; ++g)
      for (int t = 0; t < T; ++t) acc[g][t] = _mm512_setzero_ps();
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const int nb = n / kQ4_0Block;
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    constexpr int kAheadPerBlock = R * static_cast<int>(sizeof(BlockQ4_0));
    constexpr int kAheadBlocks = kRowAheadBytes / static_cast<int>(sizeof(BlockQ4_0));
    for (int b = 0; b < kAheadBlocks; b += 2)
      for (int g = 0; g < G; ++g) RowGroup<R>(w + static_cast<size_t>(b) * sizeof(BlockQ4_0), ws, 16 * g).prefetch();
    for (int b = 0; b < nb; ++b) {
      const uint8_t* pf = ahead + static_cast<size_t>(b) * kAheadPerBlock;
      for (int o = 0; o < kAheadPerBlock; o += 64) _mm_prefetch(reinterpret_cast<const char*>(pf + o), _MM_HINT_T1);
      const uint8_t* block0 = w + static_cast<size_t>(b) * sizeof(BlockQ4_0);
      if ((b & 1) == 0)
        for (int g = 0; g < G; ++g) RowGroup<R>(block0 + kAheadBlocks * sizeof(BlockQ4_0), ws, 16 * g).prefetch();
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) {
        const RowGroup<R> rg(block0, ws, 16 * g);
        __m512i k[4];
        transposed(rg, offsetof(BlockQ4_0, qs), k);
        const __m512 dw = rg.halves_at(offsetof(BlockQ4_0, d));
        __m512i u[8];  // u[i]: the stored values of elements 4i..4i+3 (i < 4), 16+4(i-4).. (i >= 4)
        for (int i = 0; i < 4; ++i) {
          u[i] = _mm512_and_si512(k[i], low4);
          u[i + 4] = _mm512_and_si512(_mm512_srli_epi16(k[i], 4), low4);
        }
        for (int t = 0; t < T; ++t) accumulate(u, dw, xt[t][b], acc[g][t]);
      }
    }
    for (int g = 0; g < G; ++g) {
      const int rows_here = std::min(16, R - 16 * g);
      for (int t = 0; t < T; ++t)
        _mm512_mask_storeu_ps(y + static_cast<size_t>(t) * ldy + static_cast<size_t>(16 * g),
                              static_cast<__mmask16>((1u << rows_here) - 1), acc[g][t]);
    }
  }
};

// The K-quants' activations: Q8_K blocks as they are.
template <int T>
struct Q8KTokens {
  const BlockQ8_K* x[T];
  Q8KTokens(const uint8_t* base, size_t xs, int b) {
    for (int t = 0; t < T; ++t) x[t] = reinterpret_cast<const BlockQ8_K*>(base + static_cast<size_t>(t) * xs) + b;
  }
};

// ---- Q5_K weights against Q8_K activations (and Q4_K's decode sums) ----
//
// Bit for bit the AVX2 kernels' computation (see kernels_avx2.cpp): per super-block and output,
// 8 int32 lanes of sum_j scale_j * (q_j . x_j) (maddubs, then VNNI's vpdpwssd adding the
// scale-weighted pairs into the lanes as madd + add did), then acc += (d * d_x) * lanes and
// acc -= (dmin * d_x) * (mins . bsums), in one 8-lane accumulator, rows r and r + 1 in the two
// halves of a register. Q4_K's kernels (Q4_KRowGroups, below) take only unpack() and sums().

// The 8 scales (bytes 0..7) and 8 mins (bytes 8..15) of two super-blocks, unpack_scale_min's
// values, row a's in the low 128 bits and row b's in the high: a few shuffles for both rows where
// the scalar unpacking cost a quarter of the kernel's instructions. Reads 16 bytes from each
// `scales` (the 12 packed bytes and the 4 after them, still inside the block).
HEARTH_AVX512 inline __m256i pair_scales_and_mins(const uint8_t* a, const uint8_t* b) {
  const __m256i s = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
                                            _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1);
  // Low bits: scales 0-3 from bytes 0-3 (6 bits), scales 4-7 from bytes 8-11 (low nibble),
  // mins 0-3 from bytes 4-7 (6 bits), mins 4-7 from bytes 8-11 (high nibble).
  const __m256i low_src = _mm256_shuffle_epi8(s, _mm256_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1, 2, 3,
                                                                  8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
  const __m256i low = _mm256_blend_epi32(low_src, _mm256_srli_epi16(low_src, 4), 0x88);  // mins 4-7: the high nibble
  const __m256i low_mask = _mm256_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15,
                                            15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15);
  // Bits 4-5 of scales 4-7 and mins 4-7: the top 2 bits of bytes 0-3 and 4-7.
  const __m256i high_src = _mm256_shuffle_epi8(s, _mm256_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7, -1, -1,
                                                                   -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
  return _mm256_or_si256(_mm256_and_si256(low, low_mask),
                         _mm256_and_si256(_mm256_srli_epi16(high_src, 2), _mm256_set1_epi8(0x30)));
}

HEARTH_AVX512 inline __m512i pair256(__m256i a, __m256i b) { return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1); }
// 32 bytes of row a and 32 of row b: [a | b].
HEARTH_AVX512 inline __m512i pair_load(const uint8_t* a, const uint8_t* b) {
  return pair256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)),
                 _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)));
}

template <bool kFifthBit>
struct ScaleMinBlocks {
  using Block = std::conditional_t<kFifthBit, BlockQ5_K, BlockQ4_K>;
  static_assert(offsetof(Block, dmin) == offsetof(Block, d) + 2 && offsetof(Block, scales) + 16 <= sizeof(Block));
  static constexpr int kRows = 2, kTokens = 16, kDecodeRows = 2, kBlockElements = kQK;
  template <int T>
  using Tokens = Q8KTokens<T>;

  // Two rows' super-block, unpacked: rows a and b in the two halves of each register.
  struct Pair {
    __m512i q[8], scale[8], mins;
    __m512 d, dmin;
  };

  HEARTH_AVX512_INLINE void unpack(const Block& ba, const Block& bb, Pair& p) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    // Scales and mins as 16-bit words: row a's in words 0..15, row b's in words 16..31; each
    // min twice, to meet the bsums of the two halves (16 each) of its sub-block.
    const __m512i sc = _mm512_cvtepu8_epi16(pair_scales_and_mins(ba.scales, bb.scales));
    p.mins = _mm512_permutexvar_epi16(_mm512_set_epi16(31, 31, 30, 30, 29, 29, 28, 28, 27, 27, 26, 26, 25, 25, 24, 24, 15, 15, 14,
                                                       14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8),
                                      sc);
    __m512i(&q)[8] = p.q;
    for (int c = 0; c < 4; ++c) {
      const __m512i packed = pair_load(ba.qs + 32 * c, bb.qs + 32 * c);
      q[2 * c] = _mm512_and_si512(packed, low4);
      q[2 * c + 1] = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low4);
    }
    if constexpr (kFifthBit) {
      // Bit j of qh[l] is the fifth bit of element l of sub-block j.
      const __m512i qh = pair_load(ba.qh, bb.qh);
      const __m512i bit4 = _mm512_set1_epi8(16);
      q[0] = _mm512_or_si512(q[0], _mm512_and_si512(_mm512_slli_epi16(qh, 4), bit4));
      q[1] = _mm512_or_si512(q[1], _mm512_and_si512(_mm512_slli_epi16(qh, 3), bit4));
      q[2] = _mm512_or_si512(q[2], _mm512_and_si512(_mm512_slli_epi16(qh, 2), bit4));
      q[3] = _mm512_or_si512(q[3], _mm512_and_si512(_mm512_slli_epi16(qh, 1), bit4));
      q[4] = _mm512_or_si512(q[4], _mm512_and_si512(qh, bit4));
      q[5] = _mm512_or_si512(q[5], _mm512_and_si512(_mm512_srli_epi16(qh, 1), bit4));
      q[6] = _mm512_or_si512(q[6], _mm512_and_si512(_mm512_srli_epi16(qh, 2), bit4));
      q[7] = _mm512_or_si512(q[7], _mm512_and_si512(_mm512_srli_epi16(qh, 3), bit4));
    }
    for (int j = 0; j < 8; ++j)
      p.scale[j] = _mm512_permutexvar_epi16(
          _mm512_inserti64x4(_mm512_set1_epi16(static_cast<short>(j)), _mm256_set1_epi16(static_cast<short>(16 + j)), 1), sc);
    // [d_a, dmin_a, d_b, dmin_b] (adjacent in each block), then each spread over its row's half.
    uint32_t dda, ddb;
    __builtin_memcpy(&dda, &ba.d, 4);
    __builtin_memcpy(&ddb, &bb.d, 4);
    const __m512 dd = _mm512_castps128_ps512(
        _mm_cvtph_ps(_mm_insert_epi32(_mm_cvtsi32_si128(static_cast<int>(dda)), static_cast<int>(ddb), 1)));
    p.d = _mm512_permutexvar_ps(_mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0), dd);
    p.dmin = _mm512_permutexvar_ps(_mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1), dd);
  }

  // A token's sum_j scale_j * (q_j . x_j) and mins . bsums, each as 8 lanes per row.
  HEARTH_AVX512_INLINE void sums(const Pair& p, const BlockQ8_K& xb, __m512i& sumi, __m512i& summ) {
    sumi = _mm512_setzero_si512();
    for (int j = 0; j < 8; ++j) {
      const __m512i xj = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.qs + 32 * j)));
      sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(p.q[j], xj), p.scale[j]);
    }
    const __m512i bsums = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.bsums)));
    summ = _mm512_madd_epi16(bsums, p.mins);
  }

  template <int T>
  HEARTH_AVX512_INLINE void add_block(const Block& ba, const Block& bb, const Tokens<T>& x, __m512 (&acc)[T]) {
    Pair p;
    unpack(ba, bb, p);
    for (int t = 0; t < T; ++t) {
      const BlockQ8_K& xb = *x.x[t];
      __m512i sumi, summ;
      sums(p, xb, sumi, summ);
      const __m512 xd = _mm512_set1_ps(xb.d);
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(p.d, xd), _mm512_cvtepi32_ps(sumi), acc[t]);
      acc[t] = _mm512_fnmadd_ps(_mm512_mul_ps(p.dmin, xd), _mm512_cvtepi32_ps(summ), acc[t]);
    }
  }
};

// Q4_K, sixteen rows at a time: the AVX2 kernel's computation (Q4_KRowGroups in kernels_avx2.cpp),
// bit for bit: per super-block and output the exact A = sum_j scale_j * (q_j . x_j) and
// B = sum_j min_j * (sum of x over j), then acc = fma(float(A), d * d_x, acc) and
// acc = fnma(float(B), dmin * d_x, acc). A prefill tile transposes a row group's values, scales and
// mins once per super-block into lanes (row j in lane j) for all its tokens; VNNI adds each
// 4-element group of a sub-block into place and one multiply applies the lane's scale. Decode,
// with one token to share that work, computes a row pair's sums as ScaleMinBlocks does (8 lanes
// per row) and adds each row's lanes within the register: the same integers. Decode tiles are
// one pair: 4 rows (two pairs) were 10% slower from memory, 16 rows 40-90%.
struct Q4_KRowGroups {
  // 16 tokens per unpacked super-block: at 8, unpacking took a third of a prefill tile's time.
  static constexpr int kRows = 16, kTokens = 16, kDecodeRows = 2;
  static constexpr bool kTokensOuter = false;
  using Pairs = ScaleMinBlocks<false>;

  struct Unpacked {
    __m512i u[8][8];   // u[j][i] lane r: the stored values of elements 4i..4i+3 of sub-block j of row r
    __m512i scale[8];  // lane r: row r's scale of sub-block j (int32)
    __m512i min[8];    // lane r: row r's min of sub-block j, twice (int16 pairs, for the bsums' pair)
    __m512 d, dmin;
  };

  template <int R>
  HEARTH_AVX512_INLINE void unpack(const RowGroup<R>& rg, Unpacked& out) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    for (int c = 0; c < 4; ++c) {
      // Bytes 32c..32c+31: low nibbles are sub-block 2c, high nibbles 2c + 1.
      __m512i k[8];
      transposed(rg, offsetof(BlockQ4_K, qs) + 32 * c, k);
      transposed(rg, offsetof(BlockQ4_K, qs) + 32 * c + 16, k + 4);
      for (int i = 0; i < 8; ++i) {
        out.u[2 * c][i] = _mm512_and_si512(k[i], low4);
        out.u[2 * c + 1][i] = _mm512_and_si512(_mm512_srli_epi16(k[i], 4), low4);
      }
    }
    // Scales (bytes 0-7) and mins (8-15) of rows c, c + 4, c + 8, c + 12, as four_rows lays rows out.
    __m512i four[4];
    for (int c = 0; c < 4; ++c) {
      constexpr size_t at = offsetof(BlockQ4_K, scales);
      four[c] = _mm512_inserti64x4(_mm512_castsi256_si512(pair_scales_and_mins(rg.row(c) + at, rg.row(c + 4) + at)),
                                   pair_scales_and_mins(rg.row(c + 8) + at, rg.row(c + 12) + at), 1);
    }
    __m512i sm[4];  // lane r: row r's scales 0-3, scales 4-7, mins 0-3, mins 4-7 (bytes)
    transpose16(four[0], four[1], four[2], four[3], sm);
    spread_scales(sm, out);
    out.d = rg.halves_at(offsetof(BlockQ4_K, d));
    out.dmin = rg.halves_at(offsetof(BlockQ4_K, dmin));
  }

  // The first super-blocks of the tile's rows, which no earlier step prefetched.
  template <int R>
  HEARTH_AVX512_INLINE void prefetch_start(const uint8_t* w, size_t ws) {
    for (int b = 0; b < kSuperBlocksAhead; ++b)
      for (int g = 0; g < (R + 15) / 16; ++g)
        RowGroup<R>(w + static_cast<size_t>(b) * sizeof(BlockQ4_K), ws, 16 * g).prefetch(sizeof(BlockQ4_K));
  }

  // One token's two FMAs into acc (lane r: row r of the 16) from an unpacked super-block.
  HEARTH_AVX512_INLINE void accumulate(const Unpacked& un, const BlockQ8_K& xb, __m512& acc) {
    __m512i a = _mm512_setzero_si512(), m = _mm512_setzero_si512();
    for (int j = 0; j < 8; ++j) {
      int32_t q4[8];
      __builtin_memcpy(q4, xb.qs + 32 * j, sizeof(q4));
      __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), un.u[j][0], _mm512_set1_epi32(q4[0]));
      __m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), un.u[j][4], _mm512_set1_epi32(q4[4]));
      for (int i = 1; i < 4; ++i) {
        s0 = _mm512_dpbusd_epi32(s0, un.u[j][i], _mm512_set1_epi32(q4[i]));
        s1 = _mm512_dpbusd_epi32(s1, un.u[j][i + 4], _mm512_set1_epi32(q4[i + 4]));
      }
      a = _mm512_add_epi32(a, _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), un.scale[j]));
      int32_t bs;
      __builtin_memcpy(&bs, xb.bsums + 2 * j, sizeof(bs));
      m = _mm512_dpwssd_epi32(m, un.min[j], _mm512_set1_epi32(bs));
    }
    const __m512 dx = _mm512_set1_ps(xb.d);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), _mm512_mul_ps(un.d, dx), acc);
    acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(un.dmin, dx), acc);
  }

  // Row r's byte j % 4 of each 32-bit lane of sm[j / 4] (scales) as an int32, and of
  // sm[2 + j / 4] (mins) twice as int16: madd's and dpwssd's operands.
  HEARTH_AVX512_INLINE void spread_scales(const __m512i (&sm)[4], Unpacked& out) {
    for (int j = 0; j < 8; ++j) {
      const char b = static_cast<char>(j % 4);
      const __m512i word =
          _mm512_broadcast_i32x4(_mm_setr_epi8(b, -1, -1, -1, b + 4, -1, -1, -1, b + 8, -1, -1, -1, b + 12, -1, -1, -1));
      const __m512i pair =
          _mm512_broadcast_i32x4(_mm_setr_epi8(b, -1, b, -1, b + 4, -1, b + 4, -1, b + 8, -1, b + 8, -1, b + 12, -1, b + 12, -1));
      out.scale[j] = _mm512_shuffle_epi8(sm[j / 4], word);
      out.min[j] = _mm512_shuffle_epi8(sm[2 + j / 4], pair);
    }
  }

  // Decode: rows in pairs as ScaleMinBlocks takes them (16 rows read at once from memory were
  // 40-90% slower: the prefetches did not keep up), each pair's A and B (8 lanes per row)
  // summed within the register, then the same two FMAs: the same integers, so the tiles' bits.
  template <int R>
  HEARTH_AVX512 static void decode(const uint8_t* w, size_t ws, const BlockQ8_K* x, int nb, float* y) {
    constexpr int P = (R + 1) / 2;
    __m512 acc[P];
    for (int p = 0; p < P; ++p) acc[p] = _mm512_setzero_ps();
    const uint8_t* ahead = w + tiles::prefetch_distance(static_cast<size_t>(R) * ws);
    constexpr int kAheadPerBlock = R * static_cast<int>(sizeof(BlockQ4_K));
    for (int b = 0; b < nb; ++b) {
      const uint8_t* pf = ahead + static_cast<size_t>(b) * kAheadPerBlock;
      for (int o = 0; o < kAheadPerBlock; o += 64) _mm_prefetch(reinterpret_cast<const char*>(pf + o), _MM_HINT_T0);
      const __m512 dx = _mm512_set1_ps(x[b].d);
      for (int p = 0; p < P; ++p) {
        const auto* ra = reinterpret_cast<const BlockQ4_K*>(w + static_cast<size_t>(2 * p) * ws) + b;
        const auto* rb = reinterpret_cast<const BlockQ4_K*>(w + static_cast<size_t>(std::min(2 * p + 1, R - 1)) * ws) + b;
        Pairs::Pair pair;
        Pairs::unpack(*ra, *rb, pair);
        __m512i a, m;
        Pairs::sums(pair, x[b], a, m);
        // Per 128-bit chunk [a0+a2, m0+m2, a1+a3, m1+m3], then [a, m, a, m] of the chunk, then
        // each 256-bit half's: lane 0 = A and lane 1 = B of row a, lanes 8 and 9 of row b.
        __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi32(a, m), _mm512_unpackhi_epi32(a, m));
        t = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_BADC));
        t = _mm512_add_epi32(t, _mm512_shuffle_i32x4(t, t, 0xb1));
        const __m512 am = _mm512_cvtepi32_ps(t);
        acc[p] = _mm512_fmadd_ps(am, _mm512_mul_ps(pair.d, dx), acc[p]);
        acc[p] = _mm512_fnmadd_ps(_mm512_movehdup_ps(am), _mm512_mul_ps(pair.dmin, dx), acc[p]);
      }
    }
    for (int p = 0; p < P; ++p) {
      alignas(64) float out[16];
      _mm512_store_ps(out, acc[p]);
      y[2 * p] = out[0];
      if (2 * p + 1 < R) y[2 * p + 1] = out[8];
    }
  }

  template <int R, int T>
  HEARTH_AVX512 static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    const int nb = n / kQK;
    if constexpr (T == 1) {
      decode<R>(w, ws, reinterpret_cast<const BlockQ8_K*>(x), nb, y);
      return;
    }
    constexpr int G = (R + 15) / 16;
    const BlockQ8_K* xt[T];
    for (int t = 0; t < T; ++t) xt[t] = reinterpret_cast<const BlockQ8_K*>(x + static_cast<size_t>(t) * xs);
    __m512 acc[G][T];
    for (int g = 0; g < G; ++g)
      for (int t = 0; t < T; ++t) acc[g][t] = _mm512_setzero_ps();
    Unpacked un;
    prefetch_start<R>(w, ws);
    for (int b = 0; b < nb; ++b) {
      const uint8_t* block0 = w + static_cast<size_t>(b) * sizeof(BlockQ4_K);
      for (int g = 0; g < G; ++g) {
        const RowGroup<R> rg(block0, ws, 16 * g);
        RowGroup<R>(block0 + kSuperBlocksAhead * sizeof(BlockQ4_K), ws, 16 * g).prefetch(sizeof(BlockQ4_K));
        unpack(rg, un);
        for (int t = 0; t < T; ++t) accumulate(un, xt[t][b], acc[g][t]);
      }
    }
    for (int g = 0; g < G; ++g)
      for (int t = 0; t < T; ++t)
        _mm512_mask_storeu_ps(y + static_cast<size_t>(t) * ldy + static_cast<size_t>(16 * g),
                              static_cast<__mmask16>((1u << std::min(16, R - 16 * g)) - 1), acc[g][t]);
  }
};

// ---- Q4_0 and Q4_K rows interleaved by eights (interleaved_rows.h) ----
//
// Two groups to a register: lanes 0-7 the first group's rows, 8-15 the second's (a lone last
// group twice). The layout already holds each 4-byte piece of 8 rows side by side, so the 16-row
// tiles' unpacked form (Q4_0RowGroups, Q4_KRowGroups) comes from loads and masks, without their
// transposes, and their tokens' loops give their bits. Decode is the AVX2 table's kernel over the
// same layout (one stream per group, which this table's row tiles could not match: TinyLlama Q4_K
// decode 52 tok/s on the plain rows whatever the memory, 75-83 interleaved at the machine's fast
// moments; docs/performance.md, session 36). Both tables read Q4_0 activations as SummedQ8Block.

// 32 bytes of group a then 32 of group b, each at `offset` in its block.
HEARTH_AVX512_INLINE __m512i both_groups(const uint8_t* a, const uint8_t* b, size_t offset) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + offset))),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + offset)), 1);
}
// The 8 halves at `offset` of each group's block, as 16 floats.
HEARTH_AVX512_INLINE __m512 both_groups_halves(const uint8_t* a, const uint8_t* b, size_t offset) {
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + offset));
  const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + offset));
  return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

struct Q4_KInterleaved {
  static constexpr int kTokens = 16, kBlock = kQK;
  static constexpr size_t kBlockBytes = kQ4_KInterleavedBlockBytes;
  using Unpacked = Q4_KRowGroups::Unpacked;

  // A block of each group: d (16 bytes), dmin (16), three vectors of scale bytes, 32 of values.
  HEARTH_AVX512_INLINE void unpack(const uint8_t* a, const uint8_t* b, Unpacked& out) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), low6 = _mm512_set1_epi8(0x3f), high2 = _mm512_set1_epi8(0x30);
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < 8; ++i) {
        const __m512i k = both_groups(a, b, 128 + 32 * static_cast<size_t>(8 * c + i));
        out.u[2 * c][i] = _mm512_and_si512(k, low4);
        out.u[2 * c + 1][i] = _mm512_and_si512(_mm512_srli_epi16(k, 4), low4);
      }
    // unpack_scale_min's arithmetic on 16 rows at once (the AVX2 kernel's, twice as wide).
    const __m512i s0 = both_groups(a, b, 32), s1 = both_groups(a, b, 64), s2 = both_groups(a, b, 96);
    const __m512i sm[4] = {
        _mm512_and_si512(s0, low6),
        _mm512_or_si512(_mm512_and_si512(s2, low4), _mm512_and_si512(_mm512_srli_epi16(s0, 2), high2)),
        _mm512_and_si512(s1, low6),
        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(s2, 4), low4), _mm512_and_si512(_mm512_srli_epi16(s1, 2), high2))};
    Q4_KRowGroups::spread_scales(sm, out);
    out.d = both_groups_halves(a, b, 0);
    out.dmin = both_groups_halves(a, b, 16);
  }

  // Block k of groups a and b into acc (T tokens).
  template <int T>
  HEARTH_AVX512_INLINE void add_block(const uint8_t* a, const uint8_t* b, int k, const uint8_t* x, size_t xs, __m512 (&acc)[T]) {
    const size_t at = static_cast<size_t>(k) * kBlockBytes;
    Unpacked un;
    unpack(a + at, b + at, un);
    for (int t = 0; t < T; ++t)
      Q4_KRowGroups::accumulate(un, reinterpret_cast<const BlockQ8_K*>(x + static_cast<size_t>(t) * xs)[k], acc[t]);
  }
};

// Q4_0 rows interleaved by eights, two groups to a register: per block the rows' d (16 bytes),
// then 4 vectors of 4 quant bytes of each row; Q4_0RowGroups's token loop.
struct Q4_0Interleaved {
  static constexpr int kTokens = 12, kBlock = kQ4_0Block;
  static constexpr size_t kBlockBytes = kQ4_0InterleavedBlockBytes;
  template <int T>
  HEARTH_AVX512_INLINE void add_block(const uint8_t* a, const uint8_t* b, int k, const uint8_t* x, size_t xs, __m512 (&acc)[T]) {
    const size_t at = static_cast<size_t>(k) * kBlockBytes;
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    __m512i u[8];
    for (int i = 0; i < 4; ++i) {
      const __m512i q = both_groups(a + at, b + at, 16 + 32 * static_cast<size_t>(i));
      u[i] = _mm512_and_si512(q, low4);
      u[i + 4] = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);
    }
    const __m512 dw = both_groups_halves(a + at, b + at, 0);
    for (int t = 0; t < T; ++t)
      Q4_0RowGroups::accumulate(u, dw, reinterpret_cast<const SummedQ8Block*>(x + static_cast<size_t>(t) * xs)[k], acc[t]);
  }
};

// Groups a and b (of which `rows` lanes are stored: 16, or 8 for a lone group) against T tokens.
template <class K, int T>
HEARTH_AVX512 void interleaved_tile(const uint8_t* a, const uint8_t* b, int rows, const uint8_t* x, size_t xs, int nb, float* y,
                                    size_t ldy) {
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  // Into L2 about as far ahead as the AVX2 prefill kernels ask: 4 super-blocks, 16 Q4_0 blocks.
  constexpr size_t kAhead = (K::kBlock == kQK ? 4 : 16) * K::kBlockBytes;
  for (int k = 0; k < nb; ++k) {
    const size_t at = static_cast<size_t>(k) * K::kBlockBytes;
    for (size_t o = 0; o < K::kBlockBytes; o += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(a + at + kAhead + o), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(b + at + kAhead + o), _MM_HINT_T1);
    }
    K::add_block(a, b, k, x, xs, acc);
  }
  const auto mask = static_cast<__mmask16>((1u << rows) - 1);
  for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y + static_cast<size_t>(t) * ldy, mask, acc[t]);
}

using InterleavedTile = void (*)(const uint8_t*, const uint8_t*, int, const uint8_t*, size_t, int, float*, size_t);
template <class K, int... I>
constexpr std::array<InterleavedTile, sizeof...(I)> interleaved_tiles(std::integer_sequence<int, I...>) {
  return {&interleaved_tile<K, I + 1>...};
}

// Interleaved rows of K's type: decode by the AVX2 table's kernel `decode` (one stream per group,
// which this table's row tiles could not match), prefill two groups and up to K::kTokens tokens
// a tile.
template <class K>
void gemm_interleaved(const void* w, size_t ws, int n_rows, const void* x, size_t xs, int n_tokens, int n, float* y, size_t ldy,
                      GemmKernel decode) {
  if (n_tokens == 1) {
    decode(w, ws, n_rows, x, xs, n_tokens, n, y, ldy);
    return;
  }
  static constexpr auto tiles = interleaved_tiles<K>(std::make_integer_sequence<int, K::kTokens>{});
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* xb = static_cast<const uint8_t*>(x);
  const int nb = n / K::kBlock;
  for (int r = 0; r < n_rows; r += 2 * kInterleavedRows) {
    const uint8_t* a = wb + static_cast<size_t>(r) * ws;
    const int rows = std::min(2 * kInterleavedRows, n_rows - r);
    const uint8_t* b = rows > kInterleavedRows ? a + kInterleavedRows * ws : a;
    for (int t = 0; t < n_tokens; t += K::kTokens) {
      const int nt = std::min(K::kTokens, n_tokens - t);
      tiles[static_cast<size_t>(nt - 1)](a, b, rows, xb + static_cast<size_t>(t) * xs, xs, nb,
                                         y + static_cast<size_t>(t) * ldy + r, ldy);
    }
  }
}
void gemm_q4_0_x8(const void* w, size_t ws, int n_rows, const void* x, size_t xs, int n_tokens, int n, float* y, size_t ldy) {
  gemm_interleaved<Q4_0Interleaved>(w, ws, n_rows, x, xs, n_tokens, n, y, ldy, avx2_kernels().gemm_q4_0_x8);
}
void gemm_q4_k_x8(const void* w, size_t ws, int n_rows, const void* x, size_t xs, int n_tokens, int n, float* y, size_t ldy) {
  gemm_interleaved<Q4_KInterleaved>(w, ws, n_rows, x, xs, n_tokens, n, y, ldy, avx2_kernels().gemm_q4_k_x8);
}

// ---- Q6_K weights against Q8_K activations ----
//
// Bit for bit the AVX2 kernel's computation (Q6KTiles in kernels_avx2.cpp), rows r and r + 1 in
// the two halves of a register: the same int32 lanes (maddubs, then VNNI's vpdpwssd adding the
// scale-weighted pairs as madd + add did), less 32 * (scales . bsums), then one FMA per
// super-block. The 16 scales of both rows are widened once and each group's pair of scales taken
// with one permute, where AVX2 builds them from 16 broadcasts per row.
struct Q6KBlocks {
  using Block = BlockQ6_K;
  static constexpr int kRows = 2, kTokens = 16, kDecodeRows = 2, kBlockElements = kQK;
  template <int T>
  using Tokens = Q8KTokens<T>;

  template <int T>
  HEARTH_AVX512_INLINE void add_block(const BlockQ6_K& ba, const BlockQ6_K& bb, const Tokens<T>& x, __m512 (&acc)[T]) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), low2 = _mm512_set1_epi8(0x03);
    // Signed scales as words: row a's in words 0..15, row b's in 16..31.
    const __m512i sc16 = _mm512_cvtepi8_epi16(
        _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ba.scales))),
                                _mm_loadu_si128(reinterpret_cast<const __m128i*>(bb.scales)), 1));
    // Group g (32 elements) spans sub-blocks 2g and 2g + 1, one per 128-bit lane of a row.
    __m512i scale[8], q[8];
    for (int g = 0; g < 8; ++g) {
      const __m512i idx = _mm512_inserti64x4(
          _mm512_castsi256_si512(
              _mm256_set_m128i(_mm_set1_epi16(static_cast<short>(2 * g + 1)), _mm_set1_epi16(static_cast<short>(2 * g)))),
          _mm256_set_m128i(_mm_set1_epi16(static_cast<short>(16 + 2 * g + 1)), _mm_set1_epi16(static_cast<short>(16 + 2 * g))),
          1);
      scale[g] = _mm512_permutexvar_epi16(idx, sc16);
    }
    for (int h = 0; h < 2; ++h) {
      const __m512i ql0 = pair_load(ba.ql + 64 * h, bb.ql + 64 * h), ql1 = pair_load(ba.ql + 64 * h + 32, bb.ql + 64 * h + 32);
      const __m512i qh = pair_load(ba.qh + 32 * h, bb.qh + 32 * h);
      // Bits 4-5 of the values of groups 4h .. 4h + 3: bit pairs 0-1, 2-3, 4-5, 6-7 of qh.
      const __m512i h0 = _mm512_slli_epi16(_mm512_and_si512(qh, low2), 4);
      const __m512i h2 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh, 2), low2), 4);
      const __m512i h4 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh, 4), low2), 4);
      const __m512i h6 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh, 6), low2), 4);
      q[4 * h] = _mm512_or_si512(_mm512_and_si512(ql0, low4), h0);
      q[4 * h + 1] = _mm512_or_si512(_mm512_and_si512(ql1, low4), h2);
      q[4 * h + 2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql0, 4), low4), h4);
      q[4 * h + 3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql1, 4), low4), h6);
    }
    const float da = _cvtsh_ss(ba.d), db = _cvtsh_ss(bb.d);
    for (int t = 0; t < T; ++t) {
      const BlockQ8_K& xb = *x.x[t];
      __m512i sumi = _mm512_setzero_si512();
      for (int g = 0; g < 8; ++g) {
        const __m512i xg = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.qs + 32 * g)));
        sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(q[g], xg), scale[g]);
      }
      const __m512i bsums = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.bsums)));
      sumi = _mm512_sub_epi32(sumi, _mm512_slli_epi32(_mm512_madd_epi16(bsums, sc16), 5));
      // d * d_x rounded as the AVX2 kernel rounds it (a float product per row).
      const __m512 dxd = _mm512_castpd_ps(
          _mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(da * xb.d)), _mm256_castps_pd(_mm256_set1_ps(db * xb.d)), 1));
      acc[t] = _mm512_fmadd_ps(dxd, _mm512_cvtepi32_ps(sumi), acc[t]);
    }
  }
};

// ---- IQ4_XS weights against Q8_K activations ----
//
// Bit for bit the AVX2 kernel's computation (IQ4XSTiles in kernels_avx2.cpp), rows r and r + 1
// in the two halves of a register: per sub-block the pairs |x| * (w with x's sign) by maddubs
// (AVX-512 has no sign instruction: w is negated under the mask of x's sign bits, which differs
// from AVX2's sign only where x is 0 and the product is 0 anyway), weighted by the sub-block's
// scale into the int32 lanes by VNNI's vpdpwssd as madd + add did, then one FMA per super-block
// with d * d_x rounded as a float per row. The table values are looked up once per row pair.
// The 8 signed scales of two super-blocks as words, row a's in words 0..7 and row b's in 8..15:
// iq4_xs_scale()'s values, from the first 8 bytes of each block (d, scales_h, scales_l) with a
// few shuffles and variable shifts where the scalar unpacking cost more than the products.
HEARTH_AVX512 inline __m256i pair_iq4_xs_scales(const BlockIQ4_XS& a, const BlockIQ4_XS& b) {
  static_assert(offsetof(BlockIQ4_XS, scales_h) == 2 && offsetof(BlockIQ4_XS, scales_l) == 4);
  uint64_t ha, hb;
  __builtin_memcpy(&ha, &a, 8);
  __builtin_memcpy(&hb, &b, 8);
  const __m256i v = _mm256_broadcastsi128_si256(_mm_set_epi64x(static_cast<long long>(hb), static_cast<long long>(ha)));
  // Word j: byte scales_l[j / 2] (byte 4 + j / 2; row b's 8 bytes later), its nibble j % 2.
  const __m256i low_bytes = _mm256_shuffle_epi8(v, _mm256_setr_epi8(4, -1, 4, -1, 5, -1, 5, -1, 6, -1, 6, -1, 7, -1, 7, -1, 12,
                                                                    -1, 12, -1, 13, -1, 13, -1, 14, -1, 14, -1, 15, -1, 15, -1));
  const __m256i low = _mm256_and_si256(
      _mm256_srlv_epi16(low_bytes, _mm256_setr_epi16(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4)), _mm256_set1_epi16(0x0f));
  // Word j: scales_h (bytes 2-3; row b's 10-11), its bits 2j and 2j + 1.
  const __m256i high_words = _mm256_shuffle_epi8(v, _mm256_setr_epi8(2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 10, 11, 10,
                                                                     11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11));
  const __m256i high =
      _mm256_and_si256(_mm256_srlv_epi16(high_words, _mm256_setr_epi16(0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14)),
                       _mm256_set1_epi16(3));
  return _mm256_sub_epi16(_mm256_or_si256(low, _mm256_slli_epi16(high, 4)), _mm256_set1_epi16(32));
}

// A block's activations as the IQ4_XS pairs read them: |x| and the mask of x's sign bits per
// sub-block, both rows' halves alike, taken once per block for all its row pairs.
template <int T>
struct IQ4XSTokens {
  __m512i abs[T][8];
  __mmask64 negative[T][8];
  float d[T];
  HEARTH_AVX512 IQ4XSTokens(const uint8_t* base, size_t xs, int b) {
    for (int t = 0; t < T; ++t) {
      const BlockQ8_K& xb = reinterpret_cast<const BlockQ8_K*>(base + static_cast<size_t>(t) * xs)[b];
      d[t] = xb.d;
      for (int j = 0; j < 8; ++j) {
        const __m512i xj = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.qs + 32 * j)));
        abs[t][j] = _mm512_abs_epi8(xj);
        negative[t][j] = _mm512_movepi8_mask(xj);
      }
    }
  }
};

struct IQ4XSBlocks {
  using Block = BlockIQ4_XS;
  static constexpr int kRows = 8, kTokens = 2, kDecodeRows = 2, kBlockElements = kQK;
  template <int T>
  using Tokens = IQ4XSTokens<T>;

  template <int T>
  HEARTH_AVX512_INLINE void add_block(const BlockIQ4_XS& ba, const BlockIQ4_XS& bb, const Tokens<T>& x, __m512 (&acc)[T]) {
    const __m512i table = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kIq4Values)));
    const __m512i sc = _mm512_castsi256_si512(pair_iq4_xs_scales(ba, bb));
    __m512i q[8], scale[8];
    for (int j = 0; j < 8; ++j) {
      q[j] = _mm512_shuffle_epi8(table, pair_nibbles(ba.qs + 16 * j, bb.qs + 16 * j));
      scale[j] = _mm512_permutexvar_epi16(
          _mm512_inserti64x4(_mm512_set1_epi16(static_cast<short>(j)), _mm256_set1_epi16(static_cast<short>(8 + j)), 1), sc);
    }
    const float da = _cvtsh_ss(ba.d), db = _cvtsh_ss(bb.d);
    for (int t = 0; t < T; ++t) {
      __m512i sumi = _mm512_setzero_si512();
      for (int j = 0; j < 8; ++j) {
        const __m512i signed_q = _mm512_mask_sub_epi8(q[j], x.negative[t][j], _mm512_setzero_si512(), q[j]);
        sumi = _mm512_dpwssd_epi32(sumi, _mm512_maddubs_epi16(x.abs[t][j], signed_q), scale[j]);
      }
      const __m512 dxd = _mm512_castpd_ps(
          _mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(da * x.d[t])), _mm256_castps_pd(_mm256_set1_ps(db * x.d[t])), 1));
      acc[t] = _mm512_fmadd_ps(dxd, _mm512_cvtepi32_ps(sumi), acc[t]);
    }
  }
};

// ---- f32, bf16 weights against f32 activations, f16 against f16 (prefill) ----
//
// The AVX2 kernels' computation bit for bit. f32 and bf16: each output has 4 8-lane FMA chains, vector v of 8
// elements going to chain v % 4, then (c0 + c1) + (c2 + c3), the horizontal sum and a scalar FMA
// tail. Only batches use these; decode keeps the AVX2 kernel, which streams one row at a time.
// A register holds two chains side by side: 16 consecutive elements are vectors v and v + 1, so
// a pass over vectors 0-1, 4-5, 8-9, ... runs chains 0 and 1, a second pass over 2-3, 6-7, ...
// chains 2 and 3 (each chain's FMAs in the same order as the dot kernel's), with plain loads of
// weights and activations (no broadcasts, no pairing of rows).

struct WideF32 {
  HEARTH_AVX512_INLINE __m512 load(const uint8_t* row, int i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(row) + i);
  }
  static float at(const uint8_t* row, int i) { return reinterpret_cast<const float*>(row)[i]; }
};
struct WideF16 {
  HEARTH_AVX512_INLINE __m512 load(const uint8_t* row, int i, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(row) + i));
  }
  HEARTH_AVX512 static float at(const uint8_t* row, int i) { return _cvtsh_ss(reinterpret_cast<const uint16_t*>(row)[i]); }
};
struct WideBF16 {
  HEARTH_AVX512_INLINE __m512 load(const uint8_t* row, int i, __mmask16 m) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(row) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static float at(const uint8_t* row, int i) {
    const uint32_t u = static_cast<uint32_t>(reinterpret_cast<const uint16_t*>(row)[i]) << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
  }
};

// L loads the weights (f32 or bf16), the activations are f32.
template <class L>
struct FloatWideTiles {
  using A = WideF32;
  // 4 rows x 5 tokens = 20 accumulators + 5 activations + 1 weight register; each pass goes over
  // a block of kBlockVectors whose weights and activations stay in L1 for both passes
  // (kernel_tiles.h keeps a block of rows in L2 while the tokens pass). 4 x 6 ran no faster
  // (session 26).
  static constexpr int kRows = 4, kTokens = 5, kDecodeRows = 1;
  static constexpr bool kTokensOuter = true;
  static constexpr int kBlockVectors = 64;  // a multiple of 4
  template <int R, int T>
  HEARTH_AVX512 static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    const uint8_t* xt[T];
    for (int t = 0; t < T; ++t) xt[t] = x + static_cast<size_t>(t) * xs;
    const int nv = n / 8;
    __m512 chains[2][R][T];  // [0]: chains 0 | 1, [1]: chains 2 | 3
    for (int c = 0; c < 2; ++c)
      for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) chains[c][r][t] = _mm512_setzero_ps();
    for (int v0 = 0; v0 < nv; v0 += kBlockVectors) {
      const int v_end = std::min(nv, v0 + kBlockVectors);
      for (int c = 0; c < 2; ++c) {
        __m512 acc[R][T];
        for (int r = 0; r < R; ++r)
          for (int t = 0; t < T; ++t) acc[r][t] = chains[c][r][t];
        int v = v0 + 2 * c;
        for (; v + 2 <= v_end; v += 4) step<R, T>(w, ws, xt, 8 * v, 0xffff, acc);
        // The block's last vector alone: the other half of the register keeps its chain as is.
        if (v < v_end) step<R, T>(w, ws, xt, 8 * v, 0x00ff, acc);
        for (int r = 0; r < R; ++r)
          for (int t = 0; t < T; ++t) chains[c][r][t] = acc[r][t];
      }
    }
    for (int r = 0; r < R; ++r) {
      const uint8_t* row = w + static_cast<size_t>(r) * ws;
      for (int t = 0; t < T; ++t) {
        const __m512 c01 = chains[0][r][t], c23 = chains[1][r][t];
        const __m256 sum = _mm256_add_ps(_mm256_add_ps(_mm512_castps512_ps256(c01), high_half(c01)),
                                         _mm256_add_ps(_mm512_castps512_ps256(c23), high_half(c23)));
        float s = hsum8(sum);
        for (int j = 8 * nv; j < n; ++j) s = std::fma(L::at(row, j), A::at(xt[t], j), s);
        y[static_cast<size_t>(t) * ldy + static_cast<size_t>(r)] = s;
      }
    }
  }

 private:
  HEARTH_AVX512_INLINE __m256 high_half(__m512 v) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)); }
  // acc += w * x over elements [i, i + 16) of every row and token, lanes outside m unchanged.
  template <int R, int T>
  HEARTH_AVX512_INLINE void step(const uint8_t* w, size_t ws, const uint8_t* const (&xt)[T], int i, __mmask16 m,
                                 __m512 (&acc)[R][T]) {
    __m512 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = A::load(xt[t], i, m);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = L::load(w + static_cast<size_t>(r) * ws, i, m);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_mask3_fmadd_ps(wv, xv[t], acc[r][t], m);
    }
  }
};

// f16 weights against f16 activations, the AVX2 kernel's computation bit for bit: its two
// 8-lane chains (vector v to chain v % 2) side by side in one register, element i in lane i % 16,
// then chain 0 + chain 1, the horizontal sum and a scalar FMA tail. One accumulator per output,
// so a tile runs its rows once, start to end: 4 rows x 6 tokens = 24 accumulators + 4 weights + 1
// activation register, 24 FMAs per 10 loads, no passes and no accumulators spilled between
// them (the 4-chain tile above ran ~0.85x of this one on a 2048 x 2048 x 504 product).
struct F16WideTiles {
  static constexpr int kRows = 4, kTokens = 6, kDecodeRows = 1;
  static constexpr bool kTokensOuter = true;
  template <int R, int T>
  HEARTH_AVX512 static void run(const uint8_t* w, size_t ws, const uint8_t* x, size_t xs, int n, float* y, size_t ldy) {
    const uint8_t* xt[T];
    for (int t = 0; t < T; ++t) xt[t] = x + static_cast<size_t>(t) * xs;
    const int nv = n / 8;
    __m256 sums[R][T];  // chain 0 + chain 1 of every output
    {
      __m512 acc[R][T];
      for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
      int v = 0;
      for (; v + 2 <= nv; v += 2) step<R, T>(w, ws, xt, 8 * v, acc);
      // An odd last vector belongs to chain 0: the upper lanes keep chain 1 as it is.
      if (v < nv) last_vector<R, T>(w, ws, xt, 8 * v, acc);
      for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t)
          sums[r][t] = _mm256_add_ps(_mm512_castps512_ps256(acc[r][t]),
                                     _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[r][t]), 1)));
    }
    for (int r = 0; r < R; ++r) {
      const uint8_t* row = w + static_cast<size_t>(r) * ws;
      for (int t = 0; t < T; ++t) {
        float s = hsum8(sums[r][t]);
        for (int j = 8 * nv; j < n; ++j) s = std::fma(WideF16::at(row, j), WideF16::at(xt[t], j), s);
        y[static_cast<size_t>(t) * ldy + static_cast<size_t>(r)] = s;
      }
    }
  }

 private:
  HEARTH_AVX512_INLINE __m512 load16(const uint8_t* row, int i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(reinterpret_cast<const uint16_t*>(row) + i)));
  }
  // acc += w * x over elements [i, i + 16) of every row and token. The rows' weights first, then
  // one token at a time: 29 registers live. Unmasked on purpose: with the masked FMA of the
  // 4-chain tiles (mask all ones) the compiler stored every accumulator on every step.
  template <int R, int T>
  HEARTH_AVX512_INLINE void step(const uint8_t* w, size_t ws, const uint8_t* const (&xt)[T], int i, __m512 (&acc)[R][T]) {
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = load16(w + static_cast<size_t>(r) * ws, i);
    for (int t = 0; t < T; ++t) {
      const __m512 xv = load16(xt[t], i);
      for (int r = 0; r < R; ++r) acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
    }
  }
  // acc's lower 8 lanes += w * x over elements [i, i + 8).
  template <int R, int T>
  HEARTH_AVX512_INLINE void last_vector(const uint8_t* w, size_t ws, const uint8_t* const (&xt)[T], int i, __m512 (&acc)[R][T]) {
    for (int r = 0; r < R; ++r) {
      const __m512 wv = WideF16::load(w + static_cast<size_t>(r) * ws, i, 0x00ff);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm512_mask3_fmadd_ps(wv, WideF16::load(xt[t], i, 0x00ff), acc[r][t], 0x00ff);
    }
  }
};

// Batches through the wide tiles, decode through the AVX2 kernel (the same bits either way).
template <class Tiles>
void gemm_wide(const void* w, size_t ws, int n_rows, const void* x, size_t xs, int n_tokens, int n, float* y, size_t ldy,
               GemmKernel decode) {
  if (n_tokens == 1) decode(w, ws, n_rows, x, xs, n_tokens, n, y, ldy);
  else tiles::gemm<Tiles>(w, ws, n_rows, x, xs, n_tokens, n, y, ldy);
}
void gemm_f32(const void* w, size_t ws, int n_rows, const void* x, size_t xs, int n_tokens, int n, float* y, size_t ldy) {
  gemm_wide<FloatWideTiles<WideF32>>(w, ws, n_rows, x, xs, n_tokens, n, y, ldy, avx2_kernels().gemm_f32);
}
void gemm_f16(const void* w, size_t ws, int n_rows, const void* x, size_t xs, int n_tokens, int n, float* y, size_t ldy) {
  gemm_wide<F16WideTiles>(w, ws, n_rows, x, xs, n_tokens, n, y, ldy, avx2_kernels().gemm_f16);
}
void gemm_bf16(const void* w, size_t ws, int n_rows, const void* x, size_t xs, int n_tokens, int n, float* y, size_t ldy) {
  gemm_wide<FloatWideTiles<WideBF16>>(w, ws, n_rows, x, xs, n_tokens, n, y, ldy, avx2_kernels().gemm_bf16);
}

// ---- attention's scores ----
//
// The AVX2 table's order, so that both give a score the same bits: element i of a score in lane
// i % 8, one FMA chain per lane from 0, the last partial vector zero-filled, the 8 lanes added in
// sum_lanes8's tree. A vector carries two keys' 8 lanes (key m in the low half, key m + 4 in the
// high half) against a query's 8 elements in both halves: the tree then runs on whole vectors and
// adds 16 scores' lanes in 21 instructions.

// A KV cache's rows, two keys' 8 elements (from a and b) at a time in a vector's halves: floats,
// or halves converted (exactly). mask keeps the first elements and zero-fills the rest.
struct CacheF32 {
  HEARTH_AVX512_MEMBER static __m512 pair(const float* a, const float* b, __mmask8 mask) {
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(_mm256_maskz_loadu_ps(mask, a))),
                                               _mm256_castps_pd(_mm256_maskz_loadu_ps(mask, b)), 1));
  }
  HEARTH_AVX512_MEMBER static __m512 load(const float* v, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, v); }
};
struct CacheF16 {
  HEARTH_AVX512_MEMBER static __m512 pair(const uint16_t* a, const uint16_t* b, __mmask8 mask) {
    return _mm512_cvtph_ps(
        _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_maskz_loadu_epi16(mask, a)), _mm_maskz_loadu_epi16(mask, b), 1));
  }
  HEARTH_AVX512_MEMBER static __m512 load(const uint16_t* v, __mmask16 mask) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, v));
  }
};

// sum_lanes8 (kernels_avx2.cpp) on the 8 keys of rows a and b: lanes 0-7 hold row a's scores of
// keys 0-7, lanes 8-15 row b's. a[m] and b[m] carry keys m and m + 4.
HEARTH_AVX512_INLINE __m512 sum_lanes8_x2(const __m512 a[4], const __m512 b[4]) {
  const __m512 v[8] = {a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]};
  __m512 t[4];
#pragma GCC unroll 16
  for (int i = 0; i < 4; ++i)
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  __m512 u[2];
#pragma GCC unroll 16
  for (int i = 0; i < 2; ++i) {
    const __m512d x = _mm512_castps_pd(t[2 * i]), y = _mm512_castps_pd(t[2 * i + 1]);
    u[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  // 128-bit lanes of u[i]: keys 0-3's sums of lanes 0-3, of lanes 4-7, keys 4-7's the same.
  return _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x88), _mm512_shuffle_f32x4(u[0], u[1], 0xDD));
}

// A query's 8 elements from i on, in both halves (those past n zero-filled by mask).
HEARTH_AVX512_INLINE __m512 query8(const float* q, __mmask8 mask) {
  return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_maskz_loadu_ps(mask, q))));
}

// One step of scores_tile: elements i to i + 7 (those past n zero-filled by mask).
template <class Cache, int kRows, class Key>
HEARTH_AVX512_INLINE void scores_step(__m512 (&acc)[kRows][4], const float* const q[], const Key* const k[8], int i,
                                      __mmask8 mask) {
  __m512 kv[4];
#pragma GCC unroll 16
  for (int m = 0; m < 4; ++m) kv[m] = Cache::pair(k[m] + i, k[m + 4] + i, mask);
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    const __m512 qv = query8(q[r] + i, mask);
#pragma GCC unroll 16
    for (int m = 0; m < 4; ++m) acc[r][m] = _mm512_fmadd_ps(qv, kv[m], acc[r][m]);
  }
}

// Scores of kRows query rows x 8 keys; keys past the last repeat it, and only real ones (and the
// first `rows` rows) are stored.
template <class Cache, int kRows, class Key>
HEARTH_AVX512 void scores_tile(const float* const q[], const Key* const k[8], int n, float* s, size_t s_stride, int rows,
                               int keys) {
  __m512 acc[kRows][4];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r)
#pragma GCC unroll 16
    for (__m512& a : acc[r]) a = _mm512_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) scores_step<Cache, kRows>(acc, q, k, i, 0xFF);
  if (i < n) scores_step<Cache, kRows>(acc, q, k, i, static_cast<__mmask8>((1u << (n - i)) - 1));
  const __mmask8 kmask = static_cast<__mmask8>((1u << keys) - 1);
#pragma GCC unroll 16
  for (int r = 0; r < kRows && r < rows; r += 2) {
    const __m512 sum = sum_lanes8_x2(acc[r], acc[r + 1 < kRows ? r + 1 : r]);
    _mm256_mask_storeu_ps(s + static_cast<size_t>(r) * s_stride, kmask, _mm512_castps512_ps256(sum));
    if (r + 1 < rows)
      _mm256_mask_storeu_ps(s + static_cast<size_t>(r + 1) * s_stride, kmask,
                            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(sum), 1)));
  }
}

// 4 rows x 8 keys a tile, fewer rows where fewer are left (a decode token's few query heads).
template <class Cache, class Key>
HEARTH_AVX512 void scores_rows(const float* const q[4], const Key* const k[8], int n, float* s, size_t s_stride, int rows,
                               int keys) {
  if (rows <= 1) scores_tile<Cache, 1>(q, k, n, s, s_stride, rows, keys);
  else if (rows == 2) scores_tile<Cache, 2>(q, k, n, s, s_stride, rows, keys);
  else scores_tile<Cache, 4>(q, k, n, s, s_stride, rows, keys);
}

HEARTH_AVX512 void attention_scores(const float* k, size_t k_stride, int n_keys, const float* q, size_t q_stride, int n_q, int n,
                                    float* s, size_t s_stride) {
  tiles::score_tiles<4, 8, 64>(k, k_stride, n_keys, q, q_stride, n_q, n, s, s_stride, scores_rows<CacheF32, float>);
}

HEARTH_AVX512 void attention_scores_f16(const uint16_t* k, size_t k_stride, int n_keys, const float* q, size_t q_stride, int n_q,
                                        int n, float* s, size_t s_stride) {
  tiles::score_tiles<4, 8, 64>(k, k_stride, n_keys, q, q_stride, n_q, n, s, s_stride, scores_rows<CacheF16, uint16_t>);
}

// ---- attention's weighted sum of values ----
//
// The AVX2 table's arithmetic on 16 columns a vector: each output element takes the same FMAs in
// the same order (an element's FMA does not depend on the vector it is in), so the bits are
// those of the axpy calls; kHeads heads at a time share each load of a value row. `mask` cuts
// the last vector of a row short.
template <int kVecs, int kHeads, class Cache, class V>
HEARTH_AVX512 void weighted_block(const float* p, size_t p_stride, const float* inv, int h0, const V* v, size_t v_stride,
                                  int n_keys, int n, float* out, int col, __mmask16 mask) {
  __m512 a[kHeads][kVecs];
  float* o[kHeads];
  const float* ph[kHeads];
#pragma GCC unroll 16
  for (int h = 0; h < kHeads; ++h) {
    o[h] = out + static_cast<size_t>(h0 + h) * static_cast<size_t>(n) + col;
    ph[h] = p + static_cast<size_t>(h0 + h) * p_stride;
#pragma GCC unroll 16
    for (int k = 0; k < kVecs; ++k) a[h][k] = _mm512_maskz_loadu_ps(k == kVecs - 1 ? mask : 0xFFFF, o[h] + 16 * k);
  }
  for (int j = 0; j < n_keys; ++j) {
    const V* vj = v + static_cast<size_t>(j) * v_stride + col;
    // The first heads' pass brings the rows the others read.
    if (h0 == 0 && j + tiles::kKeysAhead < n_keys)
      tiles::prefetch_rows(vj, v_stride, tiles::kKeysAhead, tiles::kKeysAhead + 1, 16 * kVecs);
    __m512 x[kVecs];
#pragma GCC unroll 16
    for (int k = 0; k < kVecs; ++k) x[k] = Cache::load(vj + 16 * k, k == kVecs - 1 ? mask : 0xFFFF);
#pragma GCC unroll 16
    for (int h = 0; h < kHeads; ++h) {
      const __m512 w = _mm512_set1_ps(ph[h][j] * inv[h0 + h]);
#pragma GCC unroll 16
      for (int k = 0; k < kVecs; ++k) a[h][k] = _mm512_fmadd_ps(w, x[k], a[h][k]);
    }
  }
#pragma GCC unroll 16
  for (int h = 0; h < kHeads; ++h)
#pragma GCC unroll 16
    for (int k = 0; k < kVecs; ++k) _mm512_mask_storeu_ps(o[h] + 16 * k, k == kVecs - 1 ? mask : 0xFFFF, a[h][k]);
}

template <int kVecs, class Cache, class V>
HEARTH_AVX512 void weighted_columns(const float* p, size_t p_stride, const float* inv, int n_q, const V* v, size_t v_stride,
                                    int n_keys, int n, float* out, int col, __mmask16 mask) {
  int h = 0;
  for (; h + 4 <= n_q; h += 4) weighted_block<kVecs, 4, Cache>(p, p_stride, inv, h, v, v_stride, n_keys, n, out, col, mask);
  for (; h < n_q; ++h) weighted_block<kVecs, 1, Cache>(p, p_stride, inv, h, v, v_stride, n_keys, n, out, col, mask);
}

template <class Cache, class V>
HEARTH_AVX512 void weighted_sum_of(const float* p, size_t p_stride, const float* inv, int n_q, const V* v, size_t v_stride,
                                   int n_keys, int n, float* out) {
  int col = 0;
  for (; col + 64 <= n; col += 64) weighted_columns<4, Cache>(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out, col, 0xFFFF);
  for (; col + 16 <= n; col += 16) weighted_columns<1, Cache>(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out, col, 0xFFFF);
  if (col < n)
    weighted_columns<1, Cache>(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out, col,
                               static_cast<__mmask16>((1u << (n - col)) - 1));
}

HEARTH_AVX512 void weighted_sum(const float* p, size_t p_stride, const float* inv, int n_q, const float* v, size_t v_stride,
                                int n_keys, int n, float* out) {
  weighted_sum_of<CacheF32>(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out);
}

HEARTH_AVX512 void weighted_sum_f16(const float* p, size_t p_stride, const float* inv, int n_q, const uint16_t* v,
                                    size_t v_stride, int n_keys, int n, float* out) {
  weighted_sum_of<CacheF16>(p, p_stride, inv, n_q, v, v_stride, n_keys, n, out);
}

using Q8_0Tiles = PairRows<PackedBlocks<WeightsQ8_0>>;
using MXFP4Tiles = PairRows<PackedBlocks<WeightsMXFP4>>;
using IQ4_NLTiles = PairRows<PackedBlocks<WeightsIQ4_NL>>;
using Q5_KTiles = PairRows<ScaleMinBlocks<true>>;
using Q6_KTiles = PairRows<Q6KBlocks>;
using IQ4_XSTiles = PairRows<IQ4XSBlocks>;

size_t packed_bytes(TensorType weight, int n) {
  switch (weight) {
    case TensorType::Q4_0: return static_cast<size_t>(n / kQ8_0Block) * sizeof(SummedQ8Block);
    case TensorType::Q8_0:
    case TensorType::MXFP4:
    case TensorType::IQ4_NL: return static_cast<size_t>(n / kQ8_0Block) * sizeof(PackedBlock);
    default: return 0;  // the AVX2 kernels, reading the blocks
  }
}

void pack(TensorType weight, const void* blocks, void* out, int n) {
  const auto* x = static_cast<const BlockQ8_0*>(blocks);
  if (weight == TensorType::Q4_0) pack_summed_q8(x, static_cast<SummedQ8Block*>(out), n / kQ8_0Block);
  // Q8_0, MXFP4 and IQ4_NL share the offset of 128, and so their packed activations.
  if (weight == TensorType::Q8_0 || weight == TensorType::MXFP4 || weight == TensorType::IQ4_NL)
    pack_blocks<WeightsQ8_0::kOffsetShift>(x, static_cast<PackedBlock*>(out), n / kQ8_0Block);
}

// The dot kernels pack their activations first, in a buffer of the thread's that grows to the
// longest row seen (they serve tests and one-off products; matmul packs once per token).
template <class K>
float packed_dot(TensorType weight, const void* w, const BlockQ8_0* x, int nb) {
  thread_local std::vector<uint8_t> buf;
  const int n = nb * kQ8_0Block;
  buf.resize(std::max(buf.size(), packed_bytes(weight, n)));
  pack(weight, x, buf.data(), n);
  float y;
  K::template run<1, 1>(static_cast<const uint8_t*>(w), 0, buf.data(), 0, n, &y, 0);
  return y;
}

HEARTH_AVX512 float dot_q4_k(const BlockQ4_K* w, const BlockQ8_K* x, int nb) {
  return tiles::dot1<Q4_KRowGroups>(w, x, nb * kQK);
}
HEARTH_AVX512 float dot_q5_k(const BlockQ5_K* w, const BlockQ8_K* x, int nb) { return tiles::dot1<Q5_KTiles>(w, x, nb * kQK); }
HEARTH_AVX512 float dot_q6_k(const BlockQ6_K* w, const BlockQ8_K* x, int nb) { return tiles::dot1<Q6_KTiles>(w, x, nb * kQK); }
HEARTH_AVX512 float dot_iq4_xs(const BlockIQ4_XS* w, const BlockQ8_K* x, int nb) {
  return tiles::dot1<IQ4_XSTiles>(w, x, nb * kQK);
}

float dot_q4_0(const BlockQ4_0* w, const BlockQ8_0* x, int nb) { return packed_dot<Q4_0RowGroups>(TensorType::Q4_0, w, x, nb); }
float dot_q8_0(const BlockQ8_0* w, const BlockQ8_0* x, int nb) { return packed_dot<Q8_0Tiles>(TensorType::Q8_0, w, x, nb); }
float dot_mxfp4(const BlockMXFP4* w, const BlockQ8_0* x, int nb) { return packed_dot<MXFP4Tiles>(TensorType::MXFP4, w, x, nb); }
float dot_iq4_nl(const BlockIQ4_NL* w, const BlockQ8_0* x, int nb) {
  return packed_dot<IQ4_NLTiles>(TensorType::IQ4_NL, w, x, nb);
}

KernelTable make_table() {
  KernelTable t = avx2_kernels();
  t.name = "avx512";
  t.dot_q4_0 = dot_q4_0;
  t.gemm_q4_0 = tiles::gemm<Q4_0RowGroups>;
  t.dot_q8_0 = dot_q8_0;
  t.gemm_q8_0 = tiles::gemm<Q8_0Tiles>;
  t.dot_mxfp4 = dot_mxfp4;
  t.gemm_mxfp4 = tiles::gemm<MXFP4Tiles>;
  t.dot_iq4_nl = dot_iq4_nl;
  t.gemm_iq4_nl = tiles::gemm<IQ4_NLTiles>;
  t.dot_iq4_xs = dot_iq4_xs;
  t.gemm_iq4_xs = tiles::gemm<IQ4_XSTiles>;
  t.dot_q4_k = dot_q4_k;
  t.gemm_q4_k = tiles::gemm<Q4_KRowGroups>;
  t.gemm_q4_0_x8 = gemm_q4_0_x8;
  t.gemm_q4_k_x8 = gemm_q4_k_x8;
  t.dot_q5_k = dot_q5_k;
  t.gemm_q5_k = tiles::gemm<Q5_KTiles>;
  t.dot_q6_k = dot_q6_k;
  t.gemm_q6_k = tiles::gemm<Q6_KTiles>;
  t.gemm_f32 = gemm_f32;
  t.gemm_f16 = gemm_f16;
  t.gemm_bf16 = gemm_bf16;
  t.attention_scores = attention_scores;
  t.weighted_sum = weighted_sum;
  t.attention_scores_f16 = attention_scores_f16;
  t.weighted_sum_f16 = weighted_sum_f16;
  t.packed_bytes = packed_bytes;
  t.pack = pack;
  return t;
}

}  // namespace

const KernelTable& avx512_kernels() {
  static const KernelTable table = make_table();
  return table;
}

}  // namespace hearth::runtime

#endif
