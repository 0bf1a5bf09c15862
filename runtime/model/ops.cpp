#include "runtime/model/ops.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "runtime/kernels/half.h"

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

void attention_scores(ScoreOrder order, const float* keys, size_t k_stride, int n_keys, const float* q, size_t q_stride, int n_q,
                      int head_dim, float* s, size_t s_stride, const KernelTable& k) {
  // The gemm takes keys as its rows and queries as its tokens: every output is dot_f32(k_j, q).
  if (order == ScoreOrder::dot)
    k.gemm_f32(keys, k_stride * sizeof(float), n_keys, q, q_stride * sizeof(float), n_q, head_dim, s, s_stride);
  else
    k.attention_scores(keys, k_stride, n_keys, q, q_stride, n_q, head_dim, s, s_stride);
}

void attend(const float* q, const float* keys, const float* values, int n_keys, int head_dim, int stride, float scale,
            float* scores, float* out, const KernelTable& k) {
  attend_heads(q, 1, keys, values, n_keys, head_dim, stride, scale, scores, 0, out, k);
}

namespace {

constexpr int kMaxHeads = 64;  // query heads per K/V head at a time; larger groups go in parts

// Softmax of n_q rows of scores (one per query head, each n_keys long, rows scores_stride
// apart): the numerators in place, 1 / their sum (with the sink's term) in inv.
void softmax_rows(float* scores, size_t scores_stride, int n_q, int n_keys, float scale, const float* sinks, float* inv,
                  const KernelTable& k) {
  for (int h = 0; h < n_q; ++h) {
    float* s = scores + static_cast<size_t>(h) * scores_stride;
    float max = -INFINITY;
    for (int j = 0; j < n_keys; ++j) {
      s[j] *= scale;
      max = std::max(max, s[j]);
    }
    if (sinks) max = std::max(max, sinks[h]);
    double sum = k.exp_sum(s, n_keys, max);
    if (sinks) sum += static_cast<double>(std::exp(sinks[h] - max));
    inv[h] = static_cast<float>(1.0 / sum);
  }
}

// The weighted sum of values into out (n_q heads of head_dim), from softmax_rows' results.
void sum_values(const float* scores, size_t scores_stride, const float* inv, int n_q, const float* values, int stride, int n_keys,
                int head_dim, float* out, const KernelTable& k) {
  std::fill_n(out, static_cast<size_t>(n_q) * head_dim, 0.f);
  k.weighted_sum(scores, scores_stride, inv, n_q, values, static_cast<size_t>(stride), n_keys, head_dim, out);
}

}  // namespace

void attend_heads(const float* q, int n_q, const float* keys, const float* values, int n_keys, int head_dim, int stride,
                  float scale, float* scores, size_t scores_stride, float* out, const KernelTable& k, const float* sinks,
                  ScoreOrder order) {
  if (n_q > kMaxHeads) {
    for (int h = 0; h < n_q; h += kMaxHeads)
      attend_heads(q + static_cast<size_t>(h) * head_dim, std::min(kMaxHeads, n_q - h), keys, values, n_keys, head_dim, stride,
                   scale, scores + static_cast<size_t>(h) * scores_stride, scores_stride, out + static_cast<size_t>(h) * head_dim,
                   k, sinks ? sinks + h : nullptr, order);
    return;
  }
  // All scores of all heads at once (each the same bits as alone, in either order).
  attention_scores(order, keys, static_cast<size_t>(stride), n_keys, q, static_cast<size_t>(head_dim), n_q, head_dim, scores,
                   scores_stride, k);
  float inv[kMaxHeads];
  softmax_rows(scores, scores_stride, n_q, n_keys, scale, sinks, inv, k);
  sum_values(scores, scores_stride, inv, n_q, values, stride, n_keys, head_dim, out, k);
}

