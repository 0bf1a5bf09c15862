#include "partitioner/model_spec.h"

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

struct Preset {
  std::string_view name;
  int n_layers, n_embd, n_ff, n_head, n_kv_head, n_vocab;
  bool tied_embeddings, qkv_bias;
  int head_dim = 0, n_expert = 0, n_expert_used = 0;  // MoE: n_ff is one expert's width
  std::string_view expert_type = {};                   // as ModelShape::expert_type
};

// From the models' published config.json files.
constexpr Preset kPresets[] = {
    {"tinyllama-1.1b", 22, 2048, 5632, 32, 4, 32000, false, false},
    {"llama-3.2-1b", 16, 2048, 8192, 32, 8, 128256, true, false},
    {"llama-3.2-3b", 28, 3072, 8192, 24, 8, 128256, true, false},
    {"llama-2-7b", 32, 4096, 11008, 32, 32, 32000, false, false},
    {"llama-2-13b", 40, 5120, 13824, 40, 40, 32000, false, false},
    {"llama-3-8b", 32, 4096, 14336, 32, 8, 128256, false, false},
    {"llama-3-70b", 80, 8192, 28672, 64, 8, 128256, false, false},
    {"qwen2.5-0.5b", 24, 896, 4864, 14, 2, 151936, true, true},
    {"qwen2.5-1.5b", 28, 1536, 8960, 12, 2, 151936, true, true},
    {"qwen2.5-3b", 36, 2048, 11008, 16, 2, 151936, true, true},
    {"qwen2.5-7b", 28, 3584, 18944, 28, 4, 152064, false, true},
    {"qwen2.5-14b", 48, 5120, 13824, 40, 8, 152064, false, true},
    {"qwen2.5-32b", 64, 5120, 27648, 40, 8, 152064, false, true},
    {"qwen2.5-72b", 80, 8192, 29568, 64, 8, 152064, false, true},
    // Gemma 3 (text): heads of 256 (27b: 128), not n_embd / n_head; tied embeddings. Its sliding-
    // window layers are sized as full ones (the planner does not know windows yet).
    {"gemma-3-1b", 26, 1152, 6912, 4, 1, 262144, true, false, 256},
    {"gemma-3-4b", 34, 2560, 10240, 8, 4, 262208, true, false, 256},
    {"gemma-3-12b", 48, 3840, 15360, 16, 8, 262208, true, false, 256},
    {"gemma-3-27b", 62, 5376, 21504, 32, 16, 262208, true, false, 128},
    // Mixture of experts.
    {"qwen3-30b-a3b", 48, 2048, 768, 32, 4, 151936, false, false, 128, 128, 8},
    {"qwen3-235b-a22b", 94, 4096, 1536, 64, 4, 151936, false, false, 128, 128, 8},
    {"gpt-oss-20b", 24, 2880, 2880, 64, 8, 201088, false, true, 64, 32, 4, "mxfp4"},
    {"gpt-oss-120b", 36, 2880, 2880, 64, 8, 201088, false, true, 64, 128, 4, "mxfp4"},
};

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

