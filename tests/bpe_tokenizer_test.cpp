// Byte-level BPE ("gpt2" vocabularies): pre-tokenizer rules per family, merges by rank, special
// tokens, BOS and decoding, on a small vocabulary built here; speed on a real one from shared/.
// (The id-for-id comparison with reference outputs is in tokenizer_test.cpp.)
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "runtime/format/gguf.h"
#include "runtime/text/pretokenizer.h"
#include "runtime/text/tokenizer.h"
#include "tests/test_util.h"

using namespace hearth::runtime;

namespace {

using Pieces = std::vector<std::string>;

Pieces split(const std::string& pre, const std::string& text) {
  const PreTokenizer p(pre);
  Pieces out;
  for (auto piece : p.split(text)) out.emplace_back(piece);
  return out;
}

// The alphabet's spelling of a text ("a b" -> "aĠb").
std::string spell(const std::string& text) {
  std::string out;
  for (char c : text) out += byte_level_char(static_cast<uint8_t>(c));
  return out;
}

GgufValue strings(const std::vector<std::string>& v) {
  std::vector<GgufValue> items;
  for (const auto& s : v) items.push_back(GgufValue::str(s));
  return GgufValue::array(GgufType::STRING, std::move(items));
}

// Ids of the small vocabulary: the 256 byte characters first (id = byte), then these.
enum : int32_t { END = 256, TOOL, HE, LL, HELL, HELLO, SP_W, OR, SP_WOR, LD, SP_WORLD, BC, AB, ABC, IM_END };

GgufMetadata small_vocab(const std::string& pre, bool with_merges = true) {
  std::vector<std::string> tokens;
  std::vector<GgufValue> types;
  for (int b = 0; b < 256; ++b) {
    tokens.emplace_back(byte_level_char(static_cast<uint8_t>(b)));
    types.push_back(GgufValue::i32(1));
  }
  const std::vector<std::pair<std::string, int>> extra = {
      {"<|endoftext|>", 3}, {"<tool>", 4},    {"he", 1}, {"ll", 1},          {"hell", 1},
      {"hello", 1},         {spell(" w"), 1}, {"or", 1}, {spell(" wor"), 1}, {"ld", 1},
      {spell(" world"), 1}, {"bc", 1},        {"ab", 1}, {"abc", 1},         {"<|im_end|>", 3}};
  for (const auto& [t, type] : extra) {
    tokens.push_back(t);
    types.push_back(GgufValue::i32(type));
  }
  // No merge makes "abc": only a vocabulary that takes whole words as they are (Llama 3) yields it.
  const std::vector<std::string> merges = {
      "h e", "l l", "he ll", "hell o", spell(" ") + " w", "o r", spell(" w") + " or", "l d", spell(" wor") + " ld", "b c", "a b"};
  GgufMetadata md;
  md.set("tokenizer.ggml.model", GgufValue::str("gpt2"));
  if (!pre.empty()) md.set("tokenizer.ggml.pre", GgufValue::str(pre));
  md.set("tokenizer.ggml.tokens", strings(tokens));
  md.set("tokenizer.ggml.token_type", GgufValue::array(GgufType::INT32, std::move(types)));
  if (with_merges) md.set("tokenizer.ggml.merges", strings(merges));
  md.set("tokenizer.ggml.bos_token_id", GgufValue::u32(END));
  md.set("tokenizer.ggml.eos_token_id", GgufValue::u32(END));
  return md;
}

std::vector<int32_t> ids_of(const std::string& bytes) {
  std::vector<int32_t> out;
  for (char c : bytes) out.push_back(static_cast<uint8_t>(c));
  return out;
}

}  // namespace

