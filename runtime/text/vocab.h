// A model's vocabulary as GGUF metadata describes it (tokenizer.ggml.*).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/format/gguf.h"

namespace hearth::runtime {

// llama.cpp's token types (tokenizer.ggml.token_type).
enum class TokenType : int32_t { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 };

// One BPE merge: the pair (left, right) of token ids becomes `result`; lower ranks merge first.
struct BpeMerge {
  int32_t rank;
  int32_t result;
};

struct Vocab {
  // tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE: Llama 3, Qwen, SmolLM...)
  std::string model;
  std::string pre;                  // tokenizer.ggml.pre (byte-level BPE's pre-tokenizer name), "" if absent
  std::vector<std::string> tokens;  // piece text; SentencePiece marks spaces with U+2581, byte-level BPE
                                    // writes every byte as one character of GPT-2's byte alphabet
  std::vector<float> scores;        // merge priority (higher merges first); SentencePiece only
  std::vector<TokenType> types;
  int32_t bos = -1, eos = -1, unk = -1, eot = -1;
  // What loading found odd but survived (a special id past the vocabulary); each is also logged.
  std::vector<std::string> warnings;
  bool add_bos = true;  // tokenizer.ggml.add_bos_token (default: SentencePiece yes, gpt2 no
                        // except the Llama 3 pre-tokenizer, as llama.cpp)
  bool add_eos = false;
  bool add_space_prefix = true;                    // tokenizer.ggml.add_space_prefix (SentencePiece only)
  std::unordered_map<std::string, int32_t> index;  // piece -> id
  // The token of each byte: <0xXX> for SentencePiece, the byte's alphabet character for
  // byte-level BPE; -1 if absent.
  std::array<int32_t, 256> byte_token{};
  // Byte-level BPE merges (tokenizer.ggml.merges) keyed by bpe_pair(left, right).
  std::unordered_map<uint64_t, BpeMerge> merges;
  // Tokens that also end a turn: EOS, EOT, and control tokens such as <|im_end|>, <|eot_id|>,
  // <|end|> or <end_of_turn> that chat models emit instead of EOS (llama.cpp's list).
  std::vector<int32_t> end_of_generation;

  bool is_byte_level() const { return model == "gpt2"; }
  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
  int32_t find(const std::string& piece) const {
    auto it = index.find(piece);
    return it == index.end() ? -1 : it->second;
  }
  const BpeMerge* find_merge(int32_t left, int32_t right) const {
    auto it = merges.find(bpe_pair(left, right));
    return it == merges.end() ? nullptr : &it->second;
  }
  // End of generation: EOS, EOT, or another control token the model marks as such.
  bool is_end_of_generation(int32_t id) const {
    if (id == eos || (eot >= 0 && id == eot)) return true;
    for (int32_t e : end_of_generation)
      if (id == e) return true;
    return false;
  }

  static uint64_t bpe_pair(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
};

// GPT-2's byte alphabet: byte-level BPE vocabularies spell each byte as one printable character
// (bytes that are printable Latin-1 stand for themselves, the others map to U+0100 and up, so a
// space is "Ġ" and a newline "Ċ").
// The UTF-8 of byte b's character.
std::string_view byte_level_char(uint8_t b);
// The byte a character (a Unicode code point) stands for, or -1 if it is not in the alphabet.
int byte_level_byte(uint32_t code_point);

// Reads and checks the vocabulary; throws GgufError naming the key that is missing or wrong,
// or the tokenizer model when it is not supported (supported: llama, gpt2).
Vocab load_vocab(const GgufMetadata& md);

}  // namespace hearth::runtime
