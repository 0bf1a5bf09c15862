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
  DEFAULT,         // "default", and a file without tokenizer.ggml.pre: llama.cpp's catch-all rules
  GPT2,            // "gpt-2", "olmo", "mpt", ...
  FALCON,          // "falcon": punctuation runs first, then GPT-2's rules, then digits in threes
  QWEN35,          // "qwen35" (Qwen 3.5): Qwen 2's rules with combining marks kept in words
  GPT4O,           // "gpt-4o" (gpt-oss), "llama4": case-aware words, digits in threes
  LLAMA3,          // "llama3", "llama-bpe" (Llama 3.x), "falcon3", ...
  QWEN2,           // "qwen2", "deepseek-r1-qwen" (Qwen 2.x): like Llama 3 but one digit per piece
  STARCODER,       // "starcoder", "smollm", "refact", "command-r", ...: digits alone, then GPT-2's rules
  DEEPSEEK_LLM,    // "deepseek-llm"
  DEEPSEEK_CODER,  // "deepseek-coder"
  DEEPSEEK_V3,     // "deepseek-v3"
};

// The family for a tokenizer.ggml.pre name ("" = DEFAULT), or nullopt when this runtime does not
// know it.
std::optional<PreTokenizerFamily> pre_tokenizer_family(std::string_view pre);
// Every tokenizer.ggml.pre name this runtime knows, comma-separated (for error messages).
std::string known_pre_tokenizer_names();
// The family's canonical name: "gpt-2", "llama3", "qwen2", "starcoder", "deepseek-llm", ...
std::string_view pre_tokenizer_name(PreTokenizerFamily family);

class PreTokenizer {
 public:
  // `pre` is tokenizer.ggml.pre. An empty name gets llama.cpp's default rules, and is_fallback()
  // tells the caller so it can warn (the file does not say how its model was trained to split).
  // An unknown name throws std::invalid_argument naming the known ones: tokenizing it another way
  // would feed the model text cut as it never saw in training, without a word. Throws
  // std::runtime_error if PCRE2 rejects a pattern (a build problem, not user input).
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