ModelSpec model_spec_from_shape(const ModelShape& s) {
  require_positive(s.n_layers, "n_layers");
  require_positive(s.n_embd, "n_embd");
  require_positive(s.n_ff, "n_ff");
  require_positive(s.n_head, "n_head");
  require_positive(s.n_kv_head, "n_kv_head");
  require_positive(s.n_vocab, "n_vocab");
  double bpw = s.bytes_per_weight;
  if (bpw <= 0) {
    auto known = bytes_per_weight(s.weight_type);
    if (!known) throw std::invalid_argument("model shape: unknown weight type '" + s.weight_type + "'");
    bpw = *known;
  }
  double expert_bpw = bpw;
  if (!s.expert_type.empty()) {
    auto known = bytes_per_weight(s.expert_type);
    if (!known) throw std::invalid_argument("model shape: unknown expert weight type '" + s.expert_type + "'");
    expert_bpw = *known;
  }
  if (s.n_expert < 0 || (s.n_expert > 0 && (s.n_expert_used <= 0 || s.n_expert_used > s.n_expert)))
    throw std::invalid_argument("model shape: experts used must be between 1 and the expert count");
  const double embd = s.n_embd;
  const int head_dim = s.head_dim > 0 ? s.head_dim : s.n_embd / s.n_head;
  const double q_dim = double(s.n_head) * head_dim;
  const double kv_dim = double(s.n_kv_head) * head_dim;
  // Matmul weights of one block: wq, wk, wv, wo, then SwiGLU's gate, up and down (per expert,
  // with an f32 router in front of them in a MoE block).
  const double attention_params = embd * q_dim + 2 * embd * kv_dim + q_dim * embd;
  const double ffn_params = 3 * embd * s.n_ff;
  const double experts = s.n_expert > 0 ? s.n_expert : 1, used = s.n_expert > 0 ? s.n_expert_used : 1;
  const double router_params = s.n_expert > 0 ? embd * s.n_expert : 0;
  const double f32_params = 2 * embd + router_params + (s.qkv_bias ? q_dim + 2 * kv_dim : 0);  // norms, router, biases

  ModelSpec spec;
  spec.name = s.name;
  spec.n_layers = s.n_layers;
  const double ffn_bpw = s.n_expert > 0 ? expert_bpw : bpw;
  spec.layer_weight_bytes.assign(s.n_layers, attention_params * bpw + experts * ffn_params * ffn_bpw + f32_params * kF32);
  spec.layer_flops_per_token.assign(s.n_layers, 2 * (attention_params + used * ffn_params + router_params));
  if (s.n_expert > 0) {
    spec.n_expert = s.n_expert;
    spec.n_expert_used = s.n_expert_used;
    spec.layer_expert_bytes.assign(s.n_layers, experts * ffn_params * ffn_bpw);
  }
  spec.weight_type = s.weight_type;
  spec.embedding_bytes = double(s.n_vocab) * embd * bpw;
  spec.output_bytes = double(s.n_vocab) * embd * bpw + embd * kF32;  // LM head + final norm
  spec.output_flops_per_token = 2 * double(s.n_vocab) * embd;
  spec.tied_embeddings = s.tied_embeddings;
  spec.n_head = s.n_head;
  spec.n_kv_head = s.n_kv_head;
  spec.head_dim = head_dim;
  spec.n_embd = s.n_embd;
  spec.n_ff = s.n_ff;
  spec.n_vocab = s.n_vocab;
  return spec;
}

std::optional<ModelShape> preset_shape(std::string_view name) {
  for (const Preset& p : kPresets) {
    if (p.name != name) continue;
    ModelShape s;
    s.name = std::string(p.name);
    s.n_layers = p.n_layers;
    s.n_embd = p.n_embd;
    s.n_ff = p.n_ff;
    s.n_head = p.n_head;
    s.n_kv_head = p.n_kv_head;
    s.n_vocab = p.n_vocab;
    s.tied_embeddings = p.tied_embeddings;
    s.qkv_bias = p.qkv_bias;
    s.head_dim = p.head_dim;
    s.n_expert = p.n_expert;
    s.n_expert_used = p.n_expert_used;
    s.expert_type = std::string(p.expert_type);
    return s;
  }
  return std::nullopt;
}

std::vector<std::string_view> preset_names() {
  std::vector<std::string_view> names;
  for (const Preset& p : kPresets) names.push_back(p.name);
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
  return blocks + spec.embedding_bytes + head;
}

bool can_cut(const ModelSpec& spec, int boundary) {
  return boundary <= 0 || boundary >= spec.n_layers || spec.no_cut_at.empty() || !spec.no_cut_at[static_cast<size_t>(boundary)];
}

}  // namespace hearth::partitioner
