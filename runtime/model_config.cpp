#include "runtime/model_config.h"

namespace hearth::runtime {

namespace {

constexpr const char* kSupportedArchs = "llama";

int positive(const GgufMetadata& md, const std::string& key, uint64_t max = 1u << 24) {
  const uint64_t v = md.get_uint(key);
  if (v == 0 || v > max) throw GgufError("metadata '" + key + "' = " + std::to_string(v) + " is out of range");
  return static_cast<int>(v);
}

}  // namespace

ModelConfig read_model_config(const GgufFile& file) {
  const GgufMetadata& md = file.metadata();
  ModelConfig c;
  c.arch = md.get_string("general.architecture");
  if (c.arch != "llama")
    throw GgufError("'" + file.path() + "': architecture '" + c.arch + "' is not supported (supported: " +
                    kSupportedArchs + ")");
  c.name = md.get_string_opt("general.name").value_or(file.path());
  const std::string a = c.arch + ".";
  c.n_embd = positive(md, a + "embedding_length");
  c.n_layer = positive(md, a + "block_count", 4096);
  c.n_head = positive(md, a + "attention.head_count", 4096);
  c.n_head_kv = md.has(a + "attention.head_count_kv") ? positive(md, a + "attention.head_count_kv", 4096) : c.n_head;
  c.n_ff = positive(md, a + "feed_forward_length");
  c.n_ctx_train = positive(md, a + "context_length");
  if (c.n_embd % c.n_head != 0 && !md.has(a + "attention.key_length"))
    throw GgufError("embedding_length is not a multiple of head_count");
  c.head_dim = md.has(a + "attention.key_length") ? positive(md, a + "attention.key_length", 4096) : c.n_embd / c.n_head;
  if (c.n_head % c.n_head_kv != 0)
    throw GgufError("head_count " + std::to_string(c.n_head) + " is not a multiple of head_count_kv " +
                    std::to_string(c.n_head_kv));
  c.n_rot = md.has(a + "rope.dimension_count") ? positive(md, a + "rope.dimension_count", 4096) : c.head_dim;
  if (c.n_rot > c.head_dim || c.n_rot % 2 != 0) throw GgufError("rope.dimension_count must be even and <= head size");
  c.rms_eps = static_cast<float>(md.get_float_opt(a + "attention.layer_norm_rms_epsilon").value_or(1e-5));
  c.rope_base = static_cast<float>(md.get_float_opt(a + "rope.freq_base").value_or(10000.0));
  if (!(c.rms_eps > 0.f) || !(c.rope_base > 0.f)) throw GgufError("rms epsilon and rope base must be positive");
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
