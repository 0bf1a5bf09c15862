#include "runtime/model/rope.h"

#include <algorithm>
#include <cmath>

namespace hearth::runtime {

namespace {

// The dimension whose rotation makes n_rot turns over the original context (ggml's
// ggml_rope_yarn_corr_dim, in float as there).
float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base) {
  return static_cast<float>(n_dims) * std::log(static_cast<float>(n_ctx_orig) / (n_rot * 2 * 3.14159265358979323846f)) /
         (2 * std::log(base));
}

}  // namespace

void RopeSpec::set_yarn(int n_ctx_orig, float beta_fast, float beta_slow) {
  yarn = true;
  yarn_low = std::max(0.f, std::floor(yarn_corr_dim(n_rot, n_ctx_orig, beta_fast, base)));
  yarn_high = std::min(static_cast<float>(n_rot - 1), std::ceil(yarn_corr_dim(n_rot, n_ctx_orig, beta_slow, base)));
}

void rope_angles(int pos, const RopeSpec& s, float* cos_out, float* sin_out) {
  const float theta_scale = std::pow(s.base, -2.0f / static_cast<float>(s.n_rot));
  float mscale = s.attn_factor;
  if (s.yarn) mscale *= 1.0f + 0.1f * std::log(1.0f / s.freq_scale);
  float theta_extrap = static_cast<float>(pos);
  for (int i = 0; i < s.n_rot / 2; ++i) {
    const float extrap = s.factors.empty() ? theta_extrap : theta_extrap / s.factors[static_cast<size_t>(i)];
    const float interp = s.freq_scale * extrap;
    float theta = interp;
    if (s.yarn) {  // ext_factor 1, as llama.cpp sets it for YaRN
      const float y = (static_cast<float>(i) - s.yarn_low) / std::max(0.001f, s.yarn_high - s.yarn_low);
      const float ramp = 1 - std::min(1.f, std::max(0.f, y));
      theta = interp * (1 - ramp) + extrap * ramp;
    }
    cos_out[i] = std::cos(theta) * mscale;
    sin_out[i] = std::sin(theta) * mscale;
    theta_extrap *= theta_scale;
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

void rope_apply(float* x, int pos, const RopeSpec& spec, RopeStyle style) {
  std::vector<float> c(static_cast<size_t>(spec.n_rot / 2)), s(c.size());
  rope_angles(pos, spec, c.data(), s.data());
  rope_rotate(x, c.data(), s.data(), spec.n_rot / 2, style);
}

}  // namespace hearth::runtime
