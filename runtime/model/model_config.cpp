#include "runtime/model/model_config.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

namespace hearth::runtime {

namespace {

// What llama.cpp's graphs for these architectures do beyond the shared llama structure.
struct Arch {
  const char* name;
  RopeStyle rope_style = RopeStyle::NeoX;
  TensorNeed qkv_bias = TensorNeed::Absent, out_bias = TensorNeed::Absent, qk_norm = TensorNeed::Absent;
  bool qk_norm_whole = false;
  // Experts: never, when the file says expert_count (llama: Mixtral), or always.
  TensorNeed experts = TensorNeed::Absent;
  bool expert_weights_norm = false;
  bool fused = false;  // attn_qkv and a gate-up ffn_up (phi3)
  // Gemma: norms after attention and FFN too, GELU, embeddings scaled, local and global layers.
  bool gemma = false;
  // gpt-oss: attention sinks, router and expert biases, softmax over the chosen experts, the
  // clamped SwiGLU, sliding-window layers alternating with full ones.
  bool gpt_oss = false;
  // Gemma 4: Gemma's structure with per-layer attention shapes (ModelConfig says which).
  bool gemma4 = false;
  // Qwen 3.5: gated delta-net layers between full-attention ones (ModelConfig says which).
  bool qwen35 = false;
};

constexpr Arch kArchs[] = {
    {.name = "llama",
     .rope_style = RopeStyle::Normal,
     .qkv_bias = TensorNeed::Optional,
     .out_bias = TensorNeed::Optional,
     .experts = TensorNeed::Optional,
     .expert_weights_norm = true},
    {.name = "qwen2", .qkv_bias = TensorNeed::Required},
    {.name = "qwen3", .qk_norm = TensorNeed::Required},
    {.name = "qwen3moe", .qk_norm = TensorNeed::Required, .experts = TensorNeed::Required, .expert_weights_norm = true},
    // OLMoE normalises the whole Q and K projections and keeps the router's probabilities as they are.
    {.name = "olmoe", .qk_norm = TensorNeed::Required, .qk_norm_whole = true, .experts = TensorNeed::Required},
    // Phi-3.5 / Phi-4-mini: fused projections, partial rotary, LongRoPE factors as global tensors.
    {.name = "phi3", .fused = true},
    {.name = "gemma3", .qk_norm = TensorNeed::Required, .gemma = true},
    {.name = "gemma4",
     .qk_norm = TensorNeed::Required,
     .experts = TensorNeed::Optional,  // 26B-A4B
     .expert_weights_norm = true,
     .gemma = true,
     .gemma4 = true},
    {.name = "qwen35", .qk_norm = TensorNeed::Required, .qwen35 = true},
    {.name = "qwen35moe",
     .qk_norm = TensorNeed::Required,
     .experts = TensorNeed::Required,
     .expert_weights_norm = true,
     .qwen35 = true},
    {.name = "gpt-oss",
     .qkv_bias = TensorNeed::Required,
     .out_bias = TensorNeed::Required,
     .experts = TensorNeed::Required,
     .gpt_oss = true},
};

std::string supported_archs() {
  std::string out;
  for (const Arch& a : kArchs) out += (out.empty() ? "" : ", ") + std::string(a.name);
  return out;
}

int positive(const GgufMetadata& md, const std::string& key, uint64_t max = 1u << 24) {
  const uint64_t v = md.get_uint(key);
  if (v == 0 || v > max) throw GgufError("metadata '" + key + "' = " + std::to_string(v) + " is out of range");
  return static_cast<int>(v);
}

// Linear scaling divides positions by the factor; Llama 3's scaling needs no key, it is carried
// by the rope_freqs.weight tensor. llama.cpp assumes "linear" when only a factor is given.
void read_rope_scaling(const GgufMetadata& md, const std::string& a, ModelConfig& c) {
  std::optional<double> factor = md.get_float_opt(a + "rope.scaling.factor");
  if (!factor) factor = md.get_float_opt(a + "rope.scale_linear");
  const std::string type = md.get_string_opt(a + "rope.scaling.type").value_or(factor ? "linear" : "none");
  if (type != "none" && type != "linear" && type != "yarn")
    throw GgufError("metadata '" + a + "rope.scaling.type' = '" + type +
                    "' is not supported (supported: none, linear, yarn; Llama 3 frequency factors come from rope_freqs.weight)");
  if (type == "yarn") {
    // llama.cpp reads no yarn_beta_* keys and uses its defaults; so does this.
    if (!factor || !(*factor > 0.0)) throw GgufError("metadata '" + a + "rope.scaling.factor' is needed for yarn");
    c.yarn = true;
    c.rope_freq_scale = static_cast<float>(1.0 / *factor);
    c.n_ctx_orig = positive(md, a + "rope.scaling.original_context_length");
    return;
  }
  if (type == "linear" && factor && *factor != 0.0) {
    if (!(*factor > 0.0)) throw GgufError("metadata '" + a + "rope.scaling.factor' must be positive");
    c.rope_freq_scale = static_cast<float>(1.0 / *factor);
  }
  c.n_ctx_orig = static_cast<int>(md.get_uint_opt(a + "rope.scaling.original_context_length").value_or(0));
}

void read_rope_attn_factor(const GgufMetadata& md, const std::string& a, ModelConfig& c) {
  c.rope_attn_factor = static_cast<float>(md.get_float_opt(a + "rope.scaling.attn_factor").value_or(1.0));
  if (!(c.rope_attn_factor > 0.f) || !std::isfinite(c.rope_attn_factor))
    throw GgufError("metadata '" + a + "rope.scaling.attn_factor' must be positive");
}

// Mixture of experts. The expert width has a key of its own where it differs from the dense
// width (qwen3moe); elsewhere (olmoe, Mixtral) feed_forward_length is the expert width.
void read_experts(const GgufMetadata& md, const std::string& a, const Arch& arch, ModelConfig& c) {
  const bool has = md.has(a + "expert_count") && md.get_uint(a + "expert_count") > 0;
  if (arch.experts == TensorNeed::Absent && has)
    throw GgufError("metadata '" + a + "expert_count' is set, but architecture '" + c.arch + "' has no experts");
  if (arch.experts == TensorNeed::Required && !has) throw GgufError("metadata '" + a + "expert_count' is missing");
  if (!has) return;
  c.n_expert = positive(md, a + "expert_count", 4096);
  c.n_expert_used = positive(md, a + "expert_used_count", 4096);
  if (c.n_expert_used > c.n_expert)
    throw GgufError("metadata '" + a + "expert_used_count' = " + std::to_string(c.n_expert_used) + " exceeds expert_count " +
                    std::to_string(c.n_expert));
  if (md.has(a + "expert_feed_forward_length")) c.n_ff_exp = positive(md, a + "expert_feed_forward_length");
  c.expert_weights_norm = arch.expert_weights_norm;
}

// Gemma 3: sliding-window layers (all but every swa_period-th) rotate with their own base and no
// scaling; the final logits may be soft-capped; the 27B scales queries by its model width.
void read_gemma(const GgufMetadata& md, const std::string& a, const Arch& arch, ModelConfig& c) {
  c.n_swa = static_cast<int>(md.get_uint_opt(a + "attention.sliding_window").value_or(0));
  if (c.n_swa > 0 && arch.gemma4) {  // its pattern is per layer (read_gemma4)
    c.rope_base_swa = static_cast<float>(md.get_float_opt(a + "rope.freq_base_swa").value_or(10000.0));
  } else if (c.n_swa > 0) {
    c.swa_period = static_cast<int>(md.get_uint_opt(a + "attention.sliding_window_pattern").value_or(6));  // llama.cpp's default
    if (c.swa_period < 1) throw GgufError("metadata '" + a + "attention.sliding_window_pattern' must be positive");
    c.rope_base_swa = static_cast<float>(md.get_float_opt(a + "rope.freq_base_swa").value_or(10000.0));  // llama.cpp's default
  }
  c.logit_softcap = static_cast<float>(md.get_float_opt(a + "final_logit_softcapping").value_or(0.0));
  if (c.n_layer == 62) c.attention_scale = 1.f / std::sqrt(static_cast<float>(c.n_embd / c.n_head));
}

// A per-layer array of unsigned integers or booleans, or one value for every layer.
std::vector<int64_t> per_layer(const GgufMetadata& md, const std::string& key, int n_layer) {
  const GgufValue* e = md.find(key);
  if (e == nullptr) throw GgufError("metadata '" + key + "' is missing");
  std::vector<int64_t> out;
  if (const auto* arr = std::get_if<GgufArray>(&e->value)) {
    for (const GgufValue& v : arr->items) {
      if (const auto* b = std::get_if<bool>(&v.value)) out.push_back(*b ? 1 : 0);
      else if (const auto* i = std::get_if<int64_t>(&v.value)) out.push_back(*i);
      else if (const auto* u = std::get_if<uint64_t>(&v.value); u && *u < (uint64_t{1} << 32)) out.push_back(static_cast<int64_t>(*u));
      else throw GgufError("metadata '" + key + "' holds a value that is not an integer or a boolean");
    }
    if (out.size() != static_cast<size_t>(n_layer))
      throw GgufError("metadata '" + key + "' has " + std::to_string(out.size()) + " values for " + std::to_string(n_layer) +
                      " layers");
    return out;
  }
  out.assign(static_cast<size_t>(n_layer), static_cast<int64_t>(md.get_uint(key)));
  return out;
}

// feed_forward_length: one width, or one per layer as llama.cpp also reads it (Gemma 4 E2B's
// shared-KV layers are twice as wide as the others). A model whose every layer is MoE needs no
// dense width; llama.cpp's qwen3moe files still carry one.
void read_ffn_widths(const GgufMetadata& md, const std::string& a, ModelConfig& c) {
  const std::string key = a + "feed_forward_length";
  c.n_ff_layers.clear();
  const GgufValue* e = md.find(key);
  if (e == nullptr && c.is_moe()) {
    c.n_ff = 0;
    return;
  }
  if (e == nullptr || !std::holds_alternative<GgufArray>(e->value)) {
    c.n_ff = positive(md, key);
    return;
  }
  for (int64_t v : per_layer(md, key, c.n_layer)) {
    if (v <= 0 || v > (1 << 24)) throw GgufError("metadata '" + key + "' holds " + std::to_string(v) + ", not a layer width");
    c.n_ff_layers.push_back(static_cast<int>(v));
  }
  c.n_ff = *std::max_element(c.n_ff_layers.begin(), c.n_ff_layers.end());
}

// Gemma 4's shared-KV layers, as llama.cpp reads them: the last shared_kv_layers layers reuse the
// cache of layer n_layer_kv - 2 (sliding ones) or n_layer_kv - 1 (full ones), which must be of
// their kind and shape.
void read_shared_kv(const GgufMetadata& md, const std::string& a, ModelConfig& c) {
  const uint64_t shared = md.get_uint_opt(a + "attention.shared_kv_layers").value_or(0);
  if (shared == 0) return;
  if (shared + 2 > static_cast<uint64_t>(c.n_layer))
    throw GgufError("metadata '" + a + "attention.shared_kv_layers' is " + std::to_string(shared) +
                    ": at least two of the model's " + std::to_string(c.n_layer) + " layers must keep a KV cache");
  c.n_layer_kv = c.n_layer - static_cast<int>(shared);
  for (int l = c.n_layer_kv; l < c.n_layer; ++l) {
    const int src = c.kv_source(l);
    if (c.is_swa(src) != c.is_swa(l) || c.layer_kv_dim(src) != c.layer_kv_dim(l) || c.layer_head_dim(src) != c.layer_head_dim(l))
      throw GgufError("layer " + std::to_string(l) + " shares the KV cache of layer " + std::to_string(src) +
                      ", which is of another kind or shape");
  }
}

// Gemma 4: which layers slide (a boolean per layer), the sliding layers' head size and rotated
// dimensions, each layer's KV heads, a query scale of 1 (the q/k norms take its place).
void read_gemma4(const GgufMetadata& md, const std::string& a, ModelConfig& c) {
  for (int64_t v : per_layer(md, a + "attention.sliding_window_pattern", c.n_layer)) c.swa_layers.push_back(v != 0);
  c.n_swa = positive(md, a + "attention.sliding_window");
  c.swa_period = 1;  // unused: swa_layers decides
  c.head_dim_swa = positive(md, a + "attention.key_length_swa", 4096);
  if (md.get_uint_opt(a + "attention.value_length_swa").value_or(c.head_dim_swa) != static_cast<uint64_t>(c.head_dim_swa))
    throw GgufError("attention.value_length_swa differs from key_length_swa, which Gemma 4 does not allow");
  c.n_rot_swa = md.has(a + "rope.dimension_count_swa") ? positive(md, a + "rope.dimension_count_swa", 4096) : c.head_dim_swa;
  if (c.n_rot_swa > c.head_dim_swa || c.n_rot_swa % 2 != 0)
    throw GgufError("rope.dimension_count_swa must be even and <= the sliding layers' head size");
  c.n_head_kv_layers.clear();
  for (int64_t v : per_layer(md, a + "attention.head_count_kv", c.n_layer)) {
    if (v <= 0 || v > 4096 || c.n_head % v != 0)
      throw GgufError("metadata '" + a + "attention.head_count_kv' holds " + std::to_string(v) +
                      ", which does not divide head_count " + std::to_string(c.n_head));
    c.n_head_kv_layers.push_back(static_cast<int>(v));
  }
  c.n_head_kv = *std::max_element(c.n_head_kv_layers.begin(), c.n_head_kv_layers.end());
  c.n_embd_per_layer = static_cast<int>(md.get_uint_opt(a + "embedding_length_per_layer_input").value_or(0));
  if (c.n_embd_per_layer < 0 || c.n_embd_per_layer > 65536)
    throw GgufError("metadata '" + a + "embedding_length_per_layer_input' is out of range");
  read_shared_kv(md, a, c);
  c.moe_beside_dense = c.is_moe();  // 26B-A4B: each layer runs its dense FFN and its experts
  if (c.moe_beside_dense && c.n_ff == 0) throw GgufError("metadata '" + a + "feed_forward_length' is missing");
  c.attention_scale = 1.f;
  c.v_from_k = true;
  c.v_norm = true;
  c.layer_out_scale = TensorNeed::Optional;
}

// Qwen 3.5: which layers are gated delta-nets and their sizes; the pre-FFN norm is named
// post_attention_norm; the full layers gate their attention output.
void read_qwen35(const GgufMetadata& md, const std::string& a, ModelConfig& c) {
  c.full_attention_interval = positive(md, a + "full_attention_interval", 4096);
  c.ssm_conv_kernel = positive(md, a + "ssm.conv_kernel", 64);
  if (c.ssm_conv_kernel < 2) throw GgufError("metadata '" + a + "ssm.conv_kernel' must be at least 2");
  c.ssm_d_state = positive(md, a + "ssm.state_size", 4096);
  c.ssm_n_group = positive(md, a + "ssm.group_count", 4096);
  c.ssm_dt_rank = positive(md, a + "ssm.time_step_rank", 4096);
  c.ssm_d_inner = positive(md, a + "ssm.inner_size");
  if (c.ssm_d_inner % c.ssm_dt_rank != 0 || c.ssm_dt_rank % c.ssm_n_group != 0)
    throw GgufError("ssm.inner_size must be a multiple of ssm.time_step_rank, and that of ssm.group_count");
  if (c.ssm_head_v_dim() != c.ssm_d_state)
    throw GgufError("gated delta-net value heads of " + std::to_string(c.ssm_head_v_dim()) + " differ from key heads of " +
                    std::to_string(c.ssm_d_state) + ", which this runtime does not support");
  if (md.get_uint_opt(a + "nextn_predict_layers").value_or(0) != 0)
    throw GgufError("Qwen 3.5 multi-token-prediction layers are not supported yet");
  c.attn_output_gate = true;
  c.ffn_norm_tensor = "post_attention_norm";
  if (c.is_moe() && md.has(a + "expert_shared_feed_forward_length"))
    c.n_ff_shexp = positive(md, a + "expert_shared_feed_forward_length");
}

// gpt-oss: even layers slide (llama.cpp's default period 2) with the same RoPE as the others.
void read_gpt_oss(const GgufMetadata& md, const std::string& a, ModelConfig& c) {
  c.n_swa = positive(md, a + "attention.sliding_window");
  c.swa_period = static_cast<int>(md.get_uint_opt(a + "attention.sliding_window_pattern").value_or(2));
  if (c.swa_period < 1) throw GgufError("metadata '" + a + "attention.sliding_window_pattern' must be positive");
  c.rope_base_swa = static_cast<float>(md.get_float_opt(a + "rope.freq_base_swa").value_or(c.rope_base));
  c.rope_freq_scale_swa = c.rope_freq_scale;
  c.attn_sinks = TensorNeed::Required;
  c.expert_bias = TensorNeed::Required;
  c.expert_gating = ExpertGating::SoftmaxOfChosen;
  c.ffn_activation = FfnActivation::SwigluOai;
  c.ffn_norm_tensor = "post_attention_norm";
}

}  // namespace

int ModelConfig::max_q_dim() const {
  int m = q_dim();
  for (int l = 0; l < n_layer; ++l) m = std::max(m, layer_q_dim(l));
  return m;
}

int ModelConfig::max_kv_dim() const {
  int m = kv_dim();
  for (int l = 0; l < n_layer; ++l) m = std::max(m, layer_kv_dim(l));
  return m;
}

ModelConfig read_model_config(const GgufFile& file) {
  const GgufMetadata& md = file.metadata();
  ModelConfig c;
  c.arch = md.get_string("general.architecture");
  const Arch* arch = nullptr;
  for (const Arch& x : kArchs)
    if (c.arch == x.name) arch = &x;
  if (arch == nullptr)
    throw GgufError("'" + file.path() + "': architecture '" + c.arch + "' is not supported (supported: " + supported_archs() +
                    ")");
  c.rope_style = arch->rope_style;
  c.qkv_bias = arch->qkv_bias;
  c.out_bias = arch->out_bias;
  c.qk_norm = arch->qk_norm;
  c.qk_norm_whole = arch->qk_norm_whole;
  c.fused_qkv = c.fused_gate_up = arch->fused;
  c.post_norms = arch->gemma ? TensorNeed::Required : TensorNeed::Absent;
  c.ffn_activation = arch->gemma ? FfnActivation::GeluTanh : FfnActivation::SiLU;
  c.embed_scale = arch->gemma;
  c.name = md.get_string_opt("general.name").value_or(file.path());
  const std::string a = c.arch + ".";
  c.n_embd = positive(md, a + "embedding_length");
  c.n_layer = positive(md, a + "block_count", 4096);
  c.n_head = positive(md, a + "attention.head_count", 4096);
  if (arch->gemma4) c.n_head_kv = c.n_head;  // per layer: read_gemma4
  else c.n_head_kv = md.has(a + "attention.head_count_kv") ? positive(md, a + "attention.head_count_kv", 4096) : c.n_head;
  read_experts(md, a, *arch, c);
  // A model whose every layer is MoE needs no dense width; llama.cpp's qwen3moe files still carry one.
  read_ffn_widths(md, a, c);
  if (c.is_moe() && c.n_ff_exp == 0) c.n_ff_exp = c.n_ff;
  c.n_ctx_train = positive(md, a + "context_length");
  if (c.n_embd % c.n_head != 0 && !md.has(a + "attention.key_length"))
    throw GgufError("embedding_length is not a multiple of head_count");
  c.head_dim = md.has(a + "attention.key_length") ? positive(md, a + "attention.key_length", 4096) : c.n_embd / c.n_head;
  if (md.has(a + "attention.value_length") && md.get_uint(a + "attention.value_length") != static_cast<uint64_t>(c.head_dim))
    throw GgufError("attention.value_length differs from the key length " + std::to_string(c.head_dim) +
                    ", which this runtime does not support");
  if (c.n_head % c.n_head_kv != 0)
    throw GgufError("head_count " + std::to_string(c.n_head) + " is not a multiple of head_count_kv " +
                    std::to_string(c.n_head_kv));
  c.n_rot = md.has(a + "rope.dimension_count") ? positive(md, a + "rope.dimension_count", 4096) : c.head_dim;
  if (c.n_rot > c.head_dim || c.n_rot % 2 != 0) throw GgufError("rope.dimension_count must be even and <= head size");
  c.rms_eps = static_cast<float>(md.get_float_opt(a + "attention.layer_norm_rms_epsilon").value_or(1e-5));
  c.rope_base = static_cast<float>(md.get_float_opt(a + "rope.freq_base").value_or(10000.0));
  if (!(c.rms_eps > 0.f) || !(c.rope_base > 0.f)) throw GgufError("rms epsilon and rope base must be positive");
  read_rope_scaling(md, a, c);
  read_rope_attn_factor(md, a, c);
  if (arch->gemma) read_gemma(md, a, *arch, c);
  if (arch->gemma4) read_gemma4(md, a, c);
  if (arch->qwen35) read_qwen35(md, a, c);
  if (arch->gpt_oss) read_gpt_oss(md, a, c);
  // The vocabulary size comes from the token list, or from the embedding when there is none.
  if (md.has("tokenizer.ggml.tokens")) {
    const auto* tokens = std::get_if<GgufArray>(&md.find("tokenizer.ggml.tokens")->value);
    if (tokens == nullptr) throw GgufError("metadata 'tokenizer.ggml.tokens' is not an array");
    c.n_vocab = static_cast<int>(tokens->items.size());
  } else {
    c.n_vocab = static_cast<int>(file.require_tensor("token_embd.weight").rows());
  }
  if (c.n_vocab <= 0) throw GgufError("the model has an empty vocabulary");
  return c;
}

}  // namespace hearth::runtime
