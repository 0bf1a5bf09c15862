// A model's vocabulary as GGUF metadata describes it (tokenizer.ggml.*).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/gguf.h"

namespace hearth::runtime {

// llama.cpp's token types (tokenizer.ggml.token_type).
enum class TokenType : int32_t { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 };

struct Vocab {
  std::string model;                  // tokenizer.ggml.model: "llama" (SentencePiece)
  std::vector<std::string> tokens;    // piece text; SentencePiece marks spaces with U+2581
  std::vector<float> scores;          // merge priority (higher merges first)
  std::vector<TokenType> types;
  int32_t bos = -1, eos = -1, unk = -1, eot = -1;
  bool add_bos = true;                // tokenizer.ggml.add_bos_token (SentencePiece default: true)
  bool add_eos = false;
  bool add_space_prefix = true;       // tokenizer.ggml.add_space_prefix
  std::unordered_map<std::string, int32_t> index;  // piece -> id
  std::array<int32_t, 256> byte_token{};           // <0xXX> -> id, -1 if absent

  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
  int32_t find(const std::string& piece) const {
    auto it = index.find(piece);
    return it == index.end() ? -1 : it->second;
  }
  // End of generation: EOS, EOT, or another control token the model marks as such.
  bool is_end_of_generation(int32_t id) const { return id == eos || (eot >= 0 && id == eot); }
};

// Reads and checks the vocabulary; throws GgufError naming the key that is missing or wrong,
// or the tokenizer model when it is not supported.
Vocab load_vocab(const GgufMetadata& md);

}  // namespace hearth::runtime
