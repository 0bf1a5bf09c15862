#include "partitioner/model_spec.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace hearth::partitioner {

namespace {

struct TypeSize {
  std::string_view name;
  double bytes_per_weight;  // bytes, block scales included
};

// GGUF block layouts: q8_0 = 32 x int8 + f16 scale; q4_0 = 32 x 4 bit + f16 scale;
// k-quants use 256-weight super-blocks (q4_k 144 B, q5_k 176 B, q6_k 210 B); mxfp4 = 32 x 4 bit
// + an 8-bit exponent, iq4_nl as q4_0, iq4_xs 256 x 4 bit + f16 + 8 six-bit scales (136 B).
constexpr std::array<TypeSize, 12> kTypeSizes{{
    {"f32", 4.0},
    {"f16", 2.0},
    {"bf16", 2.0},
    {"q8_0", 34.0 / 32},
    {"q4_0", 18.0 / 32},
    {"q5_0", 22.0 / 32},
    {"q4_k", 144.0 / 256},
    {"q5_k", 176.0 / 256},
    {"q6_k", 210.0 / 256},
    {"mxfp4", 17.0 / 32},
    {"iq4_nl", 18.0 / 32},
    {"iq4_xs", 136.0 / 256},
}};

constexpr double kF32 = 4.0;  // bytes: norms and biases stay f32 in GGUF files

// From the models' published config.json files (for Gemma 4 and Qwen 3.5 as quoted by training
// and inference projects' configurations); tests/partitioner_test.cpp checks each family against
// its published parameter counts.
std::vector<ModelShape> presets() {
  // Every family starts from the dimensions a config.json gives for a decoder.
  auto decoder = [](const char* name, int layers, int embd, int ff, int heads, int kv, int vocab) {
    ModelShape s;
    s.name = name;
    s.n_layers = layers;
    s.n_embd = embd;
    s.n_ff = ff;
    s.n_head = heads;
    s.n_kv_head = kv;
    s.n_vocab = vocab;
    return s;
  };
  auto llama = [&](const char* name, int layers, int embd, int ff, int heads, int kv, int vocab, bool tied, bool bias) {
    ModelShape s = decoder(name, layers, embd, ff, heads, kv, vocab);
    s.tied_embeddings = tied;
    s.qkv_bias = bias;
    return s;
  };
  // Gemma 3 (text): heads of 256 (27b: 128), not n_embd / n_head; tied embeddings; five sliding-
  // window layers (1024 tokens; the 1B's 512) to each full one.
  auto gemma3 = [&](const char* name, int layers, int embd, int ff, int heads, int kv, int vocab, int head_dim, int window) {
    ModelShape s = decoder(name, layers, embd, ff, heads, kv, vocab);
    s.tied_embeddings = true;
    s.head_dim = head_dim;
    s.full_attention_period = 6;
    s.sliding_window = window;
    return s;
  };
  // Qwen 3.5: three gated delta-net layers to each full-attention one, whose query also yields a
  // gate; heads of 256, a 248320-token vocabulary, delta-net heads of 128.
  auto qwen35 = [&](const char* name, int layers, int embd, int ff, int heads, int kv, bool tied, int linear_v_heads) {
    ModelShape s = decoder(name, layers, embd, ff, heads, kv, 248320);
    s.tied_embeddings = tied;
    s.head_dim = 256;
    s.full_attention_period = 4;
    s.linear_k_heads = 16;
    s.linear_v_heads = linear_v_heads;
    s.attn_output_gate = true;
    return s;
  };
  auto moe = [](ModelShape s, int experts, int used, int shared_expert_ff = 0) {
    s.n_expert = experts;
    s.n_expert_used = used;
    s.n_ff_shared_expert = shared_expert_ff;
    return s;
  };
  // Gemma 4: sliding layers of 256-wide heads, full ones of 512 (with fewer KV heads and K as V
  // on the larger models); the E models add per-layer embeddings and share the last layers' KV.
  // Windows: E2B/E4B 512 tokens, the larger ones 1024.
  auto gemma4 = [&](const char* name, int layers, int embd, int ff, int heads, int kv, int period, int kv_full, bool k_is_v) {
    ModelShape s = decoder(name, layers, embd, ff, heads, kv, 262144);
    s.tied_embeddings = true;
    s.head_dim = 256;
    s.full_attention_period = period;
    s.sliding_window = embd <= 2560 ? 512 : 1024;
    s.head_dim_full = 512;
    s.n_kv_head_full = kv_full;
    s.full_k_is_v = k_is_v;
    return s;
  };
  auto e_model = [](ModelShape s, int shared_kv_layers, bool double_ffn) {
    s.n_embd_per_layer = 256;
    s.n_shared_kv_layers = shared_kv_layers;
    s.shared_kv_double_ffn = double_ffn;
    return s;
  };
  ModelShape gemma4_26b = moe(gemma4("gemma-4-26b-a4b", 30, 2816, 704, 16, 8, 6, 2, true), 128, 8);
  gemma4_26b.n_ff_dense = 2112;
  ModelShape oss20 = moe(llama("gpt-oss-20b", 24, 2880, 2880, 64, 8, 201088, false, true), 32, 4);
  ModelShape oss120 = moe(llama("gpt-oss-120b", 36, 2880, 2880, 64, 8, 201088, false, true), 128, 4);
  for (ModelShape* s : {&oss20, &oss120}) {  // every other layer slides over 128 tokens
    s->head_dim = 64;
    s->expert_type = "mxfp4";
    s->full_attention_period = 2;
    s->sliding_window = 128;
  }
  ModelShape qwen3_30b = moe(llama("qwen3-30b-a3b", 48, 2048, 768, 32, 4, 151936, false, false), 128, 8);
  ModelShape qwen3_235b = moe(llama("qwen3-235b-a22b", 94, 4096, 1536, 64, 4, 151936, false, false), 128, 8);
  for (ModelShape* s : {&qwen3_30b, &qwen3_235b}) s->head_dim = 128;
  return {
      llama("tinyllama-1.1b", 22, 2048, 5632, 32, 4, 32000, false, false),
      llama("llama-3.2-1b", 16, 2048, 8192, 32, 8, 128256, true, false),
      llama("llama-3.2-3b", 28, 3072, 8192, 24, 8, 128256, true, false),
      llama("llama-2-7b", 32, 4096, 11008, 32, 32, 32000, false, false),
      llama("llama-2-13b", 40, 5120, 13824, 40, 40, 32000, false, false),
      llama("llama-3-8b", 32, 4096, 14336, 32, 8, 128256, false, false),
      llama("llama-3-70b", 80, 8192, 28672, 64, 8, 128256, false, false),
      llama("qwen2.5-0.5b", 24, 896, 4864, 14, 2, 151936, true, true),
      llama("qwen2.5-1.5b", 28, 1536, 8960, 12, 2, 151936, true, true),
      llama("qwen2.5-3b", 36, 2048, 11008, 16, 2, 151936, true, true),
      llama("qwen2.5-7b", 28, 3584, 18944, 28, 4, 152064, false, true),
      llama("qwen2.5-14b", 48, 5120, 13824, 40, 8, 152064, false, true),
      llama("qwen2.5-32b", 64, 5120, 27648, 40, 8, 152064, false, true),
      llama("qwen2.5-72b", 80, 8192, 29568, 64, 8, 152064, false, true),
      gemma3("gemma-3-1b", 26, 1152, 6912, 4, 1, 262144, 256, 512),
      gemma3("gemma-3-4b", 34, 2560, 10240, 8, 4, 262208, 256, 1024),
      gemma3("gemma-3-12b", 48, 3840, 15360, 16, 8, 262208, 256, 1024),
      gemma3("gemma-3-27b", 62, 5376, 21504, 32, 16, 262208, 128, 1024),
      e_model(gemma4("gemma-4-e2b", 35, 1536, 6144, 8, 1, 5, 1, false), 20, true),
      e_model(gemma4("gemma-4-e4b", 42, 2560, 10240, 8, 2, 6, 2, false), 18, false),
      gemma4("gemma-4-31b", 60, 5376, 21504, 32, 16, 6, 4, true),
      qwen35("qwen3.5-0.8b", 24, 1024, 3584, 8, 2, true, 16),
      qwen35("qwen3.5-27b", 64, 5120, 17408, 24, 4, false, 48),
      // Mixture of experts (n_ff is one expert's width).
      qwen3_30b,
      qwen3_235b,
      oss20,
      oss120,
      gemma4_26b,
      moe(qwen35("qwen3.5-35b-a3b", 40, 2048, 512, 16, 2, false, 32), 256, 8, 512),
      moe(qwen35("qwen3.5-122b-a10b", 48, 3072, 1024, 32, 2, false, 64), 256, 8, 1024),
      moe(qwen35("qwen3.5-397b-a17b", 60, 4096, 1024, 32, 2, false, 64), 512, 10, 1024),
  };
}

void require_positive(int value, const char* what) {
  if (value <= 0) throw std::invalid_argument(std::string("model shape: ") + what + " must be positive");
}

}  // namespace

