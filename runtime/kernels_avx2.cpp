// AVX2 + FMA + F16C kernels. This file alone is compiled with -mavx2 -mfma -mf16c; kernels.cpp
// picks this table only when the CPU reports all three.
#if defined(__x86_64__) && defined(HEARTH_HAVE_AVX2_KERNELS)

#include <immintrin.h>

#include <cmath>

#include "runtime/kernels.h"
#include "runtime/kquants.h"

namespace hearth::runtime {

namespace {

inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

// Sum of products of signed bytes, in 8 int32 lanes converted to float.
inline __m256 mul_sum_i8(__m256i x, __m256i y) {
  const __m256i ax = _mm256_sign_epi8(x, x);
  const __m256i sy = _mm256_sign_epi8(y, x);
  const __m256i dot16 = _mm256_maddubs_epi16(ax, sy);
  const __m256i dot32 = _mm256_madd_epi16(dot16, _mm256_set1_epi16(1));
  return _mm256_cvtepi32_ps(dot32);
}

float dot_f32(const float* w, const float* x, int n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; ++i) s += w[i] * x[i];
  return s;
}

inline __m256 load_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

inline __m256 load_bf16(const uint16_t* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

template <__m256 (*Load)(const uint16_t*)>
float dot_half(const uint16_t* w, const float* x, int n, float (*conv)(uint16_t)) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(Load(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(Load(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(Load(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(Load(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(Load(w + i), _mm256_loadu_ps(x + i), a0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; ++i) s += conv(w[i]) * x[i];
  return s;
}

float bf16_scalar(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

float dot_f16(const uint16_t* w, const float* x, int n) { return dot_half<load_f16>(w, x, n, half_to_float); }
float dot_bf16(const uint16_t* w, const float* x, int n) { return dot_half<load_bf16>(w, x, n, bf16_scalar); }

float dot_q8_0(const BlockQ8_0* w, const BlockQ8_0* x, int n_blocks) {
  __m256 acc = _mm256_setzero_ps();
  for (int b = 0; b < n_blocks; ++b) {
    const __m256 d = _mm256_set1_ps(half_to_float(w[b].d) * half_to_float(x[b].d));
    const __m256i qw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs));
    const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
    acc = _mm256_fmadd_ps(d, mul_sum_i8(qw, qx), acc);
  }
  return hsum(acc);
}

float dot_q4_0(const BlockQ4_0* w, const BlockQ8_0* x, int n_blocks) {
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i eight = _mm256_set1_epi8(8);
  __m256 acc = _mm256_setzero_ps();
  for (int b = 0; b < n_blocks; ++b) {
    const __m256 d = _mm256_set1_ps(half_to_float(w[b].d) * half_to_float(x[b].d));
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].qs));
    // Low nibbles are elements 0..15, high nibbles 16..31.
    __m256i qw = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
    qw = _mm256_sub_epi8(_mm256_and_si256(qw, low4), eight);
    const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
    acc = _mm256_fmadd_ps(d, mul_sum_i8(qw, qx), acc);
  }
  return hsum(acc);
}

float dot_q5_0(const BlockQ5_0* w, const BlockQ8_0* x, int n_blocks) {
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i sixteen = _mm256_set1_epi8(16);
  // Byte j of the spread qh is byte j / 8 of qh; bit j % 8 of it is element j's fifth bit.
  const __m256i spread = _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303);
  const __m256i bit_of_byte = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  __m256 acc = _mm256_setzero_ps();
  for (int b = 0; b < n_blocks; ++b) {
    const __m256 d = _mm256_set1_ps(half_to_float(w[b].d) * half_to_float(x[b].d));
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].qs));
    __m256i qw = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low4);
    uint32_t qh;
    __builtin_memcpy(&qh, w[b].qh, 4);
    const __m256i bits = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(qh)), spread), bit_of_byte);
    qw = _mm256_or_si256(qw, _mm256_and_si256(_mm256_cmpeq_epi8(bits, bit_of_byte), sixteen));
    qw = _mm256_sub_epi8(qw, sixteen);
    const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs));
    acc = _mm256_fmadd_ps(d, mul_sum_i8(qw, qx), acc);
  }
  return hsum(acc);
}

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

// ---- K-quants against Q8_K activations ----
//
// Per super-block the integer sum of scale * (q . x) over sub-blocks is built in 8 int32 lanes:
// maddubs multiplies the unsigned weight values (0..63) by the signed activations and adds pairs
// into int16 (at most 2 * 63 * 127, no saturation), madd then multiplies by the sub-block scale
// and adds pairs into int32. Mins (Q4_K, Q5_K) and Q6_K's offset of 32 are applied once per
// sub-block through the activations' bsums.

inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// The weights' min term of a Q4_K/Q5_K super-block: sum_j m[j] * (sum of x over sub-block j),
// with the scales unpacked on the way.
inline int32_t unpack_scales_and_mins(const uint8_t* packed, const BlockQ8_K& x, uint8_t sc[8]) {
  int32_t summ = 0;
  for (int j = 0; j < 8; ++j) {
    uint8_t m;
    unpack_scale_min(packed, j, sc[j], m);
    summ += m * (x.bsums[2 * j] + x.bsums[2 * j + 1]);
  }
  return summ;
}

