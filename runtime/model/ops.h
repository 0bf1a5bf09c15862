// The small per-token operations of a transformer block (the matmuls are in matmul.h, RoPE in
// rope.h).
#pragma once

#include <cstddef>

#include "runtime/kernels/kernels.h"
#include "runtime/model/rope.h"

namespace hearth::runtime {

// out = x / sqrt(mean(x^2) + eps) * w, over n elements (the sum is kept in double). out may be x.
void rmsnorm(const float* x, const float* w, float* out, int n, float eps);

// out[i] += b[i] for each of n_rows rows of n (a bias on a matmul's output).
void add_bias(float* out, const float* b, int n_rows, int n);

// One query head attending over n_keys cached positions:
//   out = sum_j softmax_j(q . k_j * scale) v_j
// k_j = keys + j * stride, v_j = values + j * stride; `scores` has room for n_keys floats.
void attend(const float* q, const float* keys, const float* values, int n_keys, int head_dim, int stride, float scale,
            float* scores, float* out, const KernelTable& k);

// attend() for n_q query heads sharing one K/V head (grouped-query attention), so that each key
// and value is loaded once for all of them: head i reads q + i * head_dim, writes out + i *
// head_dim and uses scores + i * scores_stride. Each head's result equals attend() on it alone.
// `sinks` (gpt-oss), when not null, holds one logit per query head that joins the softmax's
// denominator only: attention weights then sum to less than one.
void attend_heads(const float* q, int n_q, const float* keys, const float* values, int n_keys, int head_dim, int stride,
                  float scale, float* scores, size_t scores_stride, float* out, const KernelTable& k,
                  const float* sinks = nullptr);

// x = silu(x) * y elementwise (SwiGLU's gate).
void swiglu(float* x, const float* y, size_t n);

// gpt-oss's clamped SwiGLU: with g = min(x, 7) and u = clamp(y, -7, 7),
// x = g * sigmoid(1.702 g) * (u + 1), elementwise.
void swiglu_oai(float* x, const float* y, size_t n);

// x = gelu(x) * y elementwise (GeGLU's gate), with the tanh GELU as llama.cpp's CPU backend
// computes it: x rounded to fp16 and looked up in a table of fp16 results, x itself above 10 and
// 0 below -10 (a difference of up to ~7e-3 in Gemma's logits from the exact function).
void geglu(float* x, const float* y, size_t n);

}  // namespace hearth::runtime