std::optional<double> bytes_per_weight(std::string_view weight_type) {
  for (const TypeSize& t : kTypeSizes)
    if (t.name == weight_type) return t.bytes_per_weight;
  return std::nullopt;
}

std::vector<std::string_view> weight_type_names() {
  std::vector<std::string_view> names;
  for (const TypeSize& t : kTypeSizes) names.push_back(t.name);
  return names;
}

namespace {

// Bytes per weight of a type name, or of the given fallback when the name is empty.
double type_bytes(const std::string& type, double fallback, const char* what) {
  if (type.empty()) return fallback;
  auto known = bytes_per_weight(type);
  if (!known) throw std::invalid_argument(std::string("model shape: unknown ") + what + " '" + type + "'");
  return *known;
}

void check_shape(const ModelShape& s) {
  require_positive(s.n_layers, "n_layers");
  require_positive(s.n_embd, "n_embd");
  require_positive(s.n_ff, "n_ff");
  require_positive(s.n_head, "n_head");
  require_positive(s.n_kv_head, "n_kv_head");
  require_positive(s.n_vocab, "n_vocab");
  if (s.n_expert < 0 || (s.n_expert > 0 && (s.n_expert_used <= 0 || s.n_expert_used > s.n_expert)))
    throw std::invalid_argument("model shape: experts used must be between 1 and the expert count");
  if (s.sliding_window < 0 || (s.sliding_window > 0 && s.full_attention_period < 1))
    throw std::invalid_argument("model shape: a sliding window needs a full-attention period (which layers slide)");
  if (s.full_attention_period < 0 || s.head_dim_full < 0 || s.n_kv_head_full < 0 || s.n_embd_per_layer < 0 || s.n_ff_dense < 0 ||
      s.n_ff_shared_expert < 0 || s.linear_k_heads < 0 || s.linear_v_heads < 0)
    throw std::invalid_argument("model shape: a layer dimension is negative");
  if (s.n_shared_kv_layers < 0 || s.n_shared_kv_layers > s.n_layers - 2)
    throw std::invalid_argument("model shape: shared-KV layers must leave at least two layers with a cache of their own");
  if (s.linear_v_heads > 0 &&
      (s.full_attention_period < 2 || s.linear_k_heads <= 0 || s.linear_head_dim <= 0 || s.linear_conv_kernel < 1))
    throw std::invalid_argument(
        "model shape: delta-net layers need key heads, a head size, a kernel and a full-attention period of 2 or more");
}

// What one block holds and what a token multiplies, by kind of tensor.
struct BlockSize {
  double matrix_params = 0;  // in the block weight type
  double expert_params = 0;  // routed experts, in the expert type
  double f32_params = 0;     // norms, biases, routers, convolution taps
  double flop_params = 0;    // matrix weights one token multiplies (used experts only)
  double state_bytes = 0;    // a recurrent layer's fixed state per stream
  double kv_dim = 0;         // K (or V) values per token this layer caches, 0 for none
  bool full = true;          // attends over the whole context (not a sliding window, not a delta-net)
};

BlockSize block_size(const ModelShape& s, int layer, int head_dim) {
  const double embd = s.n_embd;
  const bool full = s.full_attention_period == 0 || layer % s.full_attention_period == s.full_attention_period - 1;
  const bool own_kv = layer < s.n_layers - s.n_shared_kv_layers;
  BlockSize b;
  b.full = full;
  if (s.linear_v_heads > 0 && !full) {
    // A gated delta-net: q, k, v in one projection, an output gate z, per-head a and b, the
    // output projection; f32 convolution taps over q, k, v, a norm, A and dt per head.
    const double keys = double(s.linear_k_heads) * s.linear_head_dim, values = double(s.linear_v_heads) * s.linear_head_dim;
    const double channels = 2 * keys + values;
    b.matrix_params = embd * channels + embd * values + 2 * embd * s.linear_v_heads + values * embd;
    b.f32_params = s.linear_conv_kernel * channels + s.linear_head_dim + 2.0 * s.linear_v_heads;
    b.state_bytes =
        kF32 * ((s.linear_conv_kernel - 1) * channels + double(s.linear_v_heads) * s.linear_head_dim * s.linear_head_dim);
  } else {
    const double hd = full && s.head_dim_full > 0 ? s.head_dim_full : head_dim;
    const double kv_dim = (full && s.n_kv_head_full > 0 ? s.n_kv_head_full : s.n_kv_head) * hd;
    const double q_dim = s.n_head * hd;
    const double kv_matrices = own_kv ? (full && s.full_k_is_v ? 1 : 2) : 0;
    b.matrix_params = embd * q_dim * (s.attn_output_gate ? 2 : 1) + kv_matrices * embd * kv_dim + q_dim * embd;
    b.f32_params = s.qkv_bias ? q_dim + 2 * kv_dim : 0;
    b.kv_dim = own_kv ? kv_dim : 0;
  }
  b.f32_params += 2 * embd;  // the norms before attention and FFN
  const double ffn = 3 * embd * s.n_ff * (!own_kv && s.shared_kv_double_ffn ? 2 : 1);
  if (s.n_expert > 0) {
    b.expert_params = s.n_expert * ffn;
    b.f32_params += embd * s.n_expert;  // the router
    const double beside = 3 * embd * (s.n_ff_dense + s.n_ff_shared_expert);
    b.matrix_params += beside;
    if (s.n_ff_shared_expert > 0) b.f32_params += embd;  // the shared expert's gate
    b.flop_params = b.matrix_params + s.n_expert_used * ffn + embd * s.n_expert;
  } else {
    b.matrix_params += ffn;
    b.flop_params = b.matrix_params;
  }
  if (s.n_embd_per_layer > 0) {  // the per-layer input's gate and projection
    b.matrix_params += 2 * embd * s.n_embd_per_layer;
    b.flop_params += 2 * embd * s.n_embd_per_layer;
    b.f32_params += embd;
  }
  return b;
}

// A layer that reads an earlier layer's cache must share that layer's stage (as the runtime's
// ModelConfig::stage_may_start_at): a sliding shared layer reads the last sliding layer with a
// cache, a full one the last full one.
std::vector<bool> shared_kv_cuts(const ModelShape& s) {
  const int own = s.n_layers - s.n_shared_kv_layers;
  const int period = s.full_attention_period;
  auto source = [&](int l) {
    if (l < own) return l;
    const bool full = period == 0 || l % period == period - 1;
    return own - (full ? 1 : 2);
  };
  std::vector<bool> no_cut(static_cast<size_t>(s.n_layers) + 1, false);
  for (int b = 1; b < s.n_layers; ++b)
    for (int l = b; l < s.n_layers; ++l)
      if (source(l) < b) no_cut[static_cast<size_t>(b)] = true;
  return no_cut;
}

}  // namespace

