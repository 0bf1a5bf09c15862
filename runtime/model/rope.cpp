#include "runtime/model/rope.h"

#include <algorithm>
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

namespace {

// The dimension whose rotation makes n_rot turns over the original context (ggml's
// ggml_rope_yarn_corr_dim, in float as there).
float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
  return static_cast<float>(n_dims) * std::log(static_cast<float>(n_ctx_orig) / (n_rot * 2 * 3.14159265358979323846f)) /
         (2 * std::log(base));
}

}  // namespace

std::vector<double> rope_yarn_frequencies(float base, int n_rot, float freq_scale, int n_ctx_orig, float beta_fast,
                                          float beta_slow) {
  const float low = std::max(0.f, std::floor(yarn_corr_dim(n_rot, n_ctx_orig, beta_fast, base)));
  const float high = std::min(static_cast<float>(n_rot - 1), std::ceil(yarn_corr_dim(n_rot, n_ctx_orig, beta_slow, base)));
  std::vector<double> f = rope_inv_freq(base, n_rot);
  for (size_t i = 0; i < f.size(); ++i) {
    const float y = (static_cast<float>(i) - low) / std::max(0.001f, high - low);
    const float ramp = 1 - std::min(1.f, std::max(0.f, y));  // ext_factor 1, as llama.cpp sets it for YaRN
    f[i] *= double{freq_scale} * (1.0 - ramp) + ramp;
  }
  return f;
}

float rope_yarn_mscale(float freq_scale) { return 1.0f + 0.1f * std::log(1.0f / freq_scale); }

void rope_angles(int pos, const std::vector<double>& freq, float* cos_out, float* sin_out, float mscale) {
  for (size_t i = 0; i < freq.size(); ++i) {
    const double theta = pos * freq[i];
    cos_out[i] = static_cast<float>(std::cos(theta)) * mscale;
    sin_out[i] = static_cast<float>(std::sin(theta)) * mscale;
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