// 32 weight values of sub-block j times its 32 activations, times the sub-block's scale.
inline __m256i scaled_dot32(__m256i q, const int8_t* x, uint8_t scale) {
  const __m256i p16 = _mm256_maddubs_epi16(q, load32(x));
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(scale));
}

float dot_q4_k(const BlockQ4_K* w, const BlockQ8_K* x, int n_blocks) {
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  __m256 acc = _mm256_setzero_ps();
  float acc_min = 0.f;
  for (int b = 0; b < n_blocks; ++b) {
    uint8_t sc[8];
    const int32_t summ = unpack_scales_and_mins(w[b].scales, x[b], sc);
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i packed = load32(w[b].qs + 32 * c);
      const __m256i lo = _mm256_and_si256(packed, low4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
      sumi = _mm256_add_epi32(sumi, scaled_dot32(lo, x[b].qs + 64 * c, sc[2 * c]));
      sumi = _mm256_add_epi32(sumi, scaled_dot32(hi, x[b].qs + 64 * c + 32, sc[2 * c + 1]));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(w[b].d) * x[b].d), _mm256_cvtepi32_ps(sumi), acc);
    acc_min += half_to_float(w[b].dmin) * x[b].d * static_cast<float>(summ);
  }
  return hsum(acc) - acc_min;
}

float dot_q5_k(const BlockQ5_K* w, const BlockQ8_K* x, int n_blocks) {
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i sixteen = _mm256_set1_epi8(16);
  __m256 acc = _mm256_setzero_ps();
  float acc_min = 0.f;
  for (int b = 0; b < n_blocks; ++b) {
    uint8_t sc[8];
    const int32_t summ = unpack_scales_and_mins(w[b].scales, x[b], sc);
    const __m256i qh = load32(w[b].qh);
    // 16 where bit `bit` of qh is set, else 0.
    const auto fifth = [&](int bit) {
      const __m256i mask = _mm256_set1_epi8(static_cast<char>(1 << bit));
      return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, mask), mask), sixteen);
    };
    __m256i sumi = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i packed = load32(w[b].qs + 32 * c);
      const __m256i lo = _mm256_or_si256(_mm256_and_si256(packed, low4), fifth(2 * c));
      const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(packed, 4), low4), fifth(2 * c + 1));
      sumi = _mm256_add_epi32(sumi, scaled_dot32(lo, x[b].qs + 64 * c, sc[2 * c]));
      sumi = _mm256_add_epi32(sumi, scaled_dot32(hi, x[b].qs + 64 * c + 32, sc[2 * c + 1]));
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(w[b].d) * x[b].d), _mm256_cvtepi32_ps(sumi), acc);
    acc_min += half_to_float(w[b].dmin) * x[b].d * static_cast<float>(summ);
  }
  return hsum(acc) - acc_min;
}

float dot_q6_k(const BlockQ6_K* w, const BlockQ8_K* x, int n_blocks) {
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i low2 = _mm256_set1_epi8(0x03);
  __m256 acc = _mm256_setzero_ps();
  for (int b = 0; b < n_blocks; ++b) {
    const int8_t* sc = w[b].scales;
    // Values are stored as q + 32 (0..63, what maddubs needs unsigned); take the 32 back out
    // through the sums of x per sub-block of 16.
    int32_t offset = 0;
    for (int j = 0; j < 16; ++j) offset += sc[j] * x[b].bsums[j];
    __m256i sumi = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = load32(w[b].ql + 64 * h), ql1 = load32(w[b].ql + 64 * h + 32);
      const __m256i qh = load32(w[b].qh + 32 * h);
      const auto high_bits = [&](int shift) {
        return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, shift), low2), 4);
      };
      const __m256i q[4] = {
          _mm256_or_si256(_mm256_and_si256(ql0, low4), high_bits(0)),
          _mm256_or_si256(_mm256_and_si256(ql1, low4), high_bits(2)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), high_bits(4)),
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4), high_bits(6)),
      };
      for (int k = 0; k < 4; ++k) {
        // 32 elements span two sub-blocks of 16: one per 128-bit lane, as maddubs/madd keep lanes.
        const int j = 8 * h + 2 * k;
        const __m256i scale = _mm256_set_m128i(_mm_set1_epi16(sc[j + 1]), _mm_set1_epi16(sc[j]));
        const __m256i p16 = _mm256_maddubs_epi16(q[k], load32(x[b].qs + 128 * h + 32 * k));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, scale));
      }
    }
    sumi = _mm256_sub_epi32(sumi, _mm256_setr_epi32(32 * offset, 0, 0, 0, 0, 0, 0, 0));
    acc = _mm256_fmadd_ps(_mm256_set1_ps(half_to_float(w[b].d) * x[b].d), _mm256_cvtepi32_ps(sumi), acc);
  }
  return hsum(acc);
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
                                     .quantize_q8_0 = quantize_q8_0,
                                     .quantize_q8_k = quantize_q8_k};
  return table;
}

}  // namespace hearth::runtime

#endif
