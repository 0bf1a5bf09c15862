// Helpers of the kernel suites (kernels_test.cpp, kquants_test.cpp): random inputs, a double
// reference dot product, and a row quantized and read back through the format's own code. One
// definition for both files, which may share a unity batch.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "runtime/kernels/kernels.h"

namespace hearth::test {

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline double naive_dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double{a[i]} * double{b[i]};
  return s;
}

inline std::vector<uint8_t> quantized(runtime::TensorType t, const std::vector<float>& x) {
  std::vector<uint8_t> out(runtime::row_bytes(t, x.size()));
  runtime::quantize_row(t, x.data(), out.data(), static_cast<int64_t>(x.size()));
  return out;
}

inline std::vector<float> dequantized(runtime::TensorType t, const void* q, size_t n) {
  std::vector<float> out(n);
  runtime::dequantize_row(t, q, out.data(), static_cast<int64_t>(n));
  return out;
}

}  // namespace hearth::test
