#include "runtime/model/rope.h"

#include <cmath>

namespace hearth::runtime {

std::vector<double> rope_inv_freq(float base, int n_rot) {
  std::vector<double> f;
  for (int i = 0; i < n_rot / 2; ++i) f.push_back(std::pow(double{base}, -2.0 * i / n_rot));
  return f;
}

std::vector<double> rope_frequencies(float base, int n_rot, float freq_scale, const std::vector<float>& factors) {
  std::vector<double> f = rope_inv_freq(base, n_rot);
  for (size_t i = 0; i < f.size(); ++i) {
    f[i] *= freq_scale;
    if (!factors.empty()) f[i] /= factors[i];
  }
  return f;
}

void rope_angles(int pos, const std::vector<double>& freq, float* cos_out, float* sin_out) {
  for (size_t i = 0; i < freq.size(); ++i) {
    const double theta = pos * freq[i];
    cos_out[i] = static_cast<float>(std::cos(theta));
    sin_out[i] = static_cast<float>(std::sin(theta));
  }
}

void rope_rotate(float* x, const float* c, const float* s, int n_pairs, RopeStyle style) {
  // Pair i is (x[a], x[b]): adjacent for Normal, n_pairs apart for NeoX.
  const int step = style == RopeStyle::Normal ? 2 : 1;
  const int gap = style == RopeStyle::Normal ? 1 : n_pairs;
  for (int i = 0; i < n_pairs; ++i) {
    float& a = x[i * step];
    float& b = x[i * step + gap];
    const float x0 = a, x1 = b;
    a = x0 * c[i] - x1 * s[i];
    b = x0 * s[i] + x1 * c[i];
  }
}

namespace {

void rope_one(float* x, int pos, const std::vector<double>& freq, RopeStyle style) {
  std::vector<float> c(freq.size()), s(freq.size());
  rope_angles(pos, freq, c.data(), s.data());
  rope_rotate(x, c.data(), s.data(), static_cast<int>(freq.size()), style);
}

}  // namespace

void rope_normal(float* x, int pos, const std::vector<double>& freq) { rope_one(x, pos, freq, RopeStyle::Normal); }
void rope_neox(float* x, int pos, const std::vector<double>& freq) { rope_one(x, pos, freq, RopeStyle::NeoX); }

}  // namespace hearth::runtime
