// The small per-token operations of a transformer block (the matmuls are in matmul.h).
#pragma once

#include <vector>

#include "runtime/kernels.h"

namespace hearth::runtime {

// out = x / sqrt(mean(x^2) + eps) * w, over n elements (the sum is kept in double).
void rmsnorm(const float* x, const float* w, float* out, int n, float eps);

// Inverse frequencies base^(-2i/n_rot) for i in [0, n_rot/2).
std::vector<double> rope_inv_freq(float base, int n_rot);

// Rotates adjacent pairs (x[2i], x[2i+1]) by angle pos * inv_freq[i]: llama's "normal" RoPE.
// Dimensions past n_rot = 2 * inv_freq.size() are left as they are.
void rope_normal(float* x, int pos, const std::vector<double>& inv_freq);

// One query head attending over n_keys cached positions:
//   out = sum_j softmax_j(q . k_j * scale) v_j
// k_j = keys + j * stride, v_j = values + j * stride; `scores` has room for n_keys floats.
void attend(const float* q, const float* keys, const float* values, int n_keys, int head_dim, int stride,
            float scale, float* scores, float* out, const KernelTable& k);

// x = silu(x) * y elementwise (SwiGLU's gate).
void swiglu(float* x, const float* y, size_t n);

}  // namespace hearth::runtime