void attend_tokens(std::span<const AttendToken> tokens, int n_q, const KvRows& keys, const KvRows& values, int head_dim,
                   float scale, float* qpack, float* scores, size_t scores_stride, float* inv, float* tile,
                   const KernelTable& k, const float* sinks) {
  if (tokens.empty()) return;
  int lo = tokens[0].first_key, hi = 0;
  for (const AttendToken& t : tokens) lo = std::min(lo, t.first_key), hi = std::max(hi, t.first_key + t.n_keys);
  const size_t hd = static_cast<size_t>(head_dim);
  const size_t row_floats = static_cast<size_t>(n_q) * hd;  // one token's heads
  for (size_t i = 0; i < tokens.size(); ++i) std::copy_n(tokens[i].q, row_floats, qpack + i * row_floats);
  // An f32 cache is read in place, all at once, and so is an f16 one where the table has kernels
  // for halves; other caches a tile at a time, converted.
  const bool f16_in_place =
      keys.type == TensorType::F16 && values.type == TensorType::F16 && k.attention_scores_f16 && k.weighted_sum_f16;
  const int tile_rows =
      keys.type == TensorType::F32 || f16_in_place ? hi - lo : std::max(1, static_cast<int>(kKvTileFloats / hd));
  const int n_rows = static_cast<int>(tokens.size()) * n_q;
  const auto halves = [](const KvRows& rows, int pos) {
    return reinterpret_cast<const uint16_t*>(rows.data + static_cast<size_t>(rows.row(pos)) * rows.row_bytes);
  };
  const size_t half_stride = keys.row_bytes / sizeof(uint16_t);
  // A ring's wrap ends a tile too. Scores stay indexed by position, and a score (or a value's
  // term) does not depend on the tile it was read in, so a wrapped cache gives the same bits.
  for (int j0 = lo, n = 0; j0 < hi; j0 += n) {
    n = std::min({tile_rows, hi - j0, keys.run(j0)});
    float* s = scores + (j0 - lo);
    if (f16_in_place) {
      k.attention_scores_f16(halves(keys, j0), half_stride, n, qpack, hd, n_rows, head_dim, s, scores_stride);
    } else {
      const F32Rows kr = read_rows(keys, j0, n, head_dim, tile, k);
      attention_scores(score_order(keys.type), kr.data, kr.stride, n, qpack, hd, n_rows, head_dim, s, scores_stride, k);
    }
  }
  const auto scores_of = [&](size_t i) { return scores + i * static_cast<size_t>(n_q) * scores_stride; };
  for (size_t i = 0; i < tokens.size(); ++i) {
    const AttendToken& t = tokens[i];
    softmax_rows(scores_of(i) + (t.first_key - lo), scores_stride, n_q, t.n_keys, scale, sinks, inv + i * static_cast<size_t>(n_q), k);
    std::fill_n(t.out, row_floats, 0.f);
  }
  for (int j0 = lo, n = 0; j0 < hi; j0 += n) {
    n = std::min({tile_rows, hi - j0, values.run(j0)});
    const F32Rows vr = f16_in_place ? F32Rows{} : read_rows(values, j0, n, head_dim, tile, k);
    for (size_t i = 0; i < tokens.size(); ++i) {
      const AttendToken& t = tokens[i];
      const int a = std::max(j0, t.first_key), b = std::min(j0 + n, t.first_key + t.n_keys);
      if (a >= b) continue;
      const float* p = scores_of(i) + (a - lo);
      const float* inv_i = inv + i * static_cast<size_t>(n_q);
      if (f16_in_place)
        k.weighted_sum_f16(p, scores_stride, inv_i, n_q, halves(values, a), values.row_bytes / sizeof(uint16_t), b - a, head_dim,
                           t.out);
      else
        k.weighted_sum(p, scores_stride, inv_i, n_q, vr.data + static_cast<size_t>(a - j0) * vr.stride, vr.stride, b - a,
                       head_dim, t.out);
    }
  }
}

void swiglu(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = x[i] / (1.f + std::exp(-x[i])) * y[i];
}

void swiglu_oai(float* x, const float* y, size_t n) {
  constexpr float kAlpha = 1.702f, kLimit = 7.f;  // as llama.cpp's gpt-oss graph sets them
  for (size_t i = 0; i < n; ++i) {
    const float g = std::min(x[i], kLimit);
    const float u = std::clamp(y[i], -kLimit, kLimit);
    x[i] = g / (1.f + std::exp(kAlpha * (-g))) * (u + 1.f);
  }
}

namespace {

// ggml's table: for each fp16 value h, fp16(gelu(h)) with the tanh form in float.
const std::array<uint16_t, 65536>& gelu_fp16_table() {
  static const auto table = [] {
    std::array<uint16_t, 65536> t{};
    for (uint32_t i = 0; i < t.size(); ++i) {
      const float x = fp16_to_fp32(static_cast<uint16_t>(i));
      t[i] = fp32_to_fp16(0.5f * x * (1.0f + std::tanh(0.79788456080286535587989211986876f * x * (1.0f + 0.044715f * x * x))));
    }
    return t;
  }();
  return table;
}

}  // namespace

void geglu(float* x, const float* y, size_t n) {
  const auto& table = gelu_fp16_table();
  for (size_t i = 0; i < n; ++i) {
    if (x[i] <= -10.f) x[i] = 0.f;
    else if (x[i] >= 10.f) x[i] = x[i] * y[i];
    else x[i] = fp16_to_fp32(table[fp32_to_fp16(x[i])]) * y[i];
  }
}

}  // namespace hearth::runtime
