// libFuzzer target: text given to the tokenizers. Input: byte 0 picks a vocabulary, byte 1 the
// options, the rest is the text (any bytes, invalid UTF-8 included).
//
// Vocabularies: small ones built here (byte-level BPE under every pre-tokenizer family, with
// user-defined and control tokens; SentencePiece with byte tokens; SentencePiece without byte
// tokens and without <unk>), and the real ones of ../shared/tokenizers (or $HEARTH_SHARED_DIR/
// tokenizers) when present: gpt-2, starcoder, llama-spm, phi-3. Files are only read.
//
// Checked: every id is inside the vocabulary (ids index the embedding table); byte-level BPE
// gives back exactly the text (decode(encode(text)) == text without parsing control tokens) when
// the vocabulary has a token for each of its bytes;
// SentencePiece too, for valid UTF-8 without U+2581 or user-defined tokens (the exceptions, see
// below); Utf8Stream loses no byte.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "runtime/format/gguf.h"
#include "runtime/text/tokenizer.h"
#include "runtime/text/vocab.h"

using namespace hearth::runtime;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

GgufValue strings(const std::vector<std::string>& v) {
  std::vector<GgufValue> items;
  for (const auto& s : v) items.push_back(GgufValue::str(s));
  return GgufValue::array(GgufType::STRING, std::move(items));
}

std::string spell(const std::string& text) {
  std::string out;
  for (char c : text) out += byte_level_char(static_cast<uint8_t>(c));
  return out;
}

// Byte-level BPE: the 256 byte characters (id = byte), a few words and their merges, an
// end-of-text control token, a user-defined token and a chat control token.
GgufMetadata small_bpe(const std::string& pre) {
  std::vector<std::string> tokens;
  std::vector<GgufValue> types;
  for (int b = 0; b < 256; ++b) {
    tokens.emplace_back(byte_level_char(static_cast<uint8_t>(b)));
    types.push_back(GgufValue::i32(1));
  }
  const std::vector<std::pair<std::string, int>> extra = {
      {"<|endoftext|>", 3}, {"<tool>", 4},    {"he", 1},          {"ll", 1},          {"hell", 1},
      {"hello", 1},         {spell(" w"), 1}, {"or", 1},          {spell(" wor"), 1}, {"ld", 1},
      {spell(" world"), 1}, {"12", 1},        {spell("\n\n"), 1}, {"<|im_end|>", 3}};
  for (const auto& [t, type] : extra) {
    tokens.push_back(t);
    types.push_back(GgufValue::i32(type));
  }
  const std::vector<std::string> merges = {"h e",
                                           "l l",
                                           "he ll",
                                           "hell o",
                                           spell(" ") + " w",
                                           "o r",
                                           spell(" w") + " or",
                                           "l d",
                                           spell(" wor") + " ld",
                                           "1 2",
                                           spell("\n") + " " + spell("\n")};
  GgufMetadata md;
  md.set("tokenizer.ggml.model", GgufValue::str("gpt2"));
  md.set("tokenizer.ggml.pre", GgufValue::str(pre));
  md.set("tokenizer.ggml.tokens", strings(tokens));
  md.set("tokenizer.ggml.token_type", GgufValue::array(GgufType::INT32, std::move(types)));
  md.set("tokenizer.ggml.merges", strings(merges));
  md.set("tokenizer.ggml.bos_token_id", GgufValue::u32(256));
  md.set("tokenizer.ggml.eos_token_id", GgufValue::u32(256));
  return md;
}

// SentencePiece: <unk> <s> </s>, optionally the 256 <0xXX> byte tokens, U+2581, printable ASCII,
// a few scored words, a user-defined and a control token.
GgufMetadata small_spm(bool byte_tokens, bool has_unk) {
  std::vector<std::string> tokens;
  std::vector<GgufValue> scores, types;
  const auto add = [&](std::string text, float score, int32_t type) {
    tokens.push_back(std::move(text));
    scores.push_back(GgufValue::f32(score));
    types.push_back(GgufValue::i32(type));
  };
  const std::string sp = "\xe2\x96\x81";
  add("<unk>", 0.f, 2);
  add("<s>", 0.f, 3);
  add("</s>", 0.f, 3);
  if (byte_tokens) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      add(name, 0.f, 6);
    }
  }
  add(sp, -1.f, 1);
  for (char c = 33; c < 127; ++c) add(std::string(1, c), -1.f, 1);
  const char* words[] = {"he", "ll", "hell", "hello", "wor", "world", "or", "ld", "th", "the", "in", "ing", "é", "日本"};
  float score = -2.f;
  for (const char* w : words) {
    add(w, score, 1);
    add(sp + w, score + 0.5f, 1);
    score -= 0.25f;
  }
  add("<tool>", 0.f, 4);
  add("<|end|>", 0.f, 3);
  GgufMetadata md;
  md.set("tokenizer.ggml.model", GgufValue::str("llama"));
  md.set("tokenizer.ggml.tokens", strings(tokens));
  md.set("tokenizer.ggml.scores", GgufValue::array(GgufType::FLOAT32, std::move(scores)));
  md.set("tokenizer.ggml.token_type", GgufValue::array(GgufType::INT32, std::move(types)));
  md.set("tokenizer.ggml.bos_token_id", GgufValue::u32(1));
  md.set("tokenizer.ggml.eos_token_id", GgufValue::u32(2));
  // 0xFFFFFFFF means "none" in files written by llama.cpp.
  md.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(has_unk ? 0 : 0xFFFFFFFFu));
  return md;
}

