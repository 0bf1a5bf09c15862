#include "runtime/model/stage.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>
#include <string>

#include "runtime/model/ops.h"

namespace hearth::runtime {

namespace {

constexpr int kDefaultMaxCtx = 4096;

// The width of the FFN's hidden layer: of one expert in a MoE model, whose dense width goes unused.
int64_t ffn_width(const ModelConfig& c) { return c.is_moe() ? c.n_ff_exp : c.n_ff; }

[[noreturn]] void bad_input(const std::string& what) { throw std::invalid_argument("stage input: " + what); }

}  // namespace

Stage::Stage(std::shared_ptr<const StageWeights> weights, const StageOptions& options, ThreadPool& pool)
    : weights_(std::move(weights)),
      options_(options),
      pool_(pool),
      kernels_(best_kernels()),
      n_ctx_(options.n_ctx > 0 ? options.n_ctx : std::min(weights_->config().n_ctx_train, kDefaultMaxCtx)),
      scratch_(std::max(options.max_batch, weights_->config().n_expert_used),
               std::max<int64_t>({weights_->config().n_embd, ffn_width(weights_->config()), weights_->config().q_dim()})) {
  const ModelConfig& c = config();
  if (options_.max_batch <= 0 || options_.max_sequences <= 0)
    throw std::invalid_argument("max_batch and max_sequences must be positive");
  if (n_ctx_ > (1 << 24))
    throw std::invalid_argument("a context of " + std::to_string(n_ctx_) + " tokens is out of range (--ctx: at most 16777216)");
  if (c.yarn) {
    rope_freq_ = rope_yarn_frequencies(c.rope_base, c.n_rot, c.rope_freq_scale, c.n_ctx_orig, c.yarn_beta_fast, c.yarn_beta_slow);
    if (c.n_swa > 0)
      rope_freq_swa_ = rope_yarn_frequencies(c.rope_base_swa, c.n_rot, c.rope_freq_scale_swa, c.n_ctx_orig, c.yarn_beta_fast,
                                             c.yarn_beta_slow);
    rope_mscale_ = c.rope_attn_factor * rope_yarn_mscale(c.rope_freq_scale);
  } else {
    rope_freq_ = rope_frequencies(c.rope_base, c.n_rot, c.rope_freq_scale, weights_->rope_factors(n_ctx_));
    if (c.n_swa > 0) rope_freq_swa_ = rope_frequencies(c.rope_base_swa, c.n_rot, c.rope_freq_scale_swa, {});
    rope_mscale_ = c.rope_attn_factor;
  }
  rope_cos_.resize(rope_freq_.size());
  rope_sin_.resize(rope_freq_.size());
  const auto B = static_cast<size_t>(options_.max_batch);
  x_.resize(B * c.n_embd);
  xn_.resize(B * c.n_embd);
  tmp_.resize(B * c.n_embd);
  q_.resize(B * c.q_dim());
  attn_.resize(B * c.q_dim());
  k_.resize(B * c.kv_dim());
  v_.resize(B * c.kv_dim());
  if (!c.is_moe()) {  // a MoE layer's experts have buffers of their own
    gate_.resize(B * c.n_ff);
    up_.resize(B * c.n_ff);
  }
  scores_.resize(static_cast<size_t>(c.n_head) * n_ctx_);
  row_cache_.resize(B);
  row_pos_.resize(B);
  if (c.is_moe()) experts_.emplace(c, options_.max_batch);
  for (int l = spec().first_layer; l < spec().last_layer; ++l) {
    const LayerWeights& w = weights_->layer(l);
    for (const WeightMatrix* m : {&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down, &w.router})
      step_bytes_ += m->bytes();
  }
  if (spec().has_output) step_bytes_ += weights_->output().bytes();
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
      bad_input("sequence " + std::to_string(ch.seq) + " continues at position " + std::to_string(ch.pos) + " but holds " +
                std::to_string(len) + " tokens");
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
    if (it == caches_.end()) it = caches_.try_emplace(ch.seq, spec().last_layer - spec().first_layer, n_ctx_, c.kv_dim()).first;
    for (int i = 0; i < ch.n_tokens; ++i, ++t) {
      row_cache_[static_cast<size_t>(t)] = &it->second;
      row_pos_[static_cast<size_t>(t)] = ch.pos + i;
    }
  }

