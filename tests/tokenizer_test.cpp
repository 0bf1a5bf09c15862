// SentencePiece and byte-level BPE tokenizers against reference ids for real vocabularies.
#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "runtime/format/gguf.h"
#include "runtime/text/tokenizer.h"
#include "tests/test_util.h"

using hearth::test::TempDir;

using namespace hearth::runtime;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The .inp file separates test strings with "\n__ggml_vocab_test__\n"; the .out file holds
// one line of ids per string.
// SentencePiece adds a space in front of the text, which decoding keeps; byte-level BPE adds nothing.
void check_vocab(const std::string& name, bool space_prefix = true) {
  auto vocab = hearth::test::shared_file("tokenizers/ggml-vocab-" + name + ".gguf");
  if (!vocab) return;
  const Tokenizer tok(load_vocab(GgufFile::open(*vocab).metadata()));
  const std::string inp = read_text(*vocab + ".inp");
  std::vector<std::string> texts;
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t at = 0;;) {
    const size_t next = inp.find(sep, at);
    if (next == std::string::npos) break;
    texts.push_back(inp.substr(at, next - at));
    at = next + sep.size();
  }
  std::ifstream out(*vocab + ".out");
  std::vector<std::vector<int32_t>> expected;
  for (std::string line; std::getline(out, line);) {
    std::istringstream ls(line);
    std::vector<int32_t> ids;
    for (int32_t id; ls >> id;) ids.push_back(id);
    expected.push_back(ids);
  }
  REQUIRE(texts.size() == expected.size());
  int matched = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    CAPTURE(texts[i]);
    const auto ids = tok.encode(texts[i], {.add_bos = false});
    CHECK(ids == expected[i]);
    matched += ids == expected[i];
    // Decoding gives the text back (with the leading space the encoder added).
    if (!ids.empty()) CHECK(tok.decode(ids) == (space_prefix ? " " : "") + texts[i]);
  }
  MESSAGE(name << ": " << matched << "/" << texts.size() << " strings match the reference ids");
}

}  // namespace

TEST_SUITE("tokenizer") {
  TEST_CASE("llama-spm vocabulary matches the reference on every string") { check_vocab("llama-spm"); }

  TEST_CASE("phi-3 vocabulary matches the reference on every string") { check_vocab("phi-3"); }

  TEST_CASE("gpt-2 byte-level BPE vocabulary matches the reference on every string") { check_vocab("gpt-2", false); }

  TEST_CASE("starcoder byte-level BPE vocabulary matches the reference on every string") { check_vocab("starcoder", false); }

  TEST_CASE("BOS, control tokens only when allowed, byte fallback") {
    TempDir dir;
    const std::string path = hearth::test::make_model(dir, "m.gguf", {});
    const Tokenizer tok(load_vocab(GgufFile::open(path).metadata()));
    const auto& v = tok.vocab();
    CHECK(tok.encode("").size() == 1);  // just BOS
    CHECK(tok.encode("", {.add_bos = false}).empty());
    const auto with_bos = tok.encode("hi");
    REQUIRE(!with_bos.empty());
    CHECK(with_bos[0] == v.bos);
    // "</s>" in user text is plain text unless the caller allows control tokens.
    const auto plain = tok.encode("a</s>", {.add_bos = false});
    CHECK(std::find(plain.begin(), plain.end(), v.eos) == plain.end());
    const auto special = tok.encode("a</s>", {.add_bos = false, .parse_special = true});
    CHECK(special.back() == v.eos);
    // Characters outside the vocabulary fall back to their UTF-8 bytes and decode back.
    const std::string text = "héllo → 🦙";
    const auto ids = tok.encode(text);
    CHECK(tok.decode(ids) == text);
  }

  TEST_CASE("Utf8Stream holds back incomplete characters") {
    Utf8Stream s;
    const std::string llama = "\xf0\x9f\xa6\x99";  // U+1F999
    CHECK(s.push("a").empty() == false);
    CHECK(s.push(llama.substr(0, 1)).empty());
    CHECK(s.push(llama.substr(1, 2)).empty());
    CHECK(s.push(llama.substr(3, 1)) == llama);
    CHECK(s.push("\xc3") == "");
    CHECK(s.push("\xa9x") == "\xc3\xa9x");
    CHECK(s.push("\xe2\x82") == "");
    CHECK(s.flush() == "\xe2\x82");
  }

}  // TEST_SUITE

TEST_CASE("a special token id past the vocabulary is dropped with a warning, not silently") {
  hearth::test::TempDir dir;
  const std::string model = hearth::test::make_model(dir, "m.gguf", {});
  const std::string bad = dir.file("bad.gguf");
  hearth::test::rewrite_gguf(model, bad, [](hearth::runtime::GgufMetadata& md, std::vector<hearth::runtime::GgufTensorInfo>&) {
    md.set("tokenizer.ggml.bos_token_id", hearth::runtime::GgufValue::u32(100000));
    md.set("tokenizer.ggml.eot_token_id", hearth::runtime::GgufValue::u32(0xFFFFFFFFu));  // llama.cpp's "none"
  });
  const auto file = hearth::runtime::GgufFile::open(bad);
  const auto vocab = hearth::runtime::load_vocab(file.metadata());
  CHECK(vocab.bos == -1);
  CHECK(vocab.eot == -1);
  REQUIRE(vocab.warnings.size() == 1);  // "none" is no warning
  CHECK(vocab.warnings[0].find("tokenizer.ggml.bos_token_id is 100000") != std::string::npos);
  const auto good = hearth::runtime::load_vocab(hearth::runtime::GgufFile::open(model).metadata());
  CHECK(good.warnings.empty());
}
