#include "runtime/stage.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>
#include <string>

namespace hearth::runtime {

namespace {

constexpr int kDefaultMaxCtx = 4096;

void rmsnorm(const float* x, const float* w, float* out, int n, float eps) {
  double ss = 0.0;
  for (int i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
  for (int i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
}

// Rotates adjacent pairs (x[2i], x[2i+1]) by pos * inv_freq[i]: llama's "normal" RoPE.
void rope_normal(float* x, int n_rot, int pos, const std::vector<double>& inv_freq) {
  for (int i = 0; i < n_rot / 2; ++i) {
    const double theta = pos * inv_freq[static_cast<size_t>(i)];
    const float c = static_cast<float>(std::cos(theta)), s = static_cast<float>(std::sin(theta));
    const float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * c - b * s;
    x[2 * i + 1] = a * s + b * c;
  }
}

[[noreturn]] void bad_input(const std::string& what) { throw std::invalid_argument("stage input: " + what); }

}  // namespace

Stage::Stage(std::shared_ptr<const StageWeights> weights, const StageOptions& options, ThreadPool& pool)
    : weights_(std::move(weights)),
      options_(options),
      pool_(pool),
      kernels_(best_kernels()),
      n_ctx_(options.n_ctx > 0 ? options.n_ctx : std::min(weights_->config().n_ctx_train, kDefaultMaxCtx)),
      scratch_(options.max_batch, std::max<int64_t>({weights_->config().n_embd, weights_->config().n_ff,
                                                     weights_->config().q_dim()})) {
  const ModelConfig& c = config();
  if (options_.max_batch <= 0 || options_.max_sequences <= 0) throw std::invalid_argument("max_batch and max_sequences must be positive");
  for (int i = 0; i < c.n_rot / 2; ++i) rope_inv_freq_.push_back(std::pow(double{c.rope_base}, -2.0 * i / c.n_rot));
  const auto B = static_cast<size_t>(options_.max_batch);
  x_.resize(B * c.n_embd);
  xn_.resize(B * c.n_embd);
  tmp_.resize(B * c.n_embd);
  q_.resize(B * c.q_dim());
  attn_.resize(B * c.q_dim());
  k_.resize(B * c.kv_dim());
  v_.resize(B * c.kv_dim());
  gate_.resize(B * c.n_ff);
  up_.resize(B * c.n_ff);
  scores_.resize(static_cast<size_t>(c.n_head) * n_ctx_);
  row_cache_.resize(B);
  row_pos_.resize(B);
}

int Stage::length(uint64_t seq) const {
  auto it = caches_.find(seq);
  return it == caches_.end() ? 0 : it->second.length();
}

void Stage::release(uint64_t seq) { caches_.erase(seq); }

int Stage::validate(const StageInput& in) const {
  const ModelConfig& c = config();
  if (in.chunks.empty()) bad_input("empty batch");
  int total = 0;
  std::set<uint64_t> seen;
  size_t new_seqs = 0;
  for (const SeqChunk& ch : in.chunks) {
    if (ch.n_tokens <= 0) bad_input("chunk of sequence " + std::to_string(ch.seq) + " has no tokens");
    if (!seen.insert(ch.seq).second) bad_input("sequence " + std::to_string(ch.seq) + " appears twice in one batch");
    const int len = length(ch.seq);
    if (ch.pos < 0 || ch.pos > len)
      bad_input("sequence " + std::to_string(ch.seq) + " continues at position " + std::to_string(ch.pos) +
                " but holds " + std::to_string(len) + " tokens");
    if (ch.n_tokens > n_ctx_ - ch.pos)
      bad_input("sequence " + std::to_string(ch.seq) + " would exceed the context of " + std::to_string(n_ctx_) + " tokens");
    if (!caches_.count(ch.seq)) ++new_seqs;
    total += ch.n_tokens;
    if (total > options_.max_batch) bad_input("batch exceeds " + std::to_string(options_.max_batch) + " tokens");
  }
  if (caches_.size() + new_seqs > static_cast<size_t>(options_.max_sequences))
    bad_input("more than " + std::to_string(options_.max_sequences) + " sequences in progress");
  if (spec().has_embedding) {
    if (in.tokens.size() != static_cast<size_t>(total)) bad_input("expected " + std::to_string(total) + " token ids");
    for (int32_t id : in.tokens)
      if (id < 0 || id >= c.n_vocab) bad_input("token id " + std::to_string(id) + " is outside the vocabulary");
  } else if (in.hidden.size() != static_cast<size_t>(total) * c.n_embd) {
    bad_input("expected hidden states of " + std::to_string(total) + " x " + std::to_string(c.n_embd) + " floats");
  }
  return total;
}

std::span<const float> Stage::forward(const StageInput& in) {
  const int n_tokens = validate(in);
  const ModelConfig& c = config();

  int t = 0;
  for (const SeqChunk& ch : in.chunks) {
    auto it = caches_.find(ch.seq);
    if (it == caches_.end())
      it = caches_.try_emplace(ch.seq, spec().last_layer - spec().first_layer, n_ctx_, c.kv_dim()).first;
    for (int i = 0; i < ch.n_tokens; ++i, ++t) {
      row_cache_[static_cast<size_t>(t)] = &it->second;
      row_pos_[static_cast<size_t>(t)] = ch.pos + i;
    }
  }

  if (spec().has_embedding) embed(in, n_tokens);
  else std::copy(in.hidden.begin(), in.hidden.end(), x_.begin());

  for (int l = spec().first_layer; l < spec().last_layer; ++l) layer_forward(l, in.chunks, n_tokens);

  for (const SeqChunk& ch : in.chunks) caches_.at(ch.seq).set_length(ch.pos + ch.n_tokens);

  if (spec().has_output) return output_head(in, n_tokens);
  return {x_.data(), static_cast<size_t>(n_tokens) * c.n_embd};
}

void Stage::embed(const StageInput& in, int n_tokens) {
  const WeightMatrix& e = weights_->token_embd();
  for (int t = 0; t < n_tokens; ++t)
    dequantize_row(e.type, e.row(in.tokens[static_cast<size_t>(t)]), x_.data() + static_cast<size_t>(t) * e.n_in, e.n_in);
}

void Stage::layer_forward(int l, std::span<const SeqChunk> chunks, int n_tokens) {
  const ModelConfig& c = config();
  const LayerWeights& w = weights_->layer(l);
  const int E = c.n_embd;

  // ---- attention ----
  for (int t = 0; t < n_tokens; ++t) rmsnorm(&x_[t * E], w.attn_norm.data(), &xn_[t * E], E, c.rms_eps);
  matmul(w.wq, xn_.data(), n_tokens, q_.data(), scratch_, pool_, kernels_);
  matmul(w.wk, xn_.data(), n_tokens, k_.data(), scratch_, pool_, kernels_);
  matmul(w.wv, xn_.data(), n_tokens, v_.data(), scratch_, pool_, kernels_);
  const int local = l - spec().first_layer;
  for (int t = 0; t < n_tokens; ++t) {
    const int pos = row_pos_[static_cast<size_t>(t)];
    for (int h = 0; h < c.n_head; ++h) rope_normal(&q_[static_cast<size_t>(t * c.q_dim() + h * c.head_dim)], c.n_rot, pos, rope_inv_freq_);
    for (int h = 0; h < c.n_head_kv; ++h) rope_normal(&k_[static_cast<size_t>(t * c.kv_dim() + h * c.head_dim)], c.n_rot, pos, rope_inv_freq_);
    KvCache& cache = *row_cache_[static_cast<size_t>(t)];
    std::copy_n(&k_[static_cast<size_t>(t) * c.kv_dim()], c.kv_dim(), cache.k(local, pos));
    std::copy_n(&v_[static_cast<size_t>(t) * c.kv_dim()], c.kv_dim(), cache.v(local, pos));
  }
  attention(local, chunks, n_tokens);
  matmul(w.wo, attn_.data(), n_tokens, tmp_.data(), scratch_, pool_, kernels_);
  for (size_t i = 0; i < static_cast<size_t>(n_tokens) * E; ++i) x_[i] += tmp_[i];

  // ---- feed-forward (SwiGLU) ----
  for (int t = 0; t < n_tokens; ++t) rmsnorm(&x_[t * E], w.ffn_norm.data(), &xn_[t * E], E, c.rms_eps);
  matmul(w.w_gate, xn_.data(), n_tokens, gate_.data(), scratch_, pool_, kernels_);
  matmul(w.w_up, xn_.data(), n_tokens, up_.data(), scratch_, pool_, kernels_);
  for (size_t i = 0; i < static_cast<size_t>(n_tokens) * c.n_ff; ++i) {
    const float g = gate_[i];
    gate_[i] = g / (1.f + std::exp(-g)) * up_[i];
  }
  matmul(w.w_down, gate_.data(), n_tokens, tmp_.data(), scratch_, pool_, kernels_);
  for (size_t i = 0; i < static_cast<size_t>(n_tokens) * E; ++i) x_[i] += tmp_[i];
}

// Causal attention of every row over its own sequence's cache, one task per query head.
void Stage::attention(int local_layer, std::span<const SeqChunk>, int n_tokens) {
  const ModelConfig& c = config();
  const int group = c.n_head / c.n_head_kv;
  const float scale = 1.f / std::sqrt(static_cast<float>(c.head_dim));
  pool_.run(c.n_head, [&](int h) {
    float* scores = &scores_[static_cast<size_t>(h) * n_ctx_];
    const int kvh = h / group;
    for (int t = 0; t < n_tokens; ++t) {
      const KvCache& cache = *row_cache_[static_cast<size_t>(t)];
      const int n_keys = row_pos_[static_cast<size_t>(t)] + 1;
      const float* q = &q_[static_cast<size_t>(t * c.q_dim() + h * c.head_dim)];
      float max = -INFINITY;
      for (int j = 0; j < n_keys; ++j) {
        scores[j] = kernels_.dot_f32(q, cache.k(local_layer, j) + kvh * c.head_dim, c.head_dim) * scale;
        max = std::max(max, scores[j]);
      }
      double sum = 0.0;
      for (int j = 0; j < n_keys; ++j) {
        scores[j] = std::exp(scores[j] - max);
        sum += scores[j];
      }
      const float inv = static_cast<float>(1.0 / sum);
      float* out = &attn_[static_cast<size_t>(t * c.q_dim() + h * c.head_dim)];
      std::fill_n(out, c.head_dim, 0.f);
      for (int j = 0; j < n_keys; ++j) {
        const float p = scores[j] * inv;
        const float* v = cache.v(local_layer, j) + kvh * c.head_dim;
        for (int d = 0; d < c.head_dim; ++d) out[d] += p * v[d];
      }
    }
  });
}

std::span<const float> Stage::output_head(const StageInput& in, int n_tokens) {
  const ModelConfig& c = config();
  const int E = c.n_embd;
  // Rows whose logits are wanted: every token, or the last of each chunk.
  int rows = 0;
  if (in.all_logits) {
    for (int t = 0; t < n_tokens; ++t, ++rows) rmsnorm(&x_[t * E], weights_->output_norm().data(), &xn_[rows * E], E, c.rms_eps);
  } else {
    int end = 0;
    for (const SeqChunk& ch : in.chunks) {
      end += ch.n_tokens;
      rmsnorm(&x_[(end - 1) * E], weights_->output_norm().data(), &xn_[rows * E], E, c.rms_eps);
      ++rows;
    }
  }
  const size_t need = static_cast<size_t>(rows) * c.n_vocab;
  if (logits_.size() < need) logits_.resize(need);
  matmul(weights_->output(), xn_.data(), rows, logits_.data(), scratch_, pool_, kernels_);
  return {logits_.data(), need};
}

}  // namespace hearth::runtime
