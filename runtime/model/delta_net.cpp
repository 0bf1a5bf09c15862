#include "runtime/model/delta_net.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/model/ops.h"

namespace hearth::runtime {

namespace {

float silu(float x) { return x / (1.f + std::exp(-x)); }
float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }
float softplus(float x) { return x > 20.f ? x : std::log(1.f + std::exp(x)); }

// x / max(|x|, eps) over n elements, the sum of squares in double (ggml_l2_norm).
void l2_normalise(float* x, int n, float eps) {
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += static_cast<double>(x[i] * x[i]);
  const float scale = 1.0f / std::max(std::sqrt(static_cast<float>(sum)), eps);
  for (int i = 0; i < n; ++i) x[i] *= scale;
}

}  // namespace

void delta_net_token(const ModelConfig& c, const LayerWeights& w, const float* qkv, const float* z, const float* beta,
                     const float* alpha, float* state, float* out, float* scratch, ThreadPool& pool, const KernelTable& k) {
  const int C = c.ssm_conv_channels(), K = c.ssm_conv_kernel;
  const int dk = c.ssm_d_state, nk = c.ssm_n_group, H = c.ssm_dt_rank, S = c.ssm_head_v_dim();

  // Convolution over the last K - 1 inputs (the state, oldest first) and this one, then SiLU.
  float* conv_state = state;
  float* mixed = scratch;
  for (int ch = 0; ch < C; ++ch) {
    const float* taps = &w.ssm_conv[static_cast<size_t>(ch) * K];
    float sum = 0.f;
    for (int i = 0; i < K - 1; ++i) sum += conv_state[static_cast<size_t>(i) * C + ch] * taps[i];
    sum += qkv[ch] * taps[K - 1];
    mixed[ch] = silu(sum);
  }
  std::memmove(conv_state, conv_state + C, static_cast<size_t>(K - 2) * C * sizeof(float));
  std::memcpy(conv_state + static_cast<size_t>(K - 2) * C, qkv, static_cast<size_t>(C) * sizeof(float));

  float* q = mixed;
  float* key = mixed + static_cast<size_t>(nk) * dk;
  const float* v = mixed + 2 * static_cast<size_t>(nk) * dk;
  for (int h = 0; h < nk; ++h) {
    l2_normalise(q + static_cast<size_t>(h) * dk, dk, c.rms_eps);
    l2_normalise(key + static_cast<size_t>(h) * dk, dk, c.rms_eps);
  }

  // The delta rule per value head, S stored transposed (row j of m is column j of S). Heads are
  // independent (each its own state, output and scratch row), so they run as tasks; a head's
  // arithmetic is the same whichever thread takes it.
  const float scale = 1.0f / std::sqrt(static_cast<float>(S));
  float* ssm = state + static_cast<size_t>(K - 1) * C;
  pool.run(H, [&](int h) {
    float* delta = scratch + C + static_cast<size_t>(h) * S;
    float* m = ssm + static_cast<size_t>(h) * S * S;
    const float* qh = q + static_cast<size_t>(h % nk) * dk;
    const float* kh = key + static_cast<size_t>(h % nk) * dk;
    const float* vh = v + static_cast<size_t>(h) * S;
    const float b = sigmoid(beta[h]);
    const float decay = std::exp(softplus(alpha[h] + w.ssm_dt_bias[static_cast<size_t>(h)]) * w.ssm_a[static_cast<size_t>(h)]);
    for (int i = 0; i < S * S; ++i) m[i] *= decay;
    for (int j = 0; j < S; ++j) delta[j] = (vh[j] - k.dot_f32(&m[static_cast<size_t>(j) * S], kh, S)) * b;
    for (int j = 0; j < S; ++j) k.axpy(delta[j], kh, &m[static_cast<size_t>(j) * S], S);
    float* oh = out + static_cast<size_t>(h) * S;
    for (int j = 0; j < S; ++j) oh[j] = k.dot_f32(&m[static_cast<size_t>(j) * S], qh, S) * scale;
    // Normalised per head, gated by SiLU(z).
    rmsnorm(oh, w.ssm_norm.data(), oh, S, c.rms_eps);
    for (int j = 0; j < S; ++j) oh[j] *= silu(z[static_cast<size_t>(h) * S + j]);
  });
}

}  // namespace hearth::runtime
