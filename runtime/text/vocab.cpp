#include "runtime/text/vocab.h"

#include <spdlog/spdlog.h>

#include <cstdio>

#include "runtime/text/pretokenizer.h"

namespace hearth::runtime {

namespace {

// Bytes that GPT-2's alphabet spells as the Latin-1 character of the same value.
bool byte_is_printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); }

struct ByteAlphabet {
  std::array<std::string, 256> utf8;
  std::array<int16_t, 512> byte_of{};  // code point -> byte, -1 if none (the alphabet ends below U+0144)

  ByteAlphabet() {
    byte_of.fill(-1);
    int next = 256;  // the other bytes take U+0100, U+0101, ... in byte order
    for (int b = 0; b < 256; ++b) {
      const uint32_t cp = byte_is_printable(b) ? static_cast<uint32_t>(b) : static_cast<uint32_t>(next++);
      byte_of[cp] = static_cast<int16_t>(b);
      std::string& s = utf8[static_cast<size_t>(b)];
      if (cp < 0x80) {
        s += static_cast<char>(cp);
      } else {  // all below U+0800: two bytes
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
      }
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet a;
  return a;
}

// Control tokens that end a turn in common chat formats; generation stops at them as in llama.cpp.
constexpr const char* kEndOfTurnTexts[] = {
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|return|>",
    "<|call|>",
    "<EOT>",
    "<|EOT|>",
    "<\uff5cend\u2581of\u2581sentence\uff5c>",  // DeepSeek's <｜end▁of▁sentence｜> (UTF-8)
};

int32_t special_id(const GgufMetadata& md, const std::string& key, int32_t n_vocab, int32_t fallback,
                   std::vector<std::string>& warnings) {
  auto v = md.get_uint_opt(key);
  if (!v) return fallback;
  // 0xFFFFFFFF means "none" in files written by llama.cpp.
  if (*v == 0xFFFFFFFFull) return -1;
  if (*v >= static_cast<uint64_t>(n_vocab)) {
    // As llama.cpp does: the file is usable without it, but never silently.
    warnings.push_back(key + " is " + std::to_string(*v) + ", past the vocabulary's " + std::to_string(n_vocab) +
                       " tokens: the model has no such token");
    spdlog::warn("vocabulary: {}", warnings.back());
    return -1;
  }
  return static_cast<int32_t>(*v);
}

}  // namespace

std::string_view byte_level_char(uint8_t b) { return byte_alphabet().utf8[b]; }

int byte_level_byte(uint32_t code_point) {
  return code_point < byte_alphabet().byte_of.size() ? byte_alphabet().byte_of[code_point] : -1;
}

Vocab load_vocab(const GgufMetadata& md) {
  Vocab v;
  v.model = md.get_string("tokenizer.ggml.model");
  if (v.model != "llama" && v.model != "gpt2")
    throw GgufError("tokenizer model '" + v.model + "' is not supported (supported: llama, gpt2)");
  const bool byte_level = v.is_byte_level();
  v.pre = md.get_string_opt("tokenizer.ggml.pre").value_or("");
  if (byte_level && !pre_tokenizer_family(v.pre))
    throw GgufError("tokenizer.ggml.pre '" + v.pre +
                    "' names a pre-tokenizer this runtime does not know; splitting text another way would change "
                    "what the model reads (known: " +
                    known_pre_tokenizer_names() + ")");
  if (byte_level && v.pre.empty())
    v.warnings.push_back(
        "tokenizer.ggml.pre is missing: text is split by llama.cpp's default rules, which may not be the model's own; "
        "generation quality may suffer (convert the model again with a current llama.cpp)");
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
  // SentencePiece files without these keys use its fixed ids; byte-level BPE has no such
  // convention, so a missing id means "none" there.
  v.bos = special_id(md, "tokenizer.ggml.bos_token_id", n, !byte_level && 1 < n ? 1 : -1, v.warnings);
  v.eos = special_id(md, "tokenizer.ggml.eos_token_id", n, !byte_level && 2 < n ? 2 : -1, v.warnings);
  v.unk = special_id(md, "tokenizer.ggml.unknown_token_id", n, byte_level ? -1 : 0, v.warnings);
  v.eot = special_id(md, "tokenizer.ggml.eot_token_id", n, -1, v.warnings);
  // llama.cpp's defaults: SentencePiece adds BOS; byte-level BPE does only for Llama 3.
  const bool bos_by_default = !byte_level || pre_tokenizer_family(v.pre) == PreTokenizerFamily::LLAMA3;
  v.add_bos = md.get_bool_or("tokenizer.ggml.add_bos_token", bos_by_default);
  v.add_eos = md.get_bool_or("tokenizer.ggml.add_eos_token", false);
  // Byte-level BPE spells spaces itself (the pre-tokenizer keeps them with the next word).
  v.add_space_prefix = !byte_level && md.get_bool_or("tokenizer.ggml.add_space_prefix", true);

  v.index.reserve(v.tokens.size());
  for (int32_t i = 0; i < n; ++i) v.index.emplace(v.tokens[static_cast<size_t>(i)], i);
  v.byte_token.fill(-1);
  for (int b = 0; b < 256; ++b) {
    if (byte_level) {
      v.byte_token[static_cast<size_t>(b)] = v.find(std::string(byte_level_char(static_cast<uint8_t>(b))));
    } else {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      v.byte_token[static_cast<size_t>(b)] = v.find(name);
    }
  }

  if (byte_level) {
    if (!md.has("tokenizer.ggml.merges"))
      throw GgufError("tokenizer.ggml.merges is missing: a byte-level BPE (gpt2) vocabulary needs its merges");
    const auto merges = md.get_string_array("tokenizer.ggml.merges");
    v.merges.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
      const std::string& m = merges[rank];
      // "left right"; a part never holds a plain space (the alphabet spells it "Ġ"), but a
      // malformed entry must not take the loader down: search from 1 as llama.cpp does.
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos)
        throw GgufError("tokenizer.ggml.merges[" + std::to_string(rank) + "] = '" + m +
                        "' is not two tokens separated by a space");
      const std::string left = m.substr(0, sp), right = m.substr(sp + 1);
      const int32_t l = v.find(left), r = v.find(right), result = v.find(left + right);
      // A merge whose parts or result are not tokens can never apply; skip it.
      if (l < 0 || r < 0 || result < 0) continue;
      v.merges.emplace(Vocab::bpe_pair(l, r), BpeMerge{static_cast<int32_t>(rank), result});  // first rank wins
    }
  }

  // Harmony (gpt-oss) ends a reply with <|return|> or <|call|>; its <|end|> only closes one
  // message of the reply (the reasoning before the answer), so there it must not stop generation.
  const bool harmony = v.find("<|return|>") >= 0 && v.find("<|call|>") >= 0;
  for (const char* text : kEndOfTurnTexts) {
    const int32_t id = v.find(text);
    if (id < 0 || id == v.eos || id == v.eot) continue;
    if (harmony && std::string_view(text) == "<|end|>") continue;
    const TokenType t = v.types[static_cast<size_t>(id)];
    if (t == TokenType::CONTROL || t == TokenType::USER_DEFINED) v.end_of_generation.push_back(id);
  }
  if (harmony && v.eot >= 0 && v.eot == v.find("<|end|>")) v.eot = -1;
  return v;
}

}  // namespace hearth::runtime