ModelSpec model_spec_from_shape(const ModelShape& s) {
  check_shape(s);
  const double bpw = s.bytes_per_weight > 0 ? s.bytes_per_weight : type_bytes(s.weight_type, 0, "weight type");
  const double expert_bpw = type_bytes(s.expert_type, bpw, "expert weight type");
  const double embd = s.n_embd;
  const int head_dim = s.head_dim > 0 ? s.head_dim : s.n_embd / s.n_head;

  ModelSpec spec;
  spec.name = s.name;
  spec.n_layers = s.n_layers;
  double max_kv_dim = 0;
  for (int l = 0; l < s.n_layers; ++l) {
    const BlockSize b = block_size(s, l, head_dim);
    spec.layer_weight_bytes.push_back(b.matrix_params * bpw + b.expert_params * expert_bpw + b.f32_params * kF32);
    spec.layer_flops_per_token.push_back(2 * b.flop_params);
    if (s.n_expert > 0) spec.layer_expert_bytes.push_back(b.expert_params * expert_bpw);
    if (s.linear_v_heads > 0) spec.layer_state_bytes.push_back(b.state_bytes);
    if (s.n_shared_kv_layers > 0) spec.layer_shares_kv.push_back(b.kv_dim == 0);
    if (s.sliding_window > 0 && s.linear_v_heads == 0) spec.layer_window.push_back(b.full ? 0 : s.sliding_window);
    max_kv_dim = std::max(max_kv_dim, b.kv_dim);
  }
  if (s.n_expert > 0) {
    spec.n_expert = s.n_expert;
    spec.n_expert_used = s.n_expert_used;
  }
  if (s.n_shared_kv_layers > 0) spec.no_cut_at = shared_kv_cuts(s);
  spec.n_embd_per_layer = s.n_embd_per_layer;
  spec.weight_type = s.weight_type;
  spec.embedding_bytes = double(s.n_vocab) * embd * bpw;
  if (s.n_embd_per_layer > 0) {  // the per-layer table and its projection from the embedding, on the first stage
    const double per_layer = double(s.n_layers) * s.n_embd_per_layer;
    spec.per_layer_input_bytes = (double(s.n_vocab) + embd) * per_layer * bpw + s.n_embd_per_layer * kF32;
  }
  spec.output_bytes = double(s.n_vocab) * embd * bpw + embd * kF32;  // LM head + final norm
  spec.output_flops_per_token = 2 * double(s.n_vocab) * embd;
  spec.tied_embeddings = s.tied_embeddings;
  spec.n_head = s.n_head;
  // Layers of different shapes are sized as the widest: the KV estimate is an upper bound.
  spec.n_kv_head = s.n_kv_head;
  spec.head_dim = max_kv_dim > 0 ? static_cast<int>(std::ceil(max_kv_dim / s.n_kv_head)) : head_dim;
  spec.n_embd = s.n_embd;
  spec.n_ff = s.n_ff;
  spec.n_vocab = s.n_vocab;
  return spec;
}

