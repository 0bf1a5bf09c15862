#include "runtime/model/model_maker.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <thread>

#include "runtime/format/gguf_writer.h"
#include "runtime/kernels/kernels.h"
#include "runtime/model/sampler.h"
#include "runtime/kernels/thread_pool.h"

namespace hearth::runtime {

namespace {

struct Preset {
  const char* name;
  RandomModelShape shape;
};

const Preset kPresets[] = {
    {"tiny", {512, 128, 4, 4, 2, 384, 512, 10000.f, 1e-5f}},
    {"tinyllama-1.1b", {32000, 2048, 22, 32, 4, 5632, 2048, 10000.f, 1e-5f}},
    {"llama-2-7b", {32000, 4096, 32, 32, 32, 11008, 4096, 10000.f, 1e-5f}},
    {"tiny-moe", {512, 128, 4, 4, 2, 384, 512, 1e6f, 1e-6f, 0, 8, 2, 64}},
    // Qwen3-30B-A3B's config.json: 128 experts of 768, 8 per token; 6144 is its (unused) dense width.
    {"qwen3-30b-a3b", {151936, 2048, 48, 32, 4, 6144, 40960, 1e6f, 1e-6f, 128, 128, 8, 768}},
};

const std::string kSpace = "\xe2\x96\x81";

// Byte-level SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, the printable ASCII
// characters and U+2581, then pseudo-words of those characters up to n_vocab.
void add_byte_vocab(GgufMetadata& md, int n_vocab, uint64_t seed, const std::vector<std::string>& control) {
  std::vector<GgufValue> tokens, scores, types;
  const auto add = [&](std::string text, float score, int32_t type) {
    tokens.push_back(GgufValue::str(std::move(text)));
    scores.push_back(GgufValue::f32(score));
    types.push_back(GgufValue::i32(type));
  };
  add("<unk>", 0.f, 2);
  add("<s>", 0.f, 3);
  add("</s>", 0.f, 3);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    add(name, 0.f, 6);
  }
  add(kSpace, -1.f, 1);
  for (char c = 33; c < 127; ++c) add(std::string(1, c), -1.f, 1);
  // Pseudo-words: the syllables of the word's index in base 20, so every piece is unique (the
  // tokenizer indexes pieces by text). `seed` shuffles which word gets which id.
  static const char* const syllables[] = {"ka", "lo", "mi", "ne", "ru", "ta", "si", "po", "an", "el",
                                          "or", "ve", "du", "th", "er", "in", "st", "ow", "ly", "ch"};
  const int first_word = static_cast<int>(tokens.size());
  Rng rng(seed ^ 0x766f636162ull);
  const uint64_t offset = rng.next() % 400;
  for (int i = first_word; i < n_vocab; ++i) {
    std::string w = kSpace;
    uint64_t n = static_cast<uint64_t>(i - first_word) + offset;
    do {
      w += syllables[n % std::size(syllables)];
      n /= std::size(syllables);
    } while (n > 0);
    add(w, -2.f - static_cast<float>(i) * 1e-4f, 1);
  }
  if (control.size() > static_cast<size_t>(n_vocab - first_word))
    throw std::invalid_argument("the vocabulary has room for " + std::to_string(n_vocab - first_word) + " control tokens");
  for (size_t c = 0; c < control.size(); ++c) {
    const size_t at = tokens.size() - control.size() + c;
    tokens[at] = GgufValue::str(control[c]);
    scores[at] = GgufValue::f32(0.f);
    types[at] = GgufValue::i32(3);
  }
  md.set("tokenizer.ggml.model", GgufValue::str("llama"));
  md.set("tokenizer.ggml.tokens", GgufValue::array(GgufType::STRING, std::move(tokens)));
  md.set("tokenizer.ggml.scores", GgufValue::array(GgufType::FLOAT32, std::move(scores)));
  md.set("tokenizer.ggml.token_type", GgufValue::array(GgufType::INT32, std::move(types)));
  md.set("tokenizer.ggml.bos_token_id", GgufValue::u32(1));
  md.set("tokenizer.ggml.eos_token_id", GgufValue::u32(2));
  md.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(0));
  md.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
}

