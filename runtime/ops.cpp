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

void add_bias(float* out, const float* b, int n_rows, int n) {
  for (int r = 0; r < n_rows; ++r)
    for (int i = 0; i < n; ++i) out[static_cast<size_t>(r) * n + i] += b[i];
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