std::vector<std::unique_ptr<Tokenizer>> make_tokenizers() {
  std::vector<std::unique_ptr<Tokenizer>> out;
  for (const char* pre : {"gpt-2", "llama-bpe", "qwen2", "starcoder", "deepseek-llm", "deepseek-coder", "deepseek-v3", "",
                          "falcon", "qwen35", "gpt-4o"})
    out.push_back(std::make_unique<Tokenizer>(load_vocab(small_bpe(pre))));
  out.push_back(std::make_unique<Tokenizer>(load_vocab(small_spm(true, true))));
  out.push_back(std::make_unique<Tokenizer>(load_vocab(small_spm(false, true))));
  out.push_back(std::make_unique<Tokenizer>(load_vocab(small_spm(false, false))));

  std::filesystem::path shared;
  if (const char* env = std::getenv("HEARTH_SHARED_DIR")) shared = env;
  else shared = std::filesystem::path(HEARTH_SOURCE_DIR) / ".." / "shared";
  for (const char* name : {"gpt-2", "starcoder", "llama-spm", "phi-3"}) {
    const auto file = shared / "tokenizers" / (std::string("ggml-vocab-") + name + ".gguf");
    std::error_code ec;
    if (!std::filesystem::exists(file, ec)) continue;
    out.push_back(std::make_unique<Tokenizer>(load_vocab(GgufFile::open(file.string()).metadata())));
  }
  return out;
}

const std::vector<std::unique_ptr<Tokenizer>>& tokenizers() {
  static const auto all = make_tokenizers();
  return all;
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

bool contains_user_defined(const Tokenizer& tok, const std::string& text) {
  const Vocab& v = tok.vocab();
  for (int32_t i = 0; i < v.size(); ++i)
    if (v.types[static_cast<size_t>(i)] == TokenType::USER_DEFINED && !v.tokens[static_cast<size_t>(i)].empty() &&
        text.find(v.tokens[static_cast<size_t>(i)]) != std::string::npos)
      return true;
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)tokenizers();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const auto& all = tokenizers();
  const Tokenizer& tok = *all[data[0] % all.size()];
  const EncodeOptions options{.add_bos = (data[1] & 1) != 0, .parse_special = (data[1] & 2) != 0};
  const std::string text(reinterpret_cast<const char*>(data + 2), size - 2);

  const std::vector<int32_t> ids = tok.encode(text, options);
  for (int32_t id : ids) check(id >= 0 && id < tok.vocab().size());
  const std::string decoded = tok.decode(ids);

  // Streaming the pieces through Utf8Stream loses and adds nothing.
  Utf8Stream stream;
  std::string streamed, pieces;
  for (int32_t id : ids) {
    const std::string p = tok.piece(id);
    pieces += p;
    streamed += stream.push(p);
  }
  streamed += stream.flush();
  check(streamed == pieces);

  if (!options.parse_special) {
    if (tok.vocab().is_byte_level()) {
      // Unless a byte has no token in the vocabulary (starcoder's lacks 0xC0, 0xC1, 0xF5..0xFF,
      // which UTF-8 never uses): it becomes <unk> or is dropped, as documented.
      bool all_bytes = true;
      for (char c : text) all_bytes = all_bytes && tok.vocab().byte_token[static_cast<uint8_t>(c)] >= 0;
      if (all_bytes) check(tok.decode(tok.encode(text, {.add_bos = false})) == text);
    } else if (tok.vocab().byte_token[0] >= 0 && valid_utf8(text) && text.find("\xe2\x96\x81") == std::string::npos &&
               !contains_user_defined(tok, text)) {
      // Invalid UTF-8 is not checked: a lead byte swallows the next byte whole (as in llama.cpp),
      // so "\xce " comes back as "\xce" followed by U+2581's bytes.
      // With BOS the decoder drops the space the encoder put in front.
      check(tok.decode(tok.encode(text, {.add_bos = true})) == text || tok.vocab().bos < 0 || !tok.vocab().add_bos);
    }
  }
  return 0;
}
