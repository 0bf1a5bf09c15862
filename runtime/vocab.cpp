#include "runtime/vocab.h"

#include <cstdio>

namespace hearth::runtime {

namespace {

int32_t special_id(const GgufMetadata& md, const std::string& key, int32_t n_vocab, int32_t fallback) {
  auto v = md.get_uint_opt(key);
  if (!v) return fallback;
  // 0xFFFFFFFF (and any id past the vocabulary) means "none" in files written by llama.cpp.
  if (*v >= static_cast<uint64_t>(n_vocab)) return -1;
  return static_cast<int32_t>(*v);
}

}  // namespace

Vocab load_vocab(const GgufMetadata& md) {
  Vocab v;
  v.model = md.get_string("tokenizer.ggml.model");
  if (v.model != "llama")
    throw GgufError("tokenizer model '" + v.model + "' is not supported (supported: llama)");
  v.tokens = md.get_string_array("tokenizer.ggml.tokens");
  const auto n = static_cast<int32_t>(v.tokens.size());
  if (n == 0) throw GgufError("tokenizer.ggml.tokens is empty");
  if (md.has("tokenizer.ggml.scores")) {
    v.scores = md.get_float_array("tokenizer.ggml.scores");
    if (v.scores.size() != v.tokens.size()) throw GgufError("tokenizer.ggml.scores has a different length than the tokens");
  } else {
    v.scores.assign(v.tokens.size(), 0.f);
  }
  if (md.has("tokenizer.ggml.token_type")) {
    const auto types = md.get_int_array("tokenizer.ggml.token_type");
    if (types.size() != v.tokens.size()) throw GgufError("tokenizer.ggml.token_type has a different length than the tokens");
    for (auto t : types) v.types.push_back(t >= 1 && t <= 6 ? static_cast<TokenType>(t) : TokenType::NORMAL);
  } else {
    v.types.assign(v.tokens.size(), TokenType::NORMAL);
  }
  v.bos = special_id(md, "tokenizer.ggml.bos_token_id", n, 1 < n ? 1 : -1);
  v.eos = special_id(md, "tokenizer.ggml.eos_token_id", n, 2 < n ? 2 : -1);
  v.unk = special_id(md, "tokenizer.ggml.unknown_token_id", n, 0);
  v.eot = special_id(md, "tokenizer.ggml.eot_token_id", n, -1);
  v.add_bos = md.get_bool_or("tokenizer.ggml.add_bos_token", true);
  v.add_eos = md.get_bool_or("tokenizer.ggml.add_eos_token", false);
  v.add_space_prefix = md.get_bool_or("tokenizer.ggml.add_space_prefix", true);

  v.index.reserve(v.tokens.size());
  for (int32_t i = 0; i < n; ++i) v.index.emplace(v.tokens[static_cast<size_t>(i)], i);
  v.byte_token.fill(-1);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    v.byte_token[static_cast<size_t>(b)] = v.find(name);
  }
  return v;
}

}  // namespace hearth::runtime