  if (spec().has_embedding) embed(in, n_tokens);
  else std::copy(in.hidden.begin(), in.hidden.end(), x_.begin());

  for (int l = spec().first_layer; l < spec().last_layer; ++l) layer_forward(l, n_tokens);
  dense_bytes_read_ += step_bytes_;

  for (const SeqChunk& ch : in.chunks) caches_.at(ch.seq).set_length(ch.pos + ch.n_tokens);

  if (spec().has_output) return output_head(in, n_tokens);
  return {x_.data(), static_cast<size_t>(n_tokens) * c.n_embd};
}

void Stage::embed(const StageInput& in, int n_tokens) {
  const WeightMatrix& e = weights_->token_embd();
  for (int t = 0; t < n_tokens; ++t)
    dequantize_row(e.type, e.row(in.tokens[static_cast<size_t>(t)]), x_.data() + static_cast<size_t>(t) * e.n_in, e.n_in);
  if (config().embed_scale) {  // Gemma: by sqrt(n_embd), in float as llama.cpp scales
    const float scale = std::sqrt(static_cast<float>(e.n_in));
    for (size_t i = 0; i < static_cast<size_t>(n_tokens) * e.n_in; ++i) x_[i] *= scale;
  }
}

void Stage::layer_forward(int l, int n_tokens) {
  const ModelConfig& c = config();
  const LayerWeights& w = weights_->layer(l);
  const int E = c.n_embd;

  // ---- attention ----
  for (int t = 0; t < n_tokens; ++t) rmsnorm(&x_[t * E], w.attn_norm.data(), &xn_[t * E], E, c.rms_eps);
  const MatmulTarget qkv[] = {{&w.wq, q_.data()}, {&w.wk, k_.data()}, {&w.wv, v_.data()}};
  matmul_many(qkv, xn_.data(), n_tokens, scratch_, pool_, kernels_);
  if (!w.bq.empty()) add_bias(q_.data(), w.bq.data(), n_tokens, c.q_dim());
  if (!w.bk.empty()) add_bias(k_.data(), w.bk.data(), n_tokens, c.kv_dim());
  if (!w.bv.empty()) add_bias(v_.data(), w.bv.data(), n_tokens, c.kv_dim());
  const int local = l - spec().first_layer;
  const std::vector<double>& freq = c.is_swa(l) ? rope_freq_swa_ : rope_freq_;
  const int n_pairs = static_cast<int>(freq.size());
  for (int t = 0; t < n_tokens; ++t) {
    const int pos = row_pos_[static_cast<size_t>(t)];
    float* qt = &q_[static_cast<size_t>(t) * c.q_dim()];
    float* kt = &k_[static_cast<size_t>(t) * c.kv_dim()];
    if (!w.q_norm.empty() && c.qk_norm_whole) {  // olmoe: the whole projections, before RoPE
      rmsnorm(qt, w.q_norm.data(), qt, c.q_dim(), c.rms_eps);
      rmsnorm(kt, w.k_norm.data(), kt, c.kv_dim(), c.rms_eps);
    } else if (!w.q_norm.empty()) {  // qwen3: each head normalised on its own, before RoPE
      for (int h = 0; h < c.n_head; ++h)
        rmsnorm(qt + h * c.head_dim, w.q_norm.data(), qt + h * c.head_dim, c.head_dim, c.rms_eps);
      for (int h = 0; h < c.n_head_kv; ++h)
        rmsnorm(kt + h * c.head_dim, w.k_norm.data(), kt + h * c.head_dim, c.head_dim, c.rms_eps);
    }
    rope_angles(pos, freq, rope_cos_.data(), rope_sin_.data(), rope_mscale_);
    for (int h = 0; h < c.n_head; ++h)
      rope_rotate(qt + h * c.head_dim, rope_cos_.data(), rope_sin_.data(), n_pairs, c.rope_style);
    for (int h = 0; h < c.n_head_kv; ++h)
      rope_rotate(kt + h * c.head_dim, rope_cos_.data(), rope_sin_.data(), n_pairs, c.rope_style);
    KvCache& cache = *row_cache_[static_cast<size_t>(t)];
    std::copy_n(&k_[static_cast<size_t>(t) * c.kv_dim()], c.kv_dim(), cache.k(local, pos));
    std::copy_n(&v_[static_cast<size_t>(t) * c.kv_dim()], c.kv_dim(), cache.v(local, pos));
  }
  attention(l, n_tokens);
  matmul(w.wo, attn_.data(), n_tokens, tmp_.data(), scratch_, pool_, kernels_);
  if (!w.bo.empty()) add_bias(tmp_.data(), w.bo.data(), n_tokens, E);
  if (!w.post_attn_norm.empty())
    for (int t = 0; t < n_tokens; ++t) rmsnorm(&tmp_[t * E], w.post_attn_norm.data(), &tmp_[t * E], E, c.rms_eps);
  for (size_t i = 0; i < static_cast<size_t>(n_tokens) * E; ++i) x_[i] += tmp_[i];

  // ---- feed-forward (SwiGLU, or a mixture of SwiGLU experts) ----
  for (int t = 0; t < n_tokens; ++t) rmsnorm(&x_[t * E], w.ffn_norm.data(), &xn_[t * E], E, c.rms_eps);
  if (experts_) {
    experts_->forward(w, xn_.data(), n_tokens, tmp_.data(), scratch_, pool_, kernels_);
  } else {
    matmul_swiglu(w.w_gate, w.w_up, xn_.data(), n_tokens, gate_.data(), up_.data(), scratch_, pool_, kernels_, c.ffn_activation);
    matmul(w.w_down, gate_.data(), n_tokens, tmp_.data(), scratch_, pool_, kernels_);
  }
  if (!w.post_ffn_norm.empty())
    for (int t = 0; t < n_tokens; ++t) rmsnorm(&tmp_[t * E], w.post_ffn_norm.data(), &tmp_[t * E], E, c.rms_eps);
  for (size_t i = 0; i < static_cast<size_t>(n_tokens) * E; ++i) x_[i] += tmp_[i];
}