int copy_vocab(GgufMetadata& md, const std::string& from) {
  const GgufFile src = GgufFile::open(from);
  int n = 0;
  for (const auto& [key, value] : src.metadata().all()) {
    if (key.rfind("tokenizer.", 0) != 0) continue;
    md.set(key, value);
    if (key == "tokenizer.ggml.tokens") n = static_cast<int>(std::get<GgufArray>(value.value).items.size());
  }
  if (n == 0) throw std::runtime_error("'" + from + "' has no tokenizer.ggml.tokens to copy");
  return n;
}

int head_dim_of(const RandomModelShape& s) { return s.head_dim > 0 ? s.head_dim : s.n_embd / std::max(1, s.n_head); }

uint32_t block_of(TensorType t) { return tensor_type_info(static_cast<uint32_t>(t))->block_elems; }

// The type of a matrix whose rows hold n_in elements.
TensorType matrix_type(TensorType type, uint64_t n_in) { return n_in % block_of(type) == 0 ? type : k_quant_fallback(type); }

void check_shape(const RandomModelShape& s, TensorType type) {
  if (s.n_embd <= 0 || s.n_layer <= 0 || s.n_head <= 0 || s.n_head_kv <= 0 || s.n_ff <= 0 || s.n_vocab <= 0 || s.n_ctx <= 0 ||
      s.head_dim < 0)
    throw std::invalid_argument("model dimensions must be positive");
  // The limits read_model_config() accepts, named by the flags that set them: mkmodel writes no
  // file that hearth would then refuse to read.
  const std::pair<const char*, std::pair<int, int>> limits[] = {
      {"--dim", {s.n_embd, 1 << 24}},    {"--ffn", {s.n_ff, 1 << 24}},         {"--expert-ffn", {s.n_ff_exp, 1 << 24}},
      {"--ctx", {s.n_ctx, 1 << 24}},     {"--layers", {s.n_layer, 4096}},      {"--heads", {s.n_head, 4096}},
      {"--kv-heads", {s.n_head_kv, 4096}}, {"--experts", {s.n_expert, 4096}}, {"--vocab", {s.n_vocab, 1 << 24}}};
  for (const auto& [flag, value_max] : limits)
    if (value_max.first > value_max.second)
      throw std::invalid_argument(std::string(flag) + " " + std::to_string(value_max.first) + " is out of range (at most " +
                                  std::to_string(value_max.second) + ")");
  if (s.n_expert < 0 || (s.n_expert > 0 && (s.n_expert_used <= 0 || s.n_expert_used > s.n_expert || s.n_ff_exp <= 0)))
    throw std::invalid_argument("a mixture of experts needs 1 <= experts used <= experts and a positive expert FFN size");
  if ((s.head_dim == 0 && s.n_embd % s.n_head != 0) || s.n_head % s.n_head_kv != 0 || head_dim_of(s) % 2 != 0)
    throw std::invalid_argument("dim must be a multiple of heads, heads a multiple of kv-heads, and the head size even");
  for (const int n_in : {s.n_embd, s.n_expert > 0 ? s.n_ff_exp : s.n_ff, s.n_head * head_dim_of(s)}) {
    const TensorType t = matrix_type(type, static_cast<uint64_t>(n_in));
    if (n_in % block_of(t) != 0)
      throw std::invalid_argument("dim, ffn and heads x head size must be multiples of " + std::to_string(block_of(t)) +
                                  " for type " + std::string(tensor_type_name(type)));
  }
}

const char* const kMakeableArchs[] = {"llama",  "qwen2",  "qwen3",  "qwen3moe",  "olmoe",  "phi3",
                                      "gemma3", "gemma4", "qwen35", "qwen35moe", "gpt-oss"};

void check_arch(const std::string& arch, const RandomModelShape& s) {
  if (std::find(std::begin(kMakeableArchs), std::end(kMakeableArchs), arch) == std::end(kMakeableArchs))
    throw std::invalid_argument("unknown architecture '" + arch +
                                "' (llama, qwen2, qwen3, qwen3moe, olmoe, phi3, gemma3, gemma4, qwen35, qwen35moe, gpt-oss)");
  const bool moe_arch = arch == "qwen3moe" || arch == "olmoe" || arch == "gpt-oss" || arch == "qwen35moe";
  if (moe_arch && s.n_expert == 0)
    throw std::invalid_argument("architecture '" + arch + "' needs experts (a MoE preset such as tiny-moe, or --experts)");
  if ((arch == "qwen2" || arch == "qwen3" || arch == "phi3" || arch == "gemma3" || arch == "qwen35") && s.n_expert > 0)
    throw std::invalid_argument("architecture '" + arch + "' has no experts (qwen3moe, olmoe, gemma4 and llama do)");
}

}  // namespace