std::optional<ModelShape> preset_shape(std::string_view name) {
  for (ModelShape& s : presets())
    if (s.name == name) return std::move(s);
  return std::nullopt;
}

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const ModelShape& s : presets()) names.push_back(s.name);
  return names;
}

double layer_read_bytes(const ModelSpec& spec, int layer, double tokens) {
  const double all = spec.layer_weight_bytes[static_cast<size_t>(layer)];
  if (spec.layer_expert_bytes.empty() || spec.n_expert <= 0) return all;
  const double experts = spec.layer_expert_bytes[static_cast<size_t>(layer)];
  const double miss = 1.0 - double(spec.n_expert_used) / spec.n_expert;  // one token skips a given expert
  const double touched = 1.0 - std::pow(miss, std::max(1.0, tokens));
  return all - experts + experts * touched;
}

double active_weight_bytes(const ModelSpec& spec) {
  double bytes = 0;
  for (int l = 0; l < spec.n_layers; ++l) bytes += layer_read_bytes(spec, l, 1);
  return bytes;
}

double total_weight_bytes(const ModelSpec& spec) {
  double blocks = std::accumulate(spec.layer_weight_bytes.begin(), spec.layer_weight_bytes.end(), 0.0);
  double head = spec.tied_embeddings ? spec.output_bytes - spec.embedding_bytes : spec.output_bytes;
  return blocks + spec.embedding_bytes + spec.per_layer_input_bytes + head;
}

bool can_cut(const ModelSpec& spec, int boundary) {
  return boundary <= 0 || boundary >= spec.n_layers || spec.no_cut_at.empty() || !spec.no_cut_at[static_cast<size_t>(boundary)];
}

int kv_cache_rows(int window, int n_ctx, int max_batch) { return window > 0 ? std::min(n_ctx, window + max_batch) : n_ctx; }

}  // namespace hearth::partitioner