// Causal attention of every row over its own sequence's cache. A task takes query heads that
// share one K/V head (so each key is loaded once for all of them), in groups small enough to give
// every thread several tasks.
void Stage::attention(int layer, int n_tokens) {
  const ModelConfig& c = config();
  const int local_layer = layer - spec().first_layer;
  const int group = c.n_head / c.n_head_kv;
  const float scale = c.attention_scale > 0 ? c.attention_scale : 1.f / std::sqrt(static_cast<float>(c.head_dim));
  const int window = c.is_swa(layer) ? c.n_swa : 0;  // keys p - window < q <= p; 0 = all
  const std::vector<float>& sinks = weights_->layer(layer).attn_sinks;
  int per_task = group;
  while (per_task % 2 == 0 && c.n_head_kv * (group / per_task) < 4 * pool_.size()) per_task /= 2;
  const int tasks_per_kv = group / per_task;
  pool_.run(c.n_head_kv * tasks_per_kv, [&](int task) {
    const int kvh = task / tasks_per_kv;
    const int h0 = kvh * group + (task % tasks_per_kv) * per_task;
    float* scores = &scores_[static_cast<size_t>(h0) * n_ctx_];
    for (int t = 0; t < n_tokens; ++t) {
      const KvCache& cache = *row_cache_[static_cast<size_t>(t)];
      const size_t at = static_cast<size_t>(t) * c.q_dim() + static_cast<size_t>(h0) * c.head_dim;
      const int pos = row_pos_[static_cast<size_t>(t)];
      const int first = window > 0 ? std::max(0, pos - window + 1) : 0;
      attend_heads(&q_[at], per_task, cache.k(local_layer, first) + kvh * c.head_dim,
                   cache.v(local_layer, first) + kvh * c.head_dim, pos + 1 - first, c.head_dim, c.kv_dim(), scale, scores,
                   static_cast<size_t>(n_ctx_), &attn_[at], kernels_, sinks.empty() ? nullptr : &sinks[static_cast<size_t>(h0)]);
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
  if (c.logit_softcap > 0) {  // as llama.cpp: scale by 1/cap, tanh, scale by cap
    const float inv = 1.f / c.logit_softcap;
    for (size_t i = 0; i < need; ++i) logits_[i] = std::tanh(logits_[i] * inv) * c.logit_softcap;
  }
  return {logits_.data(), need};
}

}  // namespace hearth::runtime