std::optional<RandomModelShape> random_model_preset(const std::string& name) {
  for (const auto& p : kPresets)
    if (name == p.name) return p.shape;
  return std::nullopt;
}

namespace {

// The architecture whose files have a planner shape's layout.
std::string arch_of(const partitioner::ModelShape& s) {
  if (s.linear_v_heads > 0) return s.n_expert > 0 ? "qwen35moe" : "qwen35";
  if (s.head_dim_full > 0 || s.n_embd_per_layer > 0) return "gemma4";
  if (s.expert_type == "mxfp4") return "gpt-oss";
  if (s.full_attention_period > 0) return "gemma3";
  if (s.n_expert > 0) return "qwen3moe";
  return s.qkv_bias ? "qwen2" : "llama";
}

}  // namespace

void apply_preset_layout(const partitioner::ModelShape& s, MakeModelOptions& o) {
  o.arch = arch_of(s);
  RandomModelShape& r = o.shape;
  r = RandomModelShape{};
  r.n_vocab = s.n_vocab;
  r.n_embd = s.n_embd;
  r.n_layer = s.n_layers;
  r.n_head = s.n_head;
  r.n_head_kv = s.n_kv_head;
  r.n_ctx = 4096;
  r.head_dim = s.head_dim;
  r.rms_eps = 1e-6f;
  r.n_ff = s.n_expert > 0 && s.n_ff_dense > 0 ? s.n_ff_dense : s.n_ff;
  if (s.n_expert > 0) {
    r.n_expert = s.n_expert;
    r.n_expert_used = s.n_expert_used;
    r.n_ff_exp = s.n_ff;
  }
  o.tied_output = s.tied_embeddings;
  if (!s.expert_type.empty() && !o.expert_type) o.expert_type = tensor_type_from_name(s.expert_type);
  if (s.sliding_window > 0) o.sliding_window = s.sliding_window;
  if (o.arch == "gpt-oss" && s.full_attention_period != 2)
    throw std::invalid_argument("mkmodel writes gpt-oss files with every other layer sliding, not a full one every " +
                                std::to_string(s.full_attention_period));
  if (o.arch == "gemma3" && s.full_attention_period != 6)
    throw std::invalid_argument("mkmodel writes gemma3 files with a full layer every sixth, not every " +
                                std::to_string(s.full_attention_period));
  if (o.arch == "gemma4") {
    const int head_dim = s.head_dim > 0 ? s.head_dim : s.n_embd / s.n_head;
    if (s.head_dim_full != 2 * head_dim)
      throw std::invalid_argument("mkmodel writes gemma4 full layers with heads twice the sliding ones' size");
    o.full_layer_period = s.full_attention_period;
    o.full_kv_heads = s.n_kv_head_full;
    o.full_v_from_k = s.full_k_is_v;
    o.per_layer_embd = s.n_embd_per_layer;
    o.shared_kv_layers = s.n_shared_kv_layers;
    o.double_wide_shared_ffn = s.shared_kv_double_ffn;
  }
  if (s.linear_v_heads > 0) {
    if (s.full_attention_period != 4 || s.linear_conv_kernel != 4 || !s.attn_output_gate)
      throw std::invalid_argument(
          "mkmodel writes qwen35 files with gated full attention every fourth layer and 4-tap convolutions");
    o.ssm_k_heads = s.linear_k_heads;
    o.ssm_v_heads = s.linear_v_heads;
    o.ssm_head_dim = s.linear_head_dim;
    o.n_ff_shared_expert = s.n_ff_shared_expert;
  }
}

std::vector<std::string> random_model_arch_names() { return {std::begin(kMakeableArchs), std::end(kMakeableArchs)}; }

TensorType k_quant_fallback(TensorType type) {
  switch (type) {
    // As llama.cpp, except Q5_K: llama.cpp uses Q5_1, which this runtime does not compute.
    case TensorType::Q4_K: return TensorType::Q5_0;
    case TensorType::Q5_K: return TensorType::Q8_0;
    case TensorType::Q6_K: return TensorType::Q8_0;
    case TensorType::IQ4_XS: return TensorType::IQ4_NL;
    default: return type;
  }
}