TEST_SUITE("bpe_tokenizer") {
  TEST_CASE("pre-tokenizer families cut text as their rules say") {
    const std::string text = "Hello world 12345!!\n\n";
    CHECK(split("gpt-2", text) == Pieces{"Hello", " world", " 12345", "!!", "\n\n"});
    CHECK(split("llama-bpe", text) == Pieces{"Hello", " world", " ", "123", "45", "!!\n\n"});
    CHECK(split("qwen2", text) == Pieces{"Hello", " world", " ", "1", "2", "3", "4", "5", "!!\n\n"});
    CHECK(split("starcoder", text) == Pieces{"Hello", " world", " ", "1", "2", "3", "4", "5", "!!", "\n\n"});
    CHECK(split("smollm", text) == split("starcoder", text));
    CHECK(split("deepseek-coder", "a 12") == Pieces{"a", " ", "1", "2"});
    CHECK(split("deepseek-llm", "Hi there 42\n") == Pieces{"Hi", " there", " ", "42", "\n"});
    CHECK(split("deepseek-v3", "x=12345") == Pieces{"x", "=", "123", "45"});
    // Contractions: GPT-2's are lower case only, Llama 3's any case.
    CHECK(split("gpt-2", "I'M here") == Pieces{"I", "'", "M", " here"});
    CHECK(split("llama3", "I'M here") == Pieces{"I", "'M", " here"});
    // Whitespace before a word: all but the last space stand alone.
    CHECK(split("gpt-2", "a   b") == Pieces{"a", "  ", " b"});
    // Letters and digits beyond ASCII follow Unicode.
    CHECK(split("gpt-2", "нещо ٣٤") == Pieces{"нещо", " ٣٤"});
  }

  TEST_CASE("an unknown pre-tokenizer is refused with the known names; a missing one gets llama.cpp's default and a warning") {
    const PreTokenizer known("llama-bpe");
    CHECK(known.name() == "llama3");
    CHECK(known.family() == PreTokenizerFamily::LLAMA3);
    CHECK_FALSE(known.is_fallback());
    CHECK_THROWS_WITH_AS(PreTokenizer("no-such-family"), doctest::Contains("known: default, gpt-2"), std::invalid_argument);
    CHECK_THROWS_WITH_AS(load_vocab(small_vocab("mystery")),
                         doctest::Contains("tokenizer.ggml.pre 'mystery' names a pre-tokenizer"), GgufError);
    const PreTokenizer none("");
    CHECK(none.name() == "default");
    CHECK(none.is_fallback());
    const Vocab v = load_vocab(small_vocab(""));
    REQUIRE(v.warnings.size() == 1);
    CHECK(v.warnings[0].find("tokenizer.ggml.pre is missing") != std::string::npos);
    const Tokenizer tok(v);
    REQUIRE(tok.pre_tokenizer() != nullptr);
    CHECK(tok.pre_tokenizer()->is_fallback());
  }

  TEST_CASE("the 2026 families split as llama.cpp's rules do: falcon, default, qwen35, gpt-4o") {
    // falcon: punctuation runs first (so "'s" is not a contraction and "(" leaves its space), then
    // GPT-2's rules, then three digits at a time out of each number.
    CHECK(split("falcon", "it's 12345 (ok)\n") == Pieces{"it", "'", "s", " ", "123", "45", " ", "(", "ok", ")", "\n"});
    // default: like falcon without the backquote, and digit runs apart from their space.
    CHECK(split("default", "a 12345") == Pieces{"a", " ", "123", "45"});
    // qwen35: a combining mark stays in its word (qwen2 cuts the word at it).
    const std::string e_acute = "e\xcc\x81te";  // e + U+0301 + te
    CHECK(split("qwen35", e_acute) == Pieces{e_acute});
    CHECK(split("qwen2", e_acute) == Pieces{"e", "\xcc\x81te"});
    // gpt-4o: an upper-case run then lower-case letters is one word; digits in threes.
    CHECK(split("gpt-4o", "HTTPServer 12345") == Pieces{"HTTPServer", " ", "123", "45"});
    CHECK(split("gpt-4o", "helloWorld") == Pieces{"hello", "World"});
  }

  TEST_CASE("pieces cover the text exactly, invalid UTF-8 included") {
    const std::string text = "ok \xff\xfe bad \xe2\x82 end\r\n\t x";
    for (const char* pre : {"gpt-2", "llama3", "qwen2", "starcoder", "deepseek-llm", "deepseek-coder", "deepseek-v3"}) {
      CAPTURE(pre);
      std::string joined;
      for (const auto& p : split(pre, text)) joined += p;
      CHECK(joined == text);
    }
  }

  TEST_CASE("merges apply lowest rank first, leftmost on ties") {
    const Tokenizer tok(load_vocab(small_vocab("gpt-2")));
    CHECK(tok.encode("hello world") == std::vector<int32_t>{HELLO, SP_WORLD});
    CHECK(tok.encode("lll") == std::vector<int32_t>{LL, 'l'});
    CHECK(tok.encode("abc") == std::vector<int32_t>{'a', BC});  // "b c" ranks before "a b"
    // A byte no merge touches is its own token, control characters included.
    CHECK(tok.encode("\x01z") == ids_of("\x01z"));
    CHECK(tok.encode("").empty());
  }

  TEST_CASE("Llama 3 takes a pre-token that is a whole token as it is") {
    const Tokenizer llama3(load_vocab(small_vocab("llama-bpe")));
    CHECK(llama3.encode("abc", {.add_bos = false}) == std::vector<int32_t>{ABC});
    const Tokenizer gpt2(load_vocab(small_vocab("gpt-2")));
    CHECK(gpt2.encode("abc") == std::vector<int32_t>{'a', BC});
  }

  TEST_CASE("special tokens: user-defined always, control only when allowed") {
    const Tokenizer tok(load_vocab(small_vocab("gpt-2")));
    const auto plain = tok.encode("hello<|endoftext|>");
    CHECK(plain.front() == HELLO);
    CHECK(std::find(plain.begin(), plain.end(), END) == plain.end());
    CHECK(tok.decode(plain) == "hello<|endoftext|>");
    CHECK(tok.encode("hello<|endoftext|>", {.parse_special = true}) == std::vector<int32_t>{HELLO, END});
    CHECK(tok.encode("he<tool>ll") == std::vector<int32_t>{HE, TOOL, LL});
    CHECK(tok.piece(END).empty());
    CHECK(tok.piece(TOOL) == "<tool>");
  }

  TEST_CASE("BOS follows add_bos_token; gpt2 adds none by default, Llama 3 does") {
    CHECK(Tokenizer(load_vocab(small_vocab("gpt-2"))).encode("he") == std::vector<int32_t>{HE});
    CHECK(Tokenizer(load_vocab(small_vocab("llama-bpe"))).encode("he") == std::vector<int32_t>{END, HE});
    auto md = small_vocab("gpt-2");
    md.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
    const Tokenizer tok(load_vocab(md));
    CHECK(tok.encode("he") == std::vector<int32_t>{END, HE});
    CHECK(tok.encode("he", {.add_bos = false}) == std::vector<int32_t>{HE});
    CHECK_FALSE(tok.vocab().add_space_prefix);
  }

  TEST_CASE("decoding gives back the bytes, whatever they are") {
    const Tokenizer tok(load_vocab(small_vocab("qwen2")));
    const std::string text = "héllo → 🦙\n\t \x01 world";
    CHECK(tok.decode(tok.encode(text)) == text);
    CHECK(tok.piece(SP_WORLD) == " world");
    CHECK(tok.piece(' ') == " ");
    CHECK(tok.piece('\n') == "\n");
  }

  TEST_CASE("end of generation includes chat end-of-turn tokens") {
    const Vocab v = load_vocab(small_vocab("gpt-2"));
    CHECK(v.is_end_of_generation(END));
    CHECK(v.is_end_of_generation(IM_END));
    CHECK_FALSE(v.is_end_of_generation(HELLO));
  }

  TEST_CASE("a byte-level vocabulary without merges is refused with the key's name") {
    CHECK_THROWS_WITH(load_vocab(small_vocab("gpt-2", false)), doctest::Contains("tokenizer.ggml.merges is missing"));
    auto md = small_vocab("gpt-2");
    md.set("tokenizer.ggml.model", GgufValue::str("bert"));
    CHECK_THROWS_WITH(load_vocab(md), doctest::Contains("'bert' is not supported (supported: llama, gpt2)"));
  }

  // The time is printed, not asserted (a loaded or instrumented machine would fail a bound for no
  // fault of the code); on this project's development VM it is a few ms.
  TEST_CASE("10 KB of mixed text tokenizes and decodes back") {
    auto path = hearth::test::shared_file("tokenizers/ggml-vocab-gpt-2.gguf");
    if (!path) return;
    const Tokenizer tok(load_vocab(GgufFile::open(*path).metadata()));
    const std::string chunk =
        "The quick brown fox jumps over the lazy dog; it's 2024, and naïve café-goers pay 3.50 € each.\n"
        "    def tokenize(text):  # indentation, code and 数字 1234567 \t tabs\n"
        "Привет, мир! 🚀 Emoji and ümlauts, don't they'll we've... (parentheses) [brackets] {braces}\n";
    std::string text;
    while (text.size() < 10 * 1024) text += chunk;
    tok.encode(text);  // warm up (first use of JIT-compiled patterns, allocator)
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = tok.encode(text);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    MESSAGE("10 KB -> " << ids.size() << " tokens in " << ms << " ms");
    CHECK(tok.decode(ids) == text);
  }

}  // TEST_SUITE
