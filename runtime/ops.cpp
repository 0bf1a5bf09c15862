#include "runtime/ops.h"

#include <algorithm>
#include <cmath>

namespace hearth::runtime {

void rmsnorm(const float* x, const float* w, float* out, int n, float eps) {
  double ss = 0.0;
  for (int i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
  for (int i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
}

std::vector<double> rope_inv_freq(float base, int n_rot) {
  std::vector<double> f;
  for (int i = 0; i < n_rot / 2; ++i) f.push_back(std::pow(double{base}, -2.0 * i / n_rot));
  return f;
}

void rope_normal(float* x, int pos, const std::vector<double>& inv_freq) {
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    // Angles in double: at positions in the thousands float would lose the low bits.
    const double theta = pos * inv_freq[i];
    const float c = static_cast<float>(std::cos(theta)), s = static_cast<float>(std::sin(theta));
    const float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * c - b * s;
    x[2 * i + 1] = a * s + b * c;
  }
}

void attend(const float* q, const float* keys, const float* values, int n_keys, int head_dim, int stride,
            float scale, float* scores, float* out, const KernelTable& k) {
  float max = -INFINITY;
  for (int j = 0; j < n_keys; ++j) {
    scores[j] = k.dot_f32(q, keys + static_cast<size_t>(j) * stride, head_dim) * scale;
    max = std::max(max, scores[j]);
  }
  double sum = 0.0;
  for (int j = 0; j < n_keys; ++j) {
    scores[j] = std::exp(scores[j] - max);
    sum += scores[j];
  }
  const float inv = static_cast<float>(1.0 / sum);
  std::fill_n(out, head_dim, 0.f);
  for (int j = 0; j < n_keys; ++j) {
    const float p = scores[j] * inv;
    const float* v = values + static_cast<size_t>(j) * stride;
    for (int d = 0; d < head_dim; ++d) out[d] += p * v[d];
  }
}

void swiglu(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = x[i] / (1.f + std::exp(-x[i])) * y[i];
}

}  // namespace hearth::runtime
