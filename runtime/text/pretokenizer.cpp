#include "runtime/text/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <stdexcept>
#include <utility>

namespace hearth::runtime {

namespace {

// The patterns are llama.cpp's (src/llama-vocab.cpp), which adapt the ones in each model's
// tokenizer.json: "(?i:'s|...)" is spelled out case by case there, and so it is here.
// Non-ASCII characters are written as \x{...} so that no editor or normalisation can change them.
constexpr const char* kGpt2 = R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))re";

constexpr const char* kLlama3 =
    R"re((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

// Qwen 2 differs from Llama 3 only in taking digits one at a time.
constexpr const char* kQwen2 =
    R"re((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

// DeepSeek LLM's letters: the cased letters of the Unicode version its tokenizer was built with.
constexpr const char* kDeepseekLetters =
    R"re(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)re";
constexpr const char* kDeepseekPunct = R"re(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)re";
constexpr const char* kDeepseekCjk = R"re([\x{4E00}-\x{9FA5}\x{0800}-\x{4E00}\x{AC00}-\x{D7FF}]+)re";

constexpr const char* kDeepseekV3Cjk = R"re([\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+)re";
constexpr const char* kDeepseekV3 =
    R"re([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

// Qwen 3.5: Qwen 2's rules, with combining marks (\p{M}) part of words, not punctuation.
constexpr const char* kQwen35 =
    R"re((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

// GPT-4o (o200k, gpt-oss): a word is upper-case letters then lower-case ones (or the reverse), with
// a contraction; llama.cpp spells tokenizer.json's \p{Lu}/\p{Ll} classes with look-aheads.
constexpr const char* kGpt4o =
    R"re([^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

std::vector<const char*> patterns_for(PreTokenizerFamily family) {
  switch (family) {
    case PreTokenizerFamily::DEFAULT: return {R"re([\p{P}\$\+<=>\^~\|]+)re", kGpt2, R"re(\p{N}+)re", R"re([0-9][0-9][0-9])re"};
    case PreTokenizerFamily::GPT2: return {kGpt2};
    case PreTokenizerFamily::FALCON: return {R"re([\p{P}\$\+<=>\^~\|`]+)re", kGpt2, R"re([0-9][0-9][0-9])re"};
    case PreTokenizerFamily::QWEN35: return {kQwen35};
    case PreTokenizerFamily::GPT4O: return {kGpt4o};
    case PreTokenizerFamily::LLAMA3: return {kLlama3};
    case PreTokenizerFamily::QWEN2: return {kQwen2};
    case PreTokenizerFamily::STARCODER: return {R"re(\p{N})re", kGpt2};
    case PreTokenizerFamily::DEEPSEEK_LLM:
      return {R"re([\r\n])re", kDeepseekLetters, kDeepseekPunct, R"re(\s+$)re", kDeepseekCjk, R"re(\p{N}+)re"};
    case PreTokenizerFamily::DEEPSEEK_CODER:
      return {R"re([\r\n])re", R"re(\s?\p{L}+)re", R"re(\s?\p{P}+)re", kDeepseekCjk, R"re(\p{N})re"};
    case PreTokenizerFamily::DEEPSEEK_V3: return {R"re(\p{N}{1,3})re", kDeepseekV3Cjk, kDeepseekV3};
  }
  return {kGpt2};
}

struct NameFamily {
  const char* name;
  PreTokenizerFamily family;
};

// tokenizer.ggml.pre names, grouped as llama.cpp groups them by the rules they share.
constexpr std::array kNames{
    NameFamily{"default", PreTokenizerFamily::DEFAULT},
    NameFamily{"gpt-2", PreTokenizerFamily::GPT2},
    NameFamily{"phi-2", PreTokenizerFamily::GPT2},
    NameFamily{"mpt", PreTokenizerFamily::GPT2},
    NameFamily{"olmo", PreTokenizerFamily::GPT2},
    NameFamily{"jais", PreTokenizerFamily::GPT2},
    NameFamily{"roberta-bpe", PreTokenizerFamily::GPT2},
    NameFamily{"gigachat", PreTokenizerFamily::GPT2},
    NameFamily{"llama3", PreTokenizerFamily::LLAMA3},
    NameFamily{"llama-v3", PreTokenizerFamily::LLAMA3},
    NameFamily{"llama-bpe", PreTokenizerFamily::LLAMA3},
    NameFamily{"falcon3", PreTokenizerFamily::LLAMA3},
    NameFamily{"falcon-h1", PreTokenizerFamily::LLAMA3},
    NameFamily{"pixtral", PreTokenizerFamily::LLAMA3},
    NameFamily{"lfm2", PreTokenizerFamily::LLAMA3},
    NameFamily{"dbrx", PreTokenizerFamily::LLAMA3},
    NameFamily{"smaug-bpe", PreTokenizerFamily::LLAMA3},
    NameFamily{"falcon", PreTokenizerFamily::FALCON},
    NameFamily{"qwen35", PreTokenizerFamily::QWEN35},
    NameFamily{"gpt-4o", PreTokenizerFamily::GPT4O},
    NameFamily{"llama4", PreTokenizerFamily::GPT4O},
    NameFamily{"kormo", PreTokenizerFamily::QWEN2},
    NameFamily{"f2llmv2", PreTokenizerFamily::QWEN2},
    NameFamily{"mellum2", PreTokenizerFamily::STARCODER},
    NameFamily{"qwen2", PreTokenizerFamily::QWEN2},
    NameFamily{"deepseek-r1-qwen", PreTokenizerFamily::QWEN2},
    NameFamily{"stablelm2", PreTokenizerFamily::QWEN2},
    NameFamily{"megrez", PreTokenizerFamily::QWEN2},
    NameFamily{"starcoder", PreTokenizerFamily::STARCODER},
    NameFamily{"smollm", PreTokenizerFamily::STARCODER},
    NameFamily{"refact", PreTokenizerFamily::STARCODER},
    NameFamily{"command-r", PreTokenizerFamily::STARCODER},
    NameFamily{"codeshell", PreTokenizerFamily::STARCODER},
    NameFamily{"exaone", PreTokenizerFamily::STARCODER},
    NameFamily{"minerva-7b", PreTokenizerFamily::STARCODER},
    NameFamily{"deepseek-llm", PreTokenizerFamily::DEEPSEEK_LLM},
    NameFamily{"deepseek-coder", PreTokenizerFamily::DEEPSEEK_CODER},
    NameFamily{"deepseek-v3", PreTokenizerFamily::DEEPSEEK_V3},
};

