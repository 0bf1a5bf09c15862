// Text <-> token ids for a model's vocabulary.
//
//   Tokenizer tok(load_vocab(file.metadata()));
//   std::vector<int32_t> ids = tok.encode("Once upon a time", {.add_bos = true});
//   std::string text = tok.decode(ids);
//
// SentencePiece BPE ("llama" vocabularies: Llama 2, TinyLlama, Mistral, Phi-3): spaces become
// U+2581, a leading space is added, the highest-scoring adjacent pair is merged until none is in
// the vocabulary, and characters outside it fall back to <0xXX> byte tokens. This reproduces
// llama.cpp's tokenizer id for id.
//
// Byte-level BPE ("gpt2" vocabularies: GPT-2, Llama 3, Qwen 2, SmolLM, StarCoder, DeepSeek): the
// text is cut into pre-tokens by the family's rules (pretokenizer.h), each pre-token's bytes are
// spelled in GPT-2's byte alphabet and merged pair by pair in the order of tokenizer.ggml.merges.
// No space is added in front and every byte has a token, so nothing falls back to <unk>.
//
// In both, special tokens written in the text (user-defined always, control only with
// parse_special) become their ids before anything else happens to the text.
// Thread safety: const methods may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/text/pretokenizer.h"
#include "runtime/text/vocab.h"

namespace hearth::runtime {

struct EncodeOptions {
  bool add_bos = true;         // prepend BOS if the vocabulary asks for it
  bool parse_special = false;  // recognise control tokens such as "<s>" written in the text
};

class Tokenizer {
 public:
  explicit Tokenizer(Vocab vocab);

  const Vocab& vocab() const { return vocab_; }
  // The pre-tokenizer of a byte-level BPE vocabulary (name() says which rules are used and
  // is_fallback() whether tokenizer.ggml.pre was unknown); nullptr for SentencePiece.
  const PreTokenizer* pre_tokenizer() const { return pre_.get(); }
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const;
  // Bytes a token stands for; control tokens give "" (a byte token may be part of a character).
  std::string piece(int32_t id) const;
  std::string decode(std::span<const int32_t> ids) const;

 private:
  void encode_fragment(std::string_view text, bool space_prefix, std::vector<int32_t>& out) const;
  // Byte-level BPE (tokenizer_bpe.cpp): one stretch of text between special tokens, and one pre-token.
  void encode_bpe_fragment(std::string_view text, std::vector<int32_t>& out) const;
  void encode_bpe_word(std::string_view word, std::vector<int32_t>& out) const;
  std::string bpe_piece(int32_t id) const;

  Vocab vocab_;
  std::shared_ptr<const PreTokenizer> pre_;  // byte-level BPE only; shared so that copies stay cheap
  std::vector<int32_t> specials_;            // user-defined and control tokens, longest text first
};

// Splits a byte stream into complete UTF-8 characters as they arrive, so that streamed output
// never prints half a character. Invalid bytes are passed through as they are.
class Utf8Stream {
 public:
  // Appends bytes; returns the prefix that forms complete characters.
  std::string push(std::string_view bytes);
  // Whatever is left at the end of the stream.
  std::string flush();

 private:
  std::string pending_;
};

}  // namespace hearth::runtime