std::vector<std::string> random_model_preset_names() {
  std::vector<std::string> out;
  for (const auto& p : kPresets) out.emplace_back(p.name);
  return out;
}

void make_random_model(const std::string& path, const MakeModelOptions& o) {
  RandomModelShape s = o.shape;
  GgufWriter w;
  GgufMetadata& md = w.metadata();
  if (o.vocab_from.empty()) {
    if (s.n_vocab < 400) throw std::invalid_argument("the byte-level vocabulary needs at least 400 tokens");
    add_byte_vocab(md, s.n_vocab, o.seed, o.control_tokens);
  } else {
    s.n_vocab = copy_vocab(md, o.vocab_from);
  }
  if (!o.chat_template.empty()) md.set("tokenizer.chat_template", GgufValue::str(o.chat_template));
  check_shape(s, o.type);
  if (o.expert_type) check_shape(s, *o.expert_type);
  check_arch(o.arch, s);
  const bool moe = s.n_expert > 0;
  const bool gemma4 = o.arch == "gemma4";
  const bool qk_norm = o.arch == "qwen3" || o.arch == "qwen3moe" || o.arch == "olmoe" || o.arch == "gemma3" || gemma4 ||
                       o.arch == "qwen35" || o.arch == "qwen35moe";
  const bool fused = o.arch == "phi3", gemma = o.arch == "gemma3" || gemma4, oss = o.arch == "gpt-oss";
  // Gemma 4 (its 31B layout): every sixth layer (and the last of a shorter model) is full, with
  // twice the head size, half the KV heads, no attn_v (V is K's projection) and RoPE on a quarter
  // of its dimensions (rope_freqs: ones, then factors that stop the rest).
  const int period = o.full_layer_period;
  if (gemma4 && period < 2) throw std::invalid_argument("gemma4 needs a full-layer period of at least 2");
  const auto gemma4_full = [&](int l) {
    return gemma4 && (l % period == period - 1 || (s.n_layer < period && l == s.n_layer - 1));
  };
  // Gemma 4 E2B/E4B: layers from n_layer_kv on read the cache of the last earlier layer of their kind.
  if ((o.per_layer_embd != 0 || o.shared_kv_layers != 0) && !gemma4)
    throw std::invalid_argument("per-layer embeddings and shared-KV layers are Gemma 4's (--arch gemma4)");
  if (o.per_layer_embd < 0 || o.shared_kv_layers < 0 || (o.shared_kv_layers > 0 && o.shared_kv_layers + 2 > s.n_layer))
    throw std::invalid_argument("shared-KV layers must leave at least two layers with a cache of their own");
  const int n_layer_kv = s.n_layer - o.shared_kv_layers;
  if (o.shared_kv_layers > 0 && (!gemma4_full(n_layer_kv - 1) || gemma4_full(n_layer_kv - 2)))
    throw std::invalid_argument(
        "the last layer with a KV cache of its own must be a full one and the one before it a sliding one "
        "(shared-KV layers read theirs): choose --shared-kv-layers to leave a multiple of the period");
  const auto own_kv = [&](int l) { return l < n_layer_kv; };
  // Gemma 4 E2B: the shared-KV layers' FFN is twice as wide, said per layer as llama.cpp reads it.
  if (o.double_wide_shared_ffn && (!gemma4 || o.shared_kv_layers == 0 || moe))
    throw std::invalid_argument("a double-wide FFN is for the shared-KV layers of a dense gemma4 model");
  const auto ffn_width = [&](int l) { return (o.double_wide_shared_ffn && !own_kv(l) ? 2 : 1) * s.n_ff; };
  // Qwen 3.5: three gated delta-net layers for each full-attention one (every fourth); the
  // delta-nets have a key head per two value heads, both of the attention's head size.
  const bool qwen35 = o.arch == "qwen35" || o.arch == "qwen35moe";
  const auto recurrent = [&](int l) { return qwen35 && (l + 1) % 4 != 0; };
  const uint64_t ssm_v_heads = static_cast<uint64_t>(o.ssm_v_heads > 0 ? o.ssm_v_heads : s.n_head);
  const uint64_t ssm_k_heads = o.ssm_k_heads > 0 ? static_cast<uint64_t>(o.ssm_k_heads) : std::max<uint64_t>(1, ssm_v_heads / 2);
  if (ssm_v_heads % ssm_k_heads != 0) throw std::invalid_argument("the delta-nets' key heads must divide their value heads");
  if ((gemma || oss) && o.sliding_window <= 0) throw std::invalid_argument(o.arch + " needs a positive sliding window");
  const int hd = head_dim_of(s);
  const uint64_t ssm_hd = static_cast<uint64_t>(o.ssm_head_dim > 0 ? o.ssm_head_dim : hd);
  const uint64_t FS = static_cast<uint64_t>(o.n_ff_shared_expert > 0 ? o.n_ff_shared_expert : s.n_ff_exp);
  if (!o.rope_freq_factors.empty() && o.rope_freq_factors.size() != static_cast<size_t>(hd / 2))
    throw std::invalid_argument("rope_freq_factors needs head_dim / 2 = " + std::to_string(hd / 2) + " values");

  const std::string a = o.arch + ".";
  md.set("general.architecture", GgufValue::str(o.arch));
  md.set("general.name", GgufValue::str(o.name));
  md.set(a + "context_length", GgufValue::u32(static_cast<uint32_t>(s.n_ctx)));
  md.set(a + "embedding_length", GgufValue::u32(static_cast<uint32_t>(s.n_embd)));
  md.set(a + "block_count", GgufValue::u32(static_cast<uint32_t>(s.n_layer)));
  // As llama.cpp's converters write them: qwen3moe keeps the dense width beside a key for the
  // expert width; olmoe and Mixtral say the expert width as feed_forward_length.
  const bool own_expert_key = o.arch == "qwen3moe" || oss || qwen35 || gemma4;
  if (o.double_wide_shared_ffn) {
    std::vector<GgufValue> widths;
    for (int l = 0; l < s.n_layer; ++l) widths.push_back(GgufValue::i32(ffn_width(l)));
    md.set(a + "feed_forward_length", GgufValue::array(GgufType::INT32, std::move(widths)));
  } else {
    md.set(a + "feed_forward_length", GgufValue::u32(static_cast<uint32_t>(moe && !own_expert_key ? s.n_ff_exp : s.n_ff)));
  }
  if (moe) {
    md.set(a + "expert_count", GgufValue::u32(static_cast<uint32_t>(s.n_expert)));
    md.set(a + "expert_used_count", GgufValue::u32(static_cast<uint32_t>(s.n_expert_used)));
    if (own_expert_key) md.set(a + "expert_feed_forward_length", GgufValue::u32(static_cast<uint32_t>(s.n_ff_exp)));
  }
  md.set(a + "attention.head_count", GgufValue::u32(static_cast<uint32_t>(s.n_head)));
  const int full_kv_heads = o.full_kv_heads > 0 ? o.full_kv_heads : s.n_head_kv % 2 == 0 ? s.n_head_kv / 2 : s.n_head_kv;
  if (gemma4 && s.n_head % full_kv_heads != 0) throw std::invalid_argument("the full layers' KV heads must divide the heads");
  if (gemma4) {
    std::vector<GgufValue> kv_heads, sliding;
    for (int l = 0; l < s.n_layer; ++l) {
      kv_heads.push_back(GgufValue::i32(gemma4_full(l) ? full_kv_heads : s.n_head_kv));
      sliding.push_back(GgufValue::boolean(!gemma4_full(l)));
    }
    md.set(a + "attention.head_count_kv", GgufValue::array(GgufType::INT32, std::move(kv_heads)));
    md.set(a + "attention.sliding_window_pattern", GgufValue::array(GgufType::BOOL, std::move(sliding)));
  } else {
    md.set(a + "attention.head_count_kv", GgufValue::u32(static_cast<uint32_t>(s.n_head_kv)));
  }
  if (gemma || oss) md.set(a + "attention.sliding_window", GgufValue::u32(static_cast<uint32_t>(o.sliding_window)));
  if (gemma) md.set(a + "rope.freq_base_swa", GgufValue::f32(10000.f));
  if (s.head_dim > 0 || o.arch == "qwen3" || o.arch == "qwen3moe" || gemma || oss) {  // real files of these always say it
    md.set(a + "attention.key_length", GgufValue::u32(static_cast<uint32_t>(hd)));
    md.set(a + "attention.value_length", GgufValue::u32(static_cast<uint32_t>(hd)));
  }
  md.set(a + "rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(hd)));
  if (gemma4) {  // the full layers' shapes under the plain keys, the sliding layers' under _swa
    for (const char* k : {"attention.key_length", "attention.value_length", "rope.dimension_count"})
      md.set(a + k, GgufValue::u32(static_cast<uint32_t>(2 * hd)));
    for (const char* k : {"attention.key_length_swa", "attention.value_length_swa", "rope.dimension_count_swa"})
      md.set(a + k, GgufValue::u32(static_cast<uint32_t>(hd)));
    md.set(a + "final_logit_softcapping", GgufValue::f32(30.f));
    md.set(a + "embedding_length_per_layer_input", GgufValue::u32(static_cast<uint32_t>(o.per_layer_embd)));
    if (o.shared_kv_layers > 0)
      md.set(a + "attention.shared_kv_layers", GgufValue::u32(static_cast<uint32_t>(o.shared_kv_layers)));
  }
  if (qwen35) {
    md.set(a + "full_attention_interval", GgufValue::u32(4));
    md.set(a + "rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(hd / 4)));  // partial rotary, as Qwen 3.5's 0.25
    md.set(a + "ssm.conv_kernel", GgufValue::u32(4));
    md.set(a + "ssm.state_size", GgufValue::u32(static_cast<uint32_t>(ssm_hd)));
    md.set(a + "ssm.group_count", GgufValue::u32(static_cast<uint32_t>(ssm_k_heads)));
    md.set(a + "ssm.time_step_rank", GgufValue::u32(static_cast<uint32_t>(ssm_v_heads)));
    md.set(a + "ssm.inner_size", GgufValue::u32(static_cast<uint32_t>(ssm_v_heads * ssm_hd)));
    if (moe) md.set(a + "expert_shared_feed_forward_length", GgufValue::u32(static_cast<uint32_t>(FS)));
  }
  md.set(a + "rope.freq_base", GgufValue::f32(s.rope_base));
  md.set(a + "attention.layer_norm_rms_epsilon", GgufValue::f32(s.rms_eps));
  if (o.rope_scaling_factor > 0.f) {
    md.set(a + "rope.scaling.type", GgufValue::str("linear"));
    md.set(a + "rope.scaling.factor", GgufValue::f32(o.rope_scaling_factor));
  }

  const uint64_t E = static_cast<uint64_t>(s.n_embd), F = static_cast<uint64_t>(s.n_ff);
  const uint64_t HD0 = static_cast<uint64_t>(hd);
  const auto matrix = [&](const std::string& name, uint64_t n_in, uint64_t n_out) {
    w.add_tensor(name, matrix_type(o.type, n_in), {n_in, n_out});
  };
  const auto vector = [&](const std::string& name, uint64_t n) { w.add_tensor(name, TensorType::F32, {n}); };
  const uint64_t X = static_cast<uint64_t>(s.n_expert), FX = static_cast<uint64_t>(s.n_ff_exp);
  const auto experts = [&](const std::string& name, uint64_t n_in, uint64_t n_out) {
    w.add_tensor(name, matrix_type(o.expert_type.value_or(o.type), n_in), {n_in, n_out, X});
  };
  matrix("token_embd.weight", E, static_cast<uint64_t>(s.n_vocab));
  vector("output_norm.weight", E);
  if (!o.tied_output && !gemma) matrix("output.weight", E, static_cast<uint64_t>(s.n_vocab));  // Gemma is always tied
  for (int l = 0; l < s.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    // Gemma 4's full layers: twice the head size, fewer KV heads (their own Q, KV and head size).
    const uint64_t HD = gemma4_full(l) ? 2 * HD0 : HD0, Q = HD * static_cast<uint64_t>(s.n_head);
    const uint64_t KV = HD * static_cast<uint64_t>(gemma4_full(l) ? full_kv_heads : s.n_head_kv);
    if (recurrent(l)) {  // a gated delta-net in place of attention
      const uint64_t C = (2 * ssm_k_heads + ssm_v_heads) * ssm_hd, DI = ssm_v_heads * ssm_hd;
      vector(p + "attn_norm.weight", E);
      matrix(p + "attn_qkv.weight", E, C);
      matrix(p + "attn_gate.weight", E, DI);
      w.add_tensor(p + "ssm_conv1d.weight", TensorType::F32, {4, C});  // llama-quantize keeps it f32
      vector(p + "ssm_dt.bias", ssm_v_heads);
      vector(p + "ssm_a", ssm_v_heads);
      matrix(p + "ssm_beta.weight", E, ssm_v_heads);
      matrix(p + "ssm_alpha.weight", E, ssm_v_heads);
      vector(p + "ssm_norm.weight", ssm_hd);
      matrix(p + "ssm_out.weight", DI, E);
    } else if (fused) {
      matrix(p + "attn_qkv.weight", E, Q + 2 * KV);
    } else {
      matrix(p + "attn_q.weight", E, qwen35 ? 2 * Q : Q);  // Qwen 3.5: each head's query, then its gate
      if (own_kv(l)) matrix(p + "attn_k.weight", E, KV);
      if (own_kv(l) && !(gemma4_full(l) && o.full_v_from_k)) matrix(p + "attn_v.weight", E, KV);
    }
    if (o.arch == "qwen2" || oss) {
      vector(p + "attn_q.bias", Q);
      vector(p + "attn_k.bias", KV);
      vector(p + "attn_v.bias", KV);
    }
    if (qk_norm && !recurrent(l)) {
      vector(p + "attn_q_norm.weight", o.arch == "olmoe" ? Q : HD);
      if (own_kv(l)) vector(p + "attn_k_norm.weight", o.arch == "olmoe" ? KV : HD);
    }
    if (!recurrent(l)) {
      matrix(p + "attn_output.weight", Q, E);
      vector(p + "attn_norm.weight", E);
    }
    if (oss) {
      vector(p + "attn_output.bias", E);
      vector(p + "attn_sinks.weight", static_cast<uint64_t>(s.n_head));
    }
    if (moe && gemma4) {  // 26B-A4B: a dense FFN beside the experts, each with its own norms
      matrix(p + "ffn_gate.weight", E, F);
      matrix(p + "ffn_down.weight", F, E);
      matrix(p + "ffn_up.weight", E, F);
      vector(p + "post_ffw_norm_1.weight", E);
      vector(p + "pre_ffw_norm_2.weight", E);
      vector(p + "post_ffw_norm_2.weight", E);
      w.add_tensor(p + "ffn_gate_inp.weight", TensorType::F32, {E, X});
      vector(p + "ffn_gate_inp.scale", E);
      experts(p + "ffn_gate_up_exps.weight", E, 2 * FX);  // each expert's gate rows, then its up rows
      experts(p + "ffn_down_exps.weight", FX, E);
      vector(p + "ffn_down_exps.scale", X);
    } else if (moe) {
      // The router stays f32, as llama-quantize leaves it.
      w.add_tensor(p + "ffn_gate_inp.weight", TensorType::F32, {E, X});
      experts(p + "ffn_gate_exps.weight", E, FX);
      experts(p + "ffn_down_exps.weight", FX, E);
      experts(p + "ffn_up_exps.weight", E, FX);
      if (oss) {  // gpt-oss: a bias on the router and on every expert's projections
        vector(p + "ffn_gate_inp.bias", X);
        w.add_tensor(p + "ffn_gate_exps.bias", TensorType::F32, {FX, X});
        w.add_tensor(p + "ffn_down_exps.bias", TensorType::F32, {E, X});
        w.add_tensor(p + "ffn_up_exps.bias", TensorType::F32, {FX, X});
      }
      if (qwen35) {  // Qwen 3.5 MoE: a shared expert of the routed experts' width, sigmoid-gated
        vector(p + "ffn_gate_inp_shexp.weight", E);
        matrix(p + "ffn_gate_shexp.weight", E, FS);
        matrix(p + "ffn_up_shexp.weight", E, FS);
        matrix(p + "ffn_down_shexp.weight", FS, E);
      }
    } else if (fused) {  // gate rows, then up rows
      matrix(p + "ffn_up.weight", E, 2 * F);
      matrix(p + "ffn_down.weight", F, E);
    } else {
      const auto FL = static_cast<uint64_t>(ffn_width(l));
      matrix(p + "ffn_gate.weight", E, FL);
      matrix(p + "ffn_down.weight", FL, E);
      matrix(p + "ffn_up.weight", E, FL);
    }
    // gpt-oss and Qwen 3.5 name their pre-FFN norm so
    vector(p + (oss || qwen35 ? "post_attention_norm.weight" : "ffn_norm.weight"), E);
    if (gemma) {
      vector(p + "post_attention_norm.weight", E);
      vector(p + "post_ffw_norm.weight", E);
    }
    if (gemma4) vector(p + "layer_output_scale.weight", 1);
  }
  // Last, so that the other tensors keep their index, which seeds their values: a model with
  // factors has the same weights as the one without.
  std::vector<float> rope_factors = o.rope_freq_factors;
  if (gemma4) {  // Gemma 4's proportional RoPE: the full layers rotate a quarter of their pairs
    rope_factors.assign(HD0, 1e30f);
    std::fill_n(rope_factors.begin(), HD0 / 4, 1.f);
  }
  if (!rope_factors.empty()) vector("rope_freqs.weight", rope_factors.size());
  if (const auto P = static_cast<uint64_t>(o.per_layer_embd); P > 0) {  // after the rest, as the factors
    const uint64_t all = P * static_cast<uint64_t>(s.n_layer);
    matrix("per_layer_token_embd.weight", all, static_cast<uint64_t>(s.n_vocab));
    matrix("per_layer_model_proj.weight", E, all);
    vector("per_layer_proj_norm.weight", P);
    for (int l = 0; l < s.n_layer; ++l) {
      const std::string p = "blk." + std::to_string(l) + ".";
      matrix(p + "inp_gate.weight", E, P);
      matrix(p + "proj.weight", P, E);
      vector(p + "post_norm.weight", E);
    }
  }

  ThreadPool pool(o.threads > 0 ? o.threads : hardware_threads());
  const float half_width = o.weight_std * 1.7320508f;  // uniform on [-a, a] has std a / sqrt(3)
  w.write(path, [&](size_t index, std::span<uint8_t> out) {
    const GgufTensorInfo& t = w.tensors()[index];
    const int64_t n_in = static_cast<int64_t>(t.shape[0]);
    const int64_t rows = static_cast<int64_t>(t.rows());
    const uint64_t rb = row_bytes(t.type, static_cast<uint64_t>(n_in));
    if (t.shape.size() == 1) {
      // Norms: ones, as a freshly initialised model has; biases small and random; the per-head
      // Q/K norms of qwen3 random around one, so that their weights matter to the output.
      std::vector<float> v(static_cast<size_t>(n_in), 1.f);
      Rng rng(o.seed * 0x9e3779b97f4a7c15ull + index * 0x100000001b3ull);
      const bool bias = t.name.ends_with(".bias") || t.name.ends_with("attn_sinks.weight");
      const bool qk_norm = t.name.ends_with("attn_q_norm.weight") || t.name.ends_with("attn_k_norm.weight") ||
                           t.name.ends_with("layer_output_scale.weight") || t.name.ends_with("ffn_gate_inp.scale") ||
                           t.name.ends_with("ffn_down_exps.scale");
      const bool decay = t.name.ends_with("ssm_a");  // -exp(A_log): a slow decay, the state lasts
      const bool shared_gate = t.name.ends_with("ffn_gate_inp_shexp.weight");
      if (t.name == "rope_freqs.weight") v = rope_factors;
      for (auto& x : v) {
        if (bias) x = static_cast<float>((rng.uniform() * 2.0 - 1.0) * half_width);
        if (qk_norm) x = static_cast<float>(0.75 + rng.uniform() * 0.5);
        if (decay) x = static_cast<float>(-(0.05 + rng.uniform() * 0.45));
        if (shared_gate) x = static_cast<float>((rng.uniform() * 2.0 - 1.0) * half_width);
      }
      quantize_row(t.type, v.data(), out.data(), n_in);
      return;
    }
    const int64_t per_task = 64;
    pool.run(static_cast<int>((rows + per_task - 1) / per_task), [&](int task) {
      std::vector<float> row(static_cast<size_t>(n_in));
      for (int64_t r = task * per_task; r < std::min(rows, (task + 1) * per_task); ++r) {
        // One generator per row: the file is the same whatever the thread count.
        Rng rng(o.seed * 0x9e3779b97f4a7c15ull + index * 0x100000001b3ull + static_cast<uint64_t>(r));
        for (auto& v : row) v = static_cast<float>((rng.uniform() * 2.0 - 1.0) * half_width);
        quantize_row(t.type, row.data(), out.data() + static_cast<uint64_t>(r) * rb, n_in);
      }
    });
  });
}

}  // namespace hearth::runtime
