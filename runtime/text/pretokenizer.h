// Pre-tokenization for byte-level BPE vocabularies: the text is cut into pieces (words, runs of
// digits, punctuation, whitespace) and BPE merges only ever happen inside one piece. Each model
// family cuts differently; GGUF names its family in tokenizer.ggml.pre, and the rules here are the
// regular expressions llama.cpp uses for that name (matched with PCRE2, Unicode properties on).
//
//   PreTokenizer pre("llama-bpe");
//   for (std::string_view piece : pre.split("Hello world!")) ...   // "Hello", " world", "!"
//
// Thread safety: const methods may be called concurrently.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hearth::runtime {

enum class PreTokenizerFamily {
  GPT2,            // "gpt-2" (and the fallback for names this runtime does not know)
  LLAMA3,          // "llama3", "llama-bpe" (Llama 3.x), "falcon3", ...
  QWEN2,           // "qwen2", "deepseek-r1-qwen" (Qwen 2.x): like Llama 3 but one digit per piece
  STARCODER,       // "starcoder", "smollm", "refact", "command-r", ...: digits alone, then GPT-2's rules
  DEEPSEEK_LLM,    // "deepseek-llm"
  DEEPSEEK_CODER,  // "deepseek-coder"
  DEEPSEEK_V3,     // "deepseek-v3"
};

// The family for a tokenizer.ggml.pre name, or nullopt when this runtime does not know it.
std::optional<PreTokenizerFamily> pre_tokenizer_family(std::string_view pre);
// The family's canonical name: "gpt-2", "llama3", "qwen2", "starcoder", "deepseek-llm", ...
std::string_view pre_tokenizer_name(PreTokenizerFamily family);

class PreTokenizer {
 public:
  // `pre` is tokenizer.ggml.pre. An empty or unknown name gets GPT-2's rules (the most common
  // byte-level scheme) without complaint; is_fallback() then tells the caller so it can say so.
  // Throws std::runtime_error only if PCRE2 rejects a pattern (a build problem, not user input).
  explicit PreTokenizer(std::string_view pre);

  PreTokenizerFamily family() const { return family_; }
  const std::string& name() const { return name_; }  // the family actually used
  bool is_fallback() const { return fallback_; }

  // The pieces of `text` in order; together they are exactly `text` (views into it). Bytes that are
  // not valid UTF-8 are never matched by a rule and come out as pieces of their own.
  std::vector<std::string_view> split(std::string_view text) const;

 private:
  struct Regex;
  PreTokenizerFamily family_;
  std::string name_;
  bool fallback_;
  // Applied in order, each to every piece the previous one produced (as llama.cpp does).
  std::vector<std::shared_ptr<const Regex>> regexes_;
};

}  // namespace hearth::runtime
