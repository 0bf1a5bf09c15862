#include "runtime/model_maker.h"

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <thread>

#include "runtime/gguf_writer.h"
#include "runtime/kernels.h"
#include "runtime/sampler.h"
#include "runtime/thread_pool.h"

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
};

const std::string kSpace = "\xe2\x96\x81";

// Byte-level SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, the printable ASCII
// characters and U+2581, then pseudo-words of those characters up to n_vocab.
void add_byte_vocab(GgufMetadata& md, int n_vocab, uint64_t seed) {
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

void check_shape(const RandomModelShape& s, TensorType type) {
  const auto block = static_cast<int>(tensor_type_info(static_cast<uint32_t>(type))->block_elems);
  if (s.n_embd <= 0 || s.n_layer <= 0 || s.n_head <= 0 || s.n_head_kv <= 0 || s.n_ff <= 0 || s.n_vocab <= 0 || s.n_ctx <= 0)
    throw std::invalid_argument("model dimensions must be positive");
  if (s.n_embd % s.n_head != 0 || s.n_head % s.n_head_kv != 0 || (s.n_embd / s.n_head) % 2 != 0)
    throw std::invalid_argument("dim must be a multiple of heads, heads a multiple of kv-heads, and the head size even");
  if (s.n_embd % block != 0 || s.n_ff % block != 0)
    throw std::invalid_argument("dim and ffn must be multiples of " + std::to_string(block) + " for type " +
                                std::string(tensor_type_name(type)));
}

}  // namespace

std::optional<RandomModelShape> random_model_preset(const std::string& name) {
  for (const auto& p : kPresets)
    if (name == p.name) return p.shape;
  return std::nullopt;
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
    add_byte_vocab(md, s.n_vocab, o.seed);
  } else {
    s.n_vocab = copy_vocab(md, o.vocab_from);
  }
  check_shape(s, o.type);

  md.set("general.architecture", GgufValue::str("llama"));
  md.set("general.name", GgufValue::str(o.name));
  md.set("llama.context_length", GgufValue::u32(static_cast<uint32_t>(s.n_ctx)));
  md.set("llama.embedding_length", GgufValue::u32(static_cast<uint32_t>(s.n_embd)));
  md.set("llama.block_count", GgufValue::u32(static_cast<uint32_t>(s.n_layer)));
  md.set("llama.feed_forward_length", GgufValue::u32(static_cast<uint32_t>(s.n_ff)));
  md.set("llama.attention.head_count", GgufValue::u32(static_cast<uint32_t>(s.n_head)));
  md.set("llama.attention.head_count_kv", GgufValue::u32(static_cast<uint32_t>(s.n_head_kv)));
  md.set("llama.rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(s.n_embd / s.n_head)));
  md.set("llama.rope.freq_base", GgufValue::f32(s.rope_base));
  md.set("llama.attention.layer_norm_rms_epsilon", GgufValue::f32(s.rms_eps));

  const uint64_t E = static_cast<uint64_t>(s.n_embd), F = static_cast<uint64_t>(s.n_ff);
  const uint64_t KV = E / static_cast<uint64_t>(s.n_head) * static_cast<uint64_t>(s.n_head_kv);
  w.add_tensor("token_embd.weight", o.type, {E, static_cast<uint64_t>(s.n_vocab)});
  w.add_tensor("output_norm.weight", TensorType::F32, {E});
  w.add_tensor("output.weight", o.type, {E, static_cast<uint64_t>(s.n_vocab)});
  for (int l = 0; l < s.n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    w.add_tensor(p + "attn_q.weight", o.type, {E, E});
    w.add_tensor(p + "attn_k.weight", o.type, {E, KV});
    w.add_tensor(p + "attn_v.weight", o.type, {E, KV});
    w.add_tensor(p + "attn_output.weight", o.type, {E, E});
    w.add_tensor(p + "attn_norm.weight", TensorType::F32, {E});
    w.add_tensor(p + "ffn_gate.weight", o.type, {E, F});
    w.add_tensor(p + "ffn_down.weight", o.type, {F, E});
    w.add_tensor(p + "ffn_up.weight", o.type, {E, F});
    w.add_tensor(p + "ffn_norm.weight", TensorType::F32, {E});
  }

  ThreadPool pool(o.threads > 0 ? o.threads : hardware_threads());
  const float half_width = o.weight_std * 1.7320508f;  // uniform on [-a, a] has std a / sqrt(3)
  w.write(path, [&](size_t index, std::span<uint8_t> out) {
    const GgufTensorInfo& t = w.tensors()[index];
    const int64_t n_in = static_cast<int64_t>(t.shape[0]);
    const int64_t rows = static_cast<int64_t>(t.rows());
    const uint64_t rb = row_bytes(t.type, static_cast<uint64_t>(n_in));
    if (t.shape.size() == 1) {  // norms: ones, as a freshly initialised model has
      std::vector<float> ones(static_cast<size_t>(n_in), 1.f);
      quantize_row(t.type, ones.data(), out.data(), n_in);
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
