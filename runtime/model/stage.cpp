#include "runtime/model/stage.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <set>
#include <stdexcept>
#include <string>

#include "runtime/model/delta_net.h"
#include "runtime/model/ops.h"

namespace hearth::runtime {

namespace {

constexpr int kDefaultMaxCtx = 4096;

// Hands a paged layer's buffer back to its pager when the layer is done, or has thrown.
struct ReleaseOnExit {
  LayerPager& pager;
  int layer;
  ~ReleaseOnExit() { pager.release(layer); }
};

// The width of the FFN's hidden layer: of one expert in a MoE model, whose dense width goes unused.
int64_t ffn_width(const ModelConfig& c) {
  return c.is_moe() ? std::max({c.n_ff_exp, c.n_ff_shexp, c.moe_beside_dense ? c.n_ff : 0}) : c.n_ff;
}

// The longest input row of any matmul of a stage (what its activation scratch must hold).
int64_t widest_input(const ModelConfig& c) {
  return std::max<int64_t>({c.n_embd, ffn_width(c), c.max_q_dim(), c.ssm_d_inner});
}

[[noreturn]] void bad_input(const std::string& what) { throw std::invalid_argument("stage input: " + what); }

// Whether any matmul of the stage has f16 weights (and so needs f16 activations).
bool reads_f16(const StageWeights& weights) {
  const auto f16 = [](const WeightMatrix& m) { return m.type == TensorType::F16; };
  const StageSpec& spec = weights.spec();
  if (spec.has_embedding && f16(weights.per_layer_embd().model_proj)) return true;
  if (spec.has_output && f16(weights.output())) return true;
  for (int l = spec.first_layer; l < spec.last_layer; ++l) {
    const LayerWeights& w = weights.layer(l);
    for (const WeightMatrix* m : step_matrices(w))
      if (f16(*m)) return true;
    if (f16(w.gate_exps.first) || f16(w.up_exps.first) || f16(w.down_exps.first)) return true;
  }
  return false;
}

}  // namespace

StageWeights::HeldBytes lay_out_for_cpu(StageWeights& weights, const StageOptions& options, uint64_t weight_room,
                                        ThreadPool& pool) {
  if (!options.paging.empty()) return {};
  if (weight_room > 0 && weights.mapped_bytes() > weight_room) {
    spdlog::info("weights left mapped from the file: their {:.1f} MB exceed the {:.1f} MB of memory left to them",
                 static_cast<double>(weights.mapped_bytes()) / 1e6, static_cast<double>(weight_room) / 1e6);
    return {};
  }
  const MatmulOffload* gpu = options.offload;
  const auto start = std::chrono::steady_clock::now();
  const StageWeights::HeldBytes held = weights.hold_in_memory(
      best_kernels(), [&](const WeightMatrix& m) { return gpu != nullptr && gpu->holds(m); }, pool);
  if (held.moved > 0)
    spdlog::info(
        "{:.1f} MB of weights moved to memory ({:.1f} MB on 2 MiB pages), {:.1f} MB of them interleaved for the {} kernels, "
        "in {:.2f} s",
        static_cast<double>(held.moved) / 1e6, static_cast<double>(held.huge) / 1e6, static_cast<double>(held.interleaved) / 1e6,
        best_kernels().name, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return held;
}

Stage::Stage(std::shared_ptr<const StageWeights> weights, const StageOptions& options, ThreadPool& pool)
    : weights_(std::move(weights)),
      options_(options),
      pool_(pool),
      kernels_(best_kernels()),
      n_ctx_(options.n_ctx > 0 ? options.n_ctx : std::min(weights_->config().n_ctx_train, kDefaultMaxCtx)),
      scratch_(std::max(options.max_batch, weights_->config().n_expert_used), widest_input(weights_->config()),
               reads_f16(*weights_)) {
  const ModelConfig& c = config();
  if (options_.max_batch <= 0 || options_.max_sequences <= 0)
    throw std::invalid_argument("max_batch and max_sequences must be positive");
  if (n_ctx_ > (1 << 24))
    throw std::invalid_argument("a context of " + std::to_string(n_ctx_) + " tokens is out of range (--ctx: at most 16777216)");
  // Sliding layers rotate without the factors (Gemma 4's proportional RoPE is the full layers').
  rope_ = RopeSpec{.base = c.rope_base,
                   .n_rot = c.n_rot,
                   .freq_scale = c.rope_freq_scale,
                   .factors = weights_->rope_factors(n_ctx_),
                   .attn_factor = c.rope_attn_factor};
  rope_swa_ = RopeSpec{.base = c.rope_base_swa,
                       .n_rot = c.n_rot_swa > 0 ? c.n_rot_swa : c.n_rot,
                       .freq_scale = c.rope_freq_scale_swa,
                       .attn_factor = c.rope_attn_factor};
  if (c.yarn) {
    rope_.set_yarn(c.n_ctx_orig, c.yarn_beta_fast, c.yarn_beta_slow);
    rope_swa_.set_yarn(c.n_ctx_orig, c.yarn_beta_fast, c.yarn_beta_slow);
  }
  rope_cos_.resize(static_cast<size_t>(std::max(rope_.n_rot, rope_swa_.n_rot) / 2));
  rope_sin_.resize(rope_cos_.size());
  const auto B = static_cast<size_t>(options_.max_batch);
  if (const std::string why = kv_type_unfit(options_.kv_type, c, spec().first_layer, spec().last_layer); !why.empty())
    throw std::invalid_argument(why);
  kv_ = kv_layout(c, spec().first_layer, spec().last_layer, n_ctx_, options_.max_batch);
  recurrent_ = std::any_of(kv_.state_floats.begin(), kv_.state_floats.end(), [](int64_t f) { return f > 0; });
  if (recurrent_) {
    ssm_qkv_.resize(B * c.ssm_conv_channels());
    ssm_z_.resize(B * c.ssm_d_inner);
    ssm_beta_.resize(B * c.ssm_dt_rank);
    ssm_alpha_.resize(B * c.ssm_dt_rank);
    ssm_y_.resize(B * c.ssm_d_inner);
    ssm_scratch_.resize(static_cast<size_t>(c.ssm_conv_channels()) + static_cast<size_t>(c.ssm_dt_rank) * c.ssm_head_v_dim());
  }
  if (c.attn_output_gate) q_gate_.resize(B * 2 * c.max_q_dim());
  v_norm_ones_.assign(static_cast<size_t>(std::max({c.head_dim, c.head_dim_swa, c.moe_beside_dense ? c.n_embd : 0})), 1.f);
  x_.resize(B * c.n_embd);
  xn_.resize(B * c.n_embd);
  tmp_.resize(B * c.n_embd);
  q_.resize(B * c.max_q_dim());
  attn_.resize(B * c.max_q_dim());
  k_.resize(B * c.max_kv_dim());
  v_.resize(B * c.max_kv_dim());
  if (!c.is_moe()) {  // a MoE layer's experts have buffers of their own
    gate_.resize(B * c.n_ff);
    up_.resize(B * c.n_ff);
  } else if (c.n_ff_shexp > 0) {  // but not its shared expert
    gate_.resize(B * c.n_ff_shexp);
    up_.resize(B * c.n_ff_shexp);
    shexp_out_.resize(B * c.n_embd);
  } else if (c.moe_beside_dense) {  // nor the dense FFN beside them (Gemma 4)
    gate_.resize(B * c.n_ff);
    up_.resize(B * c.n_ff);
    shexp_out_.resize(B * c.n_embd);
    router_in_.resize(B * c.n_embd);
  }
  int max_head_dim = 0;
  for (int l = spec().first_layer; l < spec().last_layer; ++l) max_head_dim = std::max(max_head_dim, c.layer_head_dim(l));
  scores_.resize(static_cast<size_t>(c.n_head) * kTokenBlock * n_ctx_);
  qpack_.resize(static_cast<size_t>(c.n_head) * kTokenBlock * static_cast<size_t>(max_head_dim));
  inv_.resize(static_cast<size_t>(c.n_head) * kTokenBlock);
  if (options_.kv_type != TensorType::F32) kv_tile_.resize(static_cast<size_t>(c.n_head) * kKvTileFloats);
  row_cache_.resize(B);
  row_pos_.resize(B);
  row_seq_.resize(B);
  if (options_.layers) {
    // Where its caches do not fit (or cannot hold this type), its layers go back to the CPU's
    // loop (their products still on the GPU through options_.offload).
    try {
      layers_token_ = options_.layers->prepare(n_ctx_, options_.max_sequences, options_.max_batch, options_.kv_type);
      offload_pos_.resize(B);
      offload_slot_.resize(B);
      offload_rope_.resize(B * static_cast<size_t>(rope_.n_rot));
      // Their keys and values live there: the CPU's caches hold nothing for them.
      for (int l = spec().first_layer; l < options_.layers->end(); ++l) kv_.dims[static_cast<size_t>(l - spec().first_layer)] = 0;
    } catch (const std::exception& e) {
      layers_refused_ = e.what();
      options_.layers = nullptr;
    }
  }
  if (c.is_moe()) experts_.emplace(c, options_.max_batch);
  if (const auto P = static_cast<size_t>(c.n_embd_per_layer); P > 0) {
    ple_.resize(B * static_cast<size_t>(c.n_layer) * P);
    ple_gate_.resize(B * P);
    if (spec().has_embedding) ple_row_.resize(static_cast<size_t>(c.n_layer) * P);
    if (!spec().has_output) hidden_out_.resize(B * static_cast<size_t>(c.hidden_width(spec().last_layer)));
  }
  for (int l = spec().first_layer; l < spec().last_layer; ++l) {
    for (const WeightMatrix* m : step_matrices(weights_->layer(l))) step_bytes_ += m->bytes();
  }
  if (spec().has_embedding) step_bytes_ += weights_->per_layer_embd().model_proj.bytes();
  if (spec().has_output) step_bytes_ += weights_->output().bytes();
  if (!options_.paging.empty()) pager_ = std::make_unique<LayerPager>(*weights_, options_.paging);
}

uint64_t Stage::memory_bytes(int n_sequences) const {
  uint64_t floats = 0;
  for (const AlignedVector<float>* v :
       {&x_,           &xn_,          &q_,       &k_,        &v_,        &attn_,       &gate_,
        &up_,          &tmp_,         &scores_,  &qpack_,    &inv_,      &kv_tile_,    &logits_,
        &q_gate_,      &shexp_out_,   &ssm_qkv_, &ssm_z_,    &ssm_beta_, &ssm_alpha_,  &ssm_y_,
        &ssm_scratch_, &v_norm_ones_, &ple_,     &ple_gate_, &ple_row_,  &hidden_out_, &router_in_})
    floats += v->capacity();
  return floats * sizeof(float) + scratch_.bytes() +
         static_cast<uint64_t>(n_sequences) * kv_.bytes(options_.kv_type, options_.drafts);
}

int Stage::length(uint64_t seq) const {
  auto it = caches_.find(seq);
  return it == caches_.end() ? 0 : it->second.length();
}

void Stage::release(uint64_t seq) {
  caches_.erase(seq);
  slots_.erase(seq);
}

bool Stage::can_continue(uint64_t seq, int pos) const {
  const auto it = caches_.find(seq);
  if (pos == 0 || it == caches_.end()) return true;
  const KvCache& kc = it->second;
  if (!recurrent_) return kc.reach() - pos <= kv_.max_rewind;
  return (pos == kc.length() || pos == kc.checkpoint()) && kc.reach() - pos <= kv_.max_draft;
}

// Which state a chunk's recurrent layers keep to go back to (SeqChunk::drafts).
void Stage::keep_checkpoint(KvCache& kc, const SeqChunk& ch) {
  if (ch.drafts == 0) kc.drop_checkpoint();
  else if (ch.drafts < ch.n_tokens) kc.expect_checkpoint(ch.pos + ch.n_tokens - ch.drafts);  // saved as computed
  else if (kc.checkpoint() < 0) kc.save_checkpoint_now(ch.pos);                              // all draft: a draft starts here
  // (all draft, with a checkpoint: the draft before it goes on, and its checkpoint stays)
}

int Stage::checkpoint(uint64_t seq) const {
  const auto it = caches_.find(seq);
  return recurrent_ && it != caches_.end() ? it->second.checkpoint() : -1;
}

int Stage::validate(const StageInput& in) const {
  const ModelConfig& c = config();
  if (in.chunks.empty()) bad_input("empty batch");
  int total = 0;
  std::set<uint64_t> seen;
  size_t new_seqs = 0;
  for (const SeqChunk& ch : in.chunks) {
    if (ch.n_tokens <= 0) bad_input("chunk of sequence " + std::to_string(ch.seq) + " has no tokens");
    if (ch.drafts < 0 || ch.drafts > ch.n_tokens)
      bad_input("chunk of sequence " + std::to_string(ch.seq) + " has " + std::to_string(ch.n_tokens) +
                " tokens and a draft of " + std::to_string(ch.drafts));
    if (ch.logits < 1 || ch.logits > ch.n_tokens)
      bad_input("chunk of sequence " + std::to_string(ch.seq) + " asks for " + std::to_string(ch.logits) +
                " rows of logits from " + std::to_string(ch.n_tokens) + " tokens");
    if (!seen.insert(ch.seq).second) bad_input("sequence " + std::to_string(ch.seq) + " appears twice in one batch");
    const int len = length(ch.seq);
    if (ch.pos < 0 || ch.pos > len)
      bad_input("sequence " + std::to_string(ch.seq) + " continues at position " + std::to_string(ch.pos) + " but holds " +
                std::to_string(len) + " tokens");
    if (!can_continue(ch.seq, ch.pos))
      bad_input("sequence " + std::to_string(ch.seq) + " would go back to position " + std::to_string(ch.pos) + " of " +
                std::to_string(len) + ": " +
                (recurrent_ ? std::string("this model's recurrent layers cannot rewind (only to before the draft of the "
                                          "chunk before)")
                            : "its sliding-window layers keep only the last " + std::to_string(kv_.max_rewind) +
                                  " positions beyond their window") +
                " (continue at the end, or start over at 0)");
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
  } else if (const int64_t width = c.hidden_width(spec().first_layer); in.hidden.size() != static_cast<size_t>(total * width)) {
    bad_input("expected hidden states of " + std::to_string(total) + " x " + std::to_string(width) + " floats");
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
      it = caches_.try_emplace(ch.seq, n_ctx_, kv_.dims, kv_.state_floats, options_.kv_type, kv_.rows).first;
    KvCache& kc = it->second;
    if (ch.pos == 0 && kc.has_state()) {  // starts over
      kc.clear_state();
      kc.drop_checkpoint();
    } else if (recurrent_ && ch.pos < kc.length()) {
      kc.restore_checkpoint();  // validate: there is one
    }
    if (recurrent_) keep_checkpoint(kc, ch);
    for (int i = 0; i < ch.n_tokens; ++i, ++t) {
      row_cache_[static_cast<size_t>(t)] = &it->second;
      row_pos_[static_cast<size_t>(t)] = ch.pos + i;
      row_seq_[static_cast<size_t>(t)] = ch.seq;
    }
  }

  if (spec().has_embedding) {
    embed(in, n_tokens);
    if (c.n_embd_per_layer > 0) per_layer_inputs(in, n_tokens);
  } else {
    read_hidden(in.hidden, n_tokens);
  }

  int l0 = spec().first_layer;
  if (options_.layers && options_.layers->end() > l0) {
    offload_layers(n_tokens);
    l0 = options_.layers->end();
  }
  for (int l = l0; l < spec().last_layer; ++l) {
    if (pager_ && pager_->pages(l)) {
      const LayerWeights& paged = pager_->acquire(l);
      const ReleaseOnExit done{*pager_, l};  // a layer that throws must not keep its read buffer
      layer_forward(l, paged, n_tokens);
    } else {
      layer_forward(l, weights_->layer(l), n_tokens);
    }
  }
  dense_bytes_read_ += step_bytes_;

  for (const SeqChunk& ch : in.chunks) caches_.at(ch.seq).advance(ch.pos, ch.n_tokens);

  if (spec().has_output) return output_head(in, n_tokens);
  return write_hidden(n_tokens);
}

// The layers options_.layers runs, on x_: each token's slot (a sequence's first gets the lowest
// free one; validate() keeps sequences within max_sequences), position and RoPE angles.
void Stage::offload_layers(int n_tokens) {
  const int n_pairs = rope_.n_rot / 2;
  const auto slot_of = [&](uint64_t seq) {
    if (const auto it = slots_.find(seq); it != slots_.end()) return it->second;
    std::vector<bool> taken(static_cast<size_t>(options_.max_sequences));
    for (const auto& [_, s] : slots_) taken[static_cast<size_t>(s)] = true;
    const int free = static_cast<int>(std::find(taken.begin(), taken.end(), false) - taken.begin());
    slots_.emplace(seq, free);
    return free;
  };
  for (int t = 0; t < n_tokens; ++t) {
    const int pos = row_pos_[static_cast<size_t>(t)];
    offload_pos_[static_cast<size_t>(t)] = pos;
    offload_slot_[static_cast<size_t>(t)] = slot_of(row_seq_[static_cast<size_t>(t)]);
    float* angles = &offload_rope_[static_cast<size_t>(t) * 2 * n_pairs];
    rope_angles(pos, rope_, angles, angles + n_pairs);
  }
  options_.layers->forward(layers_token_, x_.data(),
                           {.n_tokens = n_tokens,
                            .pos = {offload_pos_.data(), static_cast<size_t>(n_tokens)},
                            .slot = {offload_slot_.data(), static_cast<size_t>(n_tokens)},
                            .rope = {offload_rope_.data(), static_cast<size_t>(n_tokens) * 2 * n_pairs}});
}

void Stage::read_hidden(std::span<const float> hidden, int n_tokens) {
  const ModelConfig& c = config();
  if (c.n_embd_per_layer == 0) {
    std::copy(hidden.begin(), hidden.end(), x_.begin());
    return;
  }
  const auto E = static_cast<size_t>(c.n_embd), width = static_cast<size_t>(c.hidden_width(spec().first_layer));
  const auto per_token = static_cast<size_t>(c.n_layer) * static_cast<size_t>(c.n_embd_per_layer);
  const size_t skip = static_cast<size_t>(spec().first_layer) * static_cast<size_t>(c.n_embd_per_layer);
  for (size_t t = 0; t < static_cast<size_t>(n_tokens); ++t) {
    const float* row = &hidden[t * width];
    std::copy_n(row, E, &x_[t * E]);
    std::copy(row + E, row + width, &ple_[t * per_token + skip]);
  }
}

std::span<const float> Stage::write_hidden(int n_tokens) {
  const ModelConfig& c = config();
  if (c.n_embd_per_layer == 0) return {x_.data(), static_cast<size_t>(n_tokens) * c.n_embd};
  const auto E = static_cast<size_t>(c.n_embd), width = static_cast<size_t>(c.hidden_width(spec().last_layer));
  const auto per_token = static_cast<size_t>(c.n_layer) * static_cast<size_t>(c.n_embd_per_layer);
  const size_t skip = static_cast<size_t>(spec().last_layer) * static_cast<size_t>(c.n_embd_per_layer);
  for (size_t t = 0; t < static_cast<size_t>(n_tokens); ++t) {
    float* row = &hidden_out_[t * width];
    std::copy_n(&x_[t * E], E, row);
    std::copy_n(&ple_[t * per_token + skip], width - E, row + E);
  }
  return {hidden_out_.data(), static_cast<size_t>(n_tokens) * width};
}

// Gemma 4's per-layer inputs of every layer, as llama.cpp computes them: the scaled embeddings
// projected (times 1 / sqrt(n_embd)) and RMS-normalised per layer, plus the token's row of the
// per-layer table times sqrt(n_embd_per_layer), all times 1 / sqrt(2).
void Stage::per_layer_inputs(const StageInput& in, int n_tokens) {
  const ModelConfig& c = config();
  const PerLayerEmbedding& p = weights_->per_layer_embd();
  const auto P = static_cast<size_t>(c.n_embd_per_layer), all = static_cast<size_t>(c.n_layer) * P;
  project(p.model_proj, x_.data(), n_tokens, ple_.data());
  const float proj_scale = 1.f / std::sqrt(static_cast<float>(c.n_embd));
  const float embd_scale = std::sqrt(static_cast<float>(P));
  const float input_scale = 1.f / std::sqrt(2.f);
  for (size_t t = 0; t < static_cast<size_t>(n_tokens); ++t) {
    float* r = &ple_[t * all];
    for (size_t i = 0; i < all; ++i) r[i] *= proj_scale;
    for (size_t l = 0; l < static_cast<size_t>(c.n_layer); ++l)
      rmsnorm(r + l * P, p.proj_norm.data(), r + l * P, static_cast<int>(P), c.rms_eps);
    dequantize_row(p.token_embd.type, p.token_embd.row(in.tokens[t]), ple_row_.data(), static_cast<int64_t>(all));
    for (size_t i = 0; i < all; ++i) r[i] = (r[i] + ple_row_[i] * embd_scale) * input_scale;
  }
}

// Layer l's per-layer input: gelu(inp_gate . x) times the input, projected back, normalised and
// added to the stream.
void Stage::per_layer_forward(int l, const LayerWeights& w, int n_tokens) {
  const ModelConfig& c = config();
  const auto E = static_cast<size_t>(c.n_embd), P = static_cast<size_t>(c.n_embd_per_layer);
  const size_t per_token = static_cast<size_t>(c.n_layer) * P;
  project(w.ple_gate, x_.data(), n_tokens, ple_gate_.data());
  for (size_t t = 0; t < static_cast<size_t>(n_tokens); ++t)
    geglu(&ple_gate_[t * P], &ple_[t * per_token + static_cast<size_t>(l) * P], P);
  project(w.ple_proj, ple_gate_.data(), n_tokens, tmp_.data());
  for (size_t t = 0; t < static_cast<size_t>(n_tokens); ++t)
    rmsnorm(&tmp_[t * E], w.ple_post_norm.data(), &tmp_[t * E], static_cast<int>(E), c.rms_eps);
  for (size_t i = 0; i < static_cast<size_t>(n_tokens) * E; ++i) x_[i] += tmp_[i];
}

void Stage::finish_layer(int l, const LayerWeights& w, int n_tokens) {
  ffn_forward(w, n_tokens);
  if (config().n_embd_per_layer > 0) per_layer_forward(l, w, n_tokens);
  if (!w.out_scale.empty())
    for (size_t i = 0; i < static_cast<size_t>(n_tokens) * config().n_embd; ++i) x_[i] *= w.out_scale[0];
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

void Stage::layer_forward(int l, const LayerWeights& w, int n_tokens) {
  const ModelConfig& c = config();
  const int E = c.n_embd;
  const int Q = c.layer_q_dim(l), KV = c.layer_kv_dim(l), hd = c.layer_head_dim(l), n_kv = c.layer_n_head_kv(l);

  // ---- attention (or a gated delta-net) ----
  for (int t = 0; t < n_tokens; ++t) rmsnorm(&x_[t * E], w.attn_norm.data(), &xn_[t * E], E, c.rms_eps);
  if (c.is_recurrent(l)) {
    delta_net_forward(l, w, n_tokens);
    for (size_t i = 0; i < static_cast<size_t>(n_tokens) * E; ++i) x_[i] += tmp_[i];
    finish_layer(l, w, n_tokens);
    return;
  }
  const bool own_kv = c.has_own_kv(l);  // else it reads another layer's cache (Gemma 4)
  const bool own_v = w.wv.n_out > 0;    // else V is K's projection (Gemma 4's full layers)
  float* q_out = c.attn_output_gate ? q_gate_.data() : q_.data();
  const MatmulTarget qkv[] = {{&w.wq, q_out}, {&w.wk, k_.data()}, {&w.wv, v_.data()}};
  project(std::span(qkv, !own_kv ? 1 : own_v ? 3 : 2), xn_.data(), n_tokens);
  if (c.attn_output_gate)  // per head, the query then its gate: the queries to q_, gates stay
    for (int t = 0; t < n_tokens; ++t)
      for (int h = 0; h < c.n_head; ++h)
        std::copy_n(&q_gate_[(static_cast<size_t>(t) * c.n_head + h) * 2 * hd], hd, &q_[static_cast<size_t>(t) * Q + h * hd]);
  if (own_kv && !own_v) std::copy_n(k_.begin(), static_cast<size_t>(n_tokens) * KV, v_.begin());
  if (!w.bq.empty()) add_bias(q_.data(), w.bq.data(), n_tokens, Q);
  if (!w.bk.empty()) add_bias(k_.data(), w.bk.data(), n_tokens, KV);
  if (!w.bv.empty()) add_bias(v_.data(), w.bv.data(), n_tokens, KV);
  const int local = l - spec().first_layer;
  const RopeSpec& rope = c.is_swa(l) ? rope_swa_ : rope_;
  const int n_pairs = rope.n_rot / 2;
  for (int t = 0; t < n_tokens; ++t) {
    const int pos = row_pos_[static_cast<size_t>(t)];
    float* qt = &q_[static_cast<size_t>(t) * Q];
    float* kt = &k_[static_cast<size_t>(t) * KV];
    float* vt = &v_[static_cast<size_t>(t) * KV];
    if (!w.q_norm.empty() && c.qk_norm_whole) {  // olmoe: the whole projections, before RoPE
      rmsnorm(qt, w.q_norm.data(), qt, Q, c.rms_eps);
      rmsnorm(kt, w.k_norm.data(), kt, KV, c.rms_eps);
    } else if (!w.q_norm.empty()) {  // qwen3: each head normalised on its own, before RoPE
      for (int h = 0; h < c.n_head; ++h) rmsnorm(qt + h * hd, w.q_norm.data(), qt + h * hd, hd, c.rms_eps);
      if (own_kv)
        for (int h = 0; h < n_kv; ++h) rmsnorm(kt + h * hd, w.k_norm.data(), kt + h * hd, hd, c.rms_eps);
    }
    if (c.v_norm && own_kv)  // Gemma 4: each value head too, without a weight
      for (int h = 0; h < n_kv; ++h) rmsnorm(vt + h * hd, v_norm_ones_.data(), vt + h * hd, hd, c.rms_eps);
    rope_angles(pos, rope, rope_cos_.data(), rope_sin_.data());
    for (int h = 0; h < c.n_head; ++h) rope_rotate(qt + h * hd, rope_cos_.data(), rope_sin_.data(), n_pairs, c.rope_style);
    if (!own_kv) continue;
    for (int h = 0; h < n_kv; ++h) rope_rotate(kt + h * hd, rope_cos_.data(), rope_sin_.data(), n_pairs, c.rope_style);
    row_cache_[static_cast<size_t>(t)]->store(local, pos, kt, vt, kernels_);
  }
  attention(l, n_tokens);
  if (c.attn_output_gate)  // Qwen 3.5: output x sigmoid(gate)
    for (int t = 0; t < n_tokens; ++t)
      for (int h = 0; h < c.n_head; ++h) {
        const float* g = &q_gate_[(static_cast<size_t>(t) * c.n_head + h) * 2 * hd + hd];
        float* o = &attn_[static_cast<size_t>(t) * Q + h * hd];
        for (int i = 0; i < hd; ++i) o[i] *= 1.f / (1.f + std::exp(-g[i]));
      }
  project(w.wo, attn_.data(), n_tokens, tmp_.data());
  if (!w.bo.empty()) add_bias(tmp_.data(), w.bo.data(), n_tokens, E);
  if (!w.post_attn_norm.empty())
    for (int t = 0; t < n_tokens; ++t) rmsnorm(&tmp_[t * E], w.post_attn_norm.data(), &tmp_[t * E], E, c.rms_eps);
  for (size_t i = 0; i < static_cast<size_t>(n_tokens) * E; ++i) x_[i] += tmp_[i];
  finish_layer(l, w, n_tokens);
}

// Qwen 3.5 MoE's shared expert, added into tmp_ (the routed experts' output): a SwiGLU of every
// token scaled by sigmoid(gate_inp_shexp . x).
void Stage::shared_expert_forward(const LayerWeights& w, int n_tokens) {
  const ModelConfig& c = config();
  const int E = c.n_embd;
  project_gated(w.gate_shexp, w.up_shexp, xn_.data(), n_tokens, FfnActivation::SiLU);
  project(w.down_shexp, gate_.data(), n_tokens, shexp_out_.data());
  for (int t = 0; t < n_tokens; ++t) {
    const float g = 1.f / (1.f + std::exp(-kernels_.dot_f32(w.gate_inp_shexp.data(), &xn_[static_cast<size_t>(t) * E], E)));
    for (int i = 0; i < E; ++i) tmp_[static_cast<size_t>(t) * E + i] += shexp_out_[static_cast<size_t>(t) * E + i] * g;
  }
}

// A gated delta-net (delta_net.h) in place of attention: the projections of every token at once,
// then the recurrence token by token in row order, each row on its own sequence's state (a
// sequence's rows come in order; after a chunk's last token before its draft, the state is also
// kept as the checkpoint), then ssm_out into tmp_.
void Stage::delta_net_forward(int l, const LayerWeights& w, int n_tokens) {
  const ModelConfig& c = config();
  const MatmulTarget in[] = {{&w.ssm_qkv, ssm_qkv_.data()}, {&w.ssm_z, ssm_z_.data()}, {&w.ssm_beta, ssm_beta_.data()},
                             {&w.ssm_alpha, ssm_alpha_.data()}};
  project(in, xn_.data(), n_tokens);
  const auto C = static_cast<size_t>(c.ssm_conv_channels()), DI = static_cast<size_t>(c.ssm_d_inner);
  const auto H = static_cast<size_t>(c.ssm_dt_rank);
  const int local = l - spec().first_layer;
  for (int t = 0; t < n_tokens; ++t) {
    const auto r = static_cast<size_t>(t);
    delta_net_token(c, w, &ssm_qkv_[r * C], &ssm_z_[r * DI], &ssm_beta_[r * H], &ssm_alpha_[r * H],
                    row_cache_[r]->state(local), &ssm_y_[r * DI], ssm_scratch_.data(), pool_, kernels_);
    row_cache_[r]->save_checkpoint(local, row_pos_[r]);
  }
  project(w.ssm_out, ssm_y_.data(), n_tokens, tmp_.data());
}

void Stage::ffn_forward(const LayerWeights& w, int n_tokens) {
  const ModelConfig& c = config();
  const int E = c.n_embd;
  // ---- feed-forward (SwiGLU, or a mixture of SwiGLU experts) ----
  for (int t = 0; t < n_tokens; ++t) rmsnorm(&x_[t * E], w.ffn_norm.data(), &xn_[t * E], E, c.rms_eps);
  if (c.moe_beside_dense) {
    dense_and_experts_forward(w, n_tokens);
  } else if (experts_) {
    experts_->forward(w, xn_.data(), n_tokens, tmp_.data(), scratch_, pool_, kernels_);
    if (c.n_ff_shexp > 0) shared_expert_forward(w, n_tokens);
  } else {
    project_gated(w.w_gate, w.w_up, xn_.data(), n_tokens, c.ffn_activation);
    project(w.w_down, gate_.data(), n_tokens, tmp_.data());
  }
  if (!w.post_ffn_norm.empty())
    for (int t = 0; t < n_tokens; ++t) rmsnorm(&tmp_[t * E], w.post_ffn_norm.data(), &tmp_[t * E], E, c.rms_eps);
  for (size_t i = 0; i < static_cast<size_t>(n_tokens) * E; ++i) x_[i] += tmp_[i];
}

// Gemma 4 26B-A4B's FFN, into tmp_ (xn_ holds the dense FFN's normed input): the dense FFN normed
// by post_ffw_norm_1, plus the experts on their own normed input normed by post_ffw_norm_2; the
// router reads the unweighted RMS norm of x times 1 / sqrt(n_embd) times ffn_gate_inp.scale.
void Stage::dense_and_experts_forward(const LayerWeights& w, int n_tokens) {
  const ModelConfig& c = config();
  const int E = c.n_embd;
  const auto n = static_cast<size_t>(n_tokens) * E;
  project_gated(w.w_gate, w.w_up, xn_.data(), n_tokens, c.ffn_activation);
  project(w.w_down, gate_.data(), n_tokens, tmp_.data());
  const float router_scale = 1.f / std::sqrt(static_cast<float>(E));
  for (int t = 0; t < n_tokens; ++t) {
    rmsnorm(&tmp_[t * E], w.post_ffn_norm_1.data(), &tmp_[t * E], E, c.rms_eps);
    rmsnorm(&x_[t * E], w.pre_ffn_norm_2.data(), &xn_[t * E], E, c.rms_eps);
    float* r = &router_in_[static_cast<size_t>(t) * E];
    rmsnorm(&x_[t * E], v_norm_ones_.data(), r, E, c.rms_eps);
    for (int i = 0; i < E; ++i) r[i] = r[i] * router_scale * w.router_scale[static_cast<size_t>(i)];
  }
  experts_->forward(w, xn_.data(), n_tokens, shexp_out_.data(), scratch_, pool_, kernels_, router_in_.data());
  for (int t = 0; t < n_tokens; ++t) rmsnorm(&shexp_out_[t * E], w.post_ffn_norm_2.data(), &shexp_out_[t * E], E, c.rms_eps);
  for (size_t i = 0; i < n; ++i) tmp_[i] += shexp_out_[i];
}

// Causal attention of every row over its own sequence's cache. A task takes query heads that
// share one K/V head (so each key is loaded once for all of them), in groups small enough to give
// every thread several tasks.
void Stage::attention(int layer, int n_tokens) {
  const ModelConfig& c = config();
  const int local_layer = c.kv_source(layer) - spec().first_layer;  // its own cache, or the one it shares
  const int n_kv = c.layer_n_head_kv(layer), hd = c.layer_head_dim(layer), Q = c.layer_q_dim(layer);
  const int group = c.n_head / n_kv;
  const float scale = c.attention_scale > 0 ? c.attention_scale : 1.f / std::sqrt(static_cast<float>(hd));
  const int window = c.is_swa(layer) ? c.n_swa : 0;  // keys p - window < q <= p; 0 = all
  const std::vector<float>& sinks = weights_->layer(layer).attn_sinks;
  int per_task = group;
  while (per_task % 2 == 0 && n_kv * (group / per_task) < 4 * pool_.size()) per_task /= 2;
  const int tasks_per_kv = group / per_task;
  pool_.run(n_kv * tasks_per_kv, [&](int task) {
    const int kvh = task / tasks_per_kv;
    const int h0 = kvh * group + (task % tasks_per_kv) * per_task;
    float* scores = &scores_[static_cast<size_t>(h0) * kTokenBlock * n_ctx_];
    float* qpack = &qpack_[static_cast<size_t>(h0) * kTokenBlock * hd];
    float* inv = &inv_[static_cast<size_t>(h0) * kTokenBlock];
    float* tile = kv_tile_.empty() ? nullptr : &kv_tile_[static_cast<size_t>(task) * kKvTileFloats];
    // Tokens of one sequence (a prompt chunk) go together, up to kTokenBlock: their keys are
    // loaded once for all of them.
    AttendToken block[kTokenBlock];
    size_t n_block = 0;
    const KvCache* cache = nullptr;
    const auto flush = [&] {
      if (n_block == 0) return;
      attend_tokens({block, n_block}, per_task, cache->keys(local_layer).from(kvh * hd), cache->values(local_layer).from(kvh * hd),
                    hd, scale, qpack, scores, static_cast<size_t>(n_ctx_), inv, tile, kernels_,
                    sinks.empty() ? nullptr : &sinks[static_cast<size_t>(h0)]);
      n_block = 0;
    };
    for (int t = 0; t < n_tokens; ++t) {
      if (row_cache_[static_cast<size_t>(t)] != cache || n_block == kTokenBlock) {
        flush();
        cache = row_cache_[static_cast<size_t>(t)];
      }
      const size_t at = static_cast<size_t>(t) * Q + static_cast<size_t>(h0) * hd;
      const int pos = row_pos_[static_cast<size_t>(t)];
      const int first = window > 0 ? std::max(0, pos - window + 1) : 0;
      block[n_block++] = {&q_[at], &attn_[at], first, pos + 1 - first};
    }
    flush();
  });
}

std::span<const float> Stage::output_head(const StageInput& in, int n_tokens) {
  const ModelConfig& c = config();
  const int E = c.n_embd;
  // Rows whose logits are wanted: every token, or the last `logits` of each chunk.
  int rows = 0;
  const auto norm = [&](int t) { rmsnorm(&x_[t * E], weights_->output_norm().data(), &xn_[rows++ * E], E, c.rms_eps); };
  if (in.all_logits) {
    for (int t = 0; t < n_tokens; ++t) norm(t);
  } else {
    int end = 0;
    for (const SeqChunk& ch : in.chunks) {
      end += ch.n_tokens;
      for (int t = end - ch.logits; t < end; ++t) norm(t);
    }
  }
  const size_t need = static_cast<size_t>(rows) * c.n_vocab;
  if (logits_.size() < need) logits_.resize(need);
  project(weights_->output(), xn_.data(), rows, logits_.data());
  if (c.logit_softcap > 0) {  // as llama.cpp: scale by 1/cap, tanh, scale by cap
    const float inv = 1.f / c.logit_softcap;
    for (size_t i = 0; i < need; ++i) logits_[i] = std::tanh(logits_[i] * inv) * c.logit_softcap;
  }
  return {logits_.data(), need};
}

void Stage::project(std::span<const MatmulTarget> targets, const float* x, int n_tokens) {
  MatmulOffload* gpu = options_.offload;
  if (gpu && std::all_of(targets.begin(), targets.end(), [&](const MatmulTarget& t) { return gpu->holds(*t.w); })) {
    gpu->matmul(targets, x, n_tokens);
    return;
  }
  if (targets.size() == 1) {
    matmul(*targets[0].w, x, n_tokens, targets[0].y, scratch_, pool_, kernels_);
    return;
  }
  matmul_many(targets, x, n_tokens, scratch_, pool_, kernels_);
}

void Stage::project(const WeightMatrix& w, const float* x, int n_tokens, float* y) {
  const MatmulTarget target{&w, y};
  project(std::span(&target, 1), x, n_tokens);
}

// Into gate_ (the gated product) and up_.
void Stage::project_gated(const WeightMatrix& gate, const WeightMatrix& up, const float* x, int n_tokens, FfnActivation activation) {
  MatmulOffload* gpu = options_.offload;
  if (!gpu || !gpu->holds(gate) || !gpu->holds(up)) {
    matmul_swiglu(gate, up, x, n_tokens, gate_.data(), up_.data(), scratch_, pool_, kernels_, activation);
    return;
  }
  const MatmulTarget both[] = {{&gate, gate_.data()}, {&up, up_.data()}};
  gpu->matmul(both, x, n_tokens);
  const auto n = static_cast<size_t>(gate.n_out);
  for (size_t t = 0; t < static_cast<size_t>(n_tokens); ++t) runtime::gated(activation, &gate_[t * n], &up_[t * n], nullptr, nullptr, n);
}

}  // namespace hearth::runtime