// A match buffer for one split() call (pcre2 match data is per thread, the compiled code is shared).
class MatchData {
 public:
  explicit MatchData(const pcre2_code* code) : md_(pcre2_match_data_create_from_pattern(code, nullptr)) {
    if (md_ == nullptr) throw std::bad_alloc();
  }
  ~MatchData() { pcre2_match_data_free(md_); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
  pcre2_match_data* get() const { return md_; }

 private:
  pcre2_match_data* md_;
};

}  // namespace

std::optional<PreTokenizerFamily> pre_tokenizer_family(std::string_view pre) {
  if (pre.empty()) return PreTokenizerFamily::DEFAULT;
  for (const auto& nf : kNames)
    if (pre == nf.name) return nf.family;
  return std::nullopt;
}

std::string known_pre_tokenizer_names() {
  std::string out;
  for (const auto& nf : kNames) out += (out.empty() ? "" : ", ") + std::string(nf.name);
  return out;
}

std::string_view pre_tokenizer_name(PreTokenizerFamily family) {
  switch (family) {
    case PreTokenizerFamily::DEFAULT: return "default";
    case PreTokenizerFamily::FALCON: return "falcon";
    case PreTokenizerFamily::QWEN35: return "qwen35";
    case PreTokenizerFamily::GPT4O: return "gpt-4o";
    case PreTokenizerFamily::GPT2: return "gpt-2";
    case PreTokenizerFamily::LLAMA3: return "llama3";
    case PreTokenizerFamily::QWEN2: return "qwen2";
    case PreTokenizerFamily::STARCODER: return "starcoder";
    case PreTokenizerFamily::DEEPSEEK_LLM: return "deepseek-llm";
    case PreTokenizerFamily::DEEPSEEK_CODER: return "deepseek-coder";
    case PreTokenizerFamily::DEEPSEEK_V3: return "deepseek-v3";
  }
  return "gpt-2";
}

struct PreTokenizer::Regex {
  pcre2_code* code = nullptr;

  explicit Regex(const char* pattern) {
    int err = 0;
    PCRE2_SIZE at = 0;
    // UCP: \s and \p{...} follow Unicode, as the tokenizers these rules come from do.
    // MATCH_INVALID_UTF: invalid bytes in user text never match instead of failing the call.
    // DOLLAR_ENDONLY: "$" is the end of the piece, not also "before a final newline".
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY, &err, &at, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw std::runtime_error("pre-tokenizer pattern does not compile at offset " + std::to_string(at) + ": " +
                               reinterpret_cast<const char*>(msg));
    }
    // JIT is only a speed-up: without it (unsupported CPU, hardened kernel) the interpreter runs.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  }
  ~Regex() { pcre2_code_free(code); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
};

PreTokenizer::PreTokenizer(std::string_view pre) {
  const auto family = pre_tokenizer_family(pre);
  if (!family)
    throw std::invalid_argument(
        "pre-tokenizer '" + std::string(pre) + "' (tokenizer.ggml.pre) is unknown to this runtime, " +
        "which would split text differently from the model's training; known: " + known_pre_tokenizer_names());
  family_ = *family;
  fallback_ = pre.empty();
  name_ = std::string(pre_tokenizer_name(family_));
  for (const char* p : patterns_for(family_)) regexes_.push_back(std::make_shared<const Regex>(p));
}

std::vector<std::string_view> PreTokenizer::split(std::string_view text) const {
  std::vector<std::string_view> pieces, next;
  if (text.empty()) return pieces;
  pieces.push_back(text);
  for (const auto& re : regexes_) {
    const MatchData md(re->code);
    next.clear();
    next.reserve(pieces.size() * 2);
    for (const std::string_view piece : pieces) {
      // Each rule sees one piece at a time: a look-ahead such as (?!\S) stops at the piece's end.
      // Text between matches is kept as a piece of its own.
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
      size_t kept = 0, at = 0;
      while (at < piece.size()) {
        const int rc = pcre2_match(re->code, subject, piece.size(), at, 0, md.get(), nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          PCRE2_UCHAR msg[256];
          pcre2_get_error_message(rc, msg, sizeof msg);
          throw std::runtime_error(std::string("pre-tokenizer match failed: ") + reinterpret_cast<const char*>(msg));
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
        const size_t begin = ov[0], end = ov[1];
        if (end == begin) {  // an empty match cuts nothing; step over one character
          at = begin + 1;
          while (at < piece.size() && (static_cast<unsigned char>(piece[at]) & 0xC0) == 0x80) ++at;
          continue;
        }
        if (begin > kept) next.push_back(piece.substr(kept, begin - kept));
        next.push_back(piece.substr(begin, end - begin));
        kept = at = end;
      }
      if (kept < piece.size()) next.push_back(piece.substr(kept));
    }
    pieces.swap(next);
  }
  return pieces;
}

}  // namespace hearth::runtime
