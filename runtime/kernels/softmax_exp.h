// The exp of attention's softmax in the SIMD tables (kernels_avx2.cpp, kernels_neon.cpp), here
// for one float: those tables' vector code does the same arithmetic, lane by lane, so an element
// gets the same bits wherever it lies. For x <= 0: n = round(x / ln 2), r = x - n ln 2 (in two
// parts), e^r by its Taylor polynomial of degree 6 (|r| <= ln 2 / 2: within 2 ulp of std::exp),
// times 2^n through the exponent bits. Below -87.3, where 2^n leaves the normal floats, it gives
// e^-87.3, about 1e-38: nothing next to the softmax's largest term, which is 1.
//
// Included by files compiled for FMA hardware (std::fma is then one instruction).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace hearth::runtime::softmax_exp {

inline constexpr float kMin = -87.33654f, kLog2e = 1.44269504088896341f, kLn2Hi = 0.693145751953125f,
                       kLn2Lo = 1.42860682030941723e-6f;
inline constexpr float kPoly[] = {1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f};  // highest power first

inline float exp_nonpositive(float x) {
  x = x > kMin ? x : kMin;
  const float n = std::nearbyint(x * kLog2e);
  float r = std::fma(-n, kLn2Hi, x);
  r = std::fma(-n, kLn2Lo, r);
  float p = kPoly[0];
  for (int i = 1; i < 7; ++i) p = std::fma(p, r, kPoly[i]);
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// weighted_sum's columns past the last full vector: axpy's tail arithmetic (std::fma), key by key;
// at(&v[i]) reads a value as f32 (the cache's floats, or its halves converted).
template <class V, class At>
inline void weighted_sum_column(const float* p, size_t p_stride, const float* inv, int n_q, const V* v, size_t v_stride,
                                int n_keys, int n, float* out, int col, At at) {
  for (int h = 0; h < n_q; ++h) {
    float* o = out + static_cast<size_t>(h) * static_cast<size_t>(n) + col;
    for (int j = 0; j < n_keys; ++j)
      *o = std::fma(p[static_cast<size_t>(h) * p_stride + static_cast<size_t>(j)] * inv[h],
                    at(&v[static_cast<size_t>(j) * v_stride + col]), *o);
  }
}

}  // namespace hearth::runtime::softmax_exp
