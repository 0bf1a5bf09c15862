// The small per-token operations of a transformer block (the matmuls are in matmul.h, RoPE in
// rope.h).
#pragma once

#include <cstddef>
#include <span>

#include "runtime/kernels/kernels.h"
#include "runtime/model/kv_rows.h"
#include "runtime/model/rope.h"

namespace hearth::runtime {

// out = x / sqrt(mean(x^2) + eps) * w, over n elements (the sum is kept in double). out may be x.
void rmsnorm(const float* x, const float* w, float* out, int n, float eps);

// out[i] += b[i] for each of n_rows rows of n (a bias on a matmul's output).
void add_bias(float* out, const float* b, int n_rows, int n);

// How attention forms its scores. `dot`: each is the table's dot_f32, which sums in llama.cpp's
// order on x86, so that with an f32 cache the reference fixtures agree bit for bit (their logits
// sit near Q8_0 rounding boundaries, where another order moves some by a rounding step). `lanes`:
// the table's attention_scores, 2.2x (AVX-512) and 1.6x (AVX2) as fast; what the f16 and q8_0
// caches (the product's default) use.
enum class ScoreOrder { dot, lanes };
inline ScoreOrder score_order(TensorType kv_type) { return kv_type == TensorType::F32 ? ScoreOrder::dot : ScoreOrder::lanes; }

// Scores of n_q query rows (q_stride floats apart) against n_keys keys (k_stride floats apart):
// s[r * s_stride + j], in `order`.
void attention_scores(ScoreOrder order, const float* keys, size_t k_stride, int n_keys, const float* q, size_t q_stride, int n_q,
                      int head_dim, float* s, size_t s_stride, const KernelTable& k);

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
                  const float* sinks = nullptr, ScoreOrder order = ScoreOrder::dot);

// One token's share of attend_tokens(): its query heads, where its output goes, and the keys it
// sees (a sliding window's, or all up to its position).
struct AttendToken {
  const float* q;  // n_q heads of head_dim floats
  float* out;      // n_q heads of head_dim floats
  int first_key;
  int n_keys;
};

// Floats of the tile attend_tokens() reads cached rows into (32 KiB: it stays in L1).
inline constexpr size_t kKvTileFloats = 8192;

// attend_heads() for several tokens over the same cached keys and values (a prompt chunk of one
// sequence, or one decode token), stored as the cache stores them (kv_rows.h): all their query
// heads in one matrix product against the keys, each key read once for all of them. Each
// token's result equals attend_heads() on it alone over the rows read as f32, in the cache type's
// score_order: either way a score's bits do not depend on what comes with it. `keys`/`values`
// start at row 0 of one K/V head (a ring's too: positions are mapped to rows as they are read); `qpack` holds tokens x n_q x
// head_dim floats, `scores` tokens x n_q rows of scores_stride (at least the keys' span), `inv` tokens x n_q floats and `tile`
// kKvTileFloats.
void attend_tokens(std::span<const AttendToken> tokens, int n_q, const KvRows& keys, const KvRows& values, int head_dim,
                   float scale, float* qpack, float* scores, size_t scores_stride, float* inv, float* tile,
                   const KernelTable& k, const float* sinks = nullptr);

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
